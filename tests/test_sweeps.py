"""Sweeps (fits.<name>.sweep) and batches (fits that share a program, run as one).

The unit tests expand and plan configs with sviflow.config (no Snakemake run); the engine test
runs batches of different sizes and checks that each fit's numbers are its own; the workflow
tests run Snakemake on tests/configs/sweep.yaml (12 swept fits in 2 batches and a fit of its
own), read the HDF5 files, and change one step size to see which jobs rerun and that the other
fits' numbers stay the same to the bit."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import REPO, dry_run_jobs, run_snakemake

from sviflow.config import Plan, validate
from sviflow.errors import ConfigError

SWEEP_YAML = REPO / "tests" / "configs" / "sweep.yaml"
SWEEP = ("--configfile", "tests/configs/sweep.yaml", "--replace-workflow-config")
MEMBER = "grid/step_size~0.001_num_particles~1_seed~1"


def sweep_config() -> dict:
    return yaml.safe_load(SWEEP_YAML.read_text())


def plan(config: dict) -> Plan:
    validate(config)
    return Plan(config, REPO / "tests" / "configs")


# --- expansion --------------------------------------------------------------------------------


def test_a_sweep_is_one_fit_per_combination_named_by_paramspace():
    p = plan(sweep_config())
    members = [fit for fit in p.fits if fit.startswith("grid/")]
    assert len(members) == 12 and "grid" not in p.fits and "beta" in p.fits
    assert members[0] == MEMBER
    assert "grid/step_size~0.02_num_particles~4_seed~2" in members
    entry = p.config["fits"]["grid/step_size~0.02_num_particles~4_seed~2"]
    assert entry["optimizer"]["step_size"] == 0.02 and entry["elbo"]["num_particles"] == 4
    assert entry["seed"] == 2 and "sweep" not in entry
    # validated like any fit: the schema's defaults are filled in
    assert entry["stable_update"] is False
    assert p.sweeps["grid"]["columns"] == ["step_size", "num_particles", "seed"]
    assert p.sweeps["grid"]["members"][MEMBER] == {
        "optimizer.step_size": 0.001,
        "elbo.num_particles": 1,
        "seed": 1,
    }


def test_validating_twice_keeps_the_sweep():
    config = sweep_config()
    validate(config)
    validate(config)
    assert len(Plan(config, REPO / "tests" / "configs").sweeps["grid"]["members"]) == 12


def test_a_bad_value_in_a_sweep_names_the_member_and_the_sweep():
    config = sweep_config()
    config["fits"]["grid"]["sweep"]["optimizer.step_size"] = [1.0e-3, "fast"]
    with pytest.raises(ConfigError) as error:
        validate(config)
    message = str(error.value)
    assert re.search(
        r"fits\.grid/step_size~fast_num_particles~[14]_seed~[12]\.optimizer\.step_size: 'fast'", message
    )
    assert "member of the sweep fits.grid.sweep" in message


def test_a_value_that_cannot_name_a_file_is_refused():
    config = sweep_config()
    config["fits"]["grid"]["sweep"]["guide.name"] = ["beta", "models/my guide.py:guide"]
    with pytest.raises(ConfigError, match=r"fits\.grid\.sweep\.guide\.name: the value"):
        validate(config)


def test_keys_that_share_their_last_part_name_members_by_their_whole_keys():
    """guide.name and optimizer.name: Paramspace named such members _0~beta__1~Adam (pandas'
    itertuples renames columns that are not identifiers)."""
    config = sweep_config()
    config["fits"]["grid"]["sweep"] = {
        "guide.name": ["beta", "normal"],
        "optimizer.name": ["Adam", "ClippedAdam"],
    }
    p = plan(config)
    members = [fit for fit in p.fits if fit.startswith("grid/")]
    assert members[0] == "grid/guide_name~beta_optimizer_name~Adam" and len(members) == 4
    assert p.sweeps["grid"]["columns"] == ["guide.name", "optimizer.name"]  # the tables' headers


def test_a_sweep_key_must_be_a_dotted_key():
    config = sweep_config()
    config["fits"]["grid"]["sweep"]["optimizer step"] = [1, 2]
    with pytest.raises(ConfigError, match="fits.grid.sweep"):
        validate(config)


DATASET_SWEEP = """
models:
  coin: {function: coin_flips, reference: {method: exact, num_draws: 2000}}
datasets:
  fair: {generator: coin_flips, args: {heads: 12, tails: 8}}
  coins:
    generator: coin_flips
    args: {n: 20, p: 0.4}
    sweep: {args.seed: [0, 1, 2]}
fits:
  sbc:
    model: coin
    data: coins
    guide: {name: beta}
    steps: 200
    sweep: {seed: [1, 2]}
  solo: {model: coin, data: coins/seed~1, guide: {name: beta}, steps: 200}
  mixed:
    model: coin
    data: fair
    guide: {name: beta}
    steps: 200
    sweep: {data: [fair, coins]}
