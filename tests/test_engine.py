"""The fit engine (sviflow.engine.fit_svi) against numpyro's own svi.run(progress_bar=False):
the same numbers, whatever the chunking, for one seed and for several seeds under vmap; its
progress in a log file; one compile per fit; and the persistent compilation cache hit when a
fit job runs again."""

from __future__ import annotations

import re
import shutil

import h5py
import numpy as np
import numpyro.optim
import pytest
from conftest import run_snakemake
from jax import random
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal

from sviflow.data import coin_flips as coin_data
from sviflow.data import model_kwargs
from sviflow.engine import fit_svi, plan_chunks
from sviflow.guides import beta_guide, normal_guide
from sviflow.models import coin_flips, correlated_gaussian_2d

COIN = model_kwargs(coin_data(heads=12, tails=8))  # the post's 12 heads, 8 tails


def coin_svi(guide=None, particles=1, step_size=5e-3):
    return SVI(
        coin_flips,
        guide or beta_guide(),
        numpyro.optim.Adam(step_size),
        loss=Trace_ELBO(num_particles=particles),
    )


def autoguide_svi():
    return SVI(
        correlated_gaussian_2d,
        AutoMultivariateNormal(correlated_gaussian_2d),
        numpyro.optim.Adam(1e-2),
        loss=Trace_ELBO(),
    )


