"""Every benchmark of the workflow, side by side with its baseline, in one run on one machine.

    python benchmarks/run.py                 # full size (about 10 minutes on 2 quiet cores)
    python benchmarks/run.py --quick         # smoke version: a tenth of the steps, 20 fits
    python benchmarks/run.py --out DIR --only cold,noop,changed

Prints one Markdown table (row, measured, baseline, ratio, goal, met?) with a note under each
row on what exactly was timed, and writes DIR/results.md and DIR/results.json. DIR (default: a
new temporary directory) keeps the workflow copies, every command's output and the job logs.
What each row means: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workflow import PYTHON, REPO, SNAKEMAKE, clean_env, copy_workflow, slurm_start_stall, timed  # noqa: E402

HERE = Path(__file__).resolve().parent
ROWS = (
    "cold",
    "solo",
    "noop",
    "changed",
    "throughput",
    "seeds",
    "fits200",
    "sweep",
    "sweep200",
    "datasweep",
    "audit",
)


# --- configs ---------------------------------------------------------------------------------


def quick_config(config: dict) -> dict:
    """The default config at a tenth of its steps and samples (smoke runs only)."""
    config = json.loads(json.dumps(config))
    for entry in config["fits"].values():
        entry["steps"] = max(100, int(entry["steps"]) // 10)
    config["predictive"] = {**config.get("predictive", {}), "num_samples": 1000, "num_mock": 100}
    for model in config["models"].values():
        reference = model.get("reference") or {}
        if reference.get("method") == "grid":
            reference["points"] = 100
        if reference:
            reference["num_draws"] = 2000
    config["checks"] = {
        **config.get("checks", {}),
        "quality": {"elbo_particles": 1000, "khat_particles": 1000, "energy_draws": 500},
    }
    return config


def coin_fit(step_size: float, steps: int, seed: int) -> dict:
    """A fit of the coin model with the post's Beta guide (10, 10), one particle."""
    return {
        "model": "coin",
        "data": "coin_12_8",
        "guide": {"name": "beta", "args": {"alpha_init": 10.0, "beta_init": 10.0}},
        "optimizer": {"name": "Adam", "step_size": step_size},
        "elbo": {"name": "Trace_ELBO", "num_particles": 1},
        "steps": steps,
        "seed": seed,
    }


def many_fits_config(n: int, steps: int) -> dict:
    """``n`` fits of the coin model with the Beta guide, ``steps`` steps each."""
    return {
        "models": {"coin": {"function": "coin_flips", "reference": {"method": "exact", "num_draws": 500}}},
        "datasets": {"coin_12_8": {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}},
        "fits": {f"fit_{i:03d}": coin_fit(5.0e-3, steps, i) for i in range(n)},
        "predictive": {"num_samples": 200, "num_mock": 50, "seed": 0},
        "checks": {"quality": {"elbo_particles": 200, "khat_particles": 200, "energy_draws": 100}},
        "engine": {"trajectory_points": 50},
    }


def fit_spec(config: dict, fit: str, seeds: list[int]) -> dict:
    """The fit step's params, as the workflow builds them (sviflow.config.Plan), with ``seeds``."""
    import copy

    from sviflow.config import Plan, validate

    config = copy.deepcopy(config)
    validate(config)
    return {"spec": {**Plan(config).fit_spec(fit), "seeds": seeds}}


def sweep_config(steps: int, seeds: list[int], quick: bool = False) -> dict:
    """Issue 19's sweep: the coin model's Beta guide over 5 step sizes x 4 particle counts x
    ``seeds``, ``steps`` steps each, as one fit block with a sweep; the default config's
    predictive and check settings (a tenth with ``quick``)."""
    config = {
        "models": {"coin": {"function": "coin_flips", "reference": {"method": "exact"}}},
        "datasets": {"coin_12_8": {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}},
        "fits": {
            "coin": {
                **coin_fit(1.0e-3, steps, 1),
                "sweep": {
                    "optimizer.step_size": [1.0e-3, 2.0e-3, 5.0e-3, 1.0e-2, 2.0e-2],
                    "elbo.num_particles": [1, 2, 4, 8],
                    "seed": list(seeds),
                },
            }
        },
    }
    if quick:
        config["predictive"] = {"num_samples": 1000, "num_mock": 100}
        config["checks"] = {"quality": {"elbo_particles": 1000, "khat_particles": 1000, "energy_draws": 500}}
    return config


