"""The default config through the SLURM profile against a local run, cold, side by side.

    python benchmarks/cluster.py                  # 2 pairs: local `snakemake --cores 4` and
                                                  # `snakemake --workflow-profile workflow/profiles/slurm`
    python benchmarks/cluster.py --repeat 3 --out DIR
    python benchmarks/cluster.py --variant "batched=--group-components fit_chain=5 --cores 2"
    python benchmarks/cluster.py --workflow /path/to/other/checkout   # measure another version

Each pair is a local run and a SLURM run, each in a fresh copy of the workflow with an empty
JAX cache, in turns first (the machine's load changes; a pair sees the same). It needs a running
SLURM cluster (`bash tests/cluster/start-slurm.sh` starts a one-node one). Prints a Markdown
table: the medians, their ratio against the goal (SLURM <= 2.0 x local), the number of sbatch
submissions, and whether the two runs' summaries (results/summary.csv, results/summary.md) are
the same bytes. benchmarks/README.md, "The cluster benchmark", says what is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workflow  # noqa: E402
from _workflow import SNAKEMAKE, clean_env, slurm_start_stall, timed  # noqa: E402

GOAL = 2.0
SUMMARIES = ("results/summary.csv", "results/summary.md")
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def cluster_problem() -> str | None:
    """Why no SLURM job can run here, or None."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) here; `bash tests/cluster/start-slurm.sh` (as root) starts a cluster"
    stall = slurm_start_stall()
    if stall:
        return stall
    states = subprocess.run(
        ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=120
    ).stdout.split()
    if not {"idle", "mixed", "allocated", "completing"} & set(states):
        return f"no SLURM node up (sinfo: {', '.join(states) or 'nothing'})"
    return None


def copy_from(source: Path, destination: Path) -> Path:
    """_workflow.copy_workflow from ``source`` (this checkout by default)."""
    original = _workflow.REPO
    _workflow.REPO = source
    try:
        return _workflow.copy_workflow(destination)
    finally:
        _workflow.REPO = original


def run_pair(out: Path, source: Path, attempt: int, variants: dict, cores: int) -> dict:
    """One local run and one SLURM run per variant, in fresh copies; -> seconds and counts."""
    sides = [("local", ["--cores", str(cores)])] + [
        (name, ["--workflow-profile", "workflow/profiles/slurm", *args]) for name, args in variants.items()
    ]
    if attempt % 2:
        sides.reverse()  # the first of a pair warms the page cache for the second
    measured = {}
    for name, args in sides:
        work = copy_from(source, out / f"{name}_{attempt}" / "workflow")
        seconds, result = timed(
            [SNAKEMAKE, *args], work, clean_env(work), out / "logs" / f"{name}_{attempt}.txt"
        )
        output = result.stdout + result.stderr
        measured[name] = {"seconds": seconds, "sbatch": len(SUBMITTED.findall(output)), "work": work}
    local = measured["local"]["work"]
    for name in variants:
        work = measured[name]["work"]
        measured[name]["same_summaries"] = all(
            (work / path).read_bytes() == (local / path).read_bytes() for path in SUMMARIES
        )
    return measured


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="pairs to take the median of (default 2)")
    parser.add_argument("--cores", type=int, default=4, help="local `snakemake --cores` (default 4)")
    parser.add_argument("--out", default=None, help="copies and logs (default: a new temp dir)")
    parser.add_argument(
        "--workflow", default=str(_workflow.REPO), help="the checkout to measure (default: this one)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="another SLURM row: the profile with these extra Snakemake arguments "
        "(repeatable); the profile as it is is always the row `slurm`",
    )
    args = parser.parse_args(argv)
    variants = {"slurm": []}
    for spec in args.variant:
        name, sep, extra = spec.partition("=")
        if not sep or not name or name in variants or name == "local":
            parser.error(f"--variant {spec!r}: want NAME=ARGS with a new name")
        variants[name] = shlex.split(extra)
    problem = cluster_problem()
    if problem:
        parser.exit(2, f"benchmarks/cluster.py: not measuring: {problem}\n")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sviflow-cluster-"))
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    pairs = []
    for attempt in range(args.repeat):
        print(
            f"[{time.strftime('%H:%M:%S')}] pair {attempt + 1} of {args.repeat} ...",
            file=sys.stderr,
            flush=True,
        )
        pairs.append(run_pair(out, Path(args.workflow).resolve(), attempt, variants, args.cores))

    local = [pair["local"]["seconds"] for pair in pairs]
    lines = [
        f"sviflow cluster benchmark - {platform.node()}, {os.cpu_count()} CPUs, load average "
        f"{load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M')}, workflow {args.workflow}",
        "",
        "| run | seconds (median) | each pair | x local | goal | met? | sbatch jobs | summaries as local |",
        "|---|---|---|---|---|---|---|---|",
        f"| local `snakemake --cores {args.cores}` | {statistics.median(local):.1f} | "
        f"{', '.join(f'{s:.1f}' for s in local)} | 1.00 | | | 0 | |",
    ]
    rows = {}
    for name, extra in variants.items():
        walls = [pair[name]["seconds"] for pair in pairs]
        ratio = statistics.median(walls) / statistics.median(local)
        within = [wall / here for wall, here in zip(walls, local)]
        sbatch = sorted({pair[name]["sbatch"] for pair in pairs})
        same = all(pair[name]["same_summaries"] for pair in pairs)
        rows[name] = {
            "seconds": walls,
            "ratio": ratio,
            "ratios_within_pairs": within,
            "sbatch": sbatch,
            "same_summaries": same,
            "args": extra,
        }
        command = " ".join(["--workflow-profile workflow/profiles/slurm", *extra])
        lines.append(
            f"| {name}: `snakemake {command}` | {statistics.median(walls):.1f} | "
            f"{', '.join(f'{s:.1f}' for s in walls)} | {ratio:.2f} (pairs: "
            f"{', '.join(f'{r:.2f}' for r in within)}) | <= {GOAL} | "
            f"{'yes' if ratio <= GOAL else '**no**'} | {'/'.join(map(str, sbatch))} | "
            f"{'yes' if same else '**no**'} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "cluster.md").write_text(text)
    (out / "cluster.json").write_text(json.dumps({"local": local, "rows": rows, "load": load}, indent=2))
    print(text)
    print(f"(copies and logs in {out})")


if __name__ == "__main__":
    main()
