"""Point 3 of the issue, checked on a real run: which heavy modules each job imports, and
whether any job compiles the same XLA program twice.

    python benchmarks/audit.py [--out DIR] [--cores 2]

Runs the tiny config (tests/configs/tiny.yaml) in a copy of the workflow with

- a ``sitecustomize`` on PYTHONPATH that records, in every job, the first import of each heavy
  package (jax, numpyro, matplotlib, arviz, ...) with the chain of project frames that led to
  it, and the heavy packages loaded when the job ends;
- ``JAX_LOG_COMPILES=1`` and ``JAX_EXPLAIN_CACHE_MISSES=1``, so every job's log names each XLA
  program it compiles (a persistent-cache miss) or loads (a hit) with its cache key: the same
  key twice in one job is a program compiled twice.

Then it forces the fit jobs to run again (nothing else changed) and counts their cache misses:
a rerun must compile nothing. Prints Markdown tables; writes DIR/audit.json.

Rules: plotting, check and summary jobs (plot, compare, check, summarize) import neither
numpyro nor jax; fit jobs import neither matplotlib nor arviz.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from _workflow import REPO, SNAKEMAKE, clean_env, copy_workflow, timed

HEAVY = (
    "jax",
    "jaxlib",
    "numpyro",
    "optax",
    "matplotlib",
    "arviz",
    "scipy",
    "pandas",
    "xarray",
    "h5netcdf",
    "h5py",
    "numpy",
    "tqdm",
    "yaml",
)
# heavy parts of packages, recorded by their full name: scipy.stats alone costs a job 1.3 s
SUBMODULES = ("scipy.stats",)
FORBIDDEN = {
    "plot": ("numpyro", "jax", "jaxlib"),
    "compare": ("numpyro", "jax", "jaxlib"),
    "check": ("numpyro", "jax", "jaxlib"),
    "summarize": ("numpyro", "jax", "jaxlib"),
    "fit": ("matplotlib", "arviz"),
}
WATCHED = ("numpyro", "jax", "matplotlib", "arviz")
COSTLY_SECONDS = 0.1  # a program requested twice in one job that took this long to compile fails
TINY = ("--configfile", "tests/configs/tiny.yaml", "--replace-workflow-config")

SITECUSTOMIZE = r"""
import os, sys
_OUT = os.environ.get("SVIFLOW_IMPORT_AUDIT")
if _OUT and any(".snakemake/scripts/" in a for a in sys.argv[:1]):
    import atexit, json, traceback
    _HEAVY = set(%(heavy)r)
    _SUBMODULES = %(submodules)r
    _FIRST = {}

    class _Recorder:
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in _HEAVY and top not in _FIRST:
                frames = traceback.extract_stack()[:-1]
                chain = [f"{f.filename}:{f.lineno}" for f in frames
                         if "importlib" not in f.filename and not f.filename.startswith("<")]
                _FIRST[top] = {"module": name, "chain": chain}
            return None

    sys.meta_path.insert(0, _Recorder())

    def _dump():
        loaded = sorted({m.partition(".")[0] for m in sys.modules} & _HEAVY)
        loaded += sorted(m for m in _SUBMODULES if m in sys.modules)
        try:  # which job: the script's snakemake object
            wildcards = dict(getattr(sys.modules["__main__"], "snakemake").wildcards.items())
        except Exception:
            wildcards = {}
        record = {"argv": sys.argv, "loaded": loaded, "first_import": _FIRST, "wildcards": wildcards}
        with open(os.path.join(_OUT, f"{os.getpid()}.json"), "w") as handle:
            json.dump(record, handle)

    atexit.register(_dump)
    # a step ends with os._exit(0) (sviflow.stepio.run_step), which skips atexit: dump first
    _exit = os._exit

    def _dump_and_exit(code):
        _dump()
        _exit(code)

    os._exit = _dump_and_exit
