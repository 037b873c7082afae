"""The fit engine: SVI as ``lax.scan`` in chunks, with progress between chunks.

numpyro's ``svi.run(progress_bar=True)`` steps from Python and stacks a list of scalars at the
end, which grows much faster than linearly with the number of steps; one ``lax.scan`` has no
progress at all. Here the steps run as one compiled chunk function called ``chunks`` times:
the same updates in the same order as ``svi.run(progress_bar=False)``, the same numbers, a
progress line per chunk, and a thinned trajectory of every parameter recorded on the way.

Several seeds run as one ``vmap`` over the SVI state: a leading ``seed`` axis everywhere.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sviflow.compiling import jit_once, split_keys

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a fit leaves: every array has a leading ``seed`` axis."""

    seeds: list[int]
    losses: np.ndarray  # (seed, step)
    params: dict[str, np.ndarray]  # (seed, ...)
    trajectory_step: np.ndarray  # (point,)
    trajectory: dict[str, np.ndarray]  # (seed, point, ...)
    timings: dict[str, float] = field(default_factory=dict)
    last_params: dict[str, np.ndarray] | None = None  # (seed, ...) the last iterate
    stop: dict | None = None  # how the run ended, the rule's final windows, lowered step sizes
    moments: dict | None = None  # {"mean", "sd": (seed, point, component), "labels": [...]}
    step_size: np.ndarray | None = None  # (seed, point) where the step size can be lowered


