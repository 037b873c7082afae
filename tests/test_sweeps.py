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


def test_a_sweep_key_must_be_a_dotted_key():
    config = sweep_config()
    config["fits"]["grid"]["sweep"]["optimizer step"] = [1, 2]
    with pytest.raises(ConfigError, match="fits.grid.sweep"):
        validate(config)


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