predictive: {num_samples: 500, num_mock: 100, seed: 0}
checks:
  quality: {elbo_particles: 500, khat_particles: 500, energy_draws: 300}
engine: {chunks: 4, trajectory_points: 100}
"""


def test_a_dataset_sweep_is_one_dataset_per_combination_and_a_fit_on_it_one_fit_each():
    config = yaml.safe_load(DATASET_SWEEP)
    p = plan(config)
    assert p.datasets == ["fair", "coins/seed~0", "coins/seed~1", "coins/seed~2"]
    assert p.config["datasets"]["coins/seed~2"]["args"] == {"n": 20, "p": 0.4, "seed": 2}
    assert p.dataset_sweeps["coins"]["members"]["coins/seed~0"] == {"args.seed": 0}
    # data: coins is a sweep over its datasets, the fit's own sweep beside it
    members = [fit for fit in p.fits if fit.startswith("sbc/")]
    assert members[0] == "sbc/data~coins-seed-0_seed~1" and len(members) == 6
    assert p.sweeps["sbc"]["members"]["sbc/data~coins-seed-2_seed~2"] == {"data": "coins/seed~2", "seed": 2}
    assert p.config["fits"]["sbc/data~coins-seed-2_seed~2"]["data"] == "coins/seed~2"
    # a sweep's data list names the dataset sweep for all its datasets; a member by its name
    assert [f for f in p.fits if f.startswith("mixed/")] == [
        "mixed/data~fair",
        "mixed/data~coins-seed-0",
        "mixed/data~coins-seed-1",
        "mixed/data~coins-seed-2",
    ]
    assert p.config["fits"]["solo"]["data"] == "coins/seed~1"
    # one shape, one model and guide: the swept fits share a batch
    assert any(set(members) <= set(batch) for batch in p.batches().values())
    validate(p.config)  # validated twice: the same plan
    assert Plan(p.config, REPO / "tests" / "configs").fits == p.fits


def test_a_bad_value_in_a_dataset_sweep_names_the_dataset_and_its_sweep():
    config = yaml.safe_load(DATASET_SWEEP)
    config["datasets"]["coins"]["sweep"]["generator"] = ["coin_flips", "dice"]
    with pytest.raises(ConfigError) as error:
        validate(config)
    message = str(error.value)
    assert re.search(r"datasets\.coins/seed~[012]_generator~dice\.generator: 'dice'", message), message
    assert "member of the sweep datasets.coins.sweep" in message
    config = yaml.safe_load(DATASET_SWEEP)
    config["datasets"]["coins-seed-1"] = {"generator": "coin_flips", "args": {"heads": 1, "tails": 1}}
    with pytest.raises(
        ConfigError, match=r"datasets\.coins/seed~1 and datasets\.coins-seed-1 would be written the same"
    ):
        validate(config)
    config = yaml.safe_load(DATASET_SWEEP)
    config["fits"]["sbc"]["model"] = "cn"
    with pytest.raises(
        ConfigError,
        match=r"fits\.sbc/data~coins-seed-0_seed~1\.model: 'cn' .* of the sweep block fits\.sbc\)",
    ):
        plan(config)
    config = yaml.safe_load(DATASET_SWEEP)
    config["fits"]["sbc"]["sweep"]["data"] = ["fair"]
    with pytest.raises(
        ConfigError, match="fits.sbc: data names the dataset sweep 'coins' and its sweep lists data too"
    ):
        validate(config)


def test_a_dataset_sweeps_references_are_one_job_that_does_not_change_with_the_fits():
    """The reference batch holds every dataset of the sweep, whichever the fits need: dropping
    or narrowing a fit must not change the job (Snakemake would rerun every reference of it and
    the checks of the other fits)."""
    whole = plan(yaml.safe_load(DATASET_SWEEP)).reference_batches()
    assert whole == {"coin--coins": [f"coin--coins/seed~{seed}" for seed in range(3)]}
    config = yaml.safe_load(DATASET_SWEEP)
    del config["fits"]["sbc"], config["fits"]["mixed"]  # solo alone needs coins/seed~1 only
    assert plan(config).reference_batches() == whole
    config = yaml.safe_load(DATASET_SWEEP)
    del config["fits"]["solo"]
    config["fits"]["mixed"]["sweep"]["data"] = ["coins/seed~0", "coins/seed~1"]
    del config["fits"]["sbc"]["data"], config["fits"]["sbc"]["sweep"]
    config["fits"]["sbc"]["data"] = "fair"
    assert plan(config).reference_batches() == whole
    config = yaml.safe_load(DATASET_SWEEP)
    config["fits"] = {"solo": {**config["fits"]["solo"], "data": "fair"}}
    assert plan(config).reference_batches() == {}  # no fit on the sweep: no job


def test_a_dataset_sweep_is_made_and_its_references_in_one_job(workflow_copy):
    """The DAG of a dataset sweep: a simulate job per dataset and the model's exact references
    on them in one job, run for real. Each dataset's file holds its own seed's flips, each
    reference its own dataset's exact answer, and both are, array for array, the files that the
    per-dataset steps make of that dataset alone."""
    import json
    import os
    import subprocess
    import sys

    (workflow_copy / "ds.yaml").write_text(DATASET_SWEEP)
    args = ("--configfile", "ds.yaml", "--replace-workflow-config", "--cores", "2")
    planned = dry_run_jobs(run_snakemake(workflow_copy, "-n", *args).stdout)
    rules = sorted(rule for rule, _ in planned)
    # a dataset a job; the sweep's three references in one job, fair's alone
    assert rules.count("simulate") == 4
    assert rules.count("reference") == 1 and rules.count("reference_sweep_1") == 1
    assert ("simulate", "dataset=fair") in planned and ("reference", "reference=coin--fair") in planned
    # the sweeps' 10 fits in one batch; solo, a fit of its own, keeps its own job
    assert rules.count("fit_batch_1") == 1 and rules.count("fit") == 1
    targets = [f"results/references/coin--coins/seed~{seed}.h5" for seed in range(3)]
    run_snakemake(workflow_copy, *args, *targets)
    results = workflow_copy / "results"
    log = (results / "logs" / "batches" / "reference" / "coin--coins.log").read_text()
    assert log.count("reference coin (exact)") == 3
    flips = []
    for seed in range(3):
        with h5py.File(results / "data" / "coins" / f"seed~{seed}.h5") as handle:
            flips.append(np.asarray(handle["observed/obs"]))
        heads = float(flips[-1].sum())
        with h5py.File(results / "references" / "coin--coins" / f"seed~{seed}.h5") as handle:
            mean = float(np.asarray(handle["moments/mean/latent_fairness"]))
        assert abs(mean - (heads + 1) / 22) < 1e-5, (seed, mean, heads)
    assert all(f.shape == (20,) for f in flips)
    assert not np.array_equal(flips[0], flips[1]) and not np.array_equal(flips[1], flips[2])

    # the per-dataset steps by hand on coins/seed~1: the same arrays
    p = plan(yaml.safe_load(DATASET_SWEEP))
    alone = workflow_copy / "alone"
    steps = {
        "simulate": (
            [],
            {"data": alone / "data.h5"},
            {"name": "coins/seed~1", "spec": p.dataset_spec("coins/seed~1")},
        ),
        "reference": (
            [f"data={results / 'data' / 'coins' / 'seed~1.h5'}"],
            {"reference": alone / "reference.h5"},
            {"model": p.model_spec("coin"), "reference": p.reference_settings("coin")},
        ),
    }
    for step, (inputs, outputs, params) in steps.items():
        command = [
            sys.executable,
            str(workflow_copy / "scripts" / f"{step}.py"),
            "--params",
            json.dumps(params),
        ]
        command += ["--output", *(f"{k}={v}" for k, v in outputs.items())]
        command += ["--input", *inputs] if inputs else []
        subprocess.run(
            command,
            check=True,
            cwd=workflow_copy,
            env={**os.environ, "PYTHONPATH": str(workflow_copy)},
            timeout=300,
        )
    for made, batched in (
        (alone / "data.h5", results / "data" / "coins" / "seed~1.h5"),
        (alone / "reference.h5", results / "references" / "coin--coins" / "seed~1.h5"),
    ):
        a, b = _arrays(made), _arrays(batched)
        assert a.keys() == b.keys() and len(a) >= 1
        for key in a:
            assert np.array_equal(a[key], b[key], equal_nan=True), (made.name, key)


def _arrays(path) -> dict:
    out = {}
    with h5py.File(path) as handle:
        handle.visititems(
            lambda name, node: (
                out.__setitem__(name, np.asarray(node)) if isinstance(node, h5py.Dataset) else None
            )
        )
    return out


# --- batches ----------------------------------------------------------------------------------


def test_fits_that_differ_in_step_size_and_seed_share_a_batch():
    p = plan(sweep_config())
    batches = p.batches()
    assert len(batches) == 2  # one per particle count
    for fits in batches.values():
        assert len(fits) == 6
        particles = {p.config["fits"][fit]["elbo"]["num_particles"] for fit in fits}
        assert len(particles) == 1
    assert p.solo_fits == ["beta"]  # a fit of its own keeps a job of its own
    assert p.batch_of("beta") is None


def test_initial_values_may_differ_within_a_batch_but_not_guide_settings():
    config = sweep_config()
    config["fits"]["grid"]["sweep"] = {"guide.args.alpha_init": [5.0, 10.0], "seed": [1, 2]}
    assert len(plan(config).batches()) == 1
    config = sweep_config()
    config["fits"]["grid"]["guide"] = {"name": "normal"}
    config["fits"]["grid"]["sweep"] = {"guide.args.mean_constraint": ["real", "unit_interval"]}
    assert len(plan(config).batches()) == 2


def test_the_config_decides_who_is_batched():
    config = sweep_config()
    config["fits"]["grid"]["batch"] = False
    assert plan(config).batches() == {}
    config = sweep_config()
    config["engine"]["batch"] = {"max_work": 1000}  # 400 steps x 4 particles is above it
    batches = plan(config).batches()
    assert [len(fits) for fits in batches.values()] == [6]
    config = sweep_config()
    config["engine"]["batch"] = {"max_fits": 4}
    assert [len(fits) for fits in plan(config).batches().values()] == [4, 2, 4, 2]
    config = sweep_config()
    one = plan(sweep_config()).estimate(MEMBER)
    # a batch's job holds its fits' arrays at once: at most engine.max_output_mb of them
    config["engine"]["max_output_mb"] = 2.5 * max(one["fit"], one["predictive"]) / 1e6
    assert [len(fits) for fits in plan(config).batches().values()] == [2, 2, 2, 2, 2, 2]
    config = sweep_config()
    config["fits"]["beta"]["batch"] = True  # batched by hand, with the same program's members
    p = plan(config)
    assert "beta" in next(iter(p.batches().values())) and p.solo_fits == []


def test_a_step_budget_is_never_batched():
    config = sweep_config()
    config["fits"]["grid"]["steps"] = {"min": 200, "max": 400}
    assert plan(config).batches() == {}
    config = sweep_config()
    config["fits"]["grid"]["steps"] = {"min": 200, "max": 400}
    config["fits"]["grid"]["batch"] = True
    with pytest.raises(ConfigError, match="batch: a fit with a step budget cannot be batched"):
        plan(config)


def test_a_sweeps_members_draw_no_figures_unless_asked():
    p = plan(sweep_config())
    outputs = p.all_outputs()
    assert p.out("figures/sweeps/grid.png") in outputs
    assert p.out("figures/beta/loss.png") in outputs
    assert not any(f"figures/{MEMBER}/" in path for path in outputs)
    config = sweep_config()
    config["fits"]["grid"]["figures"] = True
    assert plan(config).out(f"figures/{MEMBER}/loss.png") in plan(config).all_outputs()


# --- the engine: a fit's numbers are its own ----------------------------------------------------


def test_a_fits_numbers_do_not_depend_on_its_batch():
    """The same fit in batches of 2, 3 and 11 fits (1 and 2 groups of 8 lanes), at another
    position: the same losses, params and trajectory moments to the bit. A plain vmap of the
    fits' lanes does not give this (measured: the last bits of the loss differ between 4 and
    5 lanes)."""
    from numpyro.infer import SVI

    from sviflow.data import load_dataset, model_kwargs
    from sviflow.engine import fit_batch, initial_params
    from sviflow.optim import make_elbo, make_optimizer
    from sviflow.resolve import prepare_guide, resolve_guide, resolve_model

    kwargs = model_kwargs(
        load_dataset({"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}, where="d")
    )

    def run(members):
        model = resolve_model({"name": "coin", "function": "coin_flips", "args": {}}, where="m")
        guide = resolve_guide({"name": "beta", "args": {}}, model, where="g")
        prepare_guide(model, guide, kwargs, where="w", sources={})
        optimizer = make_optimizer({"name": "Adam", "step_size": 1e-2}, "o", adaptive=True)
        svi = SVI(model, guide, optimizer, loss=make_elbo({"name": "Trace_ELBO", "num_particles": 1}, "e"))
        start = initial_params(guide, kwargs)
        return fit_batch(
            svi,
            [{"seeds": seeds, "init_params": start, "step_size": rate} for seeds, rate in members],
            300,
            kwargs,
            lanes=8,
            progress=False,
            trajectory_points=50,
            latent_sites=["latent_fairness"],
        )

    two = run([([1], 5e-3), ([2], 1e-2)])
    three = run([([1], 5e-3), ([2], 2e-2), ([3, 4], 1e-3)])
    eleven = run([([7], 1e-3)] * 9 + [([2], 1e-2), ([1], 5e-3)])

    def same(a, b):
        return (
            np.array_equal(a.losses, b.losses)
            and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
            and np.array_equal(a.moments["mean"], b.moments["mean"])
        )

    assert same(two[0], three[0]) and same(two[0], eleven[10]) and same(two[1], eleven[9])
    assert not np.array_equal(two[0].losses, two[1].losses)  # the fits are different fits
    assert three[2].losses.shape == (2, 300) and three[2].seeds == [3, 4]


def _coin_batch(
    datasets: list[dict], steps: int = 2000, model=None, guide=None, latent="latent_fairness", arguments=True
):
    """The coin model's Beta guide (or ``model`` and ``guide`` functions) fitted to each of
    ``datasets`` (model kwargs), seed 1, as one batch whose lanes take their data as arguments."""
    from numpyro.infer import SVI

    from sviflow.engine import fit_batch, initial_params
    from sviflow.optim import make_elbo, make_optimizer
    from sviflow.resolve import prepare_guide, resolve_guide, resolve_model

    if model is None:
        model = resolve_model({"name": "coin", "function": "coin_flips", "args": {}}, where="m")
        guide = resolve_guide({"name": "beta", "args": {}}, model, where="g")
    prepare_guide(model, guide, datasets[0], where="w", sources={})
    optimizer = make_optimizer({"name": "Adam", "step_size": 5e-2}, "o", adaptive=True)
    svi = SVI(model, guide, optimizer, loss=make_elbo({"name": "Trace_ELBO", "num_particles": 1}, "e"))
    members = [
        {"seeds": [1], "init_params": initial_params(guide, data), "step_size": 5e-2}
        | ({"kwargs": data} if arguments else {})
        for data in datasets
    ]
    return fit_batch(
        svi,
        members,
        steps,
        datasets[0],
        lanes=8,
        progress=False,
        trajectory_points=50,
        latent_sites=[latent],
    )


def _coins(heads: int, tails: int) -> dict:
    from sviflow.data import load_dataset, model_kwargs

    return model_kwargs(
        load_dataset({"generator": "coin_flips", "args": {"heads": heads, "tails": tails}}, where="d")
    )


def test_fits_of_different_datasets_share_a_program_and_keep_their_own_numbers():
    """Each lane fits its own data (the guide ends near its own dataset's exact posterior,
    Beta(heads + 1, tails + 1)), and a fit's numbers do not depend on the datasets of the
    other fits of its batch: alone, beside another dataset, or at another position."""
    fair, biased = _coins(12, 8), _coins(4, 16)
    both = _coin_batch([fair, biased])
    again = _coin_batch([biased, fair, fair])
    alone = _coin_batch([fair])
    exact = {"fair": 13 / 22, "biased": 5 / 22}
    assert abs(both[0].moments["mean"][0, -1, 0] - exact["fair"]) < 0.05
    assert abs(both[1].moments["mean"][0, -1, 0] - exact["biased"]) < 0.05
    for a, b in ((both[0], again[1]), (both[0], alone[0]), (both[1], again[0]), (again[1], again[2])):
        assert np.array_equal(a.losses, b.losses)
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
        assert np.array_equal(a.moments["mean"], b.moments["mean"])


def test_a_guide_whose_constraints_depend_on_the_data_does_not_share_a_program_across_datasets():
    """A guide's param constrained to (0, max x): the transforms of one dataset would be wrong
    for the others, so the engine refuses to run fits with their data as arguments (the fit
    step then runs one program per dataset, its data constants in it, which works)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    from sviflow.engine import DataDependentConstraints

    def model(x=None, obs=None):
        theta = numpyro.sample("theta", dist.Uniform(0.0, jnp.max(x)))
        numpyro.sample("obs", dist.Normal(theta, 1.0), obs=obs)

    def guide(x=None, obs=None):
        loc = numpyro.param("loc", 0.5 * jnp.max(x), constraint=constraints.interval(0.0, jnp.max(x)))
        numpyro.sample("theta", dist.Normal(loc, 0.1))

    def data(top):
        return {"x": np.linspace(0.0, top, 5, dtype=np.float32), "obs": np.float32(0.5 * top)}

    for datasets in ([data(1.0), data(5.0)], [data(5.0)]):
        with pytest.raises(DataDependentConstraints):
            _coin_batch(datasets, steps=50, model=model, guide=guide, latent="theta")
    (one,) = _coin_batch([data(5.0)], steps=50, model=model, guide=guide, latent="theta", arguments=False)
    assert np.isfinite(one.losses).all() and 0.0 < float(one.params["loc"][0]) < 5.0


