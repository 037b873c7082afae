"""Faults (issue 7): never lose data, never mislead.

Every case runs the real Snakemake on a copy of the workflow, with the small config
tests/configs/faults/base.yaml (one fit that converges, one that diverges). Runs that are only
read are shared (``base_run``, ``second_run``); a case that breaks something works on a clone of
a completed run (the files with their mtimes, .snakemake/ with its metadata), so it runs only
the jobs it is about.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import SNAKEMAKE, copy_workflow, run_snakemake

from sviflow.h5io import SCHEMA_VERSION

pytestmark = pytest.mark.workflow

BASE_CONFIG = "tests/configs/faults/base.yaml"
BASE = ("--configfile", BASE_CONFIG, "--replace-workflow-config")
# root attributes that differ between two runs of the same config by design (the digest covers
# the creation time)
VOLATILE_ATTRS = {"created", "timings", "created_at", "sviflow_sha256"}


# --- helpers ---------------------------------------------------------------------------------


def _output(result) -> str:
    return result.stdout + result.stderr


def _base_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / BASE_CONFIG).read_text())


def _write_config(workdir: Path, name: str, config: dict) -> tuple[str, ...]:
    """Write ``config`` into the copy (keys in their order: Snakemake compares params by repr,
    so reordered keys would rerun jobs) and return the arguments that run it."""
    path = workdir / "tests" / "configs" / "faults" / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return ("--configfile", str(path.relative_to(workdir)), "--replace-workflow-config")


def _clone(run: Path, destination: Path) -> Path:
    """A completed run copied with its mtimes and Snakemake's metadata: up to date as it was."""
    shutil.copytree(run, destination, symlinks=True)
    return destination


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime in ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _environment(workdir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(workdir)}


@contextlib.contextmanager
def _background(workdir: Path, *args: str):
    """``snakemake ARGS`` started in its own session; on exit, if it still runs, it and its jobs
    (its process group) are killed."""
    process = subprocess.Popen(
        [SNAKEMAKE, *args],
        cwd=workdir,
        env=_environment(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=120)


def _wait_for(condition, what: str, timeout: float = 600.0, process=None) -> None:
    start = time.monotonic()
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"snakemake ended ({process.returncode}) before {what}:\n{process.communicate()[0][-4000:]}"
            )
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _dereferenced(handle, value):
    """Object references (netCDF's dimension lists) as the paths they point to: a reference
    is only meaningful within its file."""
    if isinstance(value, h5py.Reference):
        return handle[value].name if value else None
    if isinstance(value, np.ndarray) and value.dtype.kind in "OV":
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_dereferenced(handle, v) for v in value)
    return value


def _h5_contents(path: Path) -> dict:
    """Every dataset (dtype, shape, values) and attribute of an HDF5 file, by path."""
    contents = {}

    def visit(name, item):
        attrs = {k: _dereferenced(handle, v) for k, v in item.attrs.items() if k not in VOLATILE_ATTRS}
        contents[f"{name}@attrs"] = attrs
        if isinstance(item, h5py.Dataset):
            contents[name] = (item.dtype.str, item.shape, _dereferenced(handle, item[()]))

    with h5py.File(path, "r") as handle:
        visit("/", handle)
        handle.visititems(visit)
    return contents


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_equal, a, b))
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


# --- shared runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """The fault config run once, end to end. Never modified: tests that break things clone it."""
    workdir = copy_workflow(tmp_path_factory.mktemp("faults-base") / "workflow")
    run_snakemake(workdir, "--cores", "2", *BASE)
    return workdir


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """The same config run again in a fresh copy, with the copy's files listed before and after."""
    workdir = copy_workflow(tmp_path_factory.mktemp("faults-second") / "workflow")
    before = _snapshot(workdir)
    run_snakemake(workdir, "--cores", "2", *BASE)
    return workdir, before, _snapshot(workdir)


# --- 1. bad config: fails before any job, naming the key and what is allowed ----------------


def _minimal() -> dict:
    return {
        "models": {"coin": {"function": "coin_flips"}},
        "fits": {"beta": {"model": "coin", "guide": {"name": "beta"}, "steps": 5}},
    }


def _fit(config: dict) -> dict:
    return config["fits"]["beta"]


def _rename_fit(name):
    def change(config):
        config["fits"] = {name: config["fits"]["beta"]}

    return change


