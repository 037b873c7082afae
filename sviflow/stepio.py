"""The adapter between a step function and whoever runs it: Snakemake's ``script:`` object, or
the command line (``python scripts/fit.py --input data=... --output fit=... --params p.json``).

A step function takes ``(inputs, outputs, params)``, three dicts. Its logging, its progress
bars and whatever it prints (a model's ``print``) go to the job's log file; errors a user can
cause end the job with one clear line: a config or input error, a disk that is full or a folder
that cannot be written, and a step that runs past its rule's ``runtime``.

The time limit: a rule's ``resources: runtime`` (minutes; ``--set-resources fit:runtime=120``)
is what SLURM enforces on a cluster; a local job had none, and a model that loops forever when
traced hung its job, and the run, forever. So a local job runs under a timer of that many minutes
(``--runtime`` by hand): at the limit the step is interrupted (``StepTimeout``, a BaseException,
so that no ``except Exception`` of a step or of a user's code takes it for the step's own error)
and ends with one line naming the rule, the job, the limit and how to raise it; a step stuck in
C code (an XLA compile), which no Python signal interrupts, is ended the same way by a watchdog
thread ``WATCHDOG_GRACE`` seconds later. Outputs are written under temporary names and renamed
when whole (sviflow.h5io), so a step cut off leaves no result. Inside a SLURM job
(``SLURM_JOB_ID``) there is no timer: SLURM enforces the same limit itself.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
import time

WATCHDOG_GRACE = 30.0  # seconds after the time limit before a step stuck in C code is ended


class StepTimeout(BaseException):
    """The step ran past its time limit (a BaseException: see the module's docstring)."""


def _pairs(items, what):
    result = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--{what} takes name=path, got {item!r}")
        result[name] = value
    return result


def _from_command_line(argv=None):
    parser = argparse.ArgumentParser(description="Run one sviflow step by hand.")
    parser.add_argument("--input", nargs="*", default=[], help="name=path of each input")
    parser.add_argument("--output", nargs="*", default=[], help="name=path of each output")
    parser.add_argument("--params", default="{}", help="the params as JSON, or @file.json")
    parser.add_argument("--log", default=None, help="log file (default: standard error)")
    parser.add_argument("--runtime", type=float, default=None, help="time limit in minutes (default: none)")
    args = parser.parse_args(argv)
    text = args.params
    if text.startswith("@"):
        with open(text[1:]) as handle:
            text = handle.read()
    return (
        _pairs(args.input, "input"),
        _pairs(args.output, "output"),
        json.loads(text),
        args.log,
        args.runtime,
    )


def _time_limit(smk) -> float | None:
    """The job's ``runtime`` resource in minutes, or None: none given, or inside a SLURM job,
    where SLURM enforces it (and its own message says so)."""
    if os.environ.get("SLURM_JOB_ID"):
        return None
    value = getattr(getattr(smk, "resources", None), "runtime", None)
    try:
        minutes = float(value)
    except (TypeError, ValueError):  # unset (Snakemake's TBD), or not a number
        return None
    return minutes if minutes > 0 else None


def _job_name(smk, params: dict, step: str) -> tuple[str, str]:
    """(rule, the job's config entry or wildcards) for messages."""
    rule = getattr(smk, "rule", None) or step
    spec = params.get("spec") if isinstance(params.get("spec"), dict) else {}
    wildcards = dict(getattr(smk, "wildcards", {}) or {}) if smk is not None else {}
    if spec.get("name") and "model" in spec:
        what = f"fits.{spec['name']}"
    elif wildcards:
        what = ", ".join(f"{k}={v}" for k, v in wildcards.items())
    else:
        what = str(params.get("name") or "")
    return rule, what


def _timeout_message(rule: str, what: str, minutes: float, by_hand: bool) -> str:
    job = f"rule {rule}" + (f", {what}" if what else "")
    raised = max(2 * minutes, minutes + 1)
    how = (
        f"run it with --runtime {raised:g}"
        if by_hand
        else f"snakemake --set-resources {rule}:runtime={raised:g} (or set-resources in a profile)"
    )
    return (
        f"{job}: stopped after {minutes:g} minute(s), its time limit (resources: runtime = "
        f"{minutes:g}, in minutes); a model or guide that never ends when traced (a loop) "
        f"hangs here; if the step only needs longer, raise the limit: {how}"
    )


def _remove_partials(outputs: dict) -> None:
    """The temporary files of outputs that a watchdog exit leaves (h5io.written_atomically's
    ``.<name>.*.partial``): never taken for results, but not left behind either."""
    from pathlib import Path

    for value in outputs.values():
        for path in value if isinstance(value, list) else [value]:
            path = Path(str(path))
            for partial in path.parent.glob(f".{path.name}.*.partial"):
                with contextlib.suppress(OSError):
                    partial.unlink()


@contextlib.contextmanager
def time_limit(minutes: float | None, message: str, on_stuck):
    """Raise StepTimeout in the main thread after ``minutes``; ``on_stuck()`` (which ends the
    process) if the step is still running ``WATCHDOG_GRACE`` seconds later."""
    if not minutes:
        yield
        return
    seconds = 60.0 * minutes

    def interrupt(signum, frame):
        raise StepTimeout(message)

    previous = signal.signal(signal.SIGALRM, interrupt)
    watchdog = threading.Timer(seconds + WATCHDOG_GRACE, on_stuck)
    watchdog.daemon = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    watchdog.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        watchdog.cancel()
        signal.signal(signal.SIGALRM, previous)


def _named(namedlist) -> dict:
    """Snakemake's named inputs/outputs/params as plain values (lists of paths stay lists)."""
    return {
        name: (list(value) if type(value).__name__ == "Namedlist" else value)
        for name, value in namedlist.items()
    }


def _worker_note() -> None:
    """In a worker of the run's preloaded process: its own CPU time and peak memory, which
    Snakemake's benchmark file does not see (it measures the job's waiting process)."""
    from sviflow import preload

    if preload.in_worker():
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        logging.getLogger("sviflow").info(
            "run in the preloaded process (worker %d): %.2f CPU-s, peak memory %.0f MB",
            os.getpid(),
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,
        )


def run_step(function, smk=None, argv=None, *, end_process: bool = True) -> None:
    """Run ``function(inputs, outputs, params)`` for Snakemake's ``smk`` object or the CLI;
    ``function`` may be the name of a step of sviflow.steps.

    On success the process ends at once (``os._exit(0)``, ``end_process=False`` to return):
    the interpreter's teardown, freeing the module graphs of jax, scipy and pandas, costs a
    job 0.3-0.4 CPU-s and makes nothing; every output is closed and renamed into place by
    then, and the log is flushed here. An error still ends the normal way, with its traceback.
    """
    if smk is not None and end_process:
        from sviflow.preload import run_elsewhere

        run_elsewhere(function, smk)  # in the run's preloaded process, if it takes the job: ends here
    if isinstance(function, str):  # a step of sviflow.steps by name (scripts/)
        import importlib

        function = getattr(importlib.import_module("sviflow.steps"), function)
    if smk is not None:
        inputs, outputs, params = _named(smk.input), _named(smk.output), _named(smk.params)
        log_path = smk.log[0] if len(smk.log) else None
        minutes = _time_limit(smk)
    else:
        inputs, outputs, params, log_path, minutes = _from_command_line(argv)
    stream = open(log_path, "a", buffering=1) if log_path else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("jax", "absl", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    name = getattr(function, "__name__", "step")
    start = time.perf_counter()
    logging.getLogger("sviflow").info("%s: inputs %s, outputs %s", name, inputs, outputs)
    from sviflow.errors import ConfigError, disk_error
    from sviflow.h5io import ArtifactError

    rule, what = _job_name(smk, params, name)
    timeout = _timeout_message(rule, what, minutes, smk is None) if minutes else ""

    def fail(message: str) -> None:
        """One line on the terminal and in the log, then the end of the process: its teardown
        after a failed HDF5 write can crash in h5py's finalisers (a full disk: segfault)."""
        logging.getLogger("sviflow").error("%s", message)
        print(f"sviflow {name}: {message}", file=sys.__stderr__, flush=True)
        if not end_process:
            raise SystemExit(1) from None
        _worker_note()
        logging.getLogger("sviflow").info("%s: failed in %.2f s", name, time.perf_counter() - start)
        logging.shutdown()
        with contextlib.suppress(Exception):
            stream.flush()
        os._exit(1)

    def stuck() -> None:  # the watchdog's thread: the main thread does not return from C code
        _remove_partials(outputs)
        message = timeout + " (it was inside compiled code and could not be interrupted sooner)"
        logging.getLogger("sviflow").error("%s", message)
        print(f"sviflow {name}: {message}", file=sys.__stderr__, flush=True)
        logging.shutdown()
        os._exit(1)  # from this thread: the only way out of a main thread stuck in C code

    succeeded = False
    try:
        with (
            time_limit(minutes, timeout, stuck),
            contextlib.redirect_stderr(stream),
            contextlib.redirect_stdout(stream),
        ):
            function(inputs, outputs, params, progress_file=stream)
        succeeded = True
    except (ConfigError, ArtifactError) as error:
        fail(str(error))
    except StepTimeout as error:
        fail(str(error))
    except Exception as error:
        problem = disk_error(error)
        if problem is None or problem[0] == errno.EACCES:  # EACCES: reading, as well as writing
            logging.getLogger("sviflow").exception("%s failed", name)
            raise
        where = getattr(error, "filename", None) or "its outputs"
        fail(f"cannot write {where}: {os.strerror(problem[0])}; {problem[1]}")
    finally:
        # a failed step says so: "done" after its error would read as a success
        _worker_note()
        logging.getLogger("sviflow").info(
            "%s: %s in %.2f s", name, "done" if succeeded else "failed", time.perf_counter() - start
        )
        root.removeHandler(handler)
        if stream is not sys.stderr:
            stream.close()
    if end_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
