"""One preloaded Python process per local ``snakemake`` run, from which every job is forked:
JAX, NumPyro, matplotlib and ArviZ are imported once per run, not once per job.

Why. A job of this workflow is a Python process, and importing what a step needs costs more
than many steps compute: numpyro and jax 2.4 CPU-s, matplotlib 1.2, ArviZ 3.7 (measured on
these 2-core machines, benchmarks/README.md). The default config runs 13 JAX jobs, 6 plotting
jobs and a summary: about 45 CPU-s of imports, a third of the run, where the post's script
imports each package once.

How. The idea of the standard library's ``multiprocessing`` "forkserver" start method (with
``set_forkserver_preload``), across processes:

- At the start of a local run (the ``onstart`` handler, workflow/rules/common.smk) Snakemake
  starts ``python -P -m sviflow.preload SOCKET OWNER``: the *server*. It imports the heavy
  packages and sviflow's step modules with every BLAS thread pool at one thread, checks that it
  is still a single thread (a process is forked safely only then) and that no JAX backend was
  made (XLA's thread pools are made in each job, after the fork), and listens on a Unix socket
  in a private (0700) directory, whose path the jobs get through ``SVIFLOW_PRELOAD_SOCKET``.
- A job's script (sviflow.stepio.run_step) is then a *client*: it sends its Snakemake object,
  its environment, its working directory and its standard input, output and error (the file
  descriptors themselves) to the server, which forks a *worker*. The worker takes on the job's
  environment (its thread counts too, through threadpoolctl), directory, streams and
  ``sys.path``, and runs the step exactly as the job would have (run_step). The client waits,
  passes on any signal it gets (Snakemake's, or the terminal's) to the worker's process group,
  and ends with the worker's exit status: Snakemake sees the job as it would without the
  server.
- The server refuses a job whose interpreter, sviflow package or environment (apart from the
  variables Snakemake sets per job: the thread counts and TMPDIR) differ from its own, or whose
  sviflow sources changed since it imported them; the job then runs in its own process as
  before. So do jobs when there is no server: under ``SVIFLOW_PRELOAD=0``, on a cluster (a
  non-local executor starts none, and a job inside SLURM never asks), under ``--use-conda`` or
  containers (another interpreter), and in runs with fewer than ``MIN_JOBS`` jobs that import a
  heavy package (the server's own imports would cost more than it saves).
- The worker dies with the server (``PR_SET_PDEATHSIG``), the worker is ended (SIGTERM, then
  SIGKILL) when its client goes away, and the server ends with the Snakemake process that
  started it (``onsuccess``/``onerror``, or a pidfd on it if that process is killed).

What it changes. The numbers: nothing (tests/test_preload.py runs the tiny config with and
without it and compares every HDF5 dataset bit for bit). Snakemake's ``benchmark:`` files: their
wall time is the job's, but their CPU time and memory are the client's, which only waits; each
job's log has the worker's own CPU time and peak memory instead (stepio), before its last line.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import time

SOCKET_VARIABLE = "SVIFLOW_PRELOAD_SOCKET"  # set by the Snakemake process for its jobs
SWITCH_VARIABLE = "SVIFLOW_PRELOAD"  # "0": every job in its own process
MIN_JOBS = 3  # heavy jobs a run must have to start a server (its imports cost about two jobs')
PROTOCOL = 1
# Set by Snakemake for each job (snakemake/shell.py): applied by the worker, not compared
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
PER_JOB_VARIABLES = frozenset((*THREAD_VARIABLES, "TMPDIR", "TMP", "TEMP", "TEMPDIR", SOCKET_VARIABLE))
# the shell's own bookkeeping (Snakemake runs a job's script through bash): not compared
SHELL_VARIABLES = frozenset(("_", "PS1", "SHLVL", "PWD", "OLDPWD"))
# the scripts whose steps import JAX, matplotlib or ArviZ: the jobs a server saves imports for
HEAVY_SCRIPTS = frozenset(
    f"{name}.py"
    for name in (
        "fit",
        "fit_batch",
        "predict",
        "predict_batch",
        "reference",
        "reference_batch",
        "plot",
        "plot_batch",
        "compare",
        "sweep",
        "summarize",
    )
)
# imported by the server: the packages, then every sviflow module a step imports when it runs
PRELOAD = (
    "numpy",
    "h5py",
    "yaml",
    "jax",
    "jax.numpy",
    "numpyro",
    "numpyro.distributions",
    "numpyro.infer",
    "numpyro.infer.autoguide",
    "numpyro.optim",
    "threadpoolctl",  # the worker sets the job's BLAS thread count with it
    "snakemake.script",  # the class of the job's Snakemake object, which the worker unpickles
    "sviflow.stepio",
    "sviflow.steps",
    "sviflow.engine",
    "sviflow.predictive",
    "sviflow.references",
    "sviflow.diagnostics",
    "sviflow.assess",
    "sviflow.resolve",
    "sviflow.laplace",
    "sviflow.optim",
    "sviflow.data",
    "sviflow.precision",
    "matplotlib",
    "sviflow.plots",  # matplotlib.pyplot on the Agg backend
    "arviz",
    "sviflow.summary",
    "sviflow.verdicts",
)
READY_TIMEOUT = 120.0  # seconds a job waits for the server's answer before it runs itself
KILL_GRACE = 10.0  # seconds between the SIGTERM and the SIGKILL of a worker whose client left
_HEADER = struct.Struct("!Q")
_IN_WORKER = False  # set in a worker: its run_step runs the step, it does not ask again


# ---------------------------------------------------------------------------------------------
# the Snakemake side: start and stop


class Server:
    """A running server, as its starter sees it."""

    def __init__(self, process, directory: str):
        self.process, self.directory = process, directory

    def stop(self) -> None:
        """End the server (it ends its workers) and remove its directory."""
        import shutil

        os.environ.pop(SOCKET_VARIABLE, None)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except Exception:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def heavy_jobs(jobs) -> int:
    """How many of Snakemake's ``jobs`` run a script that imports a heavy package."""
    return sum(
        1 for job in jobs if os.path.basename(str(getattr(job.rule, "script", None) or "")) in HEAVY_SCRIPTS
    )