def data_sweep_config(
    datasets: int, steps: int, batch: bool, quick: bool = False, dataset_sweep: bool = False
) -> dict:
    """A sweep over datasets: ``datasets`` coin datasets of 20 flips each (n 20, p 0.5, seeds 0,
    1, ...), 2 seeds, the Beta guide at step size 0.01, ``steps`` steps; with ``batch`` false every
    member in jobs of its own. The datasets are a block each, or with ``dataset_sweep`` one
    dataset block with a sweep over its seed (the same datasets; one reference job for all of
    them)."""
    fit = coin_fit(1.0e-2, steps, 1)
    if dataset_sweep:
        fit.update(data="coins", sweep={"seed": [1, 2]})
        data = {
            "coins": {
                "generator": "coin_flips",
                "args": {"n": 20, "p": 0.5},
                "sweep": {"args.seed": list(range(datasets))},
            }
        }
    else:
        fit.update(data="d0", sweep={"data": [f"d{k}" for k in range(datasets)], "seed": [1, 2]})
        data = {
            f"d{k}": {"generator": "coin_flips", "args": {"n": 20, "p": 0.5, "seed": k}}
            for k in range(datasets)
        }
    if not batch:
        fit["batch"] = False
    config = {
        "models": {"coin": {"function": "coin_flips", "reference": {"method": "exact"}}},
        "datasets": data,
        "fits": {"coins": fit},
    }
    if quick:
        config["predictive"] = {"num_samples": 1000, "num_mock": 100}
        config["checks"] = {"quality": {"elbo_particles": 1000, "khat_particles": 1000, "energy_draws": 500}}
    return config


# --- helpers ---------------------------------------------------------------------------------


def job_count(snakemake_output: str) -> int | None:
    """The total of Snakemake's "Job stats" table."""
    match = re.search(r"^total\s+(\d+)", snakemake_output, re.MULTILINE)
    return int(match.group(1)) if match else None


def h5_timings(path: Path) -> dict:
    import h5py

    with h5py.File(path) as handle:
        value = handle.attrs["timings"]
    return json.loads(value) if isinstance(value, (str, bytes)) else dict(value)


def job_seconds_by_step(work: Path) -> dict:
    """Snakemake's benchmark seconds of every job, summed by step, largest first."""
    totals: dict[str, float] = {}
    root = work / "results" / "benchmarks"
    for tsv in root.rglob("*.tsv"):
        # benchmarks/<step>/<fit>.tsv (a sweep member's: <step>/<sweep>/<member>.tsv),
        # benchmarks/batches/<step>/<batch>.tsv, benchmarks/<step>.tsv
        parts = tsv.relative_to(root).parts
        step = tsv.stem if len(parts) == 1 else parts[1] if parts[0] == "batches" else parts[0]
        with open(tsv) as handle:
            totals[step] = totals.get(step, 0.0) + float(next(csv.DictReader(handle, delimiter="\t"))["s"])
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def row(name, measured, baseline=None, ratio=None, goal="", met=None, note="", unit="s"):
    def show(value):
        if value is None:
            return "-"
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return f"{value} {unit}".rstrip()
        return f"{value:,.0f} {unit}" if unit == "steps/s" else f"{value:.2f} {unit}".rstrip()

    return {
        "row": name,
        "measured": show(measured),
        "baseline": show(baseline),
        "ratio": "-" if ratio is None else f"{ratio:.3f}",
        "goal": goal,
        "met": "-" if met is None else ("yes" if met else "**no**"),
        "note": note,
        "values": {"measured": measured, "baseline": baseline, "ratio": ratio},
    }


def table(rows: list[dict]) -> str:
    lines = ["| row | measured | baseline | ratio | goal | met? |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['row']} | {r['measured']} | {r['baseline']} | {r['ratio']} | {r['goal']} | {r['met']} |"
        for r in rows
    ]
    notes = [f"- **{r['row']}**: {r['note']}" for r in rows if r["note"]]
    return "\n".join(lines + ([""] + notes if notes else []))


# --- the rows --------------------------------------------------------------------------------


