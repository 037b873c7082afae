"""Reference posteriors to measure a guide against.

- ``exact``: the coin model's conjugate posterior Beta(a + heads, b + tails) and its exact log
  evidence log B(a + heads, b + tails) - log B(a, b). (The post compares to Beta(heads, tails),
  the normalised likelihood, which is not the posterior.)
- ``grid``: quadrature of the model's log joint on a grid of cell midpoints, for models with one
  or two scalar latent sites: log evidence, mean, covariance, mass on each side of a split.
- ``nuts``: NumPyro's NUTS, for any model: moments and draws, no evidence.

JAX is imported by ``grid`` and ``nuts`` only: the exact reference is numpy and scipy.

Each returns a dict with the same core: ``latent_sites``, ``mean``/``sd`` per site, ``covariance``
over the flattened sites, ``draws`` per site, and ``log_z`` (NaN where unknown).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from sviflow.registry import ConfigError


def _core(latent_sites, draws: dict, mean=None, sd=None, covariance=None, log_z=float("nan")):
    flat = np.concatenate([np.asarray(draws[s]).reshape(len(draws[s]), -1) for s in latent_sites], axis=1)
    if covariance is None:
        covariance = np.atleast_2d(np.cov(flat, rowvar=False))
    return {
        "latent_sites": list(latent_sites),
        "mean": mean if mean is not None else {s: np.mean(draws[s], axis=0) for s in latent_sites},
        "sd": sd if sd is not None else {s: np.std(draws[s], axis=0) for s in latent_sites},
        "covariance": np.asarray(covariance, dtype=np.float64),
        "draws": {s: np.asarray(draws[s]) for s in latent_sites},
        "log_z": float(log_z),
    }


def exact_coin(observed: dict, model_args: dict, *, num_draws: int = 10_000, seed: int = 0,
               site: str = "latent_fairness", obs_site: str = "obs") -> dict:
    """The conjugate posterior of :func:`sviflow.models.coin_flips`."""
    flips = np.asarray(observed[obs_site])
    heads, tails = float(flips.sum()), float(len(flips) - flips.sum())
    a0, b0 = float(model_args.get("prior_alpha", 1.0)), float(model_args.get("prior_beta", 1.0))
    a, b = a0 + heads, b0 + tails
    posterior = stats.beta(a, b)
    draws = posterior.rvs(size=num_draws, random_state=np.random.default_rng(seed))
    x = np.linspace(0.0, 1.0, 513)[1:-1]
    reference = _core([site], {site: draws}, mean={site: np.float64(posterior.mean())},
                      sd={site: np.float64(posterior.std())},
                      covariance=np.array([[posterior.var()]]),
                      log_z=special.betaln(a, b) - special.betaln(a0, b0))
    reference["method"] = "exact"
    reference["exact"] = {"alpha": a, "beta": b, "heads": heads, "tails": tails}
    reference["density"] = {"x": x, "pdf": posterior.pdf(x)}
    return reference


def _site_bounds(model, model_kwargs, sites, bounds):
    """(low, high) of each site: the configured bounds, else its support's. The supports are
    read in one compiled program: run eagerly, the model costs one XLA compile per op (0.65 s
    for the multimodal model, against 0.13 s)."""
    import jax
    from numpyro import handlers
    from numpyro.infer.initialization import init_to_uniform

    given = [tuple(float(v) for v in bounds[i]) if bounds and bounds[i] is not None else None
             for i in range(len(sites))]
    missing = [site for site, limits in zip(sites, given) if limits is None]

    def supports():
        substituted = handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
        trace = handlers.trace(substituted).get_trace(**model_kwargs)
        return {site: tuple(getattr(trace[site]["fn"].support, side, None)
                            for side in ("lower_bound", "upper_bound")) for site in missing}

    found = jax.jit(supports)() if missing else {}
    resolved = []
    for site, limits in zip(sites, given):
        if limits is None:
            low, high = found[site]
            if low is None or high is None:
                raise ConfigError(f"reference.bounds: site {site!r} is unbounded; give its bounds "
                                  f"as [low, high] in the model's reference.bounds")
            limits = (float(low), float(high))
        resolved.append(limits)
    return resolved


def grid(model, model_kwargs: dict, *, bounds=None, points: int = 400, num_draws: int = 10_000,
         seed: int = 0, split_direction=None) -> dict:
    """Quadrature of the log joint on ``points`` cells per dimension (1 or 2 scalar sites)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from sviflow.predictive import site_names

    sites, _ = site_names(model, model_kwargs)
    if len(sites) not in (1, 2):
        raise ConfigError(f"reference.method grid needs one or two scalar latent sites, the model "
                          f"has {len(sites)} ({', '.join(sites)}); use method nuts")
    limits = _site_bounds(model, model_kwargs, sites, bounds)
    axes = [low + (high - low) * (np.arange(points) + 0.5) / points for low, high in limits]
    cell = float(np.prod([(high - low) / points for low, high in limits]))
    mesh = np.meshgrid(*axes, indexing="ij")
    flat = {s: jnp.asarray(m.ravel()) for s, m in zip(sites, mesh)}

    def joint(values):
        return log_density(model, (), model_kwargs, values)[0]

    log_p = np.asarray(jax.jit(jax.vmap(joint))(flat), dtype=np.float64)
    log_z = special.logsumexp(log_p) + math.log(cell)
    weights = np.exp(log_p - special.logsumexp(log_p))
    coords = np.stack([np.asarray(flat[s], dtype=np.float64) for s in sites], axis=1)
    mean_vec = weights @ coords
    centred = coords - mean_vec
    covariance = (weights[:, None] * centred).T @ centred
    rng = np.random.default_rng(seed)
    cells = rng.choice(len(weights), size=num_draws, p=weights)
    widths = np.array([(high - low) / points for low, high in limits])
    jitter = (rng.random((num_draws, len(sites))) - 0.5) * widths
    draws = coords[cells] + jitter
    reference = _core(sites, {s: draws[:, i] for i, s in enumerate(sites)},
                      mean={s: mean_vec[i] for i, s in enumerate(sites)},
                      sd={s: math.sqrt(covariance[i, i]) for i, s in enumerate(sites)},
                      covariance=covariance, log_z=log_z)
    reference["method"] = "grid"
    reference["density"] = {**{f"axis_{i}": a for i, a in enumerate(axes)},
                            "pdf": np.exp(log_p - log_z).reshape(mesh[0].shape)}
    if split_direction is not None:
        direction = np.asarray(split_direction, dtype=np.float64)
        side = centred @ direction > 0
        reference["split"] = {"direction": direction, "mass_positive": float(weights[side].sum())}
    return reference