def assert_float32_close(actual, expected, ulps, what):
    """Equal to within ``ulps`` units in the last place of float32 at the array's scale: XLA
    may fuse the loss's sum differently inside a chunk than inside one scan."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    assert np.isfinite(expected).all(), what
    scale = float(np.max(np.abs(expected))) or 1.0
    tolerance = ulps * float(np.spacing(np.float32(scale)))
    error = float(np.max(np.abs(actual - expected)))
    assert error <= tolerance, f"{what}: max difference {error:.3g} > {ulps} ulp ({tolerance:.3g})"


def assert_same_as_svi_run(result, index, reference, ulps_params=4, ulps_losses=8):
    assert set(result.params) == set(reference.params)
    for name, value in reference.params.items():
        assert_float32_close(result.params[name][index], value, ulps_params, f"param {name}")
    assert_float32_close(result.losses[index], reference.losses, ulps_losses, "losses")


@pytest.mark.parametrize(
    "steps, chunks, points",
    [
        (300, 4, 40),  # 60 blocks of 5 steps, 10 per chunk: the chunks cover the steps exactly
        (301, 4, 50),  # 61 blocks of 5 steps, 12 per chunk: the last 59 steps are padding
        (257, 7, 50),  # 52 blocks of 5 steps, 7 per chunk: padding again, other shapes
    ],
)
def test_one_seed_equals_svi_run(steps, chunks, points):
    thin, per_chunk, n_chunks = plan_chunks(steps, chunks, points)
    assert (thin * per_chunk * n_chunks == steps) == (steps == 300)  # the cases are what they say
    svi = coin_svi()
    reference = svi.run(random.PRNGKey(1), steps, progress_bar=False, **COIN)
    result = fit_svi(svi, steps, [1], COIN, chunks=chunks, trajectory_points=points, progress=False)

    assert result.losses.shape == (1, steps)
    assert_same_as_svi_run(result, 0, reference)
    # the fit moved: equal numbers are not equal initial values
    assert abs(float(result.params["alpha_q"][0]) - 10.0) > 0.1
    assert result.trajectory["alpha_q"].shape == (1, len(result.trajectory_step))
    # a point inside the trajectory: the params after that many steps of svi.run
    middle = len(result.trajectory_step) // 2
    midway = svi.run(random.PRNGKey(1), int(result.trajectory_step[middle]), progress_bar=False, **COIN)
    for name, value in midway.params.items():
        assert_float32_close(result.trajectory[name][0, middle], value, 4, f"trajectory {name}")
    assert result.timings["chunks"] == n_chunks


def test_a_single_step_equals_svi_run():
    svi = coin_svi()
    reference = svi.run(random.PRNGKey(1), 1, progress_bar=False, **COIN)
    result = fit_svi(svi, 1, [1], COIN, chunks=20, trajectory_points=1000, progress=False)
    assert result.losses.shape == (1, 1) and list(result.trajectory_step) == [1]
    assert_same_as_svi_run(result, 0, reference)


def test_a_constraint_computed_from_the_data_equals_svi_run():
    """A guide whose param constraint is built from the data (jnp values): numpyro keeps the
    constraint in svi.constrain_fn when svi.init runs; run under jit, it would keep jit's
    tracers and the chunk could not be compiled."""
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def model(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        bound = jnp.max(jnp.abs(x)) + 1.0
        loc = numpyro.param("loc", 0.0, constraint=constraints.interval(-bound, bound))
        numpyro.sample("mu", dist.Normal(loc, 1.0))

    data = {"x": jnp.arange(5.0)}
    svi = SVI(model, guide, numpyro.optim.Adam(1e-2), loss=Trace_ELBO())
    reference = svi.run(random.PRNGKey(0), 50, progress_bar=False, **data)
    for seeds in ([0], [0, 1]):
        result = fit_svi(svi, 50, seeds, data, chunks=4, trajectory_points=10, progress=False)
        assert_same_as_svi_run(result, 0, reference)


def test_the_plan_does_not_depend_on_round_step_counts():
    """What is compiled depends on the plan (thin, blocks per chunk, padded or not), not on
    the step count: round counts within a factor of two or so share one unpadded program."""
    plans = {steps: plan_chunks(steps, 20, 1000) for steps in (10_000, 12_000, 15_000, 19_000)}
    assert {plan[:2] for plan in plans.values()} == {(10, 50)}
    assert all(thin * per_chunk * n == steps for steps, (thin, per_chunk, n) in plans.items())
    for steps in (1_000, 1_234, 9_999, 50_000, 77_777, 4_000_000):
        thin, per_chunk, n_chunks = plan_chunks(steps, 20, 1000)
        assert str(thin).strip("0") in ("1", "2", "5")
        assert 1000 <= -(-steps // thin) < 2500  # stored trajectory points
        assert 20 <= n_chunks <= 50
    # fewer steps than trajectory points: every step is a point, fewer chunks
    assert plan_chunks(300, 20, 1000) == (1, 50, 6)


def test_stable_update_equals_svi_run():
    """The default config's Normal fit uses stable_update: the same path as svi.run's."""
    svi = coin_svi(normal_guide())
    reference = svi.run(random.PRNGKey(2), 301, progress_bar=False, stable_update=True, **COIN)
    result = fit_svi(svi, 301, [2], COIN, chunks=4, trajectory_points=50, stable_update=True, progress=False)
    assert_same_as_svi_run(result, 0, reference)


def test_autoguide_equals_svi_run():
    """Vector and matrix params (auto_loc, auto_scale_tril), steps not a multiple of a chunk."""
    svi = autoguide_svi()
    reference = svi.run(random.PRNGKey(2), 203, progress_bar=False)
    result = fit_svi(svi, 203, [2], {}, chunks=3, trajectory_points=20, progress=False)
    assert result.params["auto_scale_tril"].shape == (1, 2, 2)
    assert_same_as_svi_run(result, 0, reference)


@pytest.mark.parametrize(
    "make_svi, kwargs, steps",
    [
        (lambda: coin_svi(particles=4), COIN, 301),
        (autoguide_svi, {}, 203),
    ],
)
def test_each_vmapped_seed_equals_its_own_run(make_svi, kwargs, steps):
    svi = make_svi()
    seeds = [1, 2, 7]
    result = fit_svi(svi, steps, seeds, kwargs, chunks=4, trajectory_points=50, progress=False)
    assert result.seeds == seeds
    assert result.losses.shape == (3, steps)
    for index, seed in enumerate(seeds):
        reference = svi.run(random.PRNGKey(seed), steps, progress_bar=False, **kwargs)
        assert_same_as_svi_run(result, index, reference, ulps_params=16, ulps_losses=16)
    # the seeds are different fits, not one fit three times
    first = next(iter(result.params))
    assert not np.allclose(result.losses[0], result.losses[1])
    assert np.ptp(result.params[first], axis=0).max() > 0


def test_progress_lines_go_to_the_log_file(tmp_path):
    steps, chunks, points = 301, 4, 50
    thin, per_chunk, n_chunks = plan_chunks(steps, chunks, points)
    log = tmp_path / "fit.log"
    with open(log, "w") as handle:
        fit_svi(
            coin_svi(),
            steps,
            [1],
            COIN,
            chunks=chunks,
            trajectory_points=points,
            progress=True,
            progress_file=handle,
        )
    text = log.read_text()
    # one progress line per chunk, each on a line of its own ("\n", not tqdm's "\r" redraws)
    lines = [line for line in text.split("\n") if re.search(rf"\d+/{steps} \[", line)]
    done = [int(re.search(rf"(\d+)/{steps} \[", line).group(1)) for line in lines]
    progress = [d for d in done if d > 0]
    assert progress == sorted(progress), text
    # the step count at the end of every chunk, in order, ending at the last step
    assert sorted(set(progress)) == [min(steps, (i + 1) * per_chunk * thin) for i in range(n_chunks)], text
    assert all("mean loss of chunk" in line for line, d in zip(lines, done) if d > 0), text


def test_the_chunk_function_is_compiled_once():
    """Calling the compiled chunk again and again compiles nothing more: one compile per fit."""
    from jax import monitoring

    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(str(kwargs.get("fun_name", "")))

    monitoring.register_event_duration_secs_listener(listener)
    try:
        result = fit_svi(coin_svi(), 400, [1, 2], COIN, chunks=8, trajectory_points=100, progress=False)
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert result.timings["chunks"] == plan_chunks(400, 8, 100)[2] > 1  # called again and again
    assert sum("chunk" in name for name in compiled) == 1, compiled


@pytest.mark.workflow
def test_fit_job_rerun_hits_the_compilation_cache(workflow_copy):
    """A fit job run again in a fresh process, nothing changed, compiles nothing: every XLA
    program comes from the persistent cache, which gains no file; and its numbers are the
    same bits. The two-mode guide has five sample sites, which numpyro's ELBO sums in set
    order: a per-process hash seed would change the program (and miss the cache) nearly
    every time."""
    config = workflow_copy / "engine_cache.yaml"
    config.write_text("""
