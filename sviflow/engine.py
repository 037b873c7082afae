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


def enable_compilation_cache(directory) -> None:
    """A persistent XLA cache shared by every job, so reruns skip compilation."""
    if not directory:
        return
    import os

    os.makedirs(directory, exist_ok=True)
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


def fit_svi(svi, steps: int, seeds, model_kwargs: dict | None = None, *, chunks: int = 20,
            trajectory_points: int = 1000, stable_update: bool = False,
            progress: bool = True, progress_file=None) -> FitResult:
    """Run ``svi`` (a ``numpyro.infer.SVI``) for ``steps`` steps from each seed.

    With one seed the updates are exactly those of ``svi.run(PRNGKey(seed), steps,
    progress_bar=False)``; with several, the same computation under ``vmap``.
    """
    seeds = [int(s) for s in np.atleast_1d(seeds)]
    model_kwargs = model_kwargs or {}
    thin, per_chunk, n_chunks = plan_chunks(steps, chunks, trajectory_points)
    padded = thin * per_chunk * n_chunks > steps
    update = svi.stable_update if stable_update else svi.update

    # ``steps`` is an argument of the compiled chunk (``total``), not a constant in it: the
    # same program serves every step count with the same plan (see plan_chunks)
    def one_step(carry, step_index):
        state, total = carry

        def advance(s):
            return update(s, **model_kwargs)

        if padded:
            # steps past the end leave the state as it was (its rng key too): same numbers.
            # Only where needed: the masked step is up to 15 % slower (32 particles)
            new_state, loss = lax.cond(step_index < total, advance,
                                       lambda s: (s, jnp.nan * jnp.zeros(())), state)
        else:
            new_state, loss = advance(state)
        return (new_state, total), loss

    def block(carry, first_step):
        carry, losses = lax.scan(one_step, carry, first_step + jnp.arange(thin))
        return carry, (losses, svi.get_params(carry[0]))

    def chunk(state, first_step, total):
        starts = first_step + thin * jnp.arange(per_chunk)
        (state, _), out = lax.scan(block, (state, total), starts)
        return state, out

    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    start = time.perf_counter()
    if getattr(svi.guide, "prototype_trace", False) is None:
        # an autoguide sets itself up on its first call: eagerly, or it keeps jit's tracers
        # (sviflow.registry.prepare_guide has done this already in the workflow's steps)
        svi.init(keys[0], **model_kwargs)
    # svi.init jitted: one compile, not one per eager op (an XLA compile each, 1-2 s a job)
    if len(seeds) == 1:
        state = jax.jit(lambda key: svi.init(key, **model_kwargs))(keys[0])
        run_chunk = jax.jit(chunk)
    else:
        state = jax.jit(jax.vmap(lambda key: svi.init(key, **model_kwargs)))(keys)
        run_chunk = jax.jit(jax.vmap(chunk, in_axes=(0, None, None)))
    if _holds_tracers(svi.constrain_fn):
        # a constraint built from jnp values inside the guide (interval(jnp.max(x), ...)): init
        # keeps it in svi.constrain_fn, so the jitted init left jit's tracers there. An eager
        # init sets it again from concrete values (the state above is the same either way)
        svi.init(keys[0], **model_kwargs)
    compiled = run_chunk.lower(state, jnp.int32(0), jnp.int32(0)).compile()
    compile_seconds = time.perf_counter() - start

    loss_chunks, param_chunks = [], []
    bar = _progress_bar(steps, progress, progress_file)
    start = time.perf_counter()
    for index in range(n_chunks):
        state, (losses, params) = compiled(state, jnp.int32(index * per_chunk * thin),
                                           jnp.int32(steps))
        losses = np.asarray(losses)  # waits for the chunk: the bar shows real progress
        loss_chunks.append(losses)
        param_chunks.append(jax.device_get(params))
        if bar is not None:
            done = min(steps, (index + 1) * per_chunk * thin)
            recent = losses.reshape(*losses.shape[:-2], -1)[..., : done - index * per_chunk * thin]
            with warnings.catch_warnings():  # an all-NaN chunk (a diverged fit) shows nan
                warnings.simplefilter("ignore", RuntimeWarning)
                shown = np.nanmean(recent)  # NaN where stable_update skipped a step
            bar.set_postfix_str(f"mean loss of chunk {shown:.4f}", refresh=False)
            bar.update(done - bar.n)
    run_seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()

    block_axis = 0 if len(seeds) == 1 else 1
    losses = np.concatenate(loss_chunks, axis=block_axis)
    losses = losses.reshape(*losses.shape[: block_axis], -1)[..., :steps]
    trajectory = {name: np.concatenate([c[name] for c in param_chunks], axis=block_axis)
                  for name in param_chunks[0]}
    n_points = math.ceil(steps / thin)
    trajectory = {name: value[:, :n_points] if block_axis else value[:n_points]
                  for name, value in trajectory.items()}
    if len(seeds) == 1:
        losses = losses[None]
        trajectory = {name: value[None] for name, value in trajectory.items()}
    # the last point is the block with the last step, and padding steps leave the state as it
    # is: it equals svi.get_params(state), already computed in the program (called eagerly
    # here, get_params would cost an XLA compile per op)
    final = {name: value[:, -1] for name, value in trajectory.items()}
    trajectory_step = np.minimum(thin * np.arange(1, n_points + 1), steps)
    timings = {
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "steps_per_second": steps * len(seeds) / run_seconds if run_seconds > 0 else float("inf"),
        "chunks": n_chunks,
        "thin": thin,
    }
    log.info("fit of %d steps x %d seed(s): compile %.2f s, run %.2f s, %.0f steps/s",
             steps, len(seeds), compile_seconds, run_seconds, timings["steps_per_second"])
    return FitResult(seeds, np.asarray(losses), {k: np.asarray(v) for k, v in final.items()},
                     trajectory_step, {k: np.asarray(v) for k, v in trajectory.items()}, timings)


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
    return tqdm(total=total, unit="step", mininterval=0, file=stream, ascii=stream is not None,
                dynamic_ncols=False, ncols=100)


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