# --- the workflow -------------------------------------------------------------------------------


def _numbers(workdir: Path, fit: str) -> dict:
    out = {}
    for kind, keys in (
        ("fits", ("losses", "params/alpha_q", "params/beta_q")),
        ("predictive", ("posterior/latent_fairness", "log_weights")),
        ("checks", ("quality/kl", "quality/energy_distance")),
    ):
        with h5py.File(workdir / "results" / kind / f"{fit}.h5") as handle:
            for key in keys:
                out[f"{kind}:{key}"] = np.asarray(handle[key])
    return out


@pytest.mark.workflow
def test_a_sweep_runs_in_batches_and_a_change_reruns_only_its_batch(workflow_copy):
    run_snakemake(workflow_copy, "--cores", "2", *SWEEP)
    results = workflow_copy / "results"
    p = plan(sweep_config())
    members = [fit for fit in p.fits if fit.startswith("grid/")]
    for fit in members:
        for kind in ("fits", "predictive", "checks"):
            assert (results / kind / f"{fit}.h5").is_file(), (kind, fit)
        assert (results / "arviz" / f"{fit}.nc").is_file()
    assert (results / "figures" / "sweeps" / "grid.png").stat().st_size > 10_000
    assert (results / "logs" / "batches" / "fit" / "batch_1.log").is_file()
    with h5py.File(results / "fits" / f"{MEMBER}.h5") as handle:
        losses = np.asarray(handle["losses"])
    assert losses.shape == (1, 400) and np.isfinite(losses).all()
    summary = (results / "summary.md").read_text()
    assert "## Sweep grid" in summary and "| step_size | num_particles | seed | fit |" in summary
    assert summary.count("| grid/step_size~") >= 24  # the verdicts and the sweep's table
    before = {fit: _numbers(workflow_copy, fit) for fit in members}

    # one step size of the grid changes: the 4 fits at 0.02 leave, 4 at 0.03 come
    config = sweep_config()
    config["fits"]["grid"]["sweep"]["optimizer.step_size"] = [1.0e-3, 5.0e-3, 3.0e-2]
    (workflow_copy / "tests" / "configs" / "sweep.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    written = {fit: (results / "fits" / f"{fit}.h5").stat().st_mtime_ns for fit in members}
    planned = dry_run_jobs(run_snakemake(workflow_copy, "-n", "--cores", "2", *SWEEP).stdout)
    rules = {rule for rule, _ in planned}
    assert {"fit_batch_1", "fit_batch_2", "predict_batch_1", "check_batch_2", "sweep", "summarize"} <= rules
    assert not rules & {"fit", "predict", "check", "reference", "simulate"}  # beta's and the data's stay
    run_snakemake(workflow_copy, "--cores", "2", *SWEEP)
    kept = [fit for fit in members if "step_size~0.02_" not in fit]
    assert len(kept) == 8
    for fit in kept:
        # rewritten by the rerun of its batch (a step size of the batch changed), not stale
        assert (results / "fits" / f"{fit}.h5").stat().st_mtime_ns != written[fit], fit
        after = _numbers(workflow_copy, fit)
        for key, value in before[fit].items():
            assert np.array_equal(value, after[key]), (fit, key)
    new = copy.deepcopy(plan(config).sweeps["grid"]["members"])
    assert sum("step_size~0.03_" in fit for fit in new) == 4
    with h5py.File(results / "fits" / "grid/step_size~0.03_num_particles~1_seed~1.h5") as handle:
        assert not np.array_equal(np.asarray(handle["losses"]), before[MEMBER]["fits:losses"])


@pytest.mark.workflow
def test_a_batch_is_one_job_a_step_and_its_figures_are_drawn_when_asked(workflow_copy):
    """The DAG of the sweep config: one fit, predict and check job per batch (not per fit), the
    fit of its own in the per-fit rules, no figures of the members; with figures: true, one
    plot job per batch drawing every member's figures."""
    planned = dry_run_jobs(run_snakemake(workflow_copy, "-n", "--cores", "2", *SWEEP).stdout)
    rules = sorted(rule for rule, _ in planned)
    for step in ("fit", "predict", "check"):
        assert rules.count(f"{step}_batch_1") == 1 and rules.count(f"{step}_batch_2") == 1
        assert rules.count(step) == 1  # beta's
    assert not any(rule.startswith("plot_batch") for rule in rules)
    assert rules.count("sweep") == 1
    config = sweep_config()
    config["fits"]["grid"]["figures"] = True
    (workflow_copy / "tests" / "configs" / "sweep.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_snakemake(workflow_copy, "-n", "--cores", "2", *SWEEP)
    rules = sorted(rule for rule, _ in dry_run_jobs(result.stdout))
    assert rules.count("plot_batch_1") == 1 and rules.count("plot_batch_2") == 1
    assert f"results/figures/{MEMBER}/mock_observations.png" in result.stdout


DATA_SWEEP = ("--configfile", "tests/configs/data_sweep.yaml", "--replace-workflow-config")


@pytest.mark.workflow
def test_a_sweep_over_datasets_is_one_batch_and_each_fit_fits_its_own_data(workflow_copy):
    """tests/configs/data_sweep.yaml: 3 coin datasets x 2 seeds, one batch, two programs (20
    and 40 flips). Each fit ends near its own dataset's exact posterior and is checked against
    its own reference; when a dataset changes, its batch reruns and the other datasets' fits
    (now in a program with 3 datasets, not 2) keep their numbers to the bit."""
    config_path = workflow_copy / "tests" / "configs" / "data_sweep.yaml"
    planned = dry_run_jobs(run_snakemake(workflow_copy, "-n", "--cores", "2", *DATA_SWEEP).stdout)
    rules = sorted(rule for rule, _ in planned)
    for step in ("fit", "predict", "check"):
        assert rules.count(f"{step}_batch_1") == 1 and step not in rules
    assert rules.count("simulate") == 3 and rules.count("reference") == 3
    run_snakemake(workflow_copy, "--cores", "2", *DATA_SWEEP)
    results = workflow_copy / "results"
    log = (results / "logs" / "batches" / "fit" / "batch_1.log").read_text()
    assert "batch of 6 fits, 8 lanes at a time, 2 program(s)" in log
    exact = {"fair": 13 / 22, "biased": 5 / 22, "longer": 31 / 42}
    before = {}
    for data, mean in exact.items():
        fit = f"coins/data~{data}_seed~1"
        with h5py.File(results / "predictive" / f"{fit}.h5") as handle:
            drawn = float(np.mean(handle["posterior/latent_fairness"]))
        with h5py.File(results / "checks" / f"{fit}.h5") as handle:
            kl = float(np.max(handle["quality/kl"]))
            assert f'"data": "{data}"' in str(handle.attrs["config"])  # its own spec
        assert abs(drawn - mean) < 0.03, (fit, drawn, mean)
        assert kl < 0.05, (fit, kl)  # against its own reference: another's is far off
        before[fit] = _coin_numbers(workflow_copy, fit)
    assert (results / "figures" / "sweeps" / "coins.png").stat().st_size > 10_000
    assert rules.count("plot_batch_1") == 1
    for fit in before:
        assert (results / "figures" / fit / "mock_observations.png").stat().st_size > 10_000

    config = yaml.safe_load(config_path.read_text())
    config["datasets"]["longer"]["args"] = {"heads": 10, "tails": 10}  # 20 flips now
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    planned = dry_run_jobs(run_snakemake(workflow_copy, "-n", "--cores", "2", *DATA_SWEEP).stdout)
    rules = sorted(rule for rule, _ in planned)
    assert rules.count("simulate") == 1 and rules.count("reference") == 1  # longer's only
    assert {"fit_batch_1", "predict_batch_1", "check_batch_1", "sweep", "summarize"} <= set(rules)
    run_snakemake(workflow_copy, "--cores", "2", *DATA_SWEEP)
    log = (results / "logs" / "batches" / "fit" / "batch_1.log").read_text()
    assert "batch of 6 fits, 8 lanes at a time, 1 program(s)" in log
    for fit, numbers in before.items():
        after = _coin_numbers(workflow_copy, fit)
        for key, value in numbers.items():
            same = np.array_equal(value, after[key])
            assert same == ("longer" not in fit), (fit, key)
    with h5py.File(results / "predictive" / "coins/data~longer_seed~1.h5") as handle:
        assert abs(float(np.mean(handle["posterior/latent_fairness"])) - 0.5) < 0.03


def _coin_numbers(workdir: Path, fit: str) -> dict:
    out = _numbers(workdir, fit)
    with h5py.File(workdir / "results" / "fits" / f"{fit}.h5") as handle:
        out["fits:moments"] = np.asarray(handle["trajectory/moments/mean"])
    return out


BOUNDED = """
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def model(x=None, obs=None):
    theta = numpyro.sample("theta", dist.Uniform(0.0, jnp.max(x)))
    numpyro.sample("obs", dist.Normal(theta * jnp.ones_like(x), 1.0).to_event(1), obs=obs)


def guide(x=None, obs=None):
    # the param's constraint is built from the data: its transform is the dataset's own
    loc = numpyro.param("loc", 0.5 * jnp.max(x), constraint=constraints.interval(0.0, jnp.max(x)))
    numpyro.sample("theta", dist.Normal(loc, 0.05))
"""


@pytest.mark.parametrize("guide", ["bounded.py:guide", "AutoNormal"])
def test_the_fit_step_runs_one_program_per_dataset_where_a_support_depends_on_them(tmp_path, guide):
    """A batch over two datasets of one shape where a support is built from the data: the
    hand-written guide's param constrained to (0, max x), or the model's Uniform(0, max x) prior,
    which an autoguide's transform takes from the dataset it was set up on. The fit step runs
    one program per dataset, so that each fit has its own dataset's transform (the fit of x up
    to 5 ends above 2, beyond the other's bound of 1), and a fit's numbers are those it has in a
    batch of its dataset alone; the predict step too."""
    from sviflow import steps

    (tmp_path / "bounded.py").write_text(BOUNDED)
    for name, top in (("low", 1.0), ("high", 5.0)):
        x = np.linspace(0.0, top, 5)
        lines = ["x,obs"] + [f"{a},{0.6 * top}" for a in x]  # theta near 0.6 x its bound
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    config = {
        "models": {"bounded": {"function": "bounded.py:model"}},
        "datasets": {name: {"file": f"{name}.csv", "observed": ["obs"]} for name in ("low", "high")},
        "fits": {
            f"fit_{name}": {
                "model": "bounded",
                "data": name,
                "guide": {"name": guide},
                "optimizer": {"name": "Adam", "step_size": 0.05},
                "steps": 300,
                "seed": 1,
            }
            for name in ("low", "high")
        },
    }
    validate(config)
    p = Plan(config, tmp_path)
    data = {}
    for name in ("low", "high"):
        data[name] = str(tmp_path / f"{name}.h5")
        steps.simulate({}, {"data": data[name]}, {"name": name, "spec": p.dataset_spec(name)})
    specs = [p.fit_spec(f"fit_{name}") for name in ("high", "low", "high")]
    specs[2] = {**specs[2], "name": "fit_high_again"}

    def run(chosen, tag):
        inputs = {"data": [data[spec["data"]] for spec in chosen]}
        fits = [str(tmp_path / f"{tag}_{i}.h5") for i in range(len(chosen))]
        predictive = [str(tmp_path / f"{tag}_{i}_predictive.h5") for i in range(len(chosen))]
        params = {"specs": chosen, "batch": {"lanes": 8}}
        steps.fit_batch(inputs, {"fit": fits}, params)
        steps.predict_batch(
            {**inputs, "fit": fits},
            {"predictive": predictive},
            {**params, "predictive": {"num_samples": 200, "num_mock": 10}},
        )
        return [read_fit(path, draws) for path, draws in zip(fits, predictive)]

    high, low, high_again = run(specs, "mixed")
    (alone,) = run(specs[:1], "alone")
    assert 0.0 < low["mean"] <= 1.0 and high["mean"] > 2.0 and high["drawn"] > 2.0
    for other in (alone, high_again):
        assert np.array_equal(high["losses"], other["losses"]) and high["mean"] == other["mean"]
        assert high["drawn"] == other["drawn"]


HIERARCHICAL = """
import numpy as np
import numpyro
import numpyro.distributions as dist


def model(group=None, obs=None):
    k = int(np.max(group)) + 1  # the number of groups, read from the data: a concrete value
    with numpyro.plate("groups", k):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", group.shape[0]):
        numpyro.sample("obs", dist.Normal(mu[group], 1.0), obs=obs)
"""


def test_a_model_that_needs_its_data_as_numbers_still_runs_in_a_batch(tmp_path):
    """A model that reads a plate's size from its data cannot take them as traced arguments:
    a sweep of step sizes over its dataset runs in a batch with the data constants in the
    program, as before batches took datasets (it failed with ConcretizationTypeError)."""
    from sviflow import steps

    (tmp_path / "hierarchical.py").write_text(HIERARCHICAL)
    (tmp_path / "groups.csv").write_text("group,obs\n0,1.0\n1,2.0\n2,0.5\n0,1.5\n")
    config = {
        "models": {"h": {"function": "hierarchical.py:model"}},
        "datasets": {"groups": {"file": "groups.csv", "observed": ["obs"]}},
        "fits": {
            f"f{k}": {
                "model": "h",
                "data": "groups",
                "guide": {"name": "AutoNormal"},
                "optimizer": {"name": "Adam", "step_size": rate},
                "steps": 100,
                "seed": 1,
            }
            for k, rate in enumerate((0.01, 0.02))
        },
    }
    validate(config)
    p = Plan(config, tmp_path)
    path = str(tmp_path / "groups.h5")
    steps.simulate({}, {"data": path}, {"name": "groups", "spec": p.dataset_spec("groups")})
    specs = [p.fit_spec(fit) for fit in ("f0", "f1")]
    fits = [str(tmp_path / f"f{k}.h5") for k in range(2)]
    predictive = [str(tmp_path / f"p{k}.h5") for k in range(2)]
    params = {"specs": specs, "batch": {"lanes": 8}}
    steps.fit_batch({"data": [path, path]}, {"fit": fits}, params)
    steps.predict_batch(
        {"data": [path, path], "fit": fits},
        {"predictive": predictive},
        {**params, "predictive": {"num_samples": 100, "num_mock": 10}},
    )
    for fit, draws in zip(fits, predictive):
        with h5py.File(fit) as handle:
            assert np.isfinite(np.asarray(handle["losses"])).all()
        with h5py.File(draws) as handle:
            assert np.asarray(handle["posterior/mu"]).shape == (1, 100, 3)


def read_fit(path: str, predictive: str) -> dict:
    with h5py.File(path) as handle:
        out = {
            "losses": np.asarray(handle["losses"]),
            "mean": float(np.asarray(handle["trajectory/moments/mean"])[0, -1, 0]),
        }
    with h5py.File(predictive) as handle:
        out["drawn"] = float(np.mean(handle["posterior/theta"]))
    return out