def enable_compilation_cache(directory) -> None:
    """A persistent XLA cache shared by every job, so reruns skip compilation."""
    if not directory:
        return
    import os

    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:  # a file in its place (the workflow refuses it before any job)
        from sviflow.errors import ConfigError

        raise ConfigError(
            f"engine.cache_dir: cannot use {str(directory)!r} as the compilation "
            f"cache's folder: {error.strerror or error}; give a folder's path, or '' "
            f"to turn the cache off"
        ) from error
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no minimum (0: JAX's default)


def plan_chunks(steps: int, chunks: int, trajectory_points: int) -> tuple[int, int, int]:
    """-> (thin, blocks per chunk, number of chunks): a block is ``thin`` steps followed by a
    trajectory point; a chunk is a whole number of blocks, so one compiled function serves.

    The compiled chunk depends on ``thin``, the blocks per chunk and whether the last chunk
    runs past ``steps`` (it is padded), never on ``steps`` itself: a changed step count reruns
    the fit from the compilation cache as long as these stay. So ``thin`` is rounded down to
    1, 2 or 5 times a power of ten (between trajectory_points and 2.5 x trajectory_points
    points are stored), and a chunk is trajectory_points / chunks blocks (between ``chunks``
    and 2.5 x ``chunks`` progress lines; fewer when steps < trajectory_points). Round step
    counts then fill whole chunks: 10,000 and 12,000 steps run the same program, unpadded.
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    points = max(1, trajectory_points)
    thin = _round_down_125(max(1, steps // points))
    per_chunk = max(1, points // max(1, chunks))
    return thin, per_chunk, math.ceil(math.ceil(steps / thin) / per_chunk)


def _round_down_125(value: int) -> int:
    """The largest of 1, 2, 5, 10, 20, 50, ... that is <= value (value >= 1)."""
    scale = 10 ** (len(str(int(value))) - 1)
    return max(m * scale for m in (1, 2, 5) if m * scale <= value)


def fit_svi(
    svi,
    steps,
    seeds,
    model_kwargs: dict | None = None,
    *,
    chunks: int = 20,
    trajectory_points: int = 1000,
    stable_update: bool = False,
    progress: bool = True,
    progress_file=None,
    latent_sites=None,
    rule: dict | None = None,
    moment_draws: int = 200,
    moment_seed: int = 0,
    budget: dict | None = None,
    decay: dict | None = None,
    init_params: dict | None = None,
    initial_state=None,
    lanes: int | None = None,
    lane_kwargs: dict | None = None,
) -> FitResult:
    """Run ``svi`` (a ``numpyro.infer.SVI``) for ``steps`` steps from each seed.

    With one seed the updates are exactly those of ``svi.run(PRNGKey(seed), steps,
    progress_bar=False)``; with several, the same computation under ``vmap``.

    With ``latent_sites`` (the model's latent sample sites), the guide's mean and sd of each of
    their components are estimated at every trajectory point (``moment_draws`` draws, the same
    noise at every point) and the convergence rule of :mod:`sviflow.convergence` (``rule``) is
    applied: where a seed's window is stationary, its reported params are the average of its
    window's iterates in unconstrained space (the last iterate is kept too). With ``budget``
    (``{"min": m, "max": M}``, ``steps`` is then ignored) the fit stops at the first chunk after
    ``m`` steps where every seed meets the rule, or after ``M``; with ``decay``
    (``{"factor": 0.5, "max_decays": 10}``) a seed whose window is stationary but not yet
    precise has its step size lowered by ``factor`` (the optimizer must keep its step size in
    its state: ``sviflow.optim.make_optimizer(..., adaptive=True)``). ``init_params``:
    the guide's initial params (constrained), the same for every seed (``sviflow.laplace``).

    ``initial_state`` (a state with a leading axis of one lane per seed, from :func:`fit_batch`)
    replaces the init; with ``lanes``, every vmapped computation runs ``lanes`` seeds wide,
    group after group (:func:`grouped_vmap`), so that a seed's numbers depend on the width,
    never on how many groups there are nor on the other seeds of its group. ``lane_kwargs``
    (with ``initial_state``): the model's data arrays of every lane, a leading lane axis each
    (:func:`fit_batch` over datasets of one shape); they replace those of ``model_kwargs``
    inside the compiled programs, whose eager set-up calls see ``model_kwargs``.
    """
    from sviflow import convergence

    seeds = [int(s) for s in np.atleast_1d(seeds)]
    model_kwargs = model_kwargs or {}
    rule = convergence.settings(rule)
    if budget is not None:
        min_steps, steps = int(budget["min"]), int(budget["max"])
        if not 1 <= min_steps <= steps:
            raise ValueError(f"steps: min ({min_steps}) must be between 1 and max ({steps})")
        thin, per_chunk, _ = plan_chunks(min_steps, chunks, trajectory_points)
        n_chunks = math.ceil(math.ceil(steps / thin) / per_chunk)
    else:
        min_steps = steps = int(steps)
        thin, per_chunk, n_chunks = plan_chunks(steps, chunks, trajectory_points)
    padded = thin * per_chunk * n_chunks > steps
    update = svi.stable_update if stable_update else svi.update
    several = len(seeds) > 1 or initial_state is not None

    def vmap(function, in_axes=0):
        return grouped_vmap(function, lanes, in_axes) if lanes else jax.vmap(function, in_axes=in_axes)

    if lane_kwargs is not None and initial_state is None:
        raise ValueError("lane_kwargs: a batch's lanes start from its initial_state (fit_batch)")

    # ``steps`` is an argument of the compiled chunk (``total``), not a constant in it: the
    # same program serves every step count with the same plan (see plan_chunks). ``lane``: a
    # lane's data arrays (lane_kwargs), or None where every lane has model_kwargs' own
    def chunk(state, first_step, total, lane=None):
        kwargs = model_kwargs if lane is None else {**model_kwargs, **lane}

        def one_step(carry, step_index):
            state, total = carry

            def advance(s):
                return update(s, **kwargs)

            if padded:
                # steps past the end leave the state as it was (its rng key too): same numbers.
                # Only where needed: the masked step is up to 15 % slower (32 particles)
                new_state, loss = lax.cond(
                    step_index < total, advance, lambda s: (s, jnp.nan * jnp.zeros(())), state
                )
            else:
                new_state, loss = advance(state)
            return (new_state, total), loss

        def block(carry, first_step):
            carry, losses = lax.scan(one_step, carry, first_step + jnp.arange(thin))
            # the unconstrained params too: the iterate average is taken in that space
            return carry, (losses, svi.get_params(carry[0]), svi.optim.get_params(carry[0].optim_state))

        starts = first_step + thin * jnp.arange(per_chunk)
        (state, _), out = lax.scan(block, (state, total), starts)
        return state, out

    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    start = time.perf_counter()
    if getattr(svi.guide, "prototype_trace", False) is None:
        # an autoguide sets itself up on its first call: eagerly, or it keeps jit's tracers
        # (sviflow.resolve.prepare_guide has done this already in the workflow's steps)
        svi.init(keys[0], **model_kwargs)
    # svi.init jitted: one compile, not one per eager op (an XLA compile each, 1-2 s a job)
    if initial_state is not None:
        state = initial_state
        if lane_kwargs is None:
            run_chunk = jax.jit(vmap(chunk, in_axes=(0, None, None)))
        else:
            run_chunk = jax.jit(vmap(chunk, in_axes=(0, None, None, 0)))
    elif not several:
        state = jit_once(lambda key: svi.init(key, init_params=init_params, **model_kwargs))(keys[0])
        run_chunk = jax.jit(chunk)
    else:
        state = jit_once(vmap(lambda key: svi.init(key, init_params=init_params, **model_kwargs)))(keys)
        run_chunk = jax.jit(vmap(chunk, in_axes=(0, None, None)))
    if _holds_tracers(svi.constrain_fn):
        # a constraint built from jnp values inside the guide (interval(jnp.max(x), ...)): init
        # keeps it in svi.constrain_fn, so the jitted init left jit's tracers there. An eager
        # init sets it again from concrete values (the state above is the same either way)
        svi.init(keys[0], **model_kwargs)
    lane = () if lane_kwargs is None else (lane_kwargs,)
    compiled = run_chunk.lower(state, jnp.int32(0), jnp.int32(0), *lane).compile()
    moments = labels = None
    if latent_sites:
        moments, labels = guide_moments(
            svi.guide,
            list(latent_sites),
            model_kwargs,
            moment_draws,
            moment_seed,
            several,
            lanes,
            lane_kwargs,
        )
    compile_seconds = time.perf_counter() - start

    seed_axis = (lambda a: a) if several else (lambda a: a[None])
    n_seeds = len(seeds)
    loss_chunks = []
    kept_steps = np.zeros(0, np.int64)  # the trajectory points kept (all of them, or every
    kept_params, kept_free, kept_mean, kept_sd, kept_rate = None, None, None, None, None
    factor = 1  # ... factor-th point once a budget's run grows past 2 x trajectory_points)
    since = np.zeros(n_seeds, np.int64)  # the step of each seed's last lowered step size
    decays = []
    rates = _step_sizes(state, n_seeds) if decay else None
    levels = [[] for _ in seeds]  # per seed: the settled guide at each step size (a budget's)
    confirmed = [False] * n_seeds
    stop_reason, last_params = None, None
    bar = _progress_bar(steps, progress, progress_file)
    start = time.perf_counter()
    done = 0
    for index in range(n_chunks):
        state, (losses, params, free) = compiled(
            state, jnp.int32(index * per_chunk * thin), jnp.int32(steps), *lane
        )
        losses = np.asarray(losses)  # waits for the chunk: the bar shows real progress
        loss_chunks.append(seed_axis(losses).reshape(n_seeds, -1))
        done = min(steps, (index + 1) * per_chunk * thin)
        params, free = jax.device_get(params), jax.device_get(free)
        point_steps = np.minimum(index * per_chunk * thin + thin * np.arange(1, per_chunk + 1), steps)
        valid = point_steps > index * per_chunk * thin  # padding blocks past the end
        valid &= np.concatenate([[True], point_steps[1:] > point_steps[:-1]])
        chunk_arrays = {
            "params": {k: seed_axis(np.asarray(v))[:, valid] for k, v in params.items()},
            "free": {k: seed_axis(np.asarray(v))[:, valid] for k, v in free.items()},
        }
        last_params = {k: v[:, -1] for k, v in chunk_arrays["params"].items()}
        if moments is not None:
            mean, sd = jax.device_get(moments(params))
            chunk_arrays["mean"] = seed_axis(np.asarray(mean))[:, valid]
            chunk_arrays["sd"] = seed_axis(np.asarray(sd))[:, valid]
        if rates is not None:
            chunk_arrays["rate"] = np.repeat(rates[:, None], int(valid.sum()), axis=1)
        keep = (np.arange(index * per_chunk, (index + 1) * per_chunk)[valid] + 1) % factor == 0
        kept_steps = np.concatenate([kept_steps, point_steps[valid][keep]])
        kept_params = _append(kept_params, chunk_arrays["params"], keep)
        kept_free = _append(kept_free, chunk_arrays["free"], keep)
        if moments is not None:
            kept_mean = _append(kept_mean, chunk_arrays["mean"], keep)
            kept_sd = _append(kept_sd, chunk_arrays["sd"], keep)
        if rates is not None:
            kept_rate = _append(kept_rate, chunk_arrays["rate"], keep)
        if budget is not None and len(kept_steps) > 2 * trajectory_points:
            factor *= 2
            thinned = (kept_steps // thin) % factor == 0
            kept_steps = kept_steps[thinned]
            kept_params, kept_free, kept_mean, kept_sd, kept_rate = (
                _append(None, arrays, thinned) if arrays is not None else None
                for arrays in (kept_params, kept_free, kept_mean, kept_sd, kept_rate)
            )
        if bar is not None:
            recent = loss_chunks[-1][:, : done - index * per_chunk * thin]
            with warnings.catch_warnings():  # an all-NaN chunk (a diverged fit) shows nan
                warnings.simplefilter("ignore", RuntimeWarning)
                shown = np.nanmean(recent)  # NaN where stable_update skipped a step
            bar.set_postfix_str(f"mean loss of chunk {shown:.4f}", refresh=False)
            bar.update(done - bar.n)
        if budget is None or moments is None or done >= steps:
            continue
        if done < min_steps:
            continue
        current = convergence.windows(kept_steps, kept_mean, kept_sd, rule, since)
        if rates is None:  # the step size stays: the rule alone decides
            if all(w.converged(rule) for w in current):
                confirmed = [True] * n_seeds
                stop_reason = f"converged: the rule held at step {done}"
                break
            continue
        # RAABBVI's test (Welandawe et al. 2024): a constant step's stationary guide can sit
        # off the optimum (a slow wander longer than the window, a bias of the step size); a
        # seed is done when its guide has settled at this step size *and* halving the step
        # size moved it by less than the rule's tolerances. Settled but not yet confirmed:
        # remember this level's guide and lower the step size.
        lowered = []
        for i, w in enumerate(current):
            if confirmed[i] or not (w.converged(rule) or w.stationary(rule)):
                continue
            level = _level(kept_steps, kept_mean[i], kept_sd[i], rule, int(since[i]), done, float(rates[i]))
            if levels[i] and w.converged(rule):
                change = convergence.level_change(levels[i][-1], level)
                level.update(change)
                if change["shift"] < rule["mean_shift"] and change["sd_change"] < math.log1p(
                    rule["sd_change"]
                ):
                    confirmed[i] = True
                    levels[i].append(level)
                    continue
            levels[i].append(level)
            if sum(1 for d in decays if d[1] == seeds[i]) < int(decay["max_decays"]):
                lowered.append(i)
            elif w.converged(rule):
                confirmed[i] = True  # no lowering left: the rule alone
        if all(confirmed):
            stop_reason = (
                f"converged: the rule held at step {done}, and halving the step size "
                f"moved no guide mean by {rule['mean_shift']:g} sd or more"
            )
            break
        if lowered:
            rates = rates.copy()
            for i in lowered:
                rates[i] *= float(decay["factor"])
                since[i] = done
                decays.append((done, seeds[i], float(rates[i])))
                log.info(
                    "seed %d: settled at step %d: step size lowered to %.3g, to see whether the guide moves",
                    seeds[i],
                    done,
                    rates[i],
                )
            state = _set_step_sizes(state, rates, several)
    run_seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if stop_reason is None:
        stop_reason = (
            f"fixed number of steps ({steps})"
            if budget is None
            else f"the budget of {steps} steps ran out before the rule held"
        )
    losses = np.concatenate(loss_chunks, axis=1)[:, :done]
    windows_at_end = (
        convergence.windows(kept_steps, kept_mean, kept_sd, rule, since) if moments is not None else None
    )
    final = dict(last_params)
    averaged = [False] * n_seeds
    if windows_at_end is not None:
        # once a seed's iterates are stationary, its guide is their average (Polyak-Ruppert,
        # in unconstrained space: Dhaka et al. 2020), which the constant step's jitter leaves
        averaged = [w.stationary(rule) for w in windows_at_end]
        if any(averaged):
            means = {}
            for name, value in kept_free.items():
                rows = []
                for i in range(len(windows_at_end)):
                    chosen = convergence.window_indices(kept_steps, rule, int(since[i]))
                    rows.append(value[i, chosen].mean(axis=0) if averaged[i] else value[i, -1])
                means[name] = np.stack(rows)
            constrained = jax.device_get(jit_once(vmap(svi.constrain_fn))(means))
            final = {
                name: np.where(
                    np.reshape(averaged, (-1,) + (1,) * (np.ndim(value) - 1)),
                    np.asarray(constrained[name]).astype(np.asarray(value).dtype),
                    value,
                )
                for name, value in last_params.items()
            }
    timings = {
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "steps_per_second": done * n_seeds / run_seconds if run_seconds > 0 else float("inf"),
        "chunks": index + 1,
        "thin": thin * factor,
    }
    log.info(
        "fit of %d steps x %d seed(s): compile %.2f s, run %.2f s, %.0f steps/s; %s",
        done,
        n_seeds,
        compile_seconds,
        run_seconds,
        timings["steps_per_second"],
        stop_reason,
    )
    stop = {
        "mode": "budget" if budget is not None else "fixed",
        "steps_run": int(done),
        "reason": stop_reason,
        "since_step": since.tolist(),
        "averaged": averaged,
        "decays": [list(d) for d in decays],
        "confirmed": confirmed,
        "levels": levels if budget is not None and decay else None,
        "step_size": rates.tolist() if rates is not None else None,
        "windows": [
            {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in w.as_dict().items()}
            for w in windows_at_end
        ]
        if windows_at_end is not None
        else None,
    }
    return FitResult(
        seeds,
        np.asarray(losses),
        {k: np.asarray(v) for k, v in final.items()},
        kept_steps,
        {k: np.asarray(v) for k, v in kept_params.items()},
        timings,
        last_params={k: np.asarray(v) for k, v in last_params.items()},
        stop=stop,
        moments=(
            {"mean": kept_mean, "sd": kept_sd, "labels": convergence.component_labels(labels)}
            if moments is not None
            else None
        ),
        step_size=kept_rate,
    )


def initial_params(guide, model_kwargs: dict, seed: int = 0) -> dict:
    """The guide's params as its own initialisation sets them (constrained): what
    ``svi.init`` starts from, to pass as one fit's ``init_params`` in a batch."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(guide, jax.random.PRNGKey(seed))).get_trace(**model_kwargs)
    return {name: site["value"] for name, site in trace.items() if site["type"] == "param"}


def fit_batch(
    svi, members: list[dict], steps: int, model_kwargs: dict | None = None, *, lanes: int = 8, **options
):
    """Fits that share one program, run as one: ``svi`` is built for any of them (the same
    model, guide, ELBO and optimizer up to its step size, which must keep its step size in its
    state: ``make_optimizer(..., adaptive=True)``); each member is ``{"seeds": [...],
    "init_params": {param: constrained value}, "step_size": float}``, with ``"kwargs"`` (its
    data: the model's keyword arrays, of the same names, shapes and dtypes for every member)
    where the members' data may differ: every lane then gets its fit's data as an argument of
    the program, not as a constant in it (``model_kwargs``, any member's, serves the eager
    set-up; :func:`data_may_be_arguments` says whether the model allows it, and
    :class:`DataDependentConstraints` is raised where the guide's constraints or the model
    need concrete data: run one batch per dataset, without ``"kwargs"``, then). Every (member,
    seed) is a
    lane of one vmapped program, compiled once and run ``lanes`` lanes at a time (the last
    group padded with copies of the first lane, whose results are dropped). -> one
    :class:`FitResult` per member, as :func:`fit_svi` gives for that fit alone, except that
    its numbers are those of a ``lanes``-wide vmap: they do not depend on the other members.
    ``options``: those of :func:`fit_svi` (a fixed number of steps: no budget)."""
    if options.get("budget") is not None:
        raise ValueError("a batch runs a fixed number of steps: each budget fit stops on its own")
    model_kwargs = model_kwargs or {}
    lane_of = [(index, int(seed)) for index, member in enumerate(members) for seed in member["seeds"]]
    used = len(lane_of)
    order = lane_of + [lane_of[0]] * (-used % lanes)
    keys = jnp.stack([jax.random.PRNGKey(seed) for _, seed in order])

    def stacked(trees):
        return jax.tree.map(lambda *values: jnp.stack([jnp.asarray(v) for v in values]), *trees)

    starts = stacked([members[index]["init_params"] for index, _ in order])
    lane_kwargs = None
    if any("kwargs" in member for member in members):
        lane_kwargs = stacked([data_arrays(members[index]["kwargs"]) for index, _ in order])
    if getattr(svi.guide, "prototype_trace", False) is None:
        svi.init(keys[0], **model_kwargs)  # an autoguide sets itself up eagerly (see fit_svi)
    rates = np.asarray([members[index]["step_size"] for index, _ in order], np.float64)
    if lane_kwargs is None:
        init = jit_once(
            grouped_vmap(lambda key, start: svi.init(key, init_params=start, **model_kwargs), lanes)
        )
        state = _set_step_sizes(init(keys, starts), rates, several=True)
        result = fit_svi(
            svi, steps, [seed for _, seed in order], model_kwargs, initial_state=state, lanes=lanes, **options
        )
    else:
        init = jit_once(
            grouped_vmap(
                lambda key, start, lane: svi.init(key, init_params=start, **{**model_kwargs, **lane}), lanes
            )
        )
        try:
            state = init(keys, starts, lane_kwargs)
            if _holds_tracers(svi.constrain_fn):
                # the guide's constraints were built from traced values, possibly the data
                # (interval(0, jnp.max(x))): one set of transforms cannot serve every dataset
                raise DataDependentConstraints("the guide's constraints are built from traced values")
            state = _set_step_sizes(state, rates, several=True)
            result = fit_svi(
                svi,
                steps,
                [seed for _, seed in order],
                model_kwargs,
                initial_state=state,
                lanes=lanes,
                lane_kwargs=lane_kwargs,
                **options,
            )
        except jax.errors.JAXTypeError as error:  # a tracer where a concrete value was needed
            raise DataDependentConstraints(
                f"the model or guide needs its data as concrete values ({type(error).__name__})"
            ) from error
    per_member = []
    for index in range(len(members)):
        chosen = np.asarray([i for i, (owner, _) in enumerate(lane_of) if owner == index])
        per_member.append(_lanes(result, chosen, rates[chosen]))
    return per_member


class DataDependentConstraints(Exception):
    """Fits over several datasets that cannot share one program: run one per dataset (not a
    ValueError: the fit step would take it for a model that fails when traced)."""


def data_arrays(kwargs: dict) -> dict:
    """The model's keyword arguments that are data, arrays that a lane may have of its own
    (None, an observed site left to be predicted, is not)."""
    return {name: value for name, value in kwargs.items() if value is not None}


def data_signature(kwargs: dict) -> tuple:
    """What must be equal for datasets to share a program: names, shapes and dtypes."""
    return tuple(
        sorted(
            (name, None if value is None else (tuple(np.shape(value)), str(np.asarray(value).dtype)))
            for name, value in kwargs.items()
        )
    )


def data_may_be_arguments(model, kwargs: dict) -> bool:
    """Can fits of ``model`` on different datasets (of ``kwargs``' shapes) share a program whose
    arguments are their data? Not where the model needs its data as concrete values (a plate's
    size read from the data: a tracer is no number), nor where a latent site's support is built
    from the data (Uniform(0, max x)): an autoguide takes its transforms from the trace of one
    dataset, so they would be that dataset's for every lane. Traced once, on abstract data."""
    from numpyro import handlers

    arrays = data_arrays(kwargs)
    if not arrays:
        return True
    traced_support = []

    def run(lane):
        trace = handlers.trace(handlers.seed(model, 0)).get_trace(**{**kwargs, **lane})
        for site in trace.values():
            if site["type"] == "sample" and not site.get("is_observed"):
                traced_support.append(_holds_tracer(site["fn"].support))
        return jnp.zeros(())

    try:
        jax.make_jaxpr(run)(arrays)
    except jax.errors.JAXTypeError:
        return False
    return not any(traced_support)


def _holds_tracer(value, depth: int = 4) -> bool:
    """Is there a JAX tracer in ``value``, a constraint (its bounds, its base constraint)?"""
    if isinstance(value, jax.core.Tracer):
        return True
    if depth == 0:
        return False
    if isinstance(value, (list, tuple)):
        return any(_holds_tracer(v, depth - 1) for v in value)
    return any(_holds_tracer(v, depth - 1) for v in getattr(value, "__dict__", {}).values())


def _lanes(result: FitResult, chosen: np.ndarray, rates: np.ndarray) -> FitResult:
    """The lanes ``chosen`` of a batch's result: one fit's."""

    def pick(tree):
        return None if tree is None else {k: np.asarray(v)[chosen] for k, v in tree.items()}

    stop = dict(result.stop)
    for key in ("since_step", "averaged", "confirmed", "windows"):
        if stop.get(key) is not None:
            stop[key] = [stop[key][i] for i in chosen]
    stop["step_size"] = rates.tolist()
    moments = None
    if result.moments is not None:
        moments = {
            "mean": result.moments["mean"][chosen],
            "sd": result.moments["sd"][chosen],
            "labels": result.moments["labels"],
        }
    return FitResult(
        [result.seeds[i] for i in chosen],
        result.losses[chosen],
        pick(result.params),
        result.trajectory_step,
        pick(result.trajectory),
        dict(result.timings),
        last_params=pick(result.last_params),
        stop=stop,
        moments=moments,
        step_size=None if result.step_size is None else result.step_size[chosen],
    )


def _level(steps, mean, sd, rule, since: int, done: int, step_size: float) -> dict:
    """The guide settled at one step size: its window's average mean and sd per component."""
    from sviflow import convergence

    chosen = convergence.window_indices(steps, rule, since)
    return {
        "step": int(done),
        "step_size": step_size,
        "mean": np.asarray(mean)[chosen].mean(axis=0).tolist(),
        "sd": np.asarray(sd)[chosen].mean(axis=0).tolist(),
    }


def _append(store, arrays, keep):
    """Append the kept points (axis 1) of a chunk's arrays to ``store`` (None to start)."""
    if isinstance(arrays, dict):
        return {
            k: (v[:, keep] if store is None else np.concatenate([store[k], v[:, keep]], axis=1))
            for k, v in arrays.items()
        }
    return arrays[:, keep] if store is None else np.concatenate([store, arrays[:, keep]], axis=1)


def _inject_states(optim_state):
    """The optax ``inject_hyperparams`` states inside an optimizer state (depth first)."""
    if hasattr(optim_state, "hyperparams") and "learning_rate" in optim_state.hyperparams:
        return [optim_state]
    if isinstance(optim_state, (tuple, list)):
        return [s for part in optim_state for s in _inject_states(part)]
    return []


def _step_sizes(state, n_seeds: int):
    found = _inject_states(state.optim_state)
    if not found:
        raise ValueError(
            "the step size can only be lowered for an optimizer built with make_optimizer(..., adaptive=True)"
        )
    return np.broadcast_to(np.asarray(found[0].hyperparams["learning_rate"], np.float64), (n_seeds,)).copy()


def _set_step_sizes(state, rates, several: bool):
    """The SVI state with each seed's learning rate replaced (host side, between chunks)."""

    def replace(node):
        if hasattr(node, "hyperparams") and "learning_rate" in node.hyperparams:
            old = node.hyperparams["learning_rate"]
            new = jnp.asarray(rates if several else rates[0], dtype=jnp.asarray(old).dtype)
            return node._replace(hyperparams={**node.hyperparams, "learning_rate": new})
        if isinstance(node, tuple) and not hasattr(node, "_fields"):
            return tuple(replace(part) for part in node)
        if isinstance(node, list):
            return [replace(part) for part in node]
        return node

    return state._replace(optim_state=replace(state.optim_state))


def guide_moments(
    guide,
    latent_sites: list[str],
    model_kwargs: dict,
    num_draws: int,
    seed: int,
    several: bool,
    lanes: int | None = None,
    lane_kwargs: dict | None = None,
):
    """-> (function, labels): the function maps a chunk's params ((seed,) point, ...) to the
    guide's (mean, sd) of every latent component at each point, (..., point, component),
    from ``num_draws`` draws with the same keys at every point (common random numbers: the
    change from point to point is the guide's, not the draws' noise). ``lane_kwargs``: every
    lane's data (see :func:`fit_svi`)."""
    from numpyro import handlers

    keys = split_keys(seed, num_draws)
    shapes = {}

    def draw(params, key, kwargs):
        trace = handlers.trace(handlers.substitute(handlers.seed(guide, key), data=params)).get_trace(
            **kwargs
        )
        values = []
        for site in latent_sites:
            if site not in trace:
                raise KeyError(f"the guide has no site {site!r}, a latent site of the model")
            value = jnp.asarray(trace[site]["value"])
            shapes[site] = value.shape
            values.append(value.reshape(-1))
        return jnp.concatenate(values)

    def at_point(params, lane=None):
        kwargs = model_kwargs if lane is None else {**model_kwargs, **lane}
        values = jax.vmap(lambda key: draw(params, key, kwargs))(keys)
        return values.mean(axis=0), values.std(axis=0)

    if lane_kwargs is not None:
        # each lane its data: (lane, point, ...) params and (lane, ...) data
        per_lane = jax.vmap(at_point, in_axes=(0, None))
        compiled = jit_once(grouped_vmap(per_lane, lanes) if lanes else jax.vmap(per_lane))
        return (lambda params: compiled(params, lane_kwargs)), shapes
    per_points = jax.vmap(at_point)
    if not several:
        function = jit_once(per_points)
    else:
        function = jit_once(grouped_vmap(per_points, lanes) if lanes else jax.vmap(per_points))
    return function, shapes


def grouped_vmap(function, width: int, in_axes=0):
    """``jax.vmap(function, in_axes)`` run ``width`` lanes at a time: the mapped arguments'
    leading axis (a multiple of ``width``) is split into groups of ``width``, which ``lax.map``
    runs one after another, each through the same ``width``-wide vmapped program.

    XLA compiles a vmapped elementwise loop differently for different widths (measured: the
    loss of a Beta-guide fit differs in its last bits between a vmap of 4 and of 5 seeds), so a
    plain vmap over a batch of fits would give each fit numbers that depend on how many fits
    share its batch. A fixed width keeps each lane's numbers its own."""
    batched = jax.vmap(function, in_axes=in_axes)

    def run(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        mapped = [arg for arg, axis in zip(args, axes) if axis == 0]
        total = jax.tree.leaves(mapped)[0].shape[0]
        if total % width:
            raise ValueError(f"{total} lanes are not a whole number of groups of {width}")
        groups = total // width

        def body(group):
            parts = iter(group)
            return batched(*(next(parts) if axis == 0 else arg for arg, axis in zip(args, axes)))

        split = jax.tree.map(lambda x: x.reshape((groups, width) + x.shape[1:]), mapped)
        out = lax.map(body, split)
        return jax.tree.map(lambda x: x.reshape((total,) + x.shape[2:]), out)

    return run


def _holds_tracers(function) -> bool:
    """Does a ``functools.partial`` (numpyro's ``svi.constrain_fn``) hold a JAX tracer?"""
    bound = (getattr(function, "args", ()), getattr(function, "keywords", {}))
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(bound))


def _progress_bar(total: int, enabled: bool, stream):
    if not enabled:
        return None
    from tqdm import tqdm

    # mininterval=0: one line per chunk, so a log file shows every chunk's progress
    if stream is not None and not (hasattr(stream, "isatty") and stream.isatty()):
        stream = _Lines(stream)
    return tqdm(
        total=total,
        unit="step",
        mininterval=0,
        file=stream,
        ascii=stream is not None,
        dynamic_ncols=False,
        ncols=100,
    )


class _Lines:
    """A log file for tqdm: each redraw on a line of its own (tqdm redraws after a carriage
    return, which leaves a whole run on one line of a file)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> None:
        for part in text.split("\r"):
            if part.strip():
                self._stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self._stream.flush()
