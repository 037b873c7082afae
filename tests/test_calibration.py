"""A small part of the calibration suite (benchmarks/calibrate.py, issue 15), run as the
benchmark runs it: Snakemake on a generated config, a NUTS reference, and every fit's verdict
set against posteriordb's gold-standard summary of the posterior.

kidiq_momiq is a regression with an uncentred predictor (intercept about 26, correlation -0.99
between intercept and slope): Adam at a fixed 0.01 for a few thousand steps does not get
there, a step budget with a full-covariance guide does, and a mean-field guide cannot be good
(its sds are a fraction of the posterior's)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration")
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "calibrate.py"),
        "--out",
        str(out),
        "--only",
        "kidiq_momiq",
        "--guides",
        "AutoMultivariateNormal,AutoNormal",
        "--modes",
        "budget",
        "--seeds",
        "1",
        "--cores",
        "2",
        "--nuts",
        "num_warmup=300,num_samples=300,num_chains=2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout, json.loads((out / "calibration.json").read_text())


def test_the_suite_prints_its_confusion_table(suite):
    out, stdout, _ = suite
    assert "| verdict | truth GOOD | truth BAD |" in stdout
    assert "FALSE CONVERGED: 0 of 2 fits" in stdout
    assert (out / "calibration.md").read_text().startswith("# Calibration suite")


def test_no_false_converged_and_the_budget_gets_the_full_covariance_guide_there(suite):
    _, _, table = suite
    rows = {row["guide"]: row for row in table["rows"]}
    full, mean_field = rows["AutoMultivariateNormal"], rows["AutoNormal"]
    assert full["truth"] == "GOOD", full
    assert full["verdict"] == "converged", full
    assert full["stop"].startswith("converged: the rule held at step")
    assert abs(full["mean_error"]) < 0.3 and 0.8 < full["sd_ratio"] < 1.25
    # the mean-field guide: its sds are far too small, and the verdict says so
    assert mean_field["truth"] == "BAD" and mean_field["sd_ratio"] < 0.5
    assert mean_field["verdict"] != "converged" and mean_field["verdict_without_reference"] != "converged"
    assert any(p.startswith("sds off the reference") for p in mean_field["problems"])
    for key in ("with_reference", "without_reference"):
        assert table[key]["false_converged"] == 0
