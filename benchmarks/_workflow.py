"""Helpers shared by the benchmark scripts: a copy of the workflow in a scratch directory, a
clean environment for the jobs, and timed subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
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


def copy_workflow(destination: Path) -> Path:
    """The workflow's files (not results/, not .jax_cache/) copied to ``destination``, a
    scratch directory: a copy left there by an earlier run or row is replaced."""
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    for part in WORKFLOW_PARTS:
        source = REPO / part
        target = destination / part
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def clean_env(workdir: Path | None = None, **extra: str) -> dict:
    """The caller's environment without JAX or sviflow settings (a cold start is cold), with
    the copy's sviflow first on the path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("JAX_") or k.startswith("SVIFLOW_") or k == "XLA_FLAGS" or k == "PYTHONHASHSEED")
    }
    if workdir is not None:
        env["PYTHONPATH"] = str(workdir)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def slurm_start_stall() -> str | None:
    """Why every Snakemake start would wait about 9 s, or None. snakemake-executor-plugin-slurm
    (2.8) runs ``scontrol show config`` when Snakemake loads it, at every start, local runs too;
    with SLURM's commands installed and its controller down, that call waits for its 10 s
    timeout (9.0 s measured here), which would swamp every row."""
    if shutil.which("scontrol") is None:
        return None
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`scontrol ping` did not answer in 30 s"
    if ping.returncode == 0 and "DOWN" not in ping.stdout:
        return None
    answer = (ping.stdout.strip() or ping.stderr.strip()).splitlines()
    return (
        f"`scontrol ping` says: {answer[0] if answer else f'exit {ping.returncode}'}. SLURM's "
        "commands are installed but its controller is down, so snakemake-executor-plugin-slurm's "
        "`scontrol show config` makes every Snakemake start wait about 9 s. Start the cluster "
        "(bash tests/cluster/start-slurm.sh) and rerun"
    )


def timed(
    command: list[str], cwd: Path, env: dict, log: Path | None = None, timeout: float = 7200
) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``command``; -> (wall seconds, result). Fails loudly, with the output's tail.
    ``result.cpu_seconds``: the user + system CPU time of the command and every process it
    waited for (Snakemake's jobs too), from ``getrusage(RUSAGE_CHILDREN)``."""
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    start, cpu_start = time.perf_counter(), cpu()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    result.cpu_seconds = cpu() - cpu_start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(
            f"$ {' '.join(map(str, command))}\n# cwd {cwd}\n# {seconds:.2f} s "
            f"({result.cpu_seconds:.2f} CPU-s), "
            f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n"
            f"{result.stderr}"
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, command))} failed ({result.returncode}) in {cwd}:"
            f"\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return seconds, result
