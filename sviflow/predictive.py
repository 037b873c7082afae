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
                     num_mock: int, seed: int, num_weighted: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """``params``: (seed, ...) arrays, as a fit stores them. -> the three paths, each a dict of
    (seed, draw, ...) arrays, and ``log_weights`` (seed, draw): log p(x, z) - log q(z) of the
    first ``max(num_samples, num_weighted)`` draws z of path 1 (the check's ELBO and k-hat).

    Path 1 draws ``max(num_samples, num_weighted)`` samples and keeps the first
    ``num_samples``; the weights are the guide's and the model's log densities at those draws
    (no second sampler in the program: the Beta guide's gamma sampler alone costs 0.7 s to
    compile)."""
    n_seeds = len(next(iter(params.values())))
    keys = jax.random.split(jax.random.PRNGKey(seed), 3 * n_seeds).reshape(n_seeds, 3, -1)
    num_draws = max(num_samples, num_weighted)

    def one(keys3, p):
        drawn = Predictive(guide, params=p, num_samples=num_draws)(keys3[0], **fit_kwargs)
        out = {"posterior": {k: v[:num_samples] for k, v in drawn.items()}}
        if num_weighted:
            out["log_weights"] = jax.vmap(lambda draw: _log_weight(model, guide, p, fit_kwargs, draw))(drawn)
        if observed_sites:
            from_guide = Predictive(model, guide=guide, params=p, num_samples=num_mock,
                                    return_sites=observed_sites)(keys3[1], **predict_kwargs)
            latents = {k: v for k, v in out["posterior"].items() if k in latent_sites}
            from_samples = Predictive(model, posterior_samples=latents,
                                      return_sites=observed_sites)(keys3[2], **predict_kwargs)
            out["mock_from_guide"] = from_guide
            out["mock_from_samples"] = from_samples
        return out

    # one compiled program for all seeds and paths (vmap alone would run op by op)
    paths = jax.jit(jax.vmap(one))(keys, params)
    weights = paths.pop("log_weights", None)
    result = {name: {k: np.asarray(v) for k, v in sites.items()} for name, sites in paths.items()}
    result.setdefault("mock_from_guide", {})
    result.setdefault("mock_from_samples", {})
    result["log_weights"] = (np.asarray(weights, dtype=np.float64) if weights is not None
                             else np.zeros((n_seeds, 0)))
    return result


def _log_weight(model, guide, params: dict, model_kwargs: dict, draw: dict):
    """log p(x, z) - log q(z) at one draw z of every guide site (as Predictive returns them)."""
    from numpyro.infer.util import log_density

    # seeded in case a site is missing from the draw: it is then sampled, not an error
    guide_log, guide_trace = log_density(handlers.substitute(handlers.seed(guide, 0), data=draw),
                                         (), model_kwargs, params)
    model_log, _ = log_density(handlers.replay(handlers.seed(model, 1), guide_trace), (),
                               model_kwargs, params)
    return model_log - guide_log


def log_weights(model, guide, params: dict, model_kwargs: dict, draws: dict) -> np.ndarray:
    """log p(x, z) - log q(z) at given draws of the guide. ``params``: (seed, ...) arrays;
    ``draws``: {site: (seed, draw, ...)}, e.g. a predictive file's posterior. -> (seed, draw)."""
    per_seed = jax.vmap(lambda d, p: jax.vmap(lambda x: _log_weight(model, guide, p, model_kwargs, x))(d))
    return np.asarray(jax.jit(per_seed)(draws, params), dtype=np.float64)