def start(log_path: str, jobs: int) -> Server | None:
    """Start a server for this process's jobs when a run has ``jobs`` >= MIN_JOBS heavy jobs
    and ``SVIFLOW_PRELOAD`` is not "0"; its messages go to ``log_path``. -> the server, or None.
    The jobs find it through ``SVIFLOW_PRELOAD_SOCKET``, set here in ``os.environ``."""
    import subprocess
    import tempfile

    os.environ.pop(SOCKET_VARIABLE, None)  # never one of another run's
    if os.environ.get(SWITCH_VARIABLE, "1").strip() == "0" or jobs < MIN_JOBS:
        return None
    directory = tempfile.mkdtemp(prefix="sviflow-preload-")  # 0700: only this user can connect
    path = os.path.join(directory, "socket")  # short: a socket's path has at most 107 bytes
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1")}  # a BLAS pool is threads
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "sviflow.preload", path, str(os.getpid())],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # the terminal's Ctrl-C reaches the jobs, not the server
        )
    os.environ[SOCKET_VARIABLE] = path
    return Server(process, directory)


# ---------------------------------------------------------------------------------------------
# the job's side: the client


def _send(sock, message: bytes, fds=()) -> None:
    header = _HEADER.pack(len(message))
    if fds:
        socket.send_fds(sock, [header], list(fds))
    else:
        sock.sendall(header)
    sock.sendall(message)


def _receive(sock, fds: int = 0):
    """(message bytes, fds) or (None, []) at the end of the stream."""
    if fds:
        header, received, _, _ = socket.recv_fds(sock, _HEADER.size, fds)
    else:
        header, received = sock.recv(_HEADER.size, socket.MSG_WAITALL), []
    if len(header) < _HEADER.size:
        for fd in received:
            os.close(fd)
        return None, []
    (size,) = _HEADER.unpack(header)
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            return None, received
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks), received


def _reply(sock):
    message, _ = _receive(sock)
    return None if message is None else json.loads(message)


def in_worker() -> bool:
    """Whether this process is a worker of a preloaded process (its step's log says so)."""
    return _IN_WORKER


def _sviflow_dir() -> str:
    return os.path.dirname(os.path.abspath(sys.modules["sviflow"].__file__))