BAD_CONFIGS = {
    # name: (change to the minimal config, what the message must say)
    "steps is a word": (
        lambda c: _fit(c).update(steps="many"),
        [
            "fits.beta.steps",
            "'many' is not valid under any of the given schemas",
            "allowed: integer >= 1 or object",
            "a budget {min, max}",
        ],
    ),
    "typo in a key": (
        lambda c: _fit(c).update(stpes=_fit(c).pop("steps")),
        ["fits.beta", "'stpes' was unexpected", "allowed: keys model, data, guide", "did you mean 'steps'?"],
    ),
    "negative steps": (
        lambda c: _fit(c).update(steps=-5),
        [
            "fits.beta.steps",
            "-5 is not valid under any of the given schemas",
            "allowed: integer >= 1 or object",
        ],
    ),
    "zero particles": (
        lambda c: _fit(c).update(elbo={"num_particles": 0}),
        ["fits.beta.elbo.num_particles", "0 is less than the minimum of 1", "allowed: integer >= 1"],
    ),
    "seed not an integer": (
        lambda c: _fit(c).update(seed=1.5),
        ["fits.beta.seed", "1.5 is not valid", "integer >= 0", "list of seeds"],
    ),
    "unknown optimizer": (
        lambda c: _fit(c).update(optimizer={"name": "Adamm"}),
        ["fits.beta.optimizer.name", "'Adamm' is not one of", "Adam, ClippedAdam"],
    ),
    "unknown model function": (
        lambda c: c["models"]["coin"].update(function="coin_flipz"),
        ["models.coin.function", "unknown model 'coin_flipz'", "built-in models: coin_flips"],
    ),
    "fit names no model": (
        lambda c: _fit(c).update(model="coins"),
        ["fits.beta.model", "'coins' is not a key of models", "models: coin"],
    ),
    "unknown guide": (
        lambda c: _fit(c)["guide"].update(name="betta"),
        ["fits.beta.guide.name", "unknown guide 'betta'", "built-in guides: beta"],
    ),
    "fit name with a slash": (_rename_fit("a/b"), ["fits: 'a/b' does not match", "letters, digits"]),
    "fit name leaving results/": (_rename_fit("../x"), ["fits: '../x' does not match", "letters, digits"]),
    # issue 17: estimated before any job, from the config alone
    "a billion steps": (
        lambda c: _fit(c).update(steps=1.0e9),
        [
            "fits.beta: results/fits/beta.h5 would hold about 4,000 MB before "
            "compression, above engine.max_output_mb = 1000",
            "losses 4,000.0 MB (1,000,000,000 steps x 1 seed(s) x 4 bytes)",
            "lower fits.beta.steps",
            "or raise engine.max_output_mb",
        ],
    ),
    "3e8 posterior samples": (
        lambda c: c.update(predictive={"num_samples": 300_000_000}),
        [
            "fits.beta: results/predictive/beta.h5 would hold about 3,600 MB",
            "posterior 1,200.0 MB (300,000,000 draws x 1 seed(s) x 1 component(s))",
            "lower predictive.num_samples",
        ],
    ),
    "cache_dir is a file": (
        lambda c: c.update(engine={"cache_dir": "Snakefile"}),
        ["engine.cache_dir: 'Snakefile' is a file, not a folder", "or '' to turn the cache off"],
    ),
}


@pytest.fixture(scope="module")
def config_copy(tmp_path_factory) -> Path:
    """One copy for the config cases: none of them gets as far as writing anything."""
    return copy_workflow(tmp_path_factory.mktemp("faults-config") / "workflow")


def test_minimal_config_is_valid(config_copy):
    """The control: the config the bad ones are made from passes."""
    args = _write_config(config_copy, "minimal.yaml", _minimal())
    run_snakemake(config_copy, "-n", "--cores", "1", *args)


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fails_before_any_job_naming_the_key(config_copy, case):
    """A schema violation or a bad name stops Snakemake while it reads the Snakefile, with one
    line: ``config error: <key path>: <what is wrong>; allowed: <what the schema allows>``
    (common.smk reduces Snakemake's validate() message, which buries the path under a dump of
    the schema)."""
    change, expected = BAD_CONFIGS[case]
    config = _minimal()
    change(config)
    args = _write_config(config_copy, f"bad-{case.replace(' ', '-').replace('/', '-')}.yaml", config)
    result = run_snakemake(config_copy, "--cores", "1", *args, check=False)
    output = _output(result)
    assert result.returncode != 0
    assert "config error: " in output
    for text in expected:
        assert text in output, (text, output[-2000:])
    assert "Failed validating" not in output  # not the schema dump
    assert "localrule" not in output and "Select jobs" not in output  # no job ran
    assert not (config_copy / "results").exists()


MALFORMED = (
    "models:\n  coin: {function: coin_flips}\nfits:\n  beta:\n    model: coin\n"
    "    guide: {name: beta\n    steps: 5\n"
)  # the flow mapping on line 6 is not closed


def test_malformed_default_config_names_file_and_line(workflow_copy):
    """config/config.yaml (read by the Snakefile) that is not YAML: the file and the line."""
    (workflow_copy / "config" / "config.yaml").write_text(MALFORMED)
    result = run_snakemake(workflow_copy, "--cores", "1", check=False)
    output = _output(result)
    assert result.returncode != 0
    assert "config error: config/config.yaml is not valid YAML" in output
    assert 'in "config/config.yaml", line 7' in output
    assert not (workflow_copy / "results").exists()


