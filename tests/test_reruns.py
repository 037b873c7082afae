"""A change reruns exactly what it touches, as Snakemake's own dry run plans it.

Each case changes the config or a script in a copy of the completed tiny run (its files with
their mtimes and Snakemake's .snakemake/ metadata, where the params, the input set and the code
of every job are recorded) and asks ``snakemake --dry-run`` which jobs it would run.

The jobs are read from the dry run's job blocks, one per job::

    rule fit:
        input: ...
        reason: Params have changed since last execution: ...
        wildcards: fit=beta

The header is ``(local)rule NAME:``, the block is its indented lines, and the ``wildcards:`` line
is ``snakemake.logging.format_wildcards`` (``k=v, k=v``) in Snakemake 9.27. ``--summary`` would be
a table, but of output files (no wildcards, no ``all``), and ``--quiet rules`` drops the blocks;
so the blocks are parsed and the parse is checked against the dry run's own "Job stats" table
(jobs per rule): a change of format fails loudly instead of passing with an empty set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY, dry_run_jobs, run_snakemake

pytestmark = pytest.mark.workflow

CONFIG = Path("tests/configs/tiny.yaml")
COIN_FITS = ("beta", "beta_4_particles", "normal")  # the fits of the coin model on coin_12_8
FIGURE_RULES = {
    "beta": ("plot_with_mock",),
    "beta_4_particles": ("plot_with_mock",),
    "normal": ("plot_with_mock",),
    "multimodal": ("plot",),
    "autoguide": ("plot_with_covariance",),
}


def planned_jobs(workdir: Path) -> dict[tuple[str, str], str]:
    """{(rule, "k=v, ..."): reason} of every job ``snakemake --dry-run`` would run."""
    result = run_snakemake(workdir, "--dry-run", *TINY)
    return dry_run_jobs(result.stdout + "\n" + result.stderr)


def fit_jobs(fit: str, figure_rules: tuple[str, ...] | None = None) -> set[tuple[str, str]]:
    """The jobs of one fit: its fit job and everything downstream that is its own."""
    rules = ("fit", "predict", "check", *(figure_rules or FIGURE_RULES[fit]))
    return {(rule, f"fit={fit}") for rule in rules}


SUMMARY = {("summarize", ""), ("all", "")}
COMPARISON = {("compare", "comparison=particles")}


def edit_config(workdir: Path, change) -> None:
    """Apply ``change(config)`` to the copy's tiny config (order of keys kept)."""
    path = workdir / CONFIG
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def completed(tiny_run, tmp_path_factory) -> Path:
    """A snapshot of the completed tiny run: files, mtimes (copy2) and .snakemake/ metadata."""
    snapshot = tmp_path_factory.mktemp("reruns") / "completed"
    shutil.copytree(tiny_run, snapshot, symlinks=True)
    return snapshot


@pytest.fixture
def run_copy(completed, tmp_path) -> Path:
    """A copy of the completed run of one's own to change."""
    return shutil.copytree(completed, tmp_path / "workflow", symlinks=True)


def _nothing(config):
    pass


def _strict_false(config):
    config["checks"]["strict"] = False  # the default, made explicit


def _chunks(config):
    config["engine"]["chunks"] = 8  # the scan is cut differently: the same numbers


def _cache_dir(config):
    config["engine"]["cache_dir"] = ".jax_cache_elsewhere"  # where compiled code is kept


@pytest.mark.parametrize(
    "change",
    [_nothing, _strict_false, _chunks, _cache_dir],
    ids=["no change", "config rewritten, strict false made explicit", "engine.chunks", "engine.cache_dir"],
)
def test_what_changes_no_number_reruns_nothing(run_copy, change):
    edit_config(run_copy, change)
    assert planned_jobs(run_copy) == {}


def _steps_of_beta(config):
    config["fits"]["beta"]["steps"] = 450


def _step_size_of_multimodal(config):
    config["fits"]["multimodal"]["optimizer"]["step_size"] = 2.0e-2


@pytest.mark.parametrize(
    "change, fit, compared",
    [
        (_steps_of_beta, "beta", True),
        (_step_size_of_multimodal, "multimodal", False),
    ],
    ids=["steps of beta", "step size of multimodal"],
)
def test_a_changed_fit_setting_reruns_that_fit_only(run_copy, change, fit, compared):
    edit_config(run_copy, change)
    jobs = planned_jobs(run_copy)
    assert set(jobs) == fit_jobs(fit) | SUMMARY | (COMPARISON if compared else set())
    # the trigger is the fit's params (its config slice), and only that job has it
    assert jobs[("fit", f"fit={fit}")].startswith("Params have changed since last execution")
    assert [job for job, reason in jobs.items() if "Params have changed" in reason] == [("fit", f"fit={fit}")]