def nuts(model, model_kwargs: dict, *, num_warmup: int = 1000, num_samples: int = 2000,
         num_chains: int = 2, seed: int = 0) -> dict:
    """NUTS draws of every latent site; the chains' R-hat and ESS are kept to judge them."""
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS

    from sviflow.predictive import site_names

    sites, _ = site_names(model, model_kwargs)
    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **model_kwargs)
    by_chain = {s: np.asarray(v) for s, v in mcmc.get_samples(group_by_chain=True).items() if s in sites}
    draws = {s: v.reshape(-1, *v.shape[2:]) for s, v in by_chain.items()}
    reference = _core(sites, draws)
    reference["method"] = "nuts"
    reference["nuts"] = {
        "rhat": {s: np.asarray(az.rhat(v).to_numpy() if hasattr(az.rhat(v), "to_numpy") else az.rhat(v))
                 for s, v in by_chain.items()},
        "ess": {s: np.asarray(az.ess(v)) for s, v in by_chain.items()},
        "num_chains": num_chains,
    }
    return reference


def to_tree(reference: dict) -> dict:
    """The reference as an HDF5 tree (see ``sviflow.h5io.SCHEMAS['reference']``)."""
    tree = {
        "moments": {"mean": reference["mean"], "sd": reference["sd"],
                    "covariance": reference["covariance"]},
        "draws": reference["draws"],
        "log_z": np.float64(reference["log_z"]),
    }
    for optional in ("exact", "density", "split", "nuts"):
        if optional in reference:
            tree[optional] = reference[optional]
    return tree