def test_malformed_configfile_fails_before_the_workflow(config_copy):
    """A --configfile that is not YAML is read by Snakemake's command line before any of the
    workflow's code runs, so the workflow cannot improve the message: Snakemake says "Config
    file is not valid JSON or YAML" without the file; with --verbose its traceback shows the
    parser's file and line. Nothing runs either way."""
    (config_copy / "tests" / "configs" / "faults" / "malformed.yaml").write_text(MALFORMED)
    args = ("--configfile", "tests/configs/faults/malformed.yaml", "--replace-workflow-config")
    result = run_snakemake(config_copy, "--cores", "1", *args, check=False)
    assert result.returncode != 0
    assert "Config file is not valid JSON or YAML" in _output(result)
    verbose = run_snakemake(config_copy, "--cores", "1", "--verbose", *args, check=False)
    assert verbose.returncode != 0
    assert 'malformed.yaml", line 7' in _output(verbose)
    assert not (config_copy / "results").exists()


# --- 2. a fit that diverges ------------------------------------------------------------------


def test_diverged_fit_records_the_step(base_run):
    """SGD with step size 10 on the coin's Beta guide: the loss is NaN from step 5 on. The fit's
    file says so, and where it began; the fit that converged says -1."""
    with h5py.File(base_run / "results" / "fits" / "diverged.h5") as fit:
        losses = fit["losses"][()]
        first = int(np.flatnonzero(~np.isfinite(losses[0]))[0])
        assert first > 0 and np.isfinite(losses[0, :first]).all()
        assert fit["first_nonfinite_step"][()].tolist() == [first]
        assert fit["diverged_step"][()].tolist() == [first]
        assert bool(fit.attrs["diverged"]) is True
    with h5py.File(base_run / "results" / "fits" / "beta.h5") as fit:
        assert np.isfinite(fit["losses"][()]).all()
        assert fit["diverged_step"][()].tolist() == [-1, -1]
        assert bool(fit.attrs["diverged"]) is False


def test_check_says_why_the_fit_failed(base_run):
    with h5py.File(base_run / "results" / "fits" / "diverged.h5") as fit:
        step = int(fit["diverged_step"][0])
    with h5py.File(base_run / "results" / "checks" / "diverged.h5") as check:
        assert check.attrs["verdict"] == "not converged"
        assert bool(check.attrs["diverged"]) is True
        sentence = check.attrs["sentence"]
        assert "NaN or inf" in sentence and f"at step {step}" in sentence
        assert check["diverged_step"][()].tolist() == [step]
        assert len(check["quality"]) == 0  # no k-hat, ELBO or KL of a diverged guide
        assert yaml.safe_load(check.attrs["truth"]) == []  # no comparison with the exact answer


def test_nothing_downstream_presents_a_diverged_fit_as_a_result(base_run):
    """No draws, no ArviZ posterior, and in the summary one row that says there is none."""
    import arviz as az
    import pandas as pd

    results = base_run / "results"
    with h5py.File(results / "predictive" / "diverged.h5") as predictive:
        assert bool(predictive.attrs["diverged"]) is True
        for group in ("posterior", "mock_from_guide", "mock_from_samples"):
            assert len(predictive[group]) == 0
    idata = az.from_netcdf(results / "arviz" / "diverged.nc")
    assert not {"posterior", "posterior_predictive"} & set(idata.groups())
    table = pd.read_csv(results / "summary.csv")
    rows = table[table["fit"] == "diverged"]
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["verdict"] == "not converged"
    assert row["variable"].startswith("(no posterior")
    for column in ("mean", "sd", "hdi_3%", "hdi_97%", "r_hat", "khat", "elbo", "kl"):
        assert np.isnan(row[column]), column
    assert "NaN or inf" in row["reasons"]
    # the fit that converged has its numbers, so the table is not empty by accident
    assert np.isfinite(table[table["fit"] == "beta"]["mean"]).all()
    markdown = (results / "summary.md").read_text()
    assert "| diverged | not converged | nan | nan | nan |" in markdown
    assert "### diverged" not in markdown  # no truth table for it


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. matplotlib's singular limits, empty legends
def test_every_figure_of_a_diverged_fit_is_labelled(base_run, tmp_path, monkeypatch):
    """The plot jobs succeeded; drawn again here from the run's files, every figure's title
    says DIVERGED and why (a PNG's title cannot be read back, so the figure is caught just
    before it is saved)."""
    from sviflow import plots

    figures = base_run / "results" / "figures" / "diverged"
    names = ("loss", "trajectories", "posterior", "mock_observations")
    for name in names:
        assert (figures / f"{name}.png").stat().st_size > 0
    titles = {}
    save = plots._save

    def record(fig, path, **layout):
        titles[Path(path).stem] = fig._suptitle.get_text() if fig._suptitle else ""
        save(fig, path, **layout)

    monkeypatch.setattr(plots, "_save", record)
    results = base_run / "results"
    inputs = {
        "fit": results / "fits" / "diverged.h5",
        "predictive": results / "predictive" / "diverged.h5",
        "check": results / "checks" / "diverged.h5",
        "reference": results / "references" / "coin--coin_12_8.h5",
        "data": results / "data" / "coin_12_8.h5",
    }
    plots.plot_fit(inputs, {name: tmp_path / f"{name}.png" for name in names}, {"spec": {"name": "diverged"}})
    assert set(titles) == set(names)
    for name, title in titles.items():
        assert title.startswith("diverged: DIVERGED: not a result"), (name, title)
        assert "NaN or inf" in title, (name, title)


