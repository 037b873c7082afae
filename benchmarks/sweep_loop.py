"""The baseline of the sweep benchmark: the 40 coin fits of issue 19 as a user's one-script loop.

5 step sizes x 4 particle counts x 2 seeds, 5,000 steps each, the post's coin model and Beta
guide. Per fit, what a notebook user writes: ``svi.run`` (progress_bar=False), 10,000 posterior
draws from the guide and 1,000 mock data sets (``Predictive``), ``az.summary`` of the draws, two
figures (the loss and the posterior) and one HDF5 file. One process, so imports are paid once;
each fit compiles its own program, as a loop over ``SVI(...)`` objects does.

    python benchmarks/sweep_loop.py OUTPUT_DIR [--steps 5000] [--fits 40]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import warnings

T0 = time.perf_counter()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import h5py  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax import random  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from numpyro.infer import SVI, Predictive, Trace_ELBO  # noqa: E402

warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
import arviz as az  # noqa: E402

STEP_SIZES = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2)
PARTICLES = (1, 2, 4, 8)
SEEDS = (1, 2)


def model(data=None):
    fairness = numpyro.sample("latent_fairness", dist.Uniform(0, 1))
    with numpyro.plate("N", 20 if data is None else len(data)):
        numpyro.sample("obs", dist.Bernoulli(fairness), obs=data)


def guide(data=None):
    alpha_q = numpyro.param("alpha_q", 10.0, constraint=constraints.positive)
    beta_q = numpyro.param("beta_q", 10.0, constraint=constraints.positive)
    numpyro.sample("latent_fairness", dist.Beta(alpha_q, beta_q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--fits", type=int, default=40, help="the first N of the grid's fits")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = jnp.concatenate([jnp.ones(12), jnp.zeros(8)])
    grid = list(itertools.product(STEP_SIZES, PARTICLES, SEEDS))[: args.fits]
    for step_size, particles, seed in grid:
        name = f"step_size~{step_size}_num_particles~{particles}_seed~{seed}"
        svi = SVI(model, guide, numpyro.optim.Adam(step_size), loss=Trace_ELBO(num_particles=particles))
        result = svi.run(random.PRNGKey(seed), args.steps, data, progress_bar=False)
        samples = Predictive(guide, params=result.params, num_samples=10000)(random.PRNGKey(0), data)
        mock = Predictive(model, guide=guide, params=result.params, num_samples=1000)(random.PRNGKey(1))
        summary = az.summary(az.from_dict(posterior={k: np.asarray(v)[None] for k, v in samples.items()}))
        fig, ax = plt.subplots()
        ax.plot(np.asarray(result.losses))
        ax.set(xlabel="step", ylabel="loss", title=name)
        fig.savefig(os.path.join(args.out, f"{name}_loss.png"))
        plt.close(fig)
        fig, ax = plt.subplots()
        ax.hist(np.asarray(samples["latent_fairness"]), bins=50, density=True)
        ax.set(xlabel="latent_fairness", title=name)
        fig.savefig(os.path.join(args.out, f"{name}_posterior.png"))
        plt.close(fig)
        with h5py.File(os.path.join(args.out, f"{name}.h5"), "w") as handle:
            handle["losses"] = np.asarray(result.losses)
            for key, value in result.params.items():
                handle[f"params/{key}"] = np.asarray(value)
            handle["posterior"] = np.asarray(samples["latent_fairness"])
            handle["mock"] = np.asarray(mock["obs"])
            handle.attrs["summary"] = summary.to_csv()
    print(f"{len(grid)} fits in {time.perf_counter() - T0:.1f} s (imports included)")


if __name__ == "__main__":
    main()
