"""The run's preloaded process (sviflow.preload): jobs forked from it compute exactly what jobs
in processes of their own compute, it never serves a job it cannot serve faithfully, and it
ends with the run, however the run ends."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SNAKEMAKE, TINY, copy_workflow, run_snakemake
from test_faults import _equal, _h5_contents

from sviflow import preload

SERVED = "run in the preloaded process"


def _served_jobs(workdir: Path) -> set[str]:
    """The jobs (their logs, relative to results/logs) that a worker ran: the client notes it."""
    logs = workdir / "results" / "logs"
    return {str(path.relative_to(logs)) for path in logs.rglob("*.log") if SERVED in path.read_text()}


def _server_log(workdir: Path) -> str:
    path = workdir / ".snakemake" / "sviflow-preload.log"
    return path.read_text() if path.is_file() else ""


@pytest.fixture(scope="module")
def preloaded_run(tmp_path_factory) -> Path:
    """The tiny config with the preloaded process (the default for a local run)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("preloaded") / "workflow")
    run_snakemake(workdir, "--cores", "2", *TINY, env={"SVIFLOW_PRELOAD": "1"})
    return workdir


def test_jobs_forked_from_the_preloaded_process_give_the_same_bits(preloaded_run, tiny_run):
    """tiny_run ran every job in a process of its own (SVIFLOW_PRELOAD=0, for its import
    audit); here the jobs after the server's start were forked from it: every dataset and
    attribute of every HDF5 and netCDF file is the same, bit for bit, and so is the summary."""
    log = _server_log(preloaded_run)
    assert "serving on" in log and "refused" not in log, log
    served = _served_jobs(preloaded_run)
    # every job: the server listens before it imports, and a job that starts meanwhile waits
    logs = preloaded_run / "results" / "logs"
    assert served == {str(path.relative_to(logs)) for path in logs.rglob("*.log")}
    assert {Path(path).parts[0] for path in served} >= {"fit", "plot", "predict", "summarize.log"}
    assert _served_jobs(tiny_run) == set()
    # a served job's log says where it ran and what it cost, then ends as any job's
    for name in served:
        lines = (preloaded_run / "results" / "logs" / name).read_text().splitlines()
        assert re.search(r"INFO sviflow: \w+: done in \d+\.\d\d s$", lines[-1]), (name, lines[-2:])
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO sviflow: run in the preloaded process "
            r"\(worker \d+\): \d+\.\d\d CPU-s, peak memory \d+ MB",
            lines[-2],
        ), (name, lines[-2])
    files = sorted(
        str(p.relative_to(tiny_run)) for p in (tiny_run / "results").rglob("*") if p.suffix in (".h5", ".nc")
    )
    assert len(files) > 20
    assert files == sorted(
        str(p.relative_to(preloaded_run))
        for p in (preloaded_run / "results").rglob("*")
        if p.suffix in (".h5", ".nc")
    )
    different = [
        name
        for name in files
        if not _equal(_h5_contents(tiny_run / name), _h5_contents(preloaded_run / name))
    ]
    assert different == []
    assert (tiny_run / "results" / "summary.csv").read_text() == (
        preloaded_run / "results" / "summary.csv"
    ).read_text()
    # the server ended with the run, and its socket's folder is gone
    socket_path = re.search(r"serving on (\S+)", log).group(1)
    assert "stopped (SIGTERM)" in log and not Path(socket_path).parent.exists()


def test_a_job_the_server_cannot_run_faithfully_is_refused():
    """Another interpreter, another sviflow, another environment (but for what Snakemake sets
    per job) or a changed sviflow source: refused, with the reason; the job runs in its own
    process."""
    env = dict(os.environ)
    state = preload._State(env)
    request = {
        "protocol": preload.PROTOCOL,
        "executable": preload.sys.executable,
        "sviflow": preload._sviflow_dir(),
        "env": {**env, "OMP_NUM_THREADS": "2", "TMPDIR": "/somewhere", "_": "/bin/python", "SHLVL": "3"},
    }
    assert state.refusal(request) is None
    assert "interpreter" in state.refusal({**request, "executable": "/opt/conda/bin/python"})
    assert "sviflow from /elsewhere" in state.refusal({**request, "sviflow": "/elsewhere"})
    changed = state.refusal({**request, "env": {**request["env"], "JAX_ENABLE_X64": "1"}})
    assert changed is not None and "JAX_ENABLE_X64" in changed
    gone = {k: v for k, v in request["env"].items() if k != "PATH"}
    assert "PATH" in state.refusal({**request, "env": gone})


def test_a_changed_source_is_refused(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("x = 1\n")
    state = preload._State(dict(os.environ))
    stat = source.stat()
    state.sources = {str(source): (stat.st_mtime_ns, stat.st_size)}
    request = {
        "protocol": preload.PROTOCOL,
        "executable": preload.sys.executable,
        "sviflow": preload._sviflow_dir(),
        "env": dict(os.environ),
    }
    assert state.refusal(request) is None
    source.write_text("x = 22\n")
    assert f"{source} changed" in state.refusal(request)


def _alive(pid: int) -> bool:
    """Running (a zombie, which only waits for its parent to read its status, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes_of(socket_path: str) -> list[int]:
    """The server and its workers: the processes whose command line names the socket."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if socket_path in cmdline and _alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def test_the_server_and_its_workers_end_when_snakemake_is_killed(tmp_path):
    """SIGKILL to Snakemake (no onerror handler runs): the server sees its owner end and ends
    its workers; nothing of the run is left running, and the jobs' clients end too."""
    workdir = copy_workflow(tmp_path / "workflow")
    env = {**os.environ, "PYTHONPATH": str(workdir), "SVIFLOW_PRELOAD": "1"}
    process = subprocess.Popen(
        [SNAKEMAKE, "--cores", "2", *TINY],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        # a worker is running a job: the server is serving and the first predict log exists
        while not (
            "serving on" in _server_log(workdir)
            and any((workdir / "results" / "logs").rglob("predict/*.log"))
        ):
            assert process.poll() is None, "snakemake ended before a job ran in a worker"
            assert time.monotonic() < deadline, "no worker within 300 s"
            time.sleep(0.1)
        socket_path = re.search(r"serving on (\S+)", _server_log(workdir)).group(1)
        assert _processes_of(socket_path), "no server process"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _processes_of(socket_path):
            assert time.monotonic() < deadline, f"still running 30 s after: {_processes_of(socket_path)}"
            time.sleep(0.2)
        assert "stopped (owner)" in _server_log(workdir)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        with_group = subprocess.run(["pkill", "-9", "-s", str(process.pid)], capture_output=True)
        assert with_group.returncode in (0, 1)


def test_no_server_for_a_run_with_few_heavy_jobs_nor_when_switched_off(tmp_path):
    """A run of one fit job (fewer than preload.MIN_JOBS) and a run under SVIFLOW_PRELOAD=0
    start no server: their jobs run in processes of their own."""
    workdir = copy_workflow(tmp_path / "workflow")
    run_snakemake(workdir, "--cores", "2", *TINY, "results/fits/beta.h5", env={"SVIFLOW_PRELOAD": "1"})
    assert _server_log(workdir) == "" and _served_jobs(workdir) == set()
    run_snakemake(
        workdir,
        "--cores",
        "2",
        *TINY,
        "results/predictive/beta.h5",
        "results/predictive/normal.h5",
        "results/fits/multimodal.h5",
        env={"SVIFLOW_PRELOAD": "0"},
    )
    assert _server_log(workdir) == "" and _served_jobs(workdir) == set()