# --- 3. corrupt, truncated or foreign HDF5 inputs ----------------------------------------------

CORRUPT = {
    # the file broken, what it is, the target that reads it, the step that does, its log
    "fit file": (
        "results/fits/beta.h5",
        "HDF5",
        "results/predictive/beta.h5",
        "predict",
        "results/logs/predict/beta.log",
    ),
    "check file": (
        "results/checks/diverged.h5",
        "HDF5",
        "results/arviz/diverged.nc",
        "summarize",
        "results/logs/summarize.log",
    ),
}


def test_netcdf_is_written_whole_or_not_at_all(base_run, tmp_path):
    """No step reads the netCDF files; summarize writes them through a temporary name, so a
    write that fails leaves neither a partial file nor its temporary behind."""
    import arviz as az

    from sviflow.summary import write_netcdf

    idata = az.from_netcdf(base_run / "results" / "arviz" / "beta.nc")
    target = tmp_path / "beta.nc"
    target.mkdir()  # the rename onto a directory fails after the whole file was written
    with pytest.raises(OSError):
        write_netcdf(idata, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beta.nc"] and target.is_dir()
    target.rmdir()
    write_netcdf(idata, target)
    assert az.from_netcdf(target).posterior.equals(idata.posterior)


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_truncated_input_is_named_with_what_to_do(base_run, tmp_path, case):
    """A file cut to half its size and touched (so that its readers rerun): the step that reads
    it fails with one line, on Snakemake's output and in the job's log, that names the file and
    says to delete it and run again; for the fit, doing so gives back the same numbers."""
    broken, kind, target, step, log = CORRUPT[case]
    workdir = _clone(base_run, tmp_path / "workflow")
    path = workdir / broken
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    os.utime(path)
    result = run_snakemake(workdir, "--cores", "1", *BASE, target, check=False)
    assert result.returncode != 0
    assert f"sviflow {step}: {broken}: not a readable {kind} file (" in _output(result)
    advice = "it is corrupt or truncated: delete it and run snakemake again to remake it"
    assert advice in _output(result)
    assert f"{broken}: not a readable {kind} file" in (workdir / log).read_text()
    assert not (workdir / target).exists()  # nothing made from it
    if case == "fit file":
        path.unlink()
        run_snakemake(workdir, "--cores", "2", *BASE, target)
        assert _equal(_h5_contents(path), _h5_contents(base_run / broken))
        assert (workdir / target).is_file()


def test_input_of_another_schema_version_is_named(base_run, tmp_path):
    workdir = _clone(base_run, tmp_path / "workflow")
    path = workdir / "results" / "fits" / "beta.h5"
    with h5py.File(path, "r+") as handle:
        handle.attrs["schema_version"] = 99
    target = "results/predictive/beta.h5"
    result = run_snakemake(workdir, "--cores", "1", *BASE, target, check=False)
    assert result.returncode != 0
    assert (
        "sviflow predict: results/fits/beta.h5: written with schema version 99, this sviflow "
        f"reads version {SCHEMA_VERSION}"
    ) in _output(result)
    assert "snakemake --forcerun results/fits/beta.h5" in _output(result)
    # the advice works
    run_snakemake(workdir, "--cores", "2", *BASE, "--forcerun", "results/fits/beta.h5", target)
    with h5py.File(path) as handle:
        assert handle.attrs["schema_version"] == SCHEMA_VERSION
    assert _equal(_h5_contents(path), _h5_contents(base_run / "results" / "fits" / "beta.h5"))


# --- 4. a fit killed with SIGKILL ------------------------------------------------------------


def _with_long_fit(workdir: Path, steps: int, chunks: int) -> dict:
    config = _base_config(workdir)
    config["fits"]["long"] = {**config["fits"]["beta"], "steps": steps, "seed": 3}
    config["engine"]["chunks"] = chunks  # reruns nothing: it changes no number
    return config


def _fit_process(snakemake_pid: int, fit_name: str = "fit.py"):
    import psutil

    for child in psutil.Process(snakemake_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name().startswith("python") and any(part.endswith(fit_name) for part in child.cmdline()):
                return child
    return None


def test_killed_fit_leaves_no_result_and_is_recomputed(base_run, tmp_path):
    """The fit job (4 million steps in 50 chunks) is killed with SIGKILL after its first chunk:
    Snakemake fails, no results/fits/long.h5 is left (the file is written under a temporary
    name and renamed when whole), and the next run recomputes it without --rerun-incomplete;
    the other fits' files, and everything made from them, are not touched."""
    workdir = _clone(base_run, tmp_path / "workflow")
    untouched = _snapshot(workdir / "results")
    long_args = _write_config(workdir, "long.yaml", _with_long_fit(workdir, 4_000_000, 50))
    log = workdir / "results" / "logs" / "fit" / "long.log"
    with _background(workdir, "--cores", "1", *long_args, "results/fits/long.h5") as snakemake:
        _wait_for(
            lambda: log.is_file() and "mean loss of chunk" in log.read_text(),
            "the fit's first chunk",
            process=snakemake,
        )
        fit = _fit_process(snakemake.pid)
        assert fit is not None, "no fit process under snakemake"
        fit.send_signal(signal.SIGKILL)
        output, _ = snakemake.communicate(timeout=300)
    assert snakemake.returncode != 0
    assert "Error in rule fit" in output and "SIGKILL" in output
    fits = workdir / "results" / "fits"
    assert not (fits / "long.h5").exists()
    assert sorted(p.name for p in fits.iterdir()) == ["beta.h5", "diverged.h5"]  # no partial file

    # a file left by a write cut short: a temporary name, never taken for the result
    partial = fits / ".long.h5.k1ll3d.partial"
    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    small_args = _write_config(workdir, "long-small.yaml", _with_long_fit(workdir, 200, 2))
    result = run_snakemake(workdir, "--cores", "2", *small_args)
    with h5py.File(fits / "long.h5") as handle:
        assert handle["losses"].shape == (1, 200) and np.isfinite(handle["losses"][()]).all()
    assert "results/fits/long.h5" in _output(result)
    after = _snapshot(workdir / "results")
    remade = {"summary.csv", "summary.md", "verdicts.html", "logs/summarize.log", "benchmarks/summarize.tsv"}
    remade |= {path for path in untouched if path.startswith("arviz/")}  # all written by summarize
    changed = [path for path, stamp in untouched.items() if path not in remade and after.get(path) != stamp]
    assert changed == []
    assert (workdir / "results" / "figures" / "long" / "loss.png").is_file()


# --- 5. results that cannot be written ---------------------------------------------------------


def _unprivileged(tmp_path: Path) -> list[str]:
    """A command prefix under which a write into a read-only (555) folder is denied. Root
    ignores folder permissions through the capability CAP_DAC_OVERRIDE; setpriv drops it (and
    its relatives) from the bounding set, so the process stays root but obeys the mode bits."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): chmod cannot deny root a write")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here (no CAP_SETPCAP): nothing denies root a write")
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        denied = subprocess.run([*prefix, "touch", str(probe / "file")], capture_output=True)
    finally:
        probe.chmod(0o755)
    if denied.returncode == 0:
        pytest.skip("root keeps writing into a 555 folder even without CAP_DAC_OVERRIDE")
    return prefix


def test_unwritable_results_give_a_clear_message_and_no_partial_file(base_run, tmp_path):
    prefix = _unprivileged(tmp_path)
    workdir = _clone(base_run, tmp_path / "workflow")
    config = _base_config(workdir)
    config["fits"]["extra"] = {**config["fits"]["beta"], "seed": 5}
    args = _write_config(workdir, "extra.yaml", config)
    fits = workdir / "results" / "fits"
    before = _snapshot(fits)
    fits.chmod(0o555)
    try:
        result = subprocess.run(
            [*prefix, SNAKEMAKE, "--cores", "1", *args, "results/fits/extra.h5"],
            cwd=workdir,
            env=_environment(workdir),
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        fits.chmod(0o755)
    message = (
        "cannot write results/fits/extra.h5: Permission denied; check that its folder exists and is writable"
    )
    assert result.returncode != 0
    assert message in _output(result)
    assert message in (workdir / "results" / "logs" / "fit" / "extra.log").read_text()
    assert _snapshot(fits) == before  # no result, no partial file, the others untouched


# --- 6. two runs in one directory ------------------------------------------------------------


def test_second_run_in_the_same_directory_is_refused_by_the_lock(base_run, tmp_path):
    """While a run works, Snakemake locks the files it reads and writes (.snakemake/locks/); a
    second run in the same directory that touches them exits at once with LockException,
    starting no job.

    A run that dies without cleaning up (SIGKILL, power loss, a killed SLURM allocation) leaves
    its lock behind: every later run is refused the same way until ``snakemake --unlock`` (with
    the same config) removes it. Unlock only when no other Snakemake works in the directory.
    """
    workdir = _clone(base_run, tmp_path / "workflow")
    args = _write_config(workdir, "long.yaml", _with_long_fit(workdir, 20_000_000, 50))
    locks = workdir / ".snakemake" / "locks"
    with _background(workdir, "--cores", "1", *args, "results/fits/long.h5") as first:
        _wait_for(lambda: locks.is_dir() and any(locks.iterdir()), "the lock", process=first)
        second = run_snakemake(workdir, "--cores", "1", *args, check=False)
        assert second.returncode != 0
        assert "LockException" in _output(second)
        assert "Directory cannot be locked" in _output(second)
        assert "--unlock" in _output(second)
        assert "localrule" not in _output(second)
        # the first run dies without cleaning up: its lock stays
        assert first.poll() is None
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=120)
    assert any(locks.iterdir())
    stale = run_snakemake(workdir, "--cores", "1", *args, check=False)
    assert stale.returncode != 0 and "Directory cannot be locked" in _output(stale)
    unlock = run_snakemake(workdir, "--unlock", *args)
    assert "Unlocked working directory" in _output(unlock)
    assert not locks.exists() or not any(locks.iterdir())
    dry = run_snakemake(workdir, "-n", "--cores", "1", *args)
    assert "cannot be locked" not in _output(dry)
    assert not (workdir / "results" / "fits" / "long.h5").exists()


# --- 7. determinism ----------------------------------------------------------------------------


def test_same_config_gives_the_same_numbers(base_run, second_run):
    """Two runs of one config in two copies: every dataset of every HDF5 and netCDF file is
    exactly equal (NaN where NaN), and so are the attributes but the creation times and
    timings; the summary table is the same text."""
    second, _, _ = second_run
    files = sorted(
        str(p.relative_to(base_run)) for p in (base_run / "results").rglob("*") if p.suffix in (".h5", ".nc")
    )
    assert len(files) == 10  # data, reference, and per fit: fit, predictive, check, arviz
    assert files == sorted(
        str(p.relative_to(second)) for p in (second / "results").rglob("*") if p.suffix in (".h5", ".nc")
    )
    different = [
        name for name in files if not _equal(_h5_contents(base_run / name), _h5_contents(second / name))
    ]
    assert different == []
    assert (base_run / "results" / "summary.csv").read_text() == (
        second / "results" / "summary.csv"
    ).read_text()


# --- 8. nothing written outside results/, .snakemake/ and the JAX cache -----------------------


def _outside(before: dict, after: dict, allowed: set[str]) -> list[str]:
    """Files added, changed or removed outside the ``allowed`` top-level folders (Python's own
    __pycache__ aside: the interpreter writes it wherever it imports from, unless
    PYTHONDONTWRITEBYTECODE is set)."""
    touched = {p for p in after.keys() | before.keys() if before.get(p) != after.get(p)}
    return sorted(
        p for p in touched if Path(p).parts[0] not in allowed and "__pycache__" not in Path(p).parts
    )


def test_a_run_writes_only_results_snakemake_and_the_jax_cache(second_run):
    workdir, before, after = second_run
    assert _outside(before, after, {"results", ".snakemake", ".jax_cache"}) == []
    added = {Path(p).parts[0] for p in after.keys() - before.keys()}
    assert {"results", ".snakemake", ".jax_cache"} <= added  # logs and benchmarks in results/
    assert any((workdir / "results" / "logs" / "fit").iterdir())
    assert any((workdir / "results" / "benchmarks" / "fit").iterdir())


def test_the_jax_cache_goes_where_the_config_says(workflow_copy):
    config = _base_config(workflow_copy)
    config["engine"]["cache_dir"] = "cache/xla"
    args = _write_config(workflow_copy, "cache.yaml", config)
    before = _snapshot(workflow_copy)
    run_snakemake(workflow_copy, "--cores", "1", *args, "results/fits/diverged.h5")
    after = _snapshot(workflow_copy)
    assert _outside(before, after, {"results", ".snakemake", "cache"}) == []
    assert any((workflow_copy / "cache" / "xla").iterdir())
    assert not (workflow_copy / ".jax_cache").exists()


def test_an_empty_cache_dir_turns_the_cache_off(workflow_copy, tmp_path):
    """Even when the shell that starts Snakemake has SVIFLOW_JAX_CACHE set."""
    config = _base_config(workflow_copy)
    config["engine"]["cache_dir"] = ""
    args = _write_config(workflow_copy, "nocache.yaml", config)
    inherited = tmp_path / "inherited_cache"
    before = _snapshot(workflow_copy)
    run_snakemake(
        workflow_copy,
        "--cores",
        "1",
        *args,
        "results/fits/diverged.h5",
        env={"SVIFLOW_JAX_CACHE": str(inherited)},
    )
    after = _snapshot(workflow_copy)
    assert (workflow_copy / "results" / "fits" / "diverged.h5").is_file()
    assert _outside(before, after, {"results", ".snakemake"}) == []
    assert not inherited.exists()


# --- 9. never silently wrong (issue 17): refused before the step's work, in one line ----------

SITES_MODEL = """
import numpyro
import numpyro.distributions as dist


def two(y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.HalfNormal(1.0))
    with numpyro.plate("n", 3 if y is None else y.shape[0]):
        numpyro.sample("y", dist.Normal(a, b), obs=y)


def observes_only(y=None):
    with numpyro.plate("n", 3 if y is None else y.shape[0]):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)


def guide_without_b(y=None):
    numpyro.sample("a", dist.Normal(numpyro.param("a_loc", 0.0), 1.0))


def guide_with_c(y=None):
    numpyro.sample("a", dist.Normal(numpyro.param("a_loc", 0.0), 1.0))
    numpyro.sample("b", dist.LogNormal(numpyro.param("b_loc", 0.0), 1.0))
    numpyro.sample("c", dist.Normal(0.0, 1.0))
"""

REFUSED = {
    # fit or dataset: (its job's target, its log, the one line Snakemake's output shows)
    "without_b": (
        "results/fits/without_b.h5",
        "results/logs/fit/without_b.log",
        "sviflow fit: fits.without_b: the guide fits.without_b.guide.name = "
        "'tests/configs/faults/sites.py:guide_without_b' has no sample site for the "
        "model's latent site(s) 'b' (the model 'tests/configs/faults/sites.py:two' "
        "samples 'a', 'b'; the guide 'a')",
    ),
    "with_c": (
        "results/fits/with_c.h5",
        "results/logs/fit/with_c.log",
        "sviflow fit: fits.with_c: the guide fits.with_c.guide.name = "
        "'tests/configs/faults/sites.py:guide_with_c' samples 'c', which the model "
        "'tests/configs/faults/sites.py:two' does not sample (its latent sites: 'a', 'b')",
    ),
    "no_latent": (
        "results/fits/no_latent.h5",
        "results/logs/fit/no_latent.log",
        "sviflow fit: fits.no_latent: the model models.observes_only.function = "
        "'tests/configs/faults/sites.py:observes_only' has no latent sample site on the "
        "data of datasets.three: there is nothing to fit",
    ),
    "nan_cell": (
        "results/data/nan_cell.h5",
        "results/logs/simulate/nan_cell.log",
        "sviflow simulate: datasets.nan_cell.file: tests/configs/faults/nan.csv, line 3, "
        "column 'y': 'nan' is not a finite number",
    ),
    "ragged": (
        "results/data/ragged.h5",
        "results/logs/simulate/ragged.log",
        "sviflow simulate: datasets.ragged.file: tests/configs/faults/ragged.json: arrays of "
        "one value per observation (the observed arrays' first axis, every 1-D covariate) "
        "differ in length: 'y': 3; 'x': 2",
    ),
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """One run of jobs that each must refuse: guides that disagree with their model, a model
    without a latent site, a CSV with a nan and JSON arrays of two lengths (--keep-going: all
    of them run)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("faults-refusals") / "workflow")
    folder = workdir / "tests" / "configs" / "faults"
    (folder / "sites.py").write_text(SITES_MODEL)
    (folder / "three.csv").write_text("y\n0.5\n1.5\n2.5\n")
    (folder / "nan.csv").write_text("x,y\n1,0.5\n2,nan\n3,2.5\n")
    (folder / "ragged.json").write_text('{"x": [1.0, 2.0], "y": [0.5, 1.5, 2.5]}')
    fit = {"data": "three", "optimizer": {"name": "Adam", "step_size": 0.01}, "steps": 50}
    config = {
        "models": {
            "two": {"function": "sites.py:two"},
            "observes_only": {"function": "sites.py:observes_only"},
        },
        "datasets": {
            "three": {"file": "three.csv", "observed": ["y"]},
            "nan_cell": {"file": "nan.csv", "observed": ["y"]},
            "ragged": {"file": "ragged.json", "observed": ["y"]},
        },
        "fits": {
            "without_b": {"model": "two", "guide": {"name": "sites.py:guide_without_b"}, **fit},
            "with_c": {"model": "two", "guide": {"name": "sites.py:guide_with_c"}, **fit},
            "no_latent": {"model": "observes_only", "guide": {"name": "AutoNormal"}, **fit},
        },
        "engine": {"chunks": 2, "trajectory_points": 10},
    }
    args = _write_config(workdir, "refusals.yaml", config)
    result = run_snakemake(
        workdir,
        "--cores",
        "2",
        "--keep-going",
        *args,
        *(target for target, _, _ in REFUSED.values()),
        check=False,
    )
    return workdir, result


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_guide_model_or_dataset_that_would_mislead_is_refused_in_one_line(refusals, case):
    """Each job fails with one line (no traceback) on Snakemake's output and in its log, naming
    the fit or dataset, and the sites or the file's line and column; a fit is refused before
    its first SVI step, and nothing is written."""
    workdir, result = refusals
    target, log, message = REFUSED[case]
    assert result.returncode != 0
    assert message in _output(result), _output(result)[-4000:]
    text = (workdir / log).read_text()
    assert message.split(": ", 1)[1] in text
    assert "Traceback" not in text and "mean loss of chunk" not in text
    assert not (workdir / target).exists()