""" % {"heavy": HEAVY, "submodules": SUBMODULES}

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,]+ \w+ jax\._src\.\w+: "
    r"(?P<kind>PERSISTENT COMPILATION CACHE MISS|Persistent compilation cache hit) "
    r"for '(?P<module>[^']+)' with key '(?P<key>[^']+)'"
)
FINISHED = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,]+ \w+ jax\._src\.dispatch: Finished XLA compilation"
    r" of (?P<name>\S+) in (?P<seconds>[\d.e-]+) sec"
)


def compiles(log_text: str) -> dict:
    """Every XLA program a job compiled (miss) or loaded from the cache (hit), from its log."""
    misses, hits, seconds = Counter(), Counter(), defaultdict(float)
    last = None  # the miss or hit that the next "Finished XLA compilation" line closes
    for line in log_text.splitlines():
        match = LINE.match(line)
        if match:
            key = (match["module"], match["key"])
            missed = match["kind"].startswith("PERSISTENT")
            (misses if missed else hits)[key] += 1
            last = key if missed else None
            continue
        finished = FINISHED.match(line)
        if finished and last is not None:
            seconds[last] += float(finished["seconds"])
            last = None
    twice = sorted({k for k in set(misses) | set(hits) if misses[k] + hits[k] > 1})
    return {
        "compiled": sum(misses.values()),
        "loaded": sum(hits.values()),
        "compile_seconds": sum(seconds.values()),
        "twice": [
            {
                "module": m,
                "key": k,
                "times": misses[(m, k)] + hits[(m, k)],
                "compiled": misses[(m, k)],
                "compile_seconds": seconds[(m, k)],
            }
            for m, k in twice
        ],
    }


def step_of(argv0: str) -> str:
    # .snakemake/scripts/tmpabc123.fit.py -> fit
    return Path(argv0).name.split(".")[-2]


def chain_text(chain: list[str], workdir: Path) -> str:
    """The project's frames of an import chain, and the first frame outside it."""
    shown = []
    for frame in chain:
        inside = frame.startswith(str(workdir))
        shown.append(frame.replace(str(workdir) + "/", "") if inside else frame.split("site-packages/")[-1])
        if not inside and len(shown) > 1:
            break
    return " -> ".join(s for s in shown if "sitecustomize" not in s)