models:
  multimodal:
    function: multimodal_2d
    args: {b: 5.0, sig1: 0.5, sig2: 2.0}
fits:
  multimodal:
    model: multimodal
    guide: {name: mixture_2d, args: {b_init: 4.0}}
    optimizer: {name: Adam, step_size: 1.0e-2}
    elbo: {name: Trace_ELBO, num_particles: 4}
    steps: 300
    seed: 1
engine: {chunks: 4, trajectory_points: 50}
""")
    args = (
        "--cores",
        "1",
        "--configfile",
        "engine_cache.yaml",
        "--replace-workflow-config",
        "--until",
        "fit",
    )
    env = {"JAX_LOG_COMPILES": "1", "JAX_EXPLAIN_CACHE_MISSES": "1"}
    cache = workflow_copy / ".jax_cache"
    log = workflow_copy / "results" / "logs" / "fit" / "multimodal.log"
    fit = workflow_copy / "results" / "fits" / "multimodal.h5"

    run_snakemake(workflow_copy, *args, env=env)
    first_log = log.read_text()
    first_files = sorted(p.name for p in cache.iterdir())
    shutil.copy(fit, workflow_copy / "first.h5")
    # the first run compiled the fit and wrote it to the cache: the logging works
    assert "PERSISTENT COMPILATION CACHE MISS for 'jit_chunk'" in first_log
    assert any(name.startswith("jit_chunk-") for name in first_files)

    log.unlink()
    run_snakemake(workflow_copy, *args, "--forcerun", "fit", env=env)
    second_log = log.read_text()
    assert "fit: done" in second_log  # the job did run again
    assert "Persistent compilation cache hit for 'jit_chunk'" in second_log
    assert "PERSISTENT COMPILATION CACHE MISS" not in second_log
    assert sorted(p.name for p in cache.iterdir()) == first_files
    with h5py.File(workflow_copy / "first.h5") as before, h5py.File(fit) as after:
        np.testing.assert_array_equal(after["losses"][()], before["losses"][()])
        for name in before["params"]:
            np.testing.assert_array_equal(after["params"][name][()], before["params"][name][()])

    # more steps with the same plan (see plan_chunks): the fit reruns from the cache too, and
    # its first 300 steps are the same bits as before
    assert plan_chunks(300, 4, 50)[:2] == plan_chunks(360, 4, 50)[:2]
    config.write_text(config.read_text().replace("steps: 300", "steps: 360"))
    log.unlink()
    run_snakemake(workflow_copy, *args, env=env)
    third_log = log.read_text()
    assert "fit of 360 steps" in third_log
    assert "Persistent compilation cache hit for 'jit_chunk'" in third_log
    assert "PERSISTENT COMPILATION CACHE MISS" not in third_log
    assert sorted(p.name for p in cache.iterdir()) == first_files
    with h5py.File(workflow_copy / "first.h5") as before, h5py.File(fit) as after:
        assert after["losses"].shape == (1, 360)
        np.testing.assert_array_equal(after["losses"][:, :300], before["losses"][()])
