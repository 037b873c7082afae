"""The post's three predictive paths, for every seed of a fit at once.

1. posterior samples from the guide (``Predictive(guide, params=...)``);
2. mock observations from model + guide (the post's ``Predictive(model, guide=guide, params=...)``);
3. mock observations from model + the samples of path 1 (``Predictive(model, posterior_samples=...)``),
   for its first samples: as many mock sets as path 2.

Path 2 is drawn as ``Predictive(model, guide=guide)`` draws it, a fresh z ~ q and then the
observations given z, but with its z taken from the guide's one sampler call of path 1 (draws
beyond path 1's, so independent of them) and its observations from path 3's one model call.
One sampler and one model loop per program instead of two each: the Beta guide's gamma sampler
costs about 0.4 s to compile again. The guide also sees the data, as in path 1 and in the fit.

Mock observations are drawn as the post draws them: the model called with its observed
arrays set to None, so that it simulates at its default size. They serve a histogram and
ArviZ's posterior predictive checks (``az.plot_ppc`` draws 100 sets), not the statistics, so
both paths draw ``num_mock`` sets, fewer where one set is so large that they would exceed
``max_mock_values`` values per seed (``mock_sets``): 5,000 observations give 200 sets, 4 MB of
float32 per seed and path, where one set per posterior sample gave 200 MB.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.infer import Predictive

from sviflow.compiling import jit_once, split_keys


def site_names(model, model_kwargs: dict, seed: int = 0) -> tuple[list[str], list[str]]:
    """-> (latent sample sites, observed sample sites) of ``model`` on its data."""
    from numpyro.infer.initialization import init_to_uniform

    latent, observed = [], []

    def names():
        # substitute: an improper prior (ImproperUniform) cannot be sampled, only initialised
        substituted = handlers.substitute(handlers.seed(model, seed), substitute_fn=init_to_uniform)
        trace = handlers.trace(substituted).get_trace(**model_kwargs)
        latent.extend(
            n
            for n, s in trace.items()
            if s["type"] == "sample"
            and not s["is_observed"]
            and not s.get("infer", {}).get("is_auxiliary", False)
        )
        # numpyro.factor is an observed sample site of a Unit distribution: not data
        observed.extend(
            n
            for n, s in trace.items()
            if s["type"] == "sample" and s["is_observed"] and type(s["fn"]).__name__ != "Unit"
        )

    jax.make_jaxpr(names)()  # traced on abstract values: no XLA compile per eager op
    return latent, observed


def mock_sets(
    model, predict_kwargs: dict, observed_sites: list[str], num_mock: int, max_values: int | None
) -> int:
    """How many mock observation sets to draw per seed and path: ``num_mock``, or fewer so that
    a path holds at most ``max_values`` values per seed (at least one set); 0 without observed
    sites. One set's size is read from the model traced on abstract values."""
    if not observed_sites:
        return 0
    if not max_values:
        return num_mock
    from numpyro.infer.initialization import init_to_uniform

    sizes = []

    def size():
        substituted = handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
        trace = handlers.trace(substituted).get_trace(**predict_kwargs)
        sizes.append(sum(int(np.prod(jnp.shape(trace[s]["value"]))) for s in observed_sites if s in trace))

    jax.make_jaxpr(size)()
    return max(1, min(num_mock, int(max_values) // max(1, sizes[0])))


def predictive_paths(
    model,
    guide,
    params: dict,
    fit_kwargs: dict,
    predict_kwargs: dict,
    observed_sites: list[str],
    latent_sites: list[str],
    *,
    num_samples: int,
    num_mock: int,
    seed: int,
    num_weighted: int = 0,
    max_mock_values: int | None = None,
    deterministic_sites=(),
    keys=None,
    lanes: int | None = None,
    row_kwargs: tuple[dict, dict] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``params``: (seed, ...) arrays, as a fit stores them. -> the three paths, each a dict of
    (seed, draw, ...) arrays, and ``log_weights`` (seed, draw): log p(x, z) - log q(z) of the
    first ``max(num_samples, num_weighted)`` draws z of path 1 (the check's ELBO and k-hat).
    Path 1 holds the model's latent sites only: a guide's auxiliary sites (an autoguide's
    ``_auto_latent``) are the same draws again, before their transform.

    The guide is sampled once, ``max(num_samples, num_weighted) + mock`` draws, ``mock`` from
    ``mock_sets`` (no mock without observed sites): path 1 keeps the first ``num_samples``, the
    weights are the guide's and the model's log densities at the first ``max(num_samples,
    num_weighted)`` (no second sampler in the program), and the last ``mock`` are path 2's
    latents. The model then simulates once, for path 2's latents and the first ``mock`` of
    path 1's together.

    ``deterministic_sites`` (the model's ``numpyro.deterministic`` sites, a transformed
    parameter such as theta = mu + tau * theta_raw) are computed by the model at path 1's
    latents, on the data, and stored in path 1 beside them.

    A batch of fits (``sviflow.steps.predict_batch``) passes every fit's seeds as rows of
    ``params``, their ``keys`` (:func:`seed_keys` of each fit) and ``lanes``: the rows then run
    ``lanes`` at a time (``sviflow.engine.grouped_vmap``), so that a fit's draws do not depend
    on the other fits of its batch; with ``row_kwargs`` (the data arrays of ``fit_kwargs`` and
    of ``predict_kwargs`` of every row, a leading row axis each) every row has its fit's data,
    as an argument of the program."""
    n_seeds = len(next(iter(params.values())))
    if keys is None:
        keys = seed_keys(seed, n_seeds)
    num_draws = max(num_samples, num_weighted)
    num_mock = mock_sets(model, predict_kwargs, observed_sites, num_mock, max_mock_values)
    from_samples = min(num_mock, num_samples)

    def one(keys2, p, rows=None):
        fit_kw, predict_kw = (
            (fit_kwargs, predict_kwargs)
            if rows is None
            else ({**fit_kwargs, **rows[0]}, {**predict_kwargs, **rows[1]})
        )
        drawn = Predictive(guide, params=p, num_samples=num_draws + num_mock)(keys2[0], **fit_kw)
        out = {"posterior": {k: v[:num_samples] for k, v in drawn.items() if k in latent_sites}}
        if deterministic_sites:
            out["posterior"].update(
                Predictive(
                    model, posterior_samples=dict(out["posterior"]), return_sites=list(deterministic_sites)
                )(keys2[1], **fit_kw)
            )
        if num_weighted:
            weighted = {k: v[:num_draws] for k, v in drawn.items()}
            out["log_weights"] = jax.vmap(lambda draw: _log_weight(model, guide, p, fit_kw, draw))(weighted)
        if observed_sites:
            # path 2's latents (draws num_draws.. of the guide), then path 3's (path 1's draws)
            latents = {
                k: jnp.concatenate([v[num_draws:], v[:from_samples]])
                for k, v in drawn.items()
                if k in latent_sites
            }
            mock = Predictive(model, posterior_samples=latents, return_sites=observed_sites)(
                keys2[1], **predict_kw
            )
            out["mock_from_guide"] = {k: v[:num_mock] for k, v in mock.items()}
            out["mock_from_samples"] = {k: v[num_mock:] for k, v in mock.items()}
        return out

    # one compiled program for all seeds and paths (vmap alone would run op by op)
    if row_kwargs is not None:
        from sviflow.engine import grouped_vmap

        mapped = grouped_vmap(one, lanes) if lanes else jax.vmap(one)
        paths = jit_once(mapped)(keys, params, tuple(row_kwargs))
    elif lanes:
        from sviflow.engine import grouped_vmap

        paths = jit_once(grouped_vmap(one, lanes))(keys, params)
    else:
        paths = jit_once(jax.vmap(one))(keys, params)
    weights = paths.pop("log_weights", None)
    result = {name: {k: np.asarray(v) for k, v in sites.items()} for name, sites in paths.items()}
    result.setdefault("mock_from_guide", {})
    result.setdefault("mock_from_samples", {})
    result["log_weights"] = (
        np.asarray(weights, dtype=np.float64) if weights is not None else np.zeros((n_seeds, 0))
    )
    return result


def seed_keys(seed: int, n_seeds: int):
    """The predictive paths' keys of a fit of ``n_seeds`` seeds: (seed, 2, key)."""
    return split_keys(seed, 2 * n_seeds).reshape(n_seeds, 2, -1)


def _log_weight(model, guide, params: dict, model_kwargs: dict, draw: dict):
    """log p(x, z) - log q(z) at one draw z of every guide site (as Predictive returns them)."""
    from numpyro.infer.util import log_density

    # seeded in case a site is missing from the draw: it is then sampled, not an error
    guide_log, guide_trace = log_density(
        handlers.substitute(handlers.seed(guide, 0), data=_without_deltas(guide, params, model_kwargs, draw)),
        (),
        model_kwargs,
        params,
    )
    model_log, _ = log_density(
        handlers.replay(handlers.seed(model, 1), guide_trace), (), model_kwargs, params
    )
    return model_log - guide_log


def _without_deltas(guide, params: dict, model_kwargs: dict, draw: dict) -> dict:
    """The draw without the guide's Delta sites, when every other sample site of the guide is in
    it: a Delta site (the mixture guide's x = cos(theta) u1 - sin(theta) u2, an autoguide's
    latents) is then computed again from its parents, as the draw computed it, and its log
    density is its own at its value. Substituted, the value drawn had to equal the one computed
    again to the last bit, or the Delta's log density is -inf and the weight +inf; the two are
    separate computations that XLA need not round alike (at backend level 0 they did not). A
    draw without the parents (a file's posterior) keeps its Delta sites."""
    # the guide's structure, read from a trace with every site of the draw given (no draws, and
    # nothing of it is used: XLA drops it)
    trace = handlers.trace(handlers.substitute(handlers.seed(guide, 0), data={**params, **draw})).get_trace(
        **model_kwargs
    )
    deltas, others = set(), set()
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        fn = site["fn"]
        while hasattr(fn, "base_dist"):  # masked, expanded, independent
            fn = fn.base_dist
        (deltas if isinstance(fn, dist.Delta) else others).add(name)
    if not deltas or not others <= set(draw):
        return draw
    return {name: value for name, value in draw.items() if name not in deltas}


def log_weights(model, guide, params: dict, model_kwargs: dict, draws: dict) -> np.ndarray:
    """log p(x, z) - log q(z) at given draws of the guide. ``params``: (seed, ...) arrays;
    ``draws``: {site: (seed, draw, ...)}, e.g. a predictive file's posterior. -> (seed, draw)."""
    per_seed = jax.vmap(lambda d, p: jax.vmap(lambda x: _log_weight(model, guide, p, model_kwargs, x))(d))
    return np.asarray(jit_once(per_seed)(draws, params), dtype=np.float64)


def _interval_bounds(constraint) -> tuple[float, float] | None:
    """(lower, upper) of a scalar real constraint (real, interval, greater_than, less_than and
    their kin: positive, unit_interval, ...), or None where that is not known here."""
    from numpyro.distributions import constraints

    if getattr(constraint, "is_discrete", False) or getattr(constraint, "event_dim", None) != 0:
        return None
    try:
        if isinstance(constraint, type(constraints.real)):
            return -np.inf, np.inf
        if isinstance(constraint, constraints.interval):
            bounds = constraint.lower_bound, constraint.upper_bound
        elif isinstance(constraint, constraints.greater_than):
            bounds = constraint.lower_bound, np.inf
        elif isinstance(constraint, constraints.less_than):
            bounds = -np.inf, constraint.upper_bound
        else:
            return None
        if any(np.ndim(b) for b in bounds):
            return None
        return float(bounds[0]), float(bounds[1])
    except (TypeError, jax.errors.ConcretizationTypeError):  # bounds that depend on the params
        return None


def _describe(bounds: tuple[float, float]) -> str:
    low, high = bounds
    if np.isinf(low) and np.isinf(high):
        return "the real line"
    return f"({low:g}, {high:g})"


def support_excess(
    model, guide, params: dict, model_kwargs: dict, latent_sites, lanes: int | None = None
) -> dict:
    """Latent sites where the guide's distribution has a wider support than the model's prior,
    and the probability mass the guide puts outside the model's support, per seed.

    Wherever that mass is not zero, KL(q || p) is infinite and the ELBO is -inf, whatever a
    finite number of draws says (the Normal guide of the coin's fairness, on the real line, for a
    posterior on (0, 1)). Only scalar sites that the guide samples from a distribution with a
    real or interval support are compared: a Delta site (an autoguide's, or a transformed
    auxiliary's) declares the real line whatever its values, so it says nothing here.

    ``params``: (seed, ...) arrays, as a fit stores them. -> {site: {"guide_support",
    "model_support", "mass_outside": (seed,) array, NaN where the guide has no cdf}}.
    """

    def guide_trace(p):
        return handlers.trace(handlers.substitute(handlers.seed(guide, 0), data=p)).get_trace(**model_kwargs)

    wider = {}  # site -> (guide bounds, model bounds)

    def structure(p):
        trace = guide_trace(p)
        model_trace = handlers.trace(handlers.replay(handlers.seed(model, 1), trace)).get_trace(
            **model_kwargs
        )
        for site in latent_sites:
            g, m = trace.get(site), model_trace.get(site)
            if not g or not m or g["type"] != "sample" or isinstance(g["fn"], dist.Delta):
                continue
            bounds = _interval_bounds(g["fn"].support), _interval_bounds(m["fn"].support)
            if None not in bounds and (bounds[0][0] < bounds[1][0] or bounds[0][1] > bounds[1][1]):
                wider[site] = bounds

    # traced on abstract values: the supports only
    jax.make_jaxpr(structure)({name: value[0] for name, value in params.items()})
    if not wider:
        return {}

    def mass(p):
        trace, out = guide_trace(p), {}
        for site, (_, (low, high)) in wider.items():
            fn = trace[site]["fn"]
            try:
                out[site] = (fn.cdf(low) if np.isfinite(low) else 0.0) + (
                    1.0 - fn.cdf(high) if np.isfinite(high) else 0.0
                )
            except NotImplementedError:  # no cdf: the mass is left unknown (NaN)
                pass
        return out

    if lanes:
        from sviflow.engine import grouped_vmap

        masses = jit_once(grouped_vmap(mass, lanes))(params)
    else:
        masses = jit_once(jax.vmap(mass))(params)
    n_seeds = len(next(iter(params.values())))
    return {
        site: {
            "guide_support": _describe(guide_bounds),
            "model_support": _describe(model_bounds),
            "mass_outside": (
                np.asarray(masses[site], dtype=np.float64).reshape(n_seeds)
                if site in masses
                else np.full(n_seeds, np.nan)
            ),
        }
        for site, (guide_bounds, model_bounds) in wider.items()
    }
