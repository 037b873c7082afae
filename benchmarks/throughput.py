"""Steps per second of the fit engine against one ``lax.scan``, and against numpyro's
``svi.run(progress_bar=True)``: in one process, for the fits of a config.

    python benchmarks/throughput.py --config config/config.yaml --out DIR [--repeats 3]
        [--fits beta,normal] [--progress-fit beta --progress-steps 5000,10000] [--scale 1]

- engine: ``sviflow.engine.fit_svi`` exactly as the fit step calls it (chunks from the config,
  1,000 trajectory points, progress on, tqdm into a log file); steps/s from its ``run_seconds``,
  which exclude tracing and compilation.
- scan: ``jax.jit`` of one ``lax.scan`` of ``svi.update`` (``svi.stable_update`` where the fit
  uses it) over the same number of steps, compiled before the clock starts, no progress.
- numpyro: ``svi.run(..., progress_bar=True)``; its jitted step is compiled inside ``run``, so
  steps/s = (N - 1) / (wall(N steps) - wall(1 step)).

Best of ``--repeats`` for each, engine and scan interleaved so both see the same load.
Writes DIR/throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import yaml


def fit_setup(config: dict, fit: str, config_dir: Path):
    """The fit's SVI object, model kwargs, steps, seed and stable_update, built as the fit step
    builds them (``sviflow.resolve``, ``sviflow.optim``)."""
    from numpyro.infer import SVI

    from sviflow import optim, resolve
    from sviflow.data import load_dataset, model_kwargs

    entry = config["fits"][fit]
    model_entry = config["models"][entry["model"]]
    model_spec = {
        "name": entry["model"],
        "function": model_entry["function"],
        "args": model_entry.get("args", {}),
    }
    dataset = None
    if entry.get("data"):
        data_spec = dict(config["datasets"][entry["data"]])
        if "file" in data_spec:
            data_spec["file"] = str(config_dir / data_spec["file"])
        dataset = load_dataset(data_spec)
    kwargs = model_kwargs(dataset)
    model = resolve.resolve_model(model_spec, where=f"models.{entry['model']}")
    guide = resolve.resolve_guide(dict(entry["guide"]), model, where=f"fits.{fit}.guide")
    resolve.prepare_guide(model, guide, kwargs, where=f"fits.{fit}")  # as the fit step does
    svi = SVI(
        model,
        guide,
        optim.make_optimizer(entry.get("optimizer", {})),  # the schema's defaults
        loss=optim.make_elbo(entry.get("elbo", {})),
    )
    seed = entry.get("seed", 0)
    seed = seed[0] if isinstance(seed, list) else seed
    return svi, kwargs, int(entry["steps"]), int(seed), bool(entry.get("stable_update", False))


def engine_steps_per_second(svi, kwargs, steps, seed, stable, chunks, log_path) -> dict:
    from sviflow.engine import fit_svi

    with open(log_path, "a", buffering=1) as log:
        result = fit_svi(
            svi,
            steps,
            [seed],
            kwargs,
            chunks=chunks,
            trajectory_points=1000,
            stable_update=stable,
            progress=True,
            progress_file=log,
        )
    return {
        "steps_per_second": steps / result.timings["run_seconds"],
        "run_seconds": result.timings["run_seconds"],
        "compile_seconds": result.timings["compile_seconds"],
        "chunks": result.timings["chunks"],
    }


def compiled_scan(svi, kwargs, steps, seed, stable):
    import jax
    from jax import lax

    update = svi.stable_update if stable else svi.update
    state = svi.init(jax.random.PRNGKey(seed), **kwargs)

    def run(state):
        return lax.scan(lambda s, _: update(s, **kwargs), state, None, length=steps)

    start = time.perf_counter()
    compiled = jax.jit(run).lower(state).compile()
    return compiled, state, time.perf_counter() - start


def scan_steps_per_second(compiled, state, steps) -> dict:
    import jax
    import numpy as np

    start = time.perf_counter()
    final, losses = compiled(state)
    np.asarray(losses)
    jax.block_until_ready(final)
    seconds = time.perf_counter() - start
    return {"steps_per_second": steps / seconds, "run_seconds": seconds}


def numpyro_progress(svi, kwargs, steps, seed, stable, log_path) -> dict:
    import jax

    def wall(n):
        start = time.perf_counter()
        result = svi.run(jax.random.PRNGKey(seed), n, progress_bar=True, stable_update=stable, **kwargs)
        jax.block_until_ready(result.losses)
        return time.perf_counter() - start

    with open(log_path, "a", buffering=1) as log, contextlib.redirect_stderr(log):
        one_step = min(wall(1), wall(1))  # init, trace and compile: paid again by every run()
        full = wall(steps)
    loop = full - one_step
    return {
        "steps_per_second": (steps - 1) / loop if loop > 0 else None,
        "wall_seconds": full,
        "one_step_seconds": one_step,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fits", default=None, help="comma-separated (default: every fit)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1, help="divide step counts by this")
    parser.add_argument("--progress-fit", default="beta")
    parser.add_argument("--progress-steps", default="5000,10000")
    parser.add_argument(
        "--chunks",
        type=int,
        default=None,
        help="engine chunks (default: the config's engine.chunks, else 20)",
    )
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = Path(args.config)
    config = yaml.safe_load(config_path.read_text())
    chunks = args.chunks or int((config.get("engine") or {}).get("chunks", 20))
    fits = args.fits.split(",") if args.fits else list(config["fits"])
    report = {
        "chunks": chunks,
        "repeats": args.repeats,
        "fits": {},
        "numpyro_progress": {},
        "cpu_count": os.cpu_count(),
    }

    for fit in fits:
        svi, kwargs, steps, seed, stable = fit_setup(config, fit, config_path.parent)
        steps = max(1, steps // args.scale)
        compiled, state, scan_compile = compiled_scan(svi, kwargs, steps, seed, stable)
        engine_runs, scan_runs = [], []
        for _ in range(args.repeats):
            engine_runs.append(
                engine_steps_per_second(svi, kwargs, steps, seed, stable, chunks, out / f"engine_{fit}.log")
            )
            scan_runs.append(scan_steps_per_second(compiled, state, steps))
        engine = max(engine_runs, key=lambda r: r["steps_per_second"])
        scan = max(scan_runs, key=lambda r: r["steps_per_second"])
        report["fits"][fit] = {
            "steps": steps,
            "stable_update": stable,
            "engine": engine,
            "scan": {**scan, "compile_seconds": scan_compile},
            "engine_all": [r["steps_per_second"] for r in engine_runs],
            "scan_all": [r["steps_per_second"] for r in scan_runs],
        }
        print(
            f"{fit}: {steps} steps, engine {engine['steps_per_second']:.0f} steps/s, "
            f"scan {scan['steps_per_second']:.0f} steps/s",
            flush=True,
        )

    if args.progress_fit and args.progress_steps:
        svi, kwargs, _, seed, stable = fit_setup(config, args.progress_fit, config_path.parent)
        for steps in [int(s) for s in args.progress_steps.split(",") if s]:
            engine = max(
                (
                    engine_steps_per_second(
                        svi,
                        kwargs,
                        steps,
                        seed,
                        stable,
                        chunks,
                        out / f"engine_{args.progress_fit}_{steps}.log",
                    )
                    for _ in range(max(1, args.repeats - 1))
                ),
                key=lambda r: r["steps_per_second"],
            )
            numpyro = numpyro_progress(
                svi, kwargs, steps, seed, stable, out / f"numpyro_progress_{args.progress_fit}_{steps}.log"
            )
            report["numpyro_progress"][str(steps)] = {
                "fit": args.progress_fit,
                "engine": engine,
                "numpyro": numpyro,
            }
            print(
                f"{args.progress_fit} {steps} steps: engine {engine['steps_per_second']:.0f} "
                f"steps/s, numpyro progress_bar=True {numpyro['steps_per_second'] or 0:.0f} "
                f"steps/s ({numpyro['wall_seconds']:.1f} s)",
                flush=True,
            )

    (out / "throughput.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