def bench_workflow(out: Path, args, config: dict, rows: list, state: dict) -> None:
    """cold / noop / changed: the default config against the post's script."""
    snakemake = [SNAKEMAKE, "--cores", str(args.cores)]
    post = [PYTHON, str(HERE / "post_script.py"), str(out / "post_figures")]
    if args.quick:
        post += ["--scale", "10"]
    # one cold run is +-2 s of noise on 2 cores: pairs, each the post just before a fresh copy
    # of the workflow with an empty JAX cache, and the medians; the last copy goes on below
    # with solo, a third run in each pair's turn: the same cold run with every job in a
    # process of its own (SVIFLOW_PRELOAD=0), in another fresh copy
    post_walls, cold_walls, post_cpu, cold_cpu, solo_walls, solo_cpu = [], [], [], [], [], []
    sides = ("post", "cold", "solo") if "solo" in args.only else ("post", "cold")
    for attempt in range(args.repeat):
        work = out / "default" / f"workflow_{attempt}"
        copy_workflow(work)
        config_path = work / "config" / "config.yaml"
        if args.quick:
            config_path.write_text(yaml.safe_dump(quick_config(config), sort_keys=False))
        env = clean_env(work)
        # alternate which side goes first: the first warms the page cache for the second
        for side in sides if attempt % 2 == 0 else sides[::-1]:
            if side == "post":
                seconds, done = timed(post, REPO, clean_env(), out / "logs" / f"post_script_{attempt}.txt")
                post_walls.append(seconds)
                post_cpu.append(done.cpu_seconds)
            elif side == "solo":
                solo = out / "solo" / f"workflow_{attempt}"
                copy_workflow(solo)
                (solo / "config" / "config.yaml").write_text(config_path.read_text())
                seconds, done = timed(
                    snakemake,
                    solo,
                    clean_env(solo, SVIFLOW_PRELOAD="0"),
                    out / "logs" / f"snakemake_solo_{attempt}.txt",
                )
                solo_walls.append(seconds)
                solo_cpu.append(done.cpu_seconds)
            else:
                seconds, cold = timed(snakemake, work, env, out / "logs" / f"snakemake_cold_{attempt}.txt")
                cold_walls.append(seconds)
                cold_cpu.append(cold.cpu_seconds)
    state["work"] = work
    state["config"] = yaml.safe_load(config_path.read_text())
    post_seconds, cold_seconds = statistics.median(post_walls), statistics.median(cold_walls)
    state["cold_seconds"] = cold_seconds
    jobs = job_count(cold.stdout + cold.stderr)
    figures = len(list((work / "results" / "figures").rglob("*.png")))
    by_step = job_seconds_by_step(work)
    ratio = cold_seconds / post_seconds
    pair_ratios = [c / p for c, p in zip(cold_walls, post_walls)]
    rows.append(
        row(
            "cold `snakemake --cores %d`, default config, vs the post as one script" % args.cores,
            cold_seconds,
            post_seconds,
            ratio,
            "ratio <= 1.0",
            ratio <= 1.0,
            f"medians of {args.repeat} pairs (cold: {', '.join(f'{w:.2f}' for w in cold_walls)} s; "
            f"post: {', '.join(f'{w:.2f}' for w in post_walls)} s; ratio within each pair: "
            f"{', '.join(f'{r:.3f}' for r in pair_ratios)}, median "
            f"{statistics.median(pair_ratios):.3f}); CPU time (user + system, every process): "
            f"cold {', '.join(f'{c:.1f}' for c in cold_cpu)} CPU-s, post "
            f"{', '.join(f'{c:.1f}' for c in post_cpu)} CPU-s (median ratio "
            f"{statistics.median(c / p for c, p in zip(cold_cpu, post_cpu)):.2f}); each pair the post script and a fresh "
            f"copy of the workflow, in turns first; "
            f"{jobs} jobs, {figures} figures, empty JAX cache; "
            f"baseline: `python benchmarks/post_script.py` (its five fits with "
            f"svi.run(progress_bar=False), {len(list((out / 'post_figures').glob('*.png')))} "
            f"figures); Snakemake's job seconds of the last cold run summed by step "
            f"(--cores {args.cores}; fit, predict and reference claim 2 each): "
            + ", ".join(f"{k} {v:.0f} s" for k, v in by_step.items()),
        )
    )
    if solo_walls:
        solo_seconds = statistics.median(solo_walls)
        rows.append(
            row(
                "the same cold run, every job in a process of its own (SVIFLOW_PRELOAD=0), vs the post",
                solo_seconds,
                post_seconds,
                solo_seconds / post_seconds,
                note=f"medians of the same {args.repeat} turns (solo: "
                f"{', '.join(f'{w:.2f}' for w in solo_walls)} s, "
                f"{', '.join(f'{c:.1f}' for c in solo_cpu)} CPU-s): what the preloaded process "
                f"(sviflow/preload.py) saves is this row against the one above",
            )
        )

    if "noop" in args.only:
        walls = []
        for attempt in range(3):
            seconds, result = timed(snakemake, work, env, out / "logs" / f"snakemake_noop_{attempt}.txt")
            walls.append(seconds)
            if "Nothing to be done" not in result.stdout + result.stderr:
                raise RuntimeError(
                    f"the rerun with nothing changed ran jobs: see logs/snakemake_noop_{attempt}.txt"
                )
        noop = statistics.median(walls)
        rows.append(
            row(
                "rerun, nothing changed",
                noop,
                cold_seconds,
                noop / cold_seconds,
                "<= 2 s",
                noop <= 2.0,
                f"median of 3 runs ({', '.join(f'{w:.2f}' for w in walls)} s); "
                f"Snakemake reports nothing to be done; baseline: the cold run",
            )
        )

    if "changed" in args.only:
        edited = yaml.safe_load(config_path.read_text())
        fit = "beta" if "beta" in edited["fits"] else next(iter(edited["fits"]))
        before = int(edited["fits"][fit]["steps"])
        edited["fits"][fit]["steps"] = before + max(1, before // 5)
        config_path.write_text(yaml.safe_dump(edited, sort_keys=False))
        seconds, result = timed(snakemake, work, env, out / "logs" / "snakemake_changed.txt")
        reran = job_count(result.stdout + result.stderr)
        if not reran:
            raise RuntimeError(f"changing fits.{fit}.steps reran no job: see logs/snakemake_changed.txt")
        fit_compile = h5_timings(work / "results" / "fits" / f"{fit}.h5")["compile_seconds"]
        ratio = seconds / cold_seconds
        rows.append(
            row(
                f"rerun after changing `fits.{fit}.steps`",
                seconds,
                cold_seconds,
                ratio,
                "ratio <= 0.25",
                ratio <= 0.25,
                f"steps {before} -> {edited['fits'][fit]['steps']}; {reran} jobs rerun "
                f"(the fit and what depends on it), JAX cache warm from the cold run; "
                f"the fit's program is the same (same plan, see sviflow.engine.plan_chunks): "
                f"the fit's compile_seconds (tracing and cache reads) {fit_compile:.2f} s",
            )
        )
        # a step count with another plan (another thinning): the fit compiles again
        edited["fits"][fit]["steps"] = int(before * 2.5)
        config_path.write_text(yaml.safe_dump(edited, sort_keys=False))
        seconds, result = timed(snakemake, work, env, out / "logs" / "snakemake_changed_plan.txt")
        reran = job_count(result.stdout + result.stderr)
        rows.append(
            row(
                f"rerun after changing `fits.{fit}.steps` to another plan",
                seconds,
                cold_seconds,
                seconds / cold_seconds,
                "info",
                None,
                f"steps {before} -> {edited['fits'][fit]['steps']}: another thinning, so "
                f"the fit's program is compiled again (its predict still hits the cache); "
                f"{reran} jobs rerun",
            )
        )
        edited["fits"][fit]["steps"] = before
        config_path.write_text(yaml.safe_dump(edited, sort_keys=False))


def bench_throughput(out: Path, args, rows: list, state: dict) -> None:
    work = state.get("work") or copy_workflow(out / "default" / "workflow")
    if "config" not in state and args.quick:
        (work / "config" / "config.yaml").write_text(
            yaml.safe_dump(
                quick_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text())), sort_keys=False
            )
        )
    progress_steps = "1000,2000" if args.quick else "5000,10000"
    command = [
        PYTHON,
        str(HERE / "throughput.py"),
        "--config",
        str(work / "config" / "config.yaml"),
        "--out",
        str(out / "throughput"),
        "--repeats",
        str(2 if args.quick else 3),
        "--progress-steps",
        progress_steps,
    ]
    timed(command, work, clean_env(work, PYTHONHASHSEED=0), out / "logs" / "throughput.txt")
    report = json.loads((out / "throughput" / "throughput.json").read_text())
    for fit, entry in report["fits"].items():
        engine, scan = entry["engine"]["steps_per_second"], entry["scan"]["steps_per_second"]
        ratio = engine / scan
        rows.append(
            row(
                f"steps/s, `{fit}` ({entry['steps']:,} steps), engine with progress vs one lax.scan",
                engine,
                scan,
                ratio,
                "ratio >= 0.95",
                ratio >= 0.95,
                f"engine: sviflow.engine.fit_svi, engine.chunks {report['chunks']} "
                f"({entry['engine'].get('chunks', '?')} chunks run), progress to a "
                f"log file, run_seconds (no compile) {entry['engine']['run_seconds']:.3f} s; "
                f"scan: jit(lax.scan(svi.{'stable_update' if entry['stable_update'] else 'update'}))"
                f", compiled first, {entry['scan']['run_seconds']:.3f} s; best of "
                f"{report['repeats']} each, interleaved (all: engine "
                f"{[round(v) for v in entry['engine_all']]}, scan "
                f"{[round(v) for v in entry['scan_all']]})",
                unit="steps/s",
            )
        )
    for steps, entry in report["numpyro_progress"].items():
        engine = entry["engine"]["steps_per_second"]
        numpyro = entry["numpyro"]["steps_per_second"]
        ratio = engine / numpyro if numpyro else None
        rows.append(
            row(
                f"steps/s, `{entry['fit']}` at {int(steps):,} steps, engine with progress vs "
                f"numpyro svi.run(progress_bar=True)",
                engine,
                numpyro,
                ratio,
                "ratio >= 1 (info)",
                None if ratio is None else ratio >= 1.0,
                f"measured on {int(steps):,} steps, not the fit's own: numpyro's progress "
                f"path grows faster than linearly (the post's 50,000-step fits take ~436 s "
                f"each); numpyro: (N-1) / (wall(N) - wall(1 step)), wall(N) "
                f"{entry['numpyro']['wall_seconds']:.2f} s including one compile "
                f"({entry['numpyro']['one_step_seconds']:.2f} s for 1 step); engine: "
                f"run_seconds, no compile",
                unit="steps/s",
            )
        )


