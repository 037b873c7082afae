"""Shared fixtures: a copy of the workflow in a temporary directory, and Snakemake run in it
as a user runs it (the real command line, in a subprocess)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# how a user runs their own config: --replace-workflow-config keeps the default's fits out
TINY = ("--configfile", "tests/configs/tiny.yaml", "--replace-workflow-config")
WORKFLOW_PARTS = (
    "Snakefile",
    "workflow",
    "scripts",
    "config",
    "sviflow",
    "tests/configs",
    "environment.yml",
    "pyproject.toml",
)


# a job's block in a dry run: "rule NAME:" and its indented lines; inside a group job (the SLURM
# profile's fit_chain, which a dry run shows as a cluster run would) indented by four more
_JOB_HEADER = re.compile(r"^( *)(?:local)?(?:rule|checkpoint) (\S+):$")
_JOB_STATS = re.compile(r"Job stats:\njob\s+count\n-+\s+-+\n(.*?)\ntotal\s+(\d+)\n", re.S)


def dry_run_jobs(text: str) -> dict[tuple[str, str], str]:
    """{(rule, "k=v, ..."): reason} of every job in the text of ``snakemake --dry-run``,
    checked against its own "Job stats" table, so that a change of format cannot pass as
    "nothing planned"."""
    jobs, current = {}, None

    def close(block):
        key = (block["rule"], block["wildcards"])
        assert key not in jobs, f"job {key} twice in the dry run"
        jobs[key] = block["reason"]

    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if current is not None and indent <= current["indent"]:  # the block's lines end
            close(current)
            current = None
        header = _JOB_HEADER.match(line)
        if header:
            current = {"rule": header.group(2), "wildcards": "", "reason": "", "indent": len(header.group(1))}
        elif current is not None and line.lstrip().startswith("wildcards: "):
            current["wildcards"] = line.lstrip().removeprefix("wildcards: ")
        elif current is not None and line.lstrip().startswith("reason: "):
            current["reason"] = line.lstrip().removeprefix("reason: ")
    if current is not None:
        close(current)
    if not jobs:
        assert "Nothing to be done" in text, text[-3000:]
        return jobs
    stats = _JOB_STATS.search(text)
    assert stats, text[-3000:]
    counted = Counter(
        {rule: int(count) for rule, count in (row.split() for row in stats.group(1).splitlines())}
    )
    assert Counter(rule for rule, _ in jobs) == counted
    assert len(jobs) == int(stats.group(2))
    return jobs


def copy_workflow(destination: Path) -> Path:
    """The workflow's files (not results/) copied to ``destination``."""
    for part in WORKFLOW_PARTS:
        source = REPO / part
        target = destination / part
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``workdir``; on failure the assertion shows Snakemake's output."""
    environment = {**os.environ, "PYTHONPATH": str(workdir), **(env or {})}
    result = subprocess.run(
        [SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, timeout=timeout, env=environment
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture
def workflow_copy(tmp_path) -> Path:
    """A fresh copy of the workflow; the JAX cache is shared across tests to save compiles."""
    return copy_workflow(tmp_path / "workflow")


def import_audit():
    """benchmarks/audit.py: the hook that records each job's imports, and its rules."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import audit
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return audit


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config run once, end to end, for every test that only reads its results.
    Every job records the heavy packages it imported (benchmarks/audit.py's hook) in
    ``../imports`` beside the copy."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny") / "workflow")
    hook = workdir.parent / "hook"
    env = import_audit().install_hook(hook, workdir.parent / "imports")
    run_snakemake(workdir, "--cores", "2", *TINY, env={**env, "PYTHONPATH": f"{hook}:{workdir}"})
    return workdir


def plot_rule(config: dict, fit: str) -> str:
    """The rule that draws ``fit``'s figures: one per set of figures (workflow/rules/plot.smk)."""
    from sviflow.config import Plan, validate

    validate(config)
    return Plan(config, REPO / "tests" / "configs").plot_rule(fit)
