"""The real workflow on the tiny config, end to end: every artifact, read with h5py and ArviZ."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import TINY, import_audit, run_snakemake

from sviflow.h5io import SCHEMA_VERSION

pytestmark = pytest.mark.workflow

FITS = ("beta", "beta_4_particles", "normal", "multimodal", "autoguide")


def test_every_artifact_is_written(tiny_run):
    results = tiny_run / "results"
    assert (results / "data" / "coin_12_8.h5").is_file()
    for fit in FITS:
        for folder, suffix in (("fits", "h5"), ("predictive", "h5"), ("checks", "h5"), ("arviz", "nc")):
            assert (results / folder / f"{fit}.{suffix}").is_file(), f"{folder}/{fit}"
        for figure in ("loss", "trajectories", "posterior"):
            assert (results / "figures" / fit / f"{figure}.png").stat().st_size > 10_000
        assert (results / "logs" / "fit" / f"{fit}.log").is_file()
        assert (results / "benchmarks" / "fit" / f"{fit}.tsv").is_file()
    for fit in ("beta", "beta_4_particles", "normal"):
        assert (results / "figures" / fit / "mock_observations.png").is_file()
    assert (results / "figures" / "autoguide" / "covariance.png").is_file()
    assert (results / "figures" / "comparisons" / "particles.png").is_file()
    assert (results / "summary.csv").is_file() and (results / "summary.md").is_file()


def test_each_step_imports_only_what_it_needs(tiny_run):
    """Issue 5, point 3: no numpyro or jax in plotting, checks and the summary; no matplotlib or
    arviz in fitting. Read from what every job of the run had in sys.modules when it ended."""
    audit = import_audit()
    per_step = audit.imports_by_step(tiny_run.parent / "imports", tiny_run)
    assert per_step["fit"]["jobs"] == len(FITS) and per_step["plot"]["jobs"] == len(FITS)
    assert {step: entry["violations"] for step, entry in per_step.items() if entry["violations"]} == {}
    # the record is real: each step loaded what it works with
    assert {"numpyro", "jax"} <= per_step["fit"]["loaded"]
    assert "matplotlib" in per_step["plot"]["loaded"] and "arviz" in per_step["summarize"]["loaded"]


def test_a_one_seed_check_imports_neither_arviz_nor_scipy_stats(tiny_run):
    """Importing ArviZ costs a check job 2.5-3 CPU-s of its 3-5 (benchmarks/README.md): the
    k-hat and the Wasserstein distances are numpy (sviflow.diagnostics); ArviZ's R-hat is
    imported only where there are seeds to compare."""
    audit = import_audit()
    per_step = audit.imports_by_step(tiny_run.parent / "imports", tiny_run)
    loaded = {wildcards["fit"]: modules for wildcards, modules in per_step["check"]["by_job"]}
    assert set(loaded) == set(FITS)
    assert {fit: modules & {"arviz", "scipy.stats"} for fit, modules in loaded.items()} == {
        fit: set() if fit != "beta_4_particles" else {"arviz", "scipy.stats"} for fit in FITS
    }


def test_fit_files_hold_the_full_trace(tiny_run):
    with h5py.File(tiny_run / "results" / "fits" / "beta_4_particles.h5") as fit:
        assert fit.attrs["schema"] == "sviflow.fit"
        assert fit.attrs["schema_version"] == SCHEMA_VERSION
        assert fit["losses"].shape == (2, 400)  # two seeds, every step
        assert fit["params/alpha_q"].shape == (2,)
        assert fit["trajectory/params/alpha_q"].shape[0] == 2
        assert fit["trajectory/step"][-1] == 400
        assert np.isfinite(fit["losses"][()]).all()
        for key in ("config", "seeds", "versions", "created", "timings"):
            assert key in fit.attrs


def test_predictive_has_the_posts_three_paths(tiny_run):
    with h5py.File(tiny_run / "results" / "predictive" / "beta.h5") as pred:
        assert pred["posterior/latent_fairness"].shape == (1, 500)
        assert pred["mock_from_guide/obs"].shape == (1, 100, 10)  # the model's default 10 flips
        assert pred["mock_from_samples/obs"].shape == (1, 100, 10)  # as many sets as path 2
        assert set(np.unique(pred["mock_from_guide/obs"][()])) <= {0.0, 1.0}


def test_arviz_files_load(tiny_run):
    import arviz as az

    idata = az.from_netcdf(tiny_run / "results" / "arviz" / "beta.nc")
    assert {"posterior", "posterior_predictive", "observed_data"} <= set(idata.groups())
    assert idata.posterior["latent_fairness"].shape == (1, 500)
    assert float(idata.observed_data["obs"].sum()) == 12
    two_d = az.from_netcdf(tiny_run / "results" / "arviz" / "autoguide.nc")
    assert set(two_d.posterior.data_vars) == {"x", "y"}


def test_summary_table_has_every_fit_and_verdict(tiny_run):
    import pandas as pd

    table = pd.read_csv(tiny_run / "results" / "summary.csv")
    assert set(table["fit"]) == set(FITS)
    assert set(table["verdict"]) <= {"converged", "not converged", "converged, poor approximation"}
    assert {"mean", "sd", "r_hat", "khat", "kl"} <= set(table.columns)
    text = (tiny_run / "results" / "summary.md").read_text()
    assert "Beta(A+1, B+1)" in text and "auto_scale_tril" in text


def test_second_run_does_nothing(tiny_run):
    result = run_snakemake(tiny_run, "-n", "--cores", "2", *TINY)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_fits_that_take_longest_are_scheduled_first(workflow_copy):
    """Snakemake's job priority of each fit of the default config is log10 of its steps x
    particles x seeds (sviflow.config.Plan.priority), so the 32-particle fit starts first."""
    import math
    import re

    import yaml

    result = run_snakemake(workflow_copy, "-n", "--cores", "4")
    job = r"rule fit:\n(?:\s+\w+:.*\n)*?\s+wildcards: fit=(\S+)\n\s+priority: (\S+)"
    priorities = {fit: float(value) for fit, value in re.findall(job, result.stdout + result.stderr)}
    fits = yaml.safe_load((workflow_copy / "config" / "config.yaml").read_text())["fits"]
    assert priorities == {
        name: round(math.log10(fit["steps"] * fit["elbo"]["num_particles"]), 3) for name, fit in fits.items()
    }
    assert max(priorities, key=priorities.get) == "beta_32_particles"


def test_lint_is_clean(workflow_copy):
    result = run_snakemake(workflow_copy, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_second_config_in_the_same_directory_keeps_the_first_ones_results(tiny_run, tmp_path):
    """Issue 18, item 4: a config with its own `results:` folder, run where the tiny config ran,
    writes only under that folder; the first run's summary and files stay as they were, and
    neither run's next dry run has anything to do."""
    import shutil

    import yaml

    workdir = tmp_path / "workflow"
    shutil.copytree(tiny_run, workdir, ignore=shutil.ignore_patterns(".snakemake"), symlinks=True)
    before = {path: path.read_bytes() for path in (workdir / "results").rglob("*") if path.is_file()}
    second = {
        "results": "results/second",
        "models": {"coin": {"function": "coin_flips", "reference": {"method": "exact", "num_draws": 2000}}},
        "datasets": {"coin_12_8": {"generator": "coin_flips", "args": {"heads": 3, "tails": 9}}},
        "fits": {
            "beta": {
                "model": "coin",
                "data": "coin_12_8",
                "guide": {"name": "beta"},
                "optimizer": {"name": "Adam", "step_size": 5.0e-3},
                "steps": 200,
            }
        },
        "predictive": {"num_samples": 500, "num_mock": 20},
        "checks": {"quality": {"elbo_particles": 500, "khat_particles": 500}},
    }
    (workdir / "second.yaml").write_text(yaml.safe_dump(second))
    run_snakemake(workdir, "--cores", "2", "--configfile", "second.yaml", "--replace-workflow-config")

    after = {path: path.read_bytes() for path in before if path.exists()}
    changed = sorted(str(path.relative_to(workdir)) for path in before if after.get(path) != before[path])
    assert not changed, f"the second config overwrote the first one's files: {changed[:10]}"
    summary = (workdir / "results" / "second" / "summary.md").read_text()
    assert "beta" in summary and "beta_4_particles" not in summary
    assert "beta_4_particles" in (workdir / "results" / "summary.md").read_text()
    for config in (TINY, ("--configfile", "second.yaml", "--replace-workflow-config")):
        result = run_snakemake(workdir, "-n", "--cores", "2", *config)
        assert "Nothing to be done" in result.stdout + result.stderr