def run_elsewhere(function, smk) -> bool:
    """Run the step ``function`` for Snakemake's ``smk`` in the run's server, if there is one
    that takes it: then this process ends with the worker's exit status (this never returns
    True). -> False when the job is to run here: no server, one not ready or gone, or one that
    refused the job (the reason is in its log)."""
    path = os.environ.get(SOCKET_VARIABLE)
    if (
        not path
        or _IN_WORKER
        or os.environ.get("SLURM_JOB_ID")
        or os.environ.get(SWITCH_VARIABLE, "1").strip() == "0"
    ):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(READY_TIMEOUT)  # a server that hangs in its imports costs a job this, no more
    try:
        sock.connect(path)
    except OSError:  # no server (it could not start, or is still importing), or it ended
        sock.close()
        return False
    request = pickle.dumps(
        {
            "protocol": PROTOCOL,
            "executable": sys.executable,
            "sviflow": _sviflow_dir(),
            "function": ("sviflow.steps", function)
            if isinstance(function, str)
            else (function.__module__, function.__qualname__),
            "snakemake": pickle.dumps(smk),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "argv": list(sys.argv),
            "path": list(sys.path),
        }
    )
    try:
        _send(sock, request, fds=(0, 1, 2))
        answer = _reply(sock)
    except OSError:
        answer = None
    if answer is None or "refused" in answer:  # nothing was started: the job runs here
        sock.close()
        return False
    worker = int(answer["pid"])
    sock.settimeout(None)  # the step takes what it takes: its time limit is the worker's own

    def forward(signum, frame):
        with contextlib.suppress(OSError):
            os.killpg(worker, signum)

    for signum in (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        signal.signal(signum, forward)
    try:
        status = _reply(sock)
    except OSError:
        status = None
    if status is None:
        print(
            f"sviflow: the preloaded process (sviflow.preload, {path}) ended while it ran this "
            f"job's step; the job failed with it. {SWITCH_VARIABLE}=0 runs every job in a "
            f"process of its own",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)
    if status.get("signal"):  # end the way the worker ended, for Snakemake's message
        signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
    os._exit(int(status["exit"]))


# ---------------------------------------------------------------------------------------------
# the server


def _log(message: str) -> None:
    print(
        f"{time.strftime('%H:%M:%S')} sviflow.preload[{os.getpid()}]: {message}", file=sys.stderr, flush=True
    )


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _sources() -> dict:
    """{path: (mtime_ns, size)} of every sviflow module this process imported."""
    files = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "sviflow" or name.startswith("sviflow.")) and path:
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                files[path] = (stat.st_mtime_ns, stat.st_size)
    return files


class _State:
    """What the server compares each job with."""

    def __init__(self, env: dict):
        """``env``: the server's environment before its imports (jax's set some variables)."""
        self.env = {k: v for k, v in env.items() if k not in PER_JOB_VARIABLES | SHELL_VARIABLES}
        # what the imports added, which a job's own imports would have added to its environment
        self.added = {k: v for k, v in os.environ.items() if k not in env}
        self.sources = _sources()
        self.sviflow = _sviflow_dir()

    def refusal(self, request: dict) -> str | None:
        """Why the job is not to run here, or None."""
        if request.get("protocol") != PROTOCOL:
            return f"protocol {request.get('protocol')} (the server's is {PROTOCOL})"
        if request["executable"] != sys.executable:
            return f"interpreter {request['executable']} (the server's is {sys.executable})"
        if request["sviflow"] != self.sviflow:
            return f"sviflow from {request['sviflow']} (the server's is from {self.sviflow})"
        env = {k: v for k, v in request["env"].items() if k not in PER_JOB_VARIABLES | SHELL_VARIABLES}
        differ = sorted(key for key in set(env) | set(self.env) if env.get(key) != self.env.get(key))
        if differ:
            return f"environment variable(s) {', '.join(differ)} differ from the server's"
        for path, stamp in self.sources.items():
            try:
                stat = os.stat(path)
            except OSError:
                return f"{path} is gone"
            if (stat.st_mtime_ns, stat.st_size) != stamp:
                return f"{path} changed since the server imported it"
        return None


def _worker(request: dict, fds: list[int], state_added: dict) -> None:
    """In the forked child: become the job's process, run its step, never return."""
    global _IN_WORKER
    code = 1
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        os.setpgid(0, 0)  # the client forwards its signals to this group
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**state_added, **request["env"]})
        sys.argv[:] = request["argv"]
        sys.path[:] = request["path"]
        import tempfile

        tempfile.tempdir = None  # the job's TMPDIR, not the server's
        _thread_limits(request["env"])
        _IN_WORKER = True  # this module's: the server runs it by import (see the end of the file)
        os.environ.pop(SOCKET_VARIABLE, None)
        module, name = request["function"]
        function = getattr(importlib.import_module(module), name)
        smk = pickle.loads(request["snakemake"])
        from sviflow.stepio import run_step

        run_step(function, smk)  # ends the process itself on success and on a user's error
        code = 0
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _thread_limits(env: dict) -> None:
    """The BLAS thread pools at the job's count: the server imported numpy and SciPy at one."""
    value = env.get("OPENBLAS_NUM_THREADS") or env.get("OMP_NUM_THREADS")
    try:
        limit = int(value) if value else os.cpu_count()
    except ValueError:
        limit = os.cpu_count()
    if limit and limit != 1:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=limit)


class _Stop(BaseException):
    """The server's SIGTERM: out of its wait at once, not at the next timeout."""


class _Job:
    def __init__(self, conn, pid: int, pidfd: int):
        self.conn, self.pid, self.pidfd = conn, pid, pidfd
        self.kill_at = None  # when the client left: the SIGKILL's time