def test_a_changed_dataset_reruns_its_simulation_reference_and_fits(run_copy):
    edit_config(run_copy, lambda config: config["datasets"]["coin_12_8"]["args"].update(heads=13))
    jobs = planned_jobs(run_copy)
    expected = {("simulate", "dataset=coin_12_8"), ("reference", "reference=coin--coin_12_8")}
    for fit in COIN_FITS:
        expected |= fit_jobs(fit)
    assert set(jobs) == expected | COMPARISON | SUMMARY
    assert jobs[("simulate", "dataset=coin_12_8")].startswith("Params have changed")
    # the fits without data and their references are untouched
    assert not {job for job in jobs if job[1] in ("fit=multimodal", "fit=autoguide")}


@pytest.mark.parametrize(
    "script, expected",
    [
        ("plot.py", {(rule, f"fit={fit}") for fit, rules in FIGURE_RULES.items() for rule in rules}),
        ("compare.py", COMPARISON),
    ],
    ids=["plot.py", "compare.py"],
)
def test_an_edited_script_reruns_the_jobs_that_run_it(run_copy, script, expected):
    path = run_copy / "scripts" / script
    path.write_text(path.read_text() + "# an edit\n")
    jobs = planned_jobs(run_copy)
    assert set(jobs) == expected | {("all", "")}
    assert all(jobs[job].startswith("Code has changed since last execution") for job in expected)


def test_a_new_fit_runs_its_own_jobs_and_the_summary(run_copy):
    def add(config):
        config["fits"]["extra"] = {
            "model": "correlated",
            "guide": {"name": "AutoNormal"},
            "optimizer": {"name": "Adam", "step_size": 1.0e-2},
            "steps": 200,
            "seed": 3,
        }

    edit_config(run_copy, add)
    jobs = planned_jobs(run_copy)
    # its model's reference (correlated--none) exists already: it is not recomputed
    assert set(jobs) == fit_jobs("extra", ("plot",)) | SUMMARY
    assert "results/predictive/extra.h5" in jobs[("summarize", "")]  # it is summarized too


def test_a_new_fit_in_a_comparison_also_redraws_that_comparison(run_copy):
    def add(config):
        config["fits"]["beta_2"] = {
            "model": "coin",
            "data": "coin_12_8",
            "guide": {"name": "beta"},
            "steps": 200,
        }
        config["comparisons"]["particles"]["fits"].append("beta_2")

    edit_config(run_copy, add)
    jobs = planned_jobs(run_copy)
    expected = fit_jobs("beta_2", ("plot_with_mock",))
    assert set(jobs) == expected | COMPARISON | SUMMARY
    assert "Set of input files has changed" in jobs[("compare", "comparison=particles")]


def test_strict_checks_rerun_no_check(run_copy):
    edit_config(run_copy, lambda config: config["checks"].update(strict=True))
    jobs = planned_jobs(run_copy)
    assert set(jobs) == {("strict", ""), ("all", "")}
    assert jobs[("strict", "")].startswith("Missing output files: results/checks/strict.ok")


def test_changed_predictive_settings_rerun_no_fit(run_copy):
    edit_config(run_copy, lambda config: config["predictive"].update(num_mock=120))
    jobs = planned_jobs(run_copy)
    expected = set()
    for fit in FIGURE_RULES:
        expected |= fit_jobs(fit) - {("fit", f"fit={fit}")}
    assert set(jobs) == expected | SUMMARY  # the fits, the data, the references and compare stay
    assert all(jobs[("predict", f"fit={fit}")].startswith("Params have changed") for fit in FIGURE_RULES)


@pytest.mark.parametrize(
    "change",
    [
        lambda config: config["checks"].setdefault("plateau", {}).update(window=50),
        lambda config: config["checks"].setdefault("quality", {}).update(khat_particles=300),
    ],
    ids=["a plateau threshold", "fewer k-hat draws than the posterior samples"],
)
def test_changed_check_settings_rerun_the_checks_only(run_copy, change):
    """A threshold, or how many of the weighted posterior draws the check uses, is read by the
    check alone: no fit and no predictive draws are remade."""
    edit_config(run_copy, change)
    jobs = planned_jobs(run_copy)
    expected = set()
    for fit, rules in FIGURE_RULES.items():
        expected |= {("check", f"fit={fit}")} | {(rule, f"fit={fit}") for rule in rules}
    assert set(jobs) == expected | SUMMARY
    assert all(jobs[("check", f"fit={fit}")].startswith("Params have changed") for fit in FIGURE_RULES)


def test_more_khat_draws_than_posterior_samples_rerun_predict_not_the_fits(run_copy):
    """The check weighs the guide's posterior draws; asking for more than there are makes the
    predict step draw more: it reruns, with everything after it, and no fit does."""
    edit_config(
        run_copy, lambda config: config["checks"].setdefault("quality", {}).update(khat_particles=3000)
    )
    jobs = planned_jobs(run_copy)
    expected = set()
    for fit in FIGURE_RULES:
        expected |= fit_jobs(fit) - {("fit", f"fit={fit}")}
    assert set(jobs) == expected | SUMMARY
    assert all(jobs[("predict", f"fit={fit}")].startswith("Params have changed") for fit in FIGURE_RULES)