LOOPING_MODEL = """
import numpyro
import numpyro.distributions as dist


def forever():
    numpyro.sample("a", dist.Normal(0.0, 1.0))
    print("a print of the model's")
    while True:  # never ends when traced
        pass
"""


def test_a_fit_that_never_ends_is_stopped_at_its_runtime(workflow_copy):
    """A model that loops forever when traced hung its job, and the run, forever (a local job had
    no time limit). Now the rule's runtime (here 1 minute, --set-resources) ends it with one line
    naming the rule, the fit, the limit and how to raise it; nothing is written; and the model's
    print is in the job's log, not on the terminal."""
    folder = workflow_copy / "tests" / "configs" / "faults"
    (folder / "loop.py").write_text(LOOPING_MODEL)
    args = _write_config(
        workflow_copy,
        "loop.yaml",
        {
            "models": {"loop": {"function": "loop.py:forever"}},
            "fits": {"hang": {"model": "loop", "guide": {"name": "AutoNormal"}, "steps": 10}},
        },
    )
    start = time.monotonic()
    result = run_snakemake(
        workflow_copy,
        "--cores",
        "2",
        *args,
        "results/fits/hang.h5",
        "--set-resources",
        "fit:runtime=1",
        check=False,
        timeout=400,
    )
    elapsed = time.monotonic() - start
    message = (
        "sviflow fit: rule fit, fits.hang: stopped after 1 minute(s), its time limit "
        "(resources: runtime = 1, in minutes)"
    )
    assert result.returncode != 0
    assert message in _output(result), _output(result)[-4000:]
    assert "snakemake --set-resources fit:runtime=2" in _output(result)
    assert elapsed < 240, elapsed
    log = (workflow_copy / "results" / "logs" / "fit" / "hang.log").read_text()
    assert message.removeprefix("sviflow fit: ") in log
    assert "a print of the model's" in log and "a print of the model's" not in _output(result)
    fits = workflow_copy / "results" / "fits"
    assert not fits.exists() or list(fits.iterdir()) == []


