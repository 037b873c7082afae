"""The workflow on a real SLURM cluster: the tiny config submitted through
workflow/profiles/slurm to the one-node cluster that tests/cluster/start-slurm.sh starts (CI
starts it in .ci/run). Every job goes through sbatch and runs Snakemake inside SLURM; the
results must be the numbers a local run gives."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
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
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def _cluster_problem() -> str | None:
    """Why no SLURM job can run here, or None when a node is up."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return (
            "no SLURM client (sinfo, sbatch) on this machine; "
            "`bash tests/cluster/start-slurm.sh` (as root) installs and starts a one-node cluster"
        )
    try:  # without a readable slurm.conf, sinfo retries for 60 s before it gives up
        result = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 120 s; `bash tests/cluster/start-slurm.sh` starts a cluster"
    if result.returncode != 0:
        return (
            f"SLURM cluster not reachable (sinfo: {result.stderr.strip()}); "
            "`bash tests/cluster/start-slurm.sh` starts one"
        )
    states = result.stdout.split()  # a suffix (idle*, idle~, ...) means not usable
    if not any(state in UP_STATES for state in states):
        return (
            f"no SLURM node up (sinfo states: {', '.join(states) or 'none'}); "
            "`bash tests/cluster/start-slurm.sh` starts one"
        )
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
        ["squeue", "--states=all", "--noheader", f"--name={run_id}", "--format=%i|%T|%k|%Z|%j|%C|%m|%l"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    jobs = []
    for line in result.stdout.splitlines():
        job_id, state, comment, workdir, name, cpus, memory, limit = line.strip().split("|")
        jobs.append(
            {
                "id": job_id,
                "state": state,
                "comment": comment,
                "workdir": workdir,
                "name": name,
                "cpus": int(cpus),
                "memory": memory,
                "time_limit": limit,
            }
        )
    return jobs


# A fit's jobs are one SLURM job (group fit_chain, workflow/rules/fit.smk), with its plot rule
CHAIN = ("fit", "predict", "check")


def _tiny_config() -> dict:
    return yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())


def _chain_comment(config: dict, fit: str) -> str:
    """The plugin's sbatch --comment of a group job: rule_<group>_<its rules, sorted>."""
    return "rule_fit_chain_" + "_".join(sorted((*CHAIN, plot_rule(config, fit))))


def _expected_comments() -> Counter:
    """The sbatch --comment of every job the tiny config must have submitted, with counts:
    one per reference, one group job per fit, nothing else."""
    config = _tiny_config()
    comments = Counter(_chain_comment(config, fit) for fit in config["fits"])
    comments.update(
        {
            f"rule_reference_wildcards_{entry['model']}--{entry.get('data', 'none')}"
            for entry in config["fits"].values()
        }
    )
    return comments


def _resource(rule: str, name: str, attempt: int = 1) -> int:
    """A resource of ``rule`` as SLURM gets it: the SLURM profile's set-resources, else the
    rule's own (the plot rules', in plot.smk's loop), else the profile's default-resources."""
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    if name in profile.get("set-resources", {}).get(rule, {}):
        return eval(str(profile["set-resources"][rule][name]), {"attempt": attempt})
    if rule.startswith("plot"):
        plot_rules = (REPO / "workflow/rules/plot.smk").read_text().split("rule compare:")[0]
        declared = re.search(rf"{name}=(\d+)", plot_rules)
        if declared:
            return int(declared.group(1))
    return eval(str(profile["default-resources"][name]), {"attempt": attempt})


def test_every_job_is_a_completed_slurm_job(slurm_run):
    """SLURM itself (squeue) knows each job Snakemake submitted: one per reference and one
    group job per fit (its fit, predict, check and plot), all COMPLETED, run in the workflow's
    directory; the data, the comparison and the summary ran outside SLURM."""
    workdir, output = slurm_run
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    assert run_id, f"no SLURM run ID in Snakemake's output:\n{output[-3000:]}"
    submitted = SUBMITTED.findall(output)
    assert submitted, f"Snakemake submitted nothing to SLURM:\n{output[-3000:]}"

    jobs = _squeue(run_id.group(1))
    assert sorted(job["id"] for job in jobs) == sorted(submitted)
    assert {job["state"] for job in jobs} == {"COMPLETED"}, jobs
    assert {job["workdir"] for job in jobs} == {str(workdir.resolve())}
    assert all(job["name"].startswith("sviflow_") for job in jobs)  # slurm-jobname-prefix
    # 8 for the tiny config (3 references, 5 fits), not the 24 of one job per rule
    assert Counter(job["comment"] for job in jobs) == _expected_comments()
    assert len(jobs) == len(submitted) == sum(_expected_comments().values())
    for rule in ("simulate", "compare", "summarize"):
        assert f"localrule {rule}:" in output, f"{rule} did not run in Snakemake's process"


def test_a_fit_chain_asks_slurm_for_what_its_jobs_need(slurm_run):
    """A group job runs its jobs one after the other: SLURM gets the most CPUs and memory of
    any of them and the sum of their wall times (Snakemake's GroupResources.basic_layered), not
    the sum of the CPUs."""
    _, output = slurm_run
    config = _tiny_config()
    jobs = {job["comment"]: job for job in _squeue(re.search(r"SLURM run ID: (\S+)", output).group(1))}
    for fit in config["fits"]:
        job = jobs[_chain_comment(config, fit)]
        rules = (*CHAIN, plot_rule(config, fit))
        assert job["cpus"] == 1  # the profile's cpus_per_task: 1 (not the sum over the chain's jobs)
        assert job["memory"] == f"{max(_resource(r, 'mem_mb') for r in rules)}M"
        minutes = sum(_resource(r, "runtime") for r in rules)
        assert job["time_limit"] == f"{minutes // 60}:{minutes % 60:02d}:00", job


