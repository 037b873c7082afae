"""Shared fixtures: a copy of the workflow in a temporary directory, and Snakemake run in it
as a user runs it (the real command line, in a subprocess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# how a user runs their own config: --replace-workflow-config keeps the default's fits out
TINY = ("--configfile", "tests/configs/tiny.yaml", "--replace-workflow-config")
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "sviflow", "tests/configs",
                  "environment.yml", "pyproject.toml")


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


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``workdir``; on failure the assertion shows Snakemake's output."""
    environment = {**os.environ, "PYTHONPATH": str(workdir), **(env or {})}
    result = subprocess.run([SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True,
                            timeout=timeout, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
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