@contextlib.contextmanager
def _full_disk(folder: Path, size: str = "8k"):
    """``folder`` as a tmpfs of ``size``: a disk that fills up (root and mount(8) only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is simulated with a tiny tmpfs: needs root and mount")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_gives_one_line_and_no_partial_file(base_run, tmp_path):
    """results/fits/ on a disk of 4 kB: the fit's write fails with ENOSPC (HDF5 reports it
    inside a RuntimeError as it flushes); the job ends with the one line a permission denied
    gets, on Snakemake's output and in the log, and leaves no file behind (no traceback, and
    no segfault from h5py's finalisers)."""
    workdir = _clone(base_run, tmp_path / "workflow")
    config = _base_config(workdir)
    config["fits"]["extra"] = {**config["fits"]["beta"], "seed": 5}
    args = _write_config(workdir, "extra.yaml", config)
    fits = workdir / "results" / "fits"
    shutil.rmtree(fits)  # the target needs none of them
    with _full_disk(fits, "4k"):
        # a file in it: Snakemake removes the empty folders of failed outputs, and a mount
        # point cannot be removed
        (fits / "keep").write_text("x")
        result = run_snakemake(workdir, "--cores", "1", *args, "results/fits/extra.h5", check=False)
        left = sorted(p.name for p in fits.iterdir())
    message = (
        "cannot write results/fits/extra.h5: No space left on device; free space on its "
        "disk (df -h shows how much is left) and run snakemake again"
    )
    assert result.returncode != 0
    assert f"sviflow fit: {message}" in _output(result), _output(result)[-4000:]
    assert message in (workdir / "results" / "logs" / "fit" / "extra.log").read_text()
    assert "Traceback" not in _output(result)
    assert "SIGSEGV" not in _output(result) and "Segmentation" not in _output(result)
    assert left == ["keep"]