def _datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        found = {}
        handle.visititems(
            lambda name, item: (
                found.__setitem__(name, np.asarray(item[()])) if isinstance(item, h5py.Dataset) else None
            )
        )
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
                    f"{folder}/{name}:{key} differs between the SLURM and the local run"
                )
                compared += 1
            with h5py.File(local_path, "r") as a, h5py.File(slurm_path, "r") as b:
                for attribute in ("config", "verdict"):
                    assert a.attrs.get(attribute) == b.attrs.get(attribute), (
                        f"{folder}/{name}: attribute {attribute} differs"
                    )
    assert compared > 100  # every fit's arrays, not a handful


def test_slurm_summaries_equal_a_local_run(slurm_run, tiny_run):
    """The summary (ArviZ's az.summary of every fit, the verdicts), written by the main process
    from the group jobs' files, is the local run's, byte for byte."""
    workdir, _ = slurm_run
    for name in ("summary.csv", "summary.md"):
        assert (workdir / "results" / name).read_bytes() == (tiny_run / "results" / name).read_bytes(), name


def _planned_groups(workdir: Path, *args: str) -> list[str]:
    """The group jobs a dry run through the SLURM profile plans (no job is submitted)."""
    result = run_snakemake(workdir, "-n", *SLURM_PROFILE, *TINY, *args)
    return re.findall(r"Group job (\S+) \(jobs", result.stdout + result.stderr)


def test_grouping_follows_the_command_line(tmp_path):
    """One group job per fit by default; --group-components batches fit chains into one
    submission, --groups moves rules into a group of their own (here every figure in one job);
    a local run has no groups."""
    workdir = copy_workflow(tmp_path / "workflow")
    fits = len(_tiny_config()["fits"])
    assert _planned_groups(workdir) == ["fit_chain"] * fits
    assert _planned_groups(workdir, "--group-components", f"fit_chain={fits}") == ["fit_chain"]
    plots = [f"{rule}=plots" for rule in ("plot", "plot_with_mock", "plot_with_covariance")]
    assert sorted(_planned_groups(workdir, "--groups", *plots, "--group-components", f"plots={fits}")) == [
        "fit_chain"
    ] * fits + ["plots"]
    # a local run of one fit and its prediction: two jobs of their own, not one group job
    local = run_snakemake(workdir, "--cores", "2", *TINY, "results/predictive/multimodal.h5")
    output = local.stdout + local.stderr
    assert "localrule fit:" in output and "localrule predict:" in output, output[-3000:]
    assert "Group job" not in output


SWEEP = ("--configfile", "tests/configs/sweep.yaml", "--replace-workflow-config")


def test_a_batch_is_one_submission_and_equals_a_local_run(tmp_path):
    """tests/configs/sweep.yaml through SLURM: each batch's fit, predict and check jobs are one
    group job (4 submissions in all: 2 batches of 6 fits, the fit of its own, the reference,
    not 13 fits' chains), and every fit's numbers are a local run's to the bit."""
    problem = _cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI starts a SLURM cluster (.ci/run), but: {problem}")
        pytest.skip(problem)
    slurm, local = copy_workflow(tmp_path / "slurm"), copy_workflow(tmp_path / "local")
    result = run_snakemake(slurm, *SLURM_PROFILE, *SWEEP, timeout=2400)
    run_snakemake(local, "--cores", "2", *SWEEP)
    output = result.stdout + result.stderr
    jobs = _squeue(re.search(r"SLURM run ID: (\S+)", output).group(1))
    config = yaml.safe_load((REPO / "tests/configs/sweep.yaml").read_text())
    expected = Counter(
        {
            _chain_comment(config, "beta"): 1,
            "rule_reference_wildcards_coin--coin_12_8": 1,
            **{f"rule_fit_chain_check_batch_{i}_fit_batch_{i}_predict_batch_{i}": 1 for i in (1, 2)},
        }
    )
    assert Counter(job["comment"] for job in jobs) == expected
    assert {job["state"] for job in jobs} == {"COMPLETED"}
    # one CPU each, the batches too (their rules claim threads: 2 and have config-made names)
    assert [job["cpus"] for job in jobs] == [1] * len(jobs)
    compared = 0
    for folder in ("fits", "predictive", "checks"):
        names = sorted(
            p.relative_to(local / "results" / folder) for p in (local / "results" / folder).rglob("*.h5")
        )
        assert len(names) == 13
        for name in names:
            ours, theirs = (
                _datasets(local / "results" / folder / name),
                _datasets(slurm / "results" / folder / name),
            )
            assert sorted(ours) == sorted(theirs), name
            for key, value in ours.items():
                assert np.array_equal(value, theirs[key], equal_nan=value.dtype.kind in "fc"), (
                    folder,
                    name,
                    key,
                )
                compared += 1
    assert compared > 200
    assert (slurm / "results" / "summary.md").read_bytes() == (local / "results" / "summary.md").read_bytes()