def bench_seeds(out: Path, args, rows: list, state: dict) -> None:
    """16 seeds of one fit in one job against one seed: the fit step from the command line."""
    work = state.get("work")
    config = state.get("config")
    if work is None:
        work = copy_workflow(out / "default" / "workflow")
        config = yaml.safe_load((work / "config" / "config.yaml").read_text())
        if args.quick:
            config = quick_config(config)
    scratch = out / "seeds"
    shutil.rmtree(scratch, ignore_errors=True)  # a reused --out: its caches would not be cold
    scratch.mkdir(parents=True)
    data = scratch / "coin_12_8.h5"
    timed(
        [
            PYTHON,
            "scripts/simulate.py",
            "--output",
            f"data={data}",
            "--params",
            json.dumps({"name": "coin_12_8", "spec": config["datasets"]["coin_12_8"]}),
        ],
        work,
        clean_env(work),
        scratch / "simulate.txt",
    )
    repeats = 1 if args.quick else 2
    for fit in args.seeds_fits.split(","):
        walls, runs = {1: [], 16: []}, {1: [], 16: []}
        base = config["fits"][fit].get("seed", 0)
        base = base[0] if isinstance(base, list) else int(base)
        for attempt in range(repeats):
            for n in (1, 16):
                tag = f"{fit}_{n}_{attempt}"
                params = scratch / f"{tag}.json"
                params.write_text(json.dumps(fit_spec(config, fit, list(range(base, base + n)))))
                inputs = ["--input", f"data={data}"] if config["fits"][fit].get("data") else []
                env = clean_env(
                    work, PYTHONHASHSEED=0, SVIFLOW_FIT_CHUNKS=20, SVIFLOW_JAX_CACHE=scratch / f"cache_{tag}"
                )  # cold: a new cache
                seconds, _ = timed(
                    [
                        PYTHON,
                        "scripts/fit.py",
                        *inputs,
                        "--output",
                        f"fit={scratch / tag}.h5",
                        "--params",
                        f"@{params}",
                        "--log",
                        str(scratch / f"{tag}.log"),
                    ],
                    work,
                    env,
                    scratch / f"{tag}.txt",
                )
                walls[n].append(seconds)
                runs[n].append(h5_timings(scratch / f"{tag}.h5")["run_seconds"])
        one, many = min(walls[1]), min(walls[16])
        ratio = many / one
        rows.append(
            row(
                f"16 seeds of `{fit}` in one job vs one seed",
                many,
                one,
                ratio,
                "ratio <= 1.5",
                ratio <= 1.5,
                f"the fit step (`python scripts/fit.py`, as a job runs it) end to end: "
                f"imports, one compile (empty JAX cache), {config['fits'][fit]['steps']:,} "
                f"steps, HDF5 written; best of {repeats}; the steps alone (engine "
                f"run_seconds): {min(runs[16]):.2f} s for 16 seeds vs {min(runs[1]):.2f} s "
                f"for one ({min(runs[16]) / max(min(runs[1]), 1e-9):.1f}x)",
            )
        )


