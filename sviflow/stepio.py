"""The adapter between a step function and whoever runs it: Snakemake's ``script:`` object, or
the command line (``python scripts/fit.py --input data=... --output fit=... --params p.json``).

A step function takes ``(inputs, outputs, params)``, three dicts. Its logging and its progress
bars go to the job's log file; errors a user can cause end the job with one clear line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time


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
    args = parser.parse_args(argv)
    text = args.params
    if text.startswith("@"):
        with open(text[1:]) as handle:
            text = handle.read()
    return _pairs(args.input, "input"), _pairs(args.output, "output"), json.loads(text), args.log


def _named(namedlist) -> dict:
    """Snakemake's named inputs/outputs/params as plain values (lists of paths stay lists)."""
    return {name: (list(value) if type(value).__name__ == "Namedlist" else value)
            for name, value in namedlist.items()}


def run_step(function, smk=None, argv=None, *, end_process: bool = True) -> None:
    """Run ``function(inputs, outputs, params)`` for Snakemake's ``smk`` object or the CLI.

    On success the process ends at once (``os._exit(0)``, ``end_process=False`` to return):
    the interpreter's teardown, freeing the module graphs of jax, scipy and pandas, costs a
    job 0.3-0.4 CPU-s and makes nothing; every output is closed and renamed into place by
    then, and the log is flushed here. An error still ends the normal way, with its traceback.
    """
    if smk is not None:
        inputs, outputs, params = _named(smk.input), _named(smk.output), _named(smk.params)
        log_path = smk.log[0] if len(smk.log) else None
    else:
        inputs, outputs, params, log_path = _from_command_line(argv)
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
    from sviflow.h5io import ArtifactError
    from sviflow.errors import ConfigError

    succeeded = False
    try:
        with contextlib.redirect_stderr(stream):
            function(inputs, outputs, params, progress_file=stream)
        succeeded = True
    except (ConfigError, ArtifactError) as error:
        logging.getLogger("sviflow").error("%s", error)
        print(f"sviflow {name}: {error}", file=sys.__stderr__)
        raise SystemExit(1) from None
    except Exception:
        logging.getLogger("sviflow").exception("%s failed", name)
        raise
    finally:
        # a failed step says so: "done" after its error would read as a success
        logging.getLogger("sviflow").info("%s: %s in %.2f s", name, "done" if succeeded else "failed",
                                          time.perf_counter() - start)
        root.removeHandler(handler)
        if stream is not sys.stderr:
            stream.close()
    if end_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