def install_hook(hook_dir: Path, records: Path) -> dict:
    """Write the import recorder to ``hook_dir``; -> the environment variables that switch it on
    in every job (put ``hook_dir`` first on PYTHONPATH)."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    records.mkdir(parents=True, exist_ok=True)
    # every job in a process of its own: a job forked from the run's preloaded process
    # (sviflow.preload) has all of that process's imports, which are not the job's
    return {"SVIFLOW_IMPORT_AUDIT": str(records), "SVIFLOW_PRELOAD": "0"}


def imports_by_step(records: Path, workdir: Path) -> dict[str, dict]:
    """The jobs' import records, per step (several jobs of one step: the union): jobs, heavy
    packages loaded, the forbidden ones loaded with their import chain, and the chain that
    first imported each watched package. Raises if a step with rules left no record: a hook
    that ran in no job would pass every rule."""
    per_step: dict[str, dict] = {}
    for path in sorted(records.glob("*.json")):
        record = json.loads(path.read_text())
        step = step_of(record["argv"][0])
        entry = per_step.setdefault(
            step, {"jobs": 0, "loaded": set(), "violations": {}, "chains": {}, "by_job": []}
        )
        entry["jobs"] += 1
        entry["by_job"].append((record.get("wildcards", {}), set(record["loaded"])))
        entry["loaded"] |= set(record["loaded"])
        for module in WATCHED:
            if module in record["loaded"] and module not in entry["chains"]:
                first = record["first_import"].get(module, {})
                entry["chains"][module] = chain_text(first.get("chain", []), workdir)
        for module in FORBIDDEN.get(step, ()):
            if module in record["loaded"] and module not in entry["violations"]:
                first = record["first_import"].get(module, {})
                entry["violations"][module] = chain_text(first.get("chain", []), workdir)
    missing = sorted(step for step in FORBIDDEN if step not in per_step)
    if missing:
        raise RuntimeError(
            f"import audit: no record from the {', '.join(missing)} job(s) in "
            f"{records}: the sitecustomize hook did not run or did not write"
        )
    return per_step


def run_audit(out: Path, cores: int = 2) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "workflow"
    copy_workflow(workdir)
    hook = out / "hook"
    records = out / "imports"
    shutil.rmtree(records, ignore_errors=True)
    env = clean_env(
        workdir, JAX_LOG_COMPILES="1", JAX_EXPLAIN_CACHE_MISSES="1", **install_hook(hook, records)
    )
    env["PYTHONPATH"] = f"{hook}:{workdir}"
    cold_seconds, _ = timed(
        [SNAKEMAKE, "--cores", str(cores), *TINY], workdir, env, out / "snakemake_cold.txt"
    )

    per_step = imports_by_step(records, workdir)

    # compilations, per job log
    logs = workdir / "results" / "logs"
    jobs = {}
    for log in sorted(logs.rglob("*.log")):
        name = str(log.relative_to(logs))
        jobs[name] = compiles(log.read_text(errors="replace"))
    cold_logs = out / "logs_cold"
    shutil.rmtree(cold_logs, ignore_errors=True)
    shutil.copytree(logs, cold_logs)

    # the fit jobs again, nothing changed: every program must come from the cache
    for log in (logs / "fit").glob("*.log"):
        log.unlink()
    rerun_seconds, _ = timed(
        [SNAKEMAKE, "--cores", str(cores), *TINY, "--forcerun", "fit", "--until", "fit"],
        workdir,
        env,
        out / "snakemake_rerun_fits.txt",
    )
    rerun = {
        str(log.relative_to(logs)): compiles(log.read_text(errors="replace"))
        for log in sorted((logs / "fit").glob("*.log"))
    }

    result = {
        "cold_seconds": cold_seconds,
        "rerun_fits_seconds": rerun_seconds,
        "imports": {
            step: {
                "jobs": e["jobs"],
                "loaded": sorted(e["loaded"]),
                "violations": e["violations"],
                "chains": e["chains"],
            }
            for step, e in sorted(per_step.items())
        },
        "compiles": jobs,
        "rerun_fit_compiles": rerun,
    }
    (out / "audit.json").write_text(json.dumps(result, indent=2))
    return result


def tables(result: dict) -> str:
    lines = [
        "| step | jobs | heavy packages loaded | violations (forbidden package: import chain) |",
        "|---|---|---|---|",
    ]
    for step, entry in result["imports"].items():
        rule = FORBIDDEN.get(step)
        violations = "; ".join(f"**{m}**: {c}" for m, c in entry["violations"].items())
        lines.append(
            f"| {step} | {entry['jobs']} | {', '.join(entry['loaded'])} | "
            f"{violations or ('none (forbidden: ' + ', '.join(rule) + ')' if rule else '-')} |"
        )
    lines += [
        "",
        "Where each job first imports numpyro, jax, matplotlib, arviz (project frames, then "
        "the first frame outside the project):",
        "",
        "| step | package | import chain |",
        "|---|---|---|",
    ]
    for step, entry in result["imports"].items():
        for module, chain in entry.get("chains", {}).items():
            lines.append(f"| {step} | {module} | {chain} |")
    lines += [
        "",
        "| job log | programs compiled | loaded from cache | compile s | same program twice |",
        "|---|---|---|---|---|",
    ]
    for job, entry in result["compiles"].items():
        twice = (
            ", ".join(f"{t['module']} x{t['times']} ({t['compile_seconds']:.3f} s)" for t in entry["twice"])
            or "none"
        )
        lines.append(
            f"| {job} | {entry['compiled']} | {entry['loaded']} | {entry['compile_seconds']:.2f} | {twice} |"
        )
    lines += [
        "",
        "Fit jobs forced to run again, nothing changed:",
        "",
        "| job log | programs compiled | loaded from cache |",
        "|---|---|---|",
    ]
    for job, entry in result["rerun_fit_compiles"].items():
        lines.append(f"| {job} | {entry['compiled']} | {entry['loaded']} |")
    return "\n".join(lines)


def summary(result: dict) -> dict:
    """The numbers run.py puts in its table."""
    violations = {
        f"{step}: {module}": chain
        for step, entry in result["imports"].items()
        for module, chain in entry["violations"].items()
    }
    twice = {job: entry["twice"] for job, entry in result["compiles"].items() if entry["twice"]}
    return {
        "import_violations": violations,
        # the same program (same cache key) asked of XLA more than once in one job: an
        # in-memory jit cache miss; with the persistent cache the second time is a cache read
        "requested_twice": {job: sorted({t["module"] for t in items}) for job, items in twice.items()},
        "requested_twice_count": sum(len(items) for items in twice.values()),
        "max_requested_twice_compile_seconds": max(
            (t["compile_seconds"] for items in twice.values() for t in items), default=0.0
        ),
        # the goal: no program compiled by XLA twice in a job (a persistent-cache miss each
        # time), nor one that costs >= 0.1 s to compile asked for twice (with the persistent
        # cache on, the second time is a read, not a compile)
        "costly_twice": {
            job: costly
            for job, items in twice.items()
            if (costly := [t for t in items if t["compiled"] > 1 or t["compile_seconds"] >= COSTLY_SECONDS])
        },
        "rerun_fit_compiled": sum(e["compiled"] for e in result["rerun_fit_compiles"].values()),
        "rerun_fit_loaded": sum(e["loaded"] for e in result["rerun_fit_compiles"].values()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="scratch and results (default: a temp dir)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sviflow-audit-"))
    result = run_audit(out, args.cores)
    print(tables(result))
    print()
    print(json.dumps(summary(result), indent=2))
    print(f"\n(scratch in {out}; repo {REPO})")


if __name__ == "__main__":
    main()
