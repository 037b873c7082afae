"""The post's three predictive paths, for every seed of a fit at once.

1. posterior samples from the guide (``Predictive(guide, params=...)``);
2. mock observations from model + guide (``Predictive(model, guide=guide, params=...)``);
3. mock observations from model + the samples of path 1 (``Predictive(model, posterior_samples=...)``).

Mock observations are drawn as the post draws them: the model called with its observed
arrays set to None, so that it simulates at its default size.
"""

from __future__ import annotations

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import Predictive


def site_names(model, model_kwargs: dict, seed: int = 0) -> tuple[list[str], list[str]]:
    """-> (latent sample sites, observed sample sites) of ``model`` on its data."""
    from numpyro.infer.initialization import init_to_uniform

    latent, observed = [], []

    def names():
        # substitute: an improper prior (ImproperUniform) cannot be sampled, only initialised
        substituted = handlers.substitute(handlers.seed(model, seed), substitute_fn=init_to_uniform)
        trace = handlers.trace(substituted).get_trace(**model_kwargs)
        latent.extend(n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
                      and not s.get("infer", {}).get("is_auxiliary", False))
        # numpyro.factor is an observed sample site of a Unit distribution: not data
        observed.extend(n for n, s in trace.items() if s["type"] == "sample" and s["is_observed"]
                        and type(s["fn"]).__name__ != "Unit")

    jax.make_jaxpr(names)()  # traced on abstract values: no XLA compile per eager op
    return latent, observed


def predictive_paths(model, guide, params: dict, fit_kwargs: dict, predict_kwargs: dict,
                     observed_sites: list[str], latent_sites: list[str], *, num_samples: int,
                     num_mock: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``params``: (seed, ...) arrays, as a fit stores them. -> the three paths, each
    a dict of (seed, draw, ...) arrays."""
    n_seeds = len(next(iter(params.values())))
    keys = jax.random.split(jax.random.PRNGKey(seed), 3 * n_seeds).reshape(n_seeds, 3, -1)

    def one(keys3, p):
        posterior = Predictive(guide, params=p, num_samples=num_samples)(keys3[0], **fit_kwargs)
        out = {"posterior": posterior}
        if observed_sites:
            from_guide = Predictive(model, guide=guide, params=p, num_samples=num_mock,
                                    return_sites=observed_sites)(keys3[1], **predict_kwargs)
            latents = {k: v for k, v in posterior.items() if k in latent_sites}
            from_samples = Predictive(model, posterior_samples=latents,
                                      return_sites=observed_sites)(keys3[2], **predict_kwargs)
            out["mock_from_guide"] = from_guide
            out["mock_from_samples"] = from_samples
        return out

    # one compiled program for all seeds and paths (vmap alone would run op by op)
    paths = jax.jit(jax.vmap(one))(keys, params)
    result = {name: {k: np.asarray(v) for k, v in sites.items()} for name, sites in paths.items()}
    result.setdefault("mock_from_guide", {})
    result.setdefault("mock_from_samples", {})
    return result


def log_weights(model, guide, params: dict, model_kwargs: dict, num_particles: int,
                seed: int) -> np.ndarray:
    """log p(x, z) - log q(z) for ``num_particles`` draws z ~ q, the integrand of the ELBO and
    the importance ratios of PSIS, for every seed of a fit in one compiled program.

    ``params``: (seed, ...) arrays, as a fit stores them. Seed ``i`` of the fit draws with
    ``PRNGKey(seed + i)``, each particle's key split as ``numpyro.infer.psis_diagnostic``
    splits it, so that the first column is the same draw ``psis_diagnostic`` makes.
    -> (seed, particle) float64.
    """
    from numpyro.infer.util import log_density

    def one(key, p):
        model_key, guide_key = jax.random.split(key)
        guide_log, guide_trace = log_density(handlers.seed(guide, guide_key), (), model_kwargs, p)
        model_log, _ = log_density(handlers.replay(handlers.seed(model, model_key), guide_trace), (),
                                   model_kwargs, p)
        return model_log - guide_log

    n_seeds = len(next(iter(params.values())))
    keys = jax.numpy.stack([jax.random.split(jax.random.PRNGKey(seed + index), num_particles)
                            for index in range(n_seeds)])
    per_seed = jax.vmap(lambda seed_keys, p: jax.vmap(lambda key: one(key, p))(seed_keys))
    return np.asarray(jax.jit(per_seed)(keys, params), dtype=np.float64)


def psis_khat(model, guide, params: dict, model_kwargs: dict, num_particles: int, seed: int) -> float:
    """PSIS k-hat as ``numpyro.infer.psis_diagnostic`` computes it, for one seed's ``params``.
    The workflow does not call it: numpyro evaluates the weights op by op (about 90 XLA
    compilations, 3 s a job) where :func:`log_weights` compiles once; the tests use it to show
    that both give the same k-hat."""
    from numpyro.infer import psis_diagnostic

    return float(psis_diagnostic(jax.random.PRNGKey(seed), params, model, guide,
                                 num_particles=num_particles, **model_kwargs))
