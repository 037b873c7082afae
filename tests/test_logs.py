"""Every job's log holds its progress and its key numbers (issue 4, point 5), and the numbers in
the logs are the ones in the HDF5 artifacts: read from the tiny run, cross-checked with h5py."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import yaml

from sviflow.engine import plan_chunks

pytestmark = pytest.mark.workflow

FITS = ("beta", "beta_4_particles", "normal", "multimodal", "autoguide")
STAMP = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) "
# a tqdm line as the fit writes it to its log: " 75%|####    | 300/400 [00:00<00:00, ...]"
PROGRESS = re.compile(r"^\s*(\d+)%\|[# 0-9]*\|\s*(\d+)/(\d+) \[.*\]$")


def _log(run, *parts) -> str:
    return run.joinpath("results", "logs", *parts).read_text()


def _config(run) -> dict:
    return yaml.safe_load((run / "tests" / "configs" / "tiny.yaml").read_text())


def test_every_log_says_what_the_job_read_and_wrote_and_when_it_ended(tiny_run):
    root = tiny_run / "results" / "logs"
    logs = sorted(root.rglob("*.log"))
    expected = {f"{step}/{fit}.log" for step in ("fit", "predict", "check", "plot") for fit in FITS}
    expected |= {
        "compare/particles.log",
        "simulate/coin_12_8.log",
        "reference/coin--coin_12_8.log",
        "reference/correlated--none.log",
        "reference/multimodal--none.log",
        "summarize.log",
        "model/coin.log",
        "model/multimodal.log",
        "model/correlated.log",
    }
    assert {path.relative_to(root).as_posix() for path in logs} == expected
    for path in logs:
        lines = path.read_text().splitlines()
        step = re.match(STAMP + r"sviflow: (\w+): inputs \{", lines[0])
        assert step, f"{path}: first line {lines[0]!r}"
        assert re.match(STAMP + rf"sviflow: {step.group(2)}: done in \d+\.\d\d s$", lines[-1]), path
        assert not any("Traceback" in line for line in lines), path


@pytest.mark.parametrize("fit", FITS)
def test_fit_log_shows_progress_final_params_and_timings(tiny_run, fit):
    entry = _config(tiny_run)["fits"][fit]
    steps = entry["steps"]
    seeds = entry["seed"] if isinstance(entry["seed"], list) else [entry["seed"]]
    engine = _config(tiny_run)["engine"]
    chunks = plan_chunks(steps, engine["chunks"], engine["trajectory_points"])[2]
    lines = _log(tiny_run, "fit", f"{fit}.log").splitlines()
    assert not any("\r" in line for line in lines)  # one line per progress update, not one line
    bars = [PROGRESS.match(line) for line in lines if PROGRESS.match(line)]
    # tqdm's first draw, one line per chunk, and its final draw at close
    assert len(bars) == chunks + 2, lines
    done = [int(bar.group(2)) for bar in bars]
    assert done[0] == 0 and done[-1] == steps and done == sorted(done)
    assert {int(bar.group(3)) for bar in bars} == {steps}
    assert sum("mean loss of chunk" in bar.group(0) for bar in bars) == chunks + 1

    timing = re.search(
        rf"fit of {steps} steps x {len(seeds)} seed\(s\): compile ([\d.]+) s, "
        r"run ([\d.]+) s, (\d+) steps/s",
        "\n".join(lines),
    )
    assert timing, lines
    final = re.search(
        rf"sviflow: fit {fit}: final params (\{{.*\}}); mean loss of the last 10% "
        r"of steps (-?[\d.]+)$",
        "\n".join(lines),
        re.M,
    )
    assert final, lines
    params = json.loads(final.group(1).replace("'", '"'))
    with h5py.File(tiny_run / "results" / "fits" / f"{fit}.h5") as artifact:
        timings = json.loads(artifact.attrs["timings"])
        assert float(timing.group(1)) == pytest.approx(timings["compile_seconds"], abs=0.006)
        assert float(timing.group(2)) == pytest.approx(timings["run_seconds"], abs=0.006)
        assert set(params) == set(artifact["params"])
        for name, logged in params.items():
            stored = np.asarray(artifact["params"][name][()], dtype=float).ravel()[: len(logged)]
            np.testing.assert_allclose(logged, stored, atol=6e-5)
        losses = artifact["losses"][()]
        tail = np.nanmean(losses[:, -max(1, losses.shape[1] // 10) :])
        assert float(final.group(2)) == pytest.approx(tail, abs=6e-5)


@pytest.mark.parametrize("fit", FITS)
def test_check_log_shows_the_verdict(tiny_run, fit):
    text = _log(tiny_run, "check", f"{fit}.log")
    with h5py.File(tiny_run / "results" / "checks" / f"{fit}.h5") as check:
        verdict, sentence = check.attrs["verdict"], check.attrs["sentence"]
        truth = json.loads(check.attrs["truth"]) if "truth" in check.attrs else []
    assert f"sviflow: check {fit}: {verdict} ({sentence})\n" in text
    # and the comparison with the exact answers, one line per quantity
    assert len(re.findall(r"sviflow: truth .+: target \S+, fit \S+, error \S+", text)) == len(truth)
    assert len(truth) > 0


def test_reference_logs_show_log_z(tiny_run):
    logs = sorted((tiny_run / "results" / "logs" / "reference").glob("*.log"))
    assert [p.stem for p in logs] == ["coin--coin_12_8", "correlated--none", "multimodal--none"]
    for path in logs:
        found = re.search(
            r"sviflow: reference (\w+) \((exact|grid|nuts)\): log Z (\S+), mean \{.+\}, "
            r"sd \{.+\}",
            path.read_text(),
        )
        assert found and found.group(1) == path.stem.split("--")[0], path.read_text()
        with h5py.File(tiny_run / "results" / "references" / f"{path.stem}.h5") as reference:
            assert found.group(2) == reference.attrs["method"]
            assert float(found.group(3)) == pytest.approx(float(reference["log_z"][()]), rel=1e-5)


@pytest.mark.parametrize("fit", FITS)
def test_predict_log_shows_the_shapes(tiny_run, fit):
    text = _log(tiny_run, "predict", f"{fit}.log")
    with h5py.File(tiny_run / "results" / "predictive" / f"{fit}.h5") as predictive:
        paths = {
            path: {site: tuple(predictive[path][site].shape) for site in predictive[path]}
            for path in ("posterior", "mock_from_guide", "mock_from_samples")
        }
    assert paths["posterior"]  # the tiny fits did not diverge: the guide was sampled
    # mock observations exist for the models with observed data (the coin), not for the others
    assert bool(paths["mock_from_guide"]) == (fit in ("beta", "beta_4_particles", "normal"))
    for path, sites in paths.items():
        assert f"sviflow: {path}: {sites}\n" in text, (path, sites, text)


def test_simulate_and_arviz_logs_show_what_they_made(tiny_run):
    text = _log(tiny_run, "simulate", "coin_12_8.log")
    assert "dataset coin_12_8: observed obs shape (20,), mean 0.6" in text  # 12 heads, 8 tails
    text = _log(tiny_run, "summarize.log")
    for fit in FITS:
        assert re.search(
            rf"sviflow: arviz {fit}: groups \[.*'posterior'.*\] -> results/arviz/{fit}.nc", text
        ), text
