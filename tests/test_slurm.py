"""The workflow on a real SLURM cluster: the tiny config submitted through
workflow/profiles/slurm to the one-node cluster that tests/cluster/start-slurm.sh starts (CI
starts it in .ci/run). Every job goes through sbatch and runs Snakemake inside SLURM; the
results must be the numbers a local run gives."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO, TINY, copy_workflow, plot_rule, run_snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

SLURM_PROFILE = ("--workflow-profile", "workflow/profiles/slurm")
HDF5_DIRS = ("data", "references", "fits", "predictive", "checks")
UP_STATES = ("idle", "mixed", "allocated", "completing")


def _cluster_problem() -> str | None:
    """Why no SLURM job can run here, or None when a node is up."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return ("no SLURM client (sinfo, sbatch) on this machine; "
                "`bash tests/cluster/start-slurm.sh` (as root) installs and starts a one-node cluster")
    try:  # without a readable slurm.conf, sinfo retries for 60 s before it gives up
        result = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True,
                                text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 120 s; `bash tests/cluster/start-slurm.sh` starts a cluster"
    if result.returncode != 0:
        return (f"SLURM cluster not reachable (sinfo: {result.stderr.strip()}); "
                "`bash tests/cluster/start-slurm.sh` starts one")
    states = result.stdout.split()  # a suffix (idle*, idle~, ...) means not usable
    if not any(state in UP_STATES for state in states):
        return (f"no SLURM node up (sinfo states: {', '.join(states) or 'none'}); "
                "`bash tests/cluster/start-slurm.sh` starts one")
    return None


@pytest.fixture(scope="session")
def slurm_run(tmp_path_factory):
    """The tiny config run once through the SLURM profile: (workdir, Snakemake's output).
    Session-scoped like tiny_run, so that a skip comes before the local run is made."""
    problem = _cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI starts a SLURM cluster (.ci/run), but: {problem}")
        pytest.skip(problem)
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm") / "workflow")
    result = run_snakemake(workdir, *SLURM_PROFILE, *TINY, timeout=2400)
    return workdir, result.stdout + result.stderr


def _squeue(run_id: str) -> list[dict]:
    """SLURM's record of every job named ``run_id`` (the plugin names a run's jobs so)."""
    result = subprocess.run(
        ["squeue", "--states=all", "--noheader", f"--name={run_id}",
         "--format=%i|%T|%k|%Z|%j"],
        capture_output=True, text=True, timeout=60, check=True)
    jobs = []
    for line in result.stdout.splitlines():
        job_id, state, comment, workdir, name = line.strip().split("|")
        jobs.append({"id": job_id, "state": state, "comment": comment, "workdir": workdir,
                     "name": name})
    return jobs


def _expected_comments() -> set[str]:
    """The plugin's sbatch --comment of the jobs the tiny config must have submitted."""
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    comments = {"rule_summarize"}
    comments |= {f"rule_simulate_wildcards_{dataset}" for dataset in config["datasets"]}
    comments |= {f"rule_compare_wildcards_{name}" for name in config["comparisons"]}
    for fit, entry in config["fits"].items():
        comments |= {f"rule_{rule}_wildcards_{fit}"
                     for rule in ("fit", "predict", "check")}
        comments.add(f"rule_{plot_rule(config, fit)}_wildcards_{fit}")
        comments.add(f"rule_reference_wildcards_{entry['model']}--{entry.get('data', 'none')}")
    return comments


def test_every_job_is_a_completed_slurm_job(slurm_run):
    """SLURM itself (squeue) knows each job Snakemake submitted: the run's jobs, one per rule
    and wildcards, all COMPLETED, run in the workflow's directory."""
    workdir, output = slurm_run
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, f"no SLURM run ID in Snakemake's output:\n{output[-3000:]}"
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    assert submitted, f"Snakemake submitted nothing to SLURM:\n{output[-3000:]}"

    jobs = _squeue(run_id.group(1))
    assert {job["id"] for job in jobs} == set(submitted.values())
    assert {job["state"] for job in jobs} == {"COMPLETED"}, jobs
    assert {job["workdir"] for job in jobs} == {str(workdir.resolve())}
    assert all(job["name"].startswith("sviflow_") for job in jobs)  # slurm-jobname-prefix
    comments = [job["comment"] for job in jobs]
    assert len(comments) == len(set(comments)), "a job was submitted twice"
    missing = _expected_comments() - set(comments)
    assert not missing, f"never submitted to SLURM: {sorted(missing)}"


def _datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        found = {}
        handle.visititems(lambda name, item: found.__setitem__(name, np.asarray(item[()]))
                          if isinstance(item, h5py.Dataset) else None)
        return found


def test_slurm_results_equal_a_local_run(slurm_run, tiny_run):
    """Data, references, fits, predictive samples and checks made inside SLURM jobs hold the
    same numbers, to the bit, as a local run of the same config, from the same config slice."""
    workdir, _ = slurm_run
    compared = 0
    for folder in HDF5_DIRS:
        local_files = sorted(p.name for p in (tiny_run / "results" / folder).glob("*.h5"))
        slurm_files = sorted(p.name for p in (workdir / "results" / folder).glob("*.h5"))
        assert slurm_files == local_files, folder
        for name in local_files:
            local_path = tiny_run / "results" / folder / name
            slurm_path = workdir / "results" / folder / name
            local, slurm = _datasets(local_path), _datasets(slurm_path)
            assert sorted(slurm) == sorted(local), f"{folder}/{name}: other datasets"
            for key, expected in local.items():
                got = slurm[key]
                assert got.dtype == expected.dtype and got.shape == expected.shape, f"{folder}/{name}:{key}"
                assert np.array_equal(got, expected, equal_nan=expected.dtype.kind in "fc"), (
                    f"{folder}/{name}:{key} differs between the SLURM and the local run")
                compared += 1
            with h5py.File(local_path, "r") as a, h5py.File(slurm_path, "r") as b:
                for attribute in ("config", "verdict"):
                    assert a.attrs.get(attribute) == b.attrs.get(attribute), (
                        f"{folder}/{name}: attribute {attribute} differs")
    assert compared > 100  # every fit's arrays, not a handful