def serve(path: str, owner: int) -> None:
    """The server's loop: listen on ``path``, import, fork a worker per job, report each
    worker's status to its client; end when ``owner`` (the Snakemake process) ends. It listens
    before it imports: a job that starts meanwhile waits for it (a few seconds) rather than
    import the same packages beside it."""
    start, env = time.perf_counter(), dict(os.environ)
    owner_fd = os.pidfd_open(owner)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        from jax._src import xla_bridge

        threads, backend = _threads(), xla_bridge.backends_are_initialized()
    except Exception as error:
        threads, backend = None, f"{error!r}"
    _log(f"imported {len(PRELOAD)} modules in {time.perf_counter() - start:.2f} s")
    if threads != 1 or backend:
        # the waiting jobs read the end of the stream: they run in processes of their own
        _log(
            f"not serving: {threads} thread(s), JAX backend or error: {backend} (a fork is safe with one thread)"
        )
        listener.close()
        os.unlink(path)
        return
    state = _State(env)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(owner_fd, selectors.EVENT_READ, "owner")
    jobs: dict[int, _Job] = {}  # by pid
    stopping = []

    def stop(signum, frame):
        stopping.append(signal.Signals(signum).name)
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    _log(f"serving on {path} for process {owner}")
    try:
        while not stopping:
            for key, _ in selector.select(timeout=1.0):
                kind = key.data
                if kind == "accept":
                    _accept(listener, state, selector, jobs)
                elif kind == "owner":
                    stopping.append("owner")
                elif kind[0] == "exit":
                    _reap(jobs.pop(kind[1]), selector)
                elif kind[0] == "client":
                    _client_spoke(jobs.get(kind[1]), selector)
            now = time.monotonic()
            for job in jobs.values():
                if job.kill_at is not None and now >= job.kill_at:
                    with contextlib.suppress(OSError):
                        os.killpg(job.pid, signal.SIGKILL)
                    job.kill_at = None
    except _Stop:
        pass
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        for job in jobs.values():
            with contextlib.suppress(OSError):
                os.killpg(job.pid, signal.SIGTERM)
        _log(f"stopped ({stopping[0] if stopping else 'error'}), {len(jobs)} worker(s) ended")


def _accept(listener, state: _State, selector, jobs: dict) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(30)
        pid_, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            raise PermissionError(f"a process of user {uid} connected")
        message, fds = _receive(conn, fds=3)
        if message is None or len(fds) != 3:
            raise ConnectionError("an incomplete request")
        request = pickle.loads(message)
        reason = state.refusal(request)
        if reason:
            _log(f"refused a job of process {pid_}: {reason}; it runs in its own process")
            _send(conn, json.dumps({"refused": reason}).encode())
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        # SIGTERM blocked across the fork: the server's handler must never run in a worker
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = os.fork()
        if pid == 0:
            listener.close()
            selector.close()
            for job in jobs.values():
                job.conn.close()
                os.close(job.pidfd)
            conn.close()
            _worker(request, fds, state.added)  # never returns
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        pidfd = os.pidfd_open(pid)
        job = _Job(conn, pid, pidfd)
        jobs[pid] = job
        selector.register(pidfd, selectors.EVENT_READ, ("exit", pid))
        selector.register(conn, selectors.EVENT_READ, ("client", pid))
        try:
            _send(conn, json.dumps({"pid": pid}).encode())
        except OSError:
            _client_left(job)
    except Exception as error:  # a request that went wrong costs that job its server, no more
        _log(f"a request failed: {error!r}")
        conn.close()
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _client_left(job: _Job) -> None:
    """The job's client ended before its worker: end the worker (SIGTERM, then SIGKILL)."""
    if job.kill_at is None:
        with contextlib.suppress(OSError):
            os.killpg(job.pid, signal.SIGTERM)
        job.kill_at = time.monotonic() + KILL_GRACE


def _client_spoke(job: _Job | None, selector) -> None:
    if job is None:
        return
    try:
        data = job.conn.recv(1)
    except OSError:
        data = b""
    if not data:  # the client's end of the socket closed: it was killed
        selector.unregister(job.conn)
        _client_left(job)


def _reap(job: _Job, selector) -> None:
    _, status = os.waitpid(job.pid, 0)
    selector.unregister(job.pidfd)
    os.close(job.pidfd)
    code = os.waitstatus_to_exitcode(status)
    report = {"exit": code if code >= 0 else 128 - code, "signal": -code if code < 0 else None}
    with contextlib.suppress(OSError):
        _send(job.conn, json.dumps(report).encode())
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(job.conn)
    job.conn.close()


if __name__ == "__main__":  # run as sviflow.preload, not __main__: one _IN_WORKER, the module's
    from sviflow.preload import serve as _serve

    _serve(sys.argv[1], int(sys.argv[2]))
