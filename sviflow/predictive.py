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

    # substitute: an improper prior (ImproperUniform) cannot be sampled, only initialised
    substituted = handlers.substitute(handlers.seed(model, seed), substitute_fn=init_to_uniform)
    trace = handlers.trace(substituted).get_trace(**model_kwargs)
    latent = [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
              and not s.get("infer", {}).get("is_auxiliary", False)]
    # numpyro.factor is an observed sample site of a Unit distribution: not data
    observed = [n for n, s in trace.items() if s["type"] == "sample" and s["is_observed"]
                and type(s["fn"]).__name__ != "Unit"]
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