def bench_many_fits(out: Path, args, rows: list) -> None:
    n = args.fits200 or (20 if args.quick else 200)
    scratch = out / "fits200"
    work = copy_workflow(scratch / "workflow")
    (work / "config" / "generated.yaml").write_text(
        yaml.safe_dump(many_fits_config(n, args.fits200_steps), sort_keys=False)
    )
    cfg = ("--configfile", "config/generated.yaml", "--replace-workflow-config")
    env = clean_env(work)

    # the baseline: the DAG of the default config (5 fits), in its own fresh copy
    base_work = copy_workflow(scratch / "default_dry")
    if args.quick:
        (base_work / "config" / "config.yaml").write_text(
            yaml.safe_dump(
                quick_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text())), sort_keys=False
            )
        )
    base_dry, base_result = timed(
        [SNAKEMAKE, "-n", "--cores", str(args.cores)],
        base_work,
        clean_env(base_work),
        scratch / "dry_default.txt",
    )
    dry, dry_result = timed(
        [SNAKEMAKE, "-n", "--cores", str(args.cores), *cfg], work, env, scratch / "dry_generated.txt"
    )
    jobs_all = job_count(dry_result.stdout + dry_result.stderr)
    jobs_base = job_count(base_result.stdout + base_result.stderr)
    rows.append(
        row(
            f"{n} fits: build the DAG (`snakemake -n`)",
            dry,
            base_dry,
            dry / base_dry,
            "(info)",
            None,
            f"{jobs_all} jobs planned; baseline: `snakemake -n` of the default config "
            f"({jobs_base} jobs); both with nothing run yet",
        )
    )

    until = [] if args.fits200_all else ["--until", "fit"]
    wall, result = timed(
        [SNAKEMAKE, "--cores", str(args.cores), *cfg, *until], work, env, scratch / "run_generated.txt"
    )
    jobs = job_count(result.stdout + result.stderr) or 0
    job_seconds, engine_seconds = [], []
    for tsv in sorted((work / "results" / "benchmarks" / "fit").glob("*.tsv")):
        with open(tsv) as handle:
            job_seconds.append(float(next(csv.DictReader(handle, delimiter="\t"))["s"]))
        timings = h5_timings(work / "results" / "fits" / f"{tsv.stem}.h5")
        engine_seconds.append(timings["compile_seconds"] + timings["run_seconds"])
    overhead = statistics.mean(job_seconds) - statistics.mean(engine_seconds)
    what = "every job" if args.fits200_all else "the fit jobs (`--until fit`)"
    rows.append(
        row(
            f"{n} fits: overhead per fit job",
            overhead,
            None,
            None,
            "(info)",
            None,
            f"a real run of {what}: {jobs} jobs in {wall:.1f} s wall with --cores "
            f"{args.cores} on {os.cpu_count()} CPUs ({wall / max(jobs, 1):.2f} s wall per "
            f"job, the simulate job counted); per fit job, Snakemake's benchmark s {statistics.mean(job_seconds):.2f} "
            f"s minus the engine's compile + run {statistics.mean(engine_seconds):.2f} s "
            f"(Python start, imports, tracing and cache reads outside the engine's timers, "
            f"HDF5, Snakemake's job start); "
            f"{args.fits200_steps} steps per fit",
        )
    )


def _sweep_run(out: Path, name: str, config: dict, cores: int) -> tuple[float, int, dict]:
    """A cold run of a sweep config in a fresh copy: (wall s, jobs, job seconds by step)."""
    work = copy_workflow(out / name / "workflow")
    (work / "config" / "sweep.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cfg = ("--configfile", "config/sweep.yaml", "--replace-workflow-config")
    wall, result = timed(
        [SNAKEMAKE, "--cores", str(cores), *cfg], work, clean_env(work), out / name / "run.txt"
    )
    if result.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed, see {out / name / 'run.txt'}")
    return wall, job_count(result.stdout + result.stderr) or 0, job_seconds_by_step(work)


def bench_sweep(out: Path, args, rows: list, which: str) -> None:
    """sweep: the 40-fit sweep through the workflow against the one-script loop;
    sweep200: the same grid with 10 seeds, 200 fits (how it grows from 40)."""
    steps = 500 if args.quick else 5000
    scratch = out / "sweep"
    if which == "sweep":
        wall, jobs, by_step = _sweep_run(
            scratch, "workflow40", sweep_config(steps, [1, 2], args.quick), args.cores
        )
        loop_dir = scratch / "loop"
        loop = [PYTHON, str(HERE / "sweep_loop.py"), str(loop_dir), "--steps", str(steps)]
        loop_wall, loop_result = timed(loop, REPO, clean_env(), scratch / "loop.txt")
        if loop_result.returncode != 0:
            raise SystemExit(f"sweep: the loop failed, see {scratch / 'loop.txt'}")
        rows.append(
            row(
                "40-fit sweep, cold: workflow vs one-script loop",
                wall,
                loop_wall,
                wall / loop_wall,
                "<= 0.25",
                wall / loop_wall <= 0.25,
                f"5 step sizes x 4 particle counts x 2 seeds, {steps} steps, one fit block with a "
                f"sweep: {jobs} jobs (--cores {args.cores}), 4 batches (one per particle count); "
                f"job seconds by step {', '.join(f'{k} {v:.0f}' for k, v in by_step.items())}; "
                f"baseline: `python benchmarks/sweep_loop.py` (svi.run, 10,000 guide draws, 1,000 "
                f"mock sets, az.summary, two figures and an HDF5 file per fit, one process)",
            )
        )
        state_file = scratch / "sweep40.json"
        state_file.write_text(json.dumps({"wall": wall}))
    else:
        wall, jobs, by_step = _sweep_run(
            scratch, "workflow200", sweep_config(steps, list(range(1, 11)), args.quick), args.cores
        )
        state_file = scratch / "sweep40.json"
        forty = json.loads(state_file.read_text())["wall"] if state_file.exists() else None
        rows.append(
            row(
                "200-fit sweep, cold: total (per fit)",
                wall,
                forty,
                wall / forty if forty else None,
                "(info)",
                None,
                f"the same grid with 10 seeds: {jobs} jobs, {wall / 200:.2f} s per fit; baseline: "
                f"the 40-fit sweep's wall ({forty / 40:.2f} s per fit), so the ratio is how 5 x the "
                f"fits grows the time; job seconds by step "
                f"{', '.join(f'{k} {v:.0f}' for k, v in by_step.items())}"
                if forty
                else f"{jobs} jobs, {wall / 200:.2f} s per fit (run the sweep row too for the growth)",
            )
        )


def bench_data_sweep(out: Path, args, rows: list) -> None:
    """datasweep: 10 datasets x 2 seeds, as one batch (datasets of one shape share a program)
    against the same fits in jobs of their own (batch: false), both cold, the datasets a block
    each; and the batch again with the datasets as one dataset sweep (one reference job
    instead of one per dataset)."""
    steps, datasets = (500, 4) if args.quick else (2000, 10)
    scratch = out / "datasweep"
    fits = 2 * datasets
    batched, jobs, by_step = _sweep_run(
        scratch, "batched", data_sweep_config(datasets, steps, True, args.quick), args.cores
    )
    alone, alone_jobs, alone_by_step = _sweep_run(
        scratch, "per_fit", data_sweep_config(datasets, steps, False, args.quick), args.cores
    )
    swept, swept_jobs, swept_by_step = _sweep_run(
        scratch, "dataset_sweep", data_sweep_config(datasets, steps, True, args.quick, True), args.cores
    )

    def shown(by):
        return ", ".join(f"{k} {v:.0f}" for k, v in by.items())

    rows.append(
        row(
            f"{fits} fits over {datasets} datasets, cold: one batch vs a job per fit",
            batched,
            alone,
            batched / alone,
            "(info)",
            None,
            f"the Beta guide on {datasets} coin datasets of 20 flips (coin_flips n 20, p 0.5, seeds "
            f"0-{datasets - 1}, a dataset block each) x 2 seeds, {steps} steps, one fit block with "
            f"sweep: {{data: [...], seed: [1, 2]}}: {jobs} jobs, one program; baseline: the same with "
            f"batch: false, {alone_jobs} jobs; job seconds by step {shown(by_step)} against "
            f"{shown(alone_by_step)}",
        )
    )
    rows.append(
        row(
            f"the same {fits} fits, the datasets as one dataset sweep",
            swept,
            batched,
            swept / batched,
            "(info)",
            None,
            f"datasets: {{coins: {{..., sweep: {{args.seed: [0, ..., {datasets - 1}]}}}}}} and the fit's "
            f"data: coins (the same datasets): {swept_jobs} jobs, their references by one reference "
            f"job (a simulate job per dataset still); baseline: the batch above, a reference job per "
            f"dataset; job seconds by step {shown(swept_by_step)}",
        )
    )


def bench_audit(out: Path, args, rows: list) -> None:
    import audit

    result = audit.run_audit(out / "audit", cores=min(args.cores, 2))
    (out / "audit" / "audit.md").write_text(audit.tables(result))
    s = audit.summary(result)
    plot_bad = {k: v for k, v in s["import_violations"].items() if not k.startswith("fit")}
    fit_bad = {k: v for k, v in s["import_violations"].items() if k.startswith("fit")}
    rows.append(
        row(
            "plot, check and summary jobs that import numpyro or jax",
            len(plot_bad),
            None,
            None,
            "0",
            not plot_bad,
            "; ".join(f"{k}: {v}" for k, v in plot_bad.items())
            or "plot, compare, check and summarize jobs of the tiny config, sys.modules at exit",
            unit="",
        )
    )
    rows.append(
        row(
            "fit jobs that import matplotlib or arviz",
            len(fit_bad),
            None,
            None,
            "0",
            not fit_bad,
            "; ".join(f"{k}: {v}" for k, v in fit_bad.items())
            or "fit jobs of the tiny config, sys.modules at exit",
            unit="",
        )
    )
    costly = s["costly_twice"]
    rows.append(
        row(
            "XLA programs compiled twice in one job",
            sum(map(len, costly.values())),
            None,
            None,
            "0",
            not costly,
            "every job of the tiny config, from JAX_LOG_COMPILES and "
            "JAX_EXPLAIN_CACHE_MISSES in its log: the same cache key missed twice, or asked "
            f"for twice and >= {audit.COSTLY_SECONDS} s to compile; "
            + (json.dumps(costly) if costly else "none"),
            unit="",
        )
    )
    requested = s["requested_twice"]
    rows.append(
        row(
            "XLA programs requested twice in one job",
            s["requested_twice_count"],
            None,
            None,
            "(info)",
            None,
            "the same key asked of XLA again in one job (JAX's in-memory cache missed; the "
            "persistent cache answered): "
            + ("; ".join(f"{job}: {', '.join(names)}" for job, names in requested.items()) or "none")
            + f"; the costliest took {s['max_requested_twice_compile_seconds']:.3f} s to "
            "compile the first time",
            unit="",
        )
    )
    rows.append(
        row(
            "programs compiled when the fit jobs rerun, nothing changed",
            s["rerun_fit_compiled"],
            None,
            None,
            "0",
            s["rerun_fit_compiled"] == 0,
            f"`--forcerun fit --until fit` on the tiny config after a full run: "
            f"{s['rerun_fit_loaded']} programs loaded from the persistent cache",
            unit="",
        )
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke version (minutes, not a result)")
    parser.add_argument("--out", default=None, help="scratch and results (default: a new temp dir)")
    parser.add_argument("--cores", type=int, default=4, help="snakemake --cores (default 4)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="cold runs, each paired with a run of the post script (default 3)",
    )
    parser.add_argument("--only", default=",".join(ROWS), help=f"rows to run: {','.join(ROWS)}")
    parser.add_argument("--seeds-fits", default="beta", help="fits for the 16-seed row")
    parser.add_argument(
        "--fits200",
        type=int,
        default=None,
        help="fits in the generated config (default 200, 20 with --quick)",
    )
    parser.add_argument("--fits200-steps", type=int, default=100)
    parser.add_argument(
        "--fits200-all",
        action="store_true",
        help="run every job of the generated config, not only its fits (long)",
    )
    parser.add_argument(
        "--allow-slurm-down",
        action="store_true",
        help="measure even though a down SLURM controller stalls every Snakemake start",
    )
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    unknown = args.only - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {', '.join(sorted(unknown))}; valid: {', '.join(ROWS)}")
    if args.repeat < 1:
        parser.error("--repeat is the number of cold pairs: at least 1")
    if args.only & {"noop", "changed", "solo"}:
        args.only.add("cold")
    stall = slurm_start_stall()
    if stall and not args.allow_slurm_down:
        parser.exit(
            2,
            f"benchmarks/run.py: not measuring: {stall}; or pass --allow-slurm-down to "
            "measure anyway (the header then says so).\n",
        )
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sviflow-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    rows: list[dict] = []
    state: dict = {}
    start = time.perf_counter()
    load = os.getloadavg()[0]

    def save():
        header = (
            f"sviflow benchmarks{' (--quick: a smoke test, not a result)' if args.quick else ''}"
            f" - {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
            f" load average {load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M')}"
        )
        if stall:
            header += f"\n\nWarning, measured with --allow-slurm-down: {stall}."
        text = f"{header}\n\n{table(rows)}\n"
        (out / "results.md").write_text(text)
        (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
        return text

    steps = [
        ("cold", lambda: bench_workflow(out, args, config, rows, state)),
        ("throughput", lambda: bench_throughput(out, args, rows, state)),
        ("seeds", lambda: bench_seeds(out, args, rows, state)),
        ("fits200", lambda: bench_many_fits(out, args, rows)),
        ("sweep", lambda: bench_sweep(out, args, rows, "sweep")),
        ("sweep200", lambda: bench_sweep(out, args, rows, "sweep200")),
        ("datasweep", lambda: bench_data_sweep(out, args, rows)),
        ("audit", lambda: bench_audit(out, args, rows)),
    ]
    for name, function in steps:
        if name in args.only:
            began = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
            function()
            save()
            print(
                f"[{time.strftime('%H:%M:%S')}] {name} done in {time.perf_counter() - began:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    text = save()
    print(text)
    print(f"(all in {time.perf_counter() - start:.0f} s; outputs and logs in {out})")


if __name__ == "__main__":
    main()
