"""Validate the suite's NumPyro ports against posteriordb's reference posteriors with NUTS.

    python benchmarks/calibration/validate_ports.py [NAME ...] [--chains 4] [--warmup 1000]
        [--draws 1000] [--seed 0]

For every posterior of ``suite.json`` (or the NAMEs given), in its own process, one after the
other (float64 only where the listing says ``x64: true``): load the data with sviflow's JSON
reader, run NumPyro NUTS (dense mass matrix, target acceptance 0.9, chains run sequentially),
and compare the mean and sd of every component of every site in the gold summary (latent and
deterministic) with the gold: the worst |mean error| in gold sds and the worst sd ratio
(NUTS / gold). A port passes when every mean is within 0.1 gold sd and every sd ratio is within
[0.9, 1.1]. It also draws the observed sites with the observed arrays set to None (posterior
predictive, as sviflow's predict step does) and checks their shapes.

Prints a table and writes ``validation.json`` next to this file (all posteriors validated in
this run, merged with earlier results of the others).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEAN_TOL, SD_LOW, SD_HIGH = 0.1, 0.9, 1.1


def run_one(entry: dict, chains: int, warmup: int, draws: int, seed: int) -> dict:
    """NUTS on one posterior (in this process) -> the comparison with the gold."""
    import jax

    if entry["x64"]:
        jax.config.update("jax_enable_x64", True)
    import numpy as np
    import numpyro
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
    from numpyro.infer import MCMC, NUTS, Predictive

    from sviflow.data import load_dataset, model_kwargs

    sys.path.insert(0, str(HERE))
    import models

    model = getattr(models, entry["model"].split(":")[1])
    dataset = load_dataset({"file": str(HERE / entry["data"]), "observed": entry["observed"]})
    kwargs = {**model_kwargs(dataset), **entry.get("settings", {})}
    gold = json.loads((HERE / entry["gold"]).read_text())["sites"]

    mcmc = MCMC(
        NUTS(model, dense_mass=True, target_accept_prob=0.9),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",), **kwargs)
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples(group_by_chain=True)
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())

    rows, worst_mean, worst_ratio = {}, 0.0, 1.0
    min_ess, max_rhat = np.inf, 0.0
    for site, summary in gold.items():
        shape = tuple(summary["shape"])
        values = np.asarray(samples[site], dtype=np.float64)
        if values.shape[2:] != shape:
            raise ValueError(f"{site}: NUTS shape {values.shape[2:]}, gold shape {shape}")
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        mean = flat.reshape(-1, flat.shape[-1]).mean(axis=0)
        sd = flat.reshape(-1, flat.shape[-1]).std(axis=0, ddof=1)
        gold_mean, gold_sd = np.asarray(summary["mean"]), np.asarray(summary["sd"])
        mean_err = np.abs(mean - gold_mean) / gold_sd
        ratio = sd / gold_sd
        ess = np.asarray(effective_sample_size(flat))
        rhat = np.asarray(split_gelman_rubin(flat))
        rows[site] = {
            "mean_err_sd": mean_err.tolist(),
            "sd_ratio": ratio.tolist(),
            "ess": ess.tolist(),
            "rhat": rhat.tolist(),
        }
        worst_mean = max(worst_mean, float(mean_err.max()))
        worst_ratio = max(
            [worst_ratio, float(ratio.max()), float(ratio.min())], key=lambda r: abs(np.log(r))
        )  # the ratio farthest from 1
        min_ess, max_rhat = min(min_ess, float(ess.min())), max(max_rhat, float(rhat.max()))

    # the model predicts: observed arrays None, latent sites from the posterior
    flat_samples = mcmc.get_samples()
    subset = {k: v[:20] for k, v in flat_samples.items()}
    predict_kwargs = {**model_kwargs(dataset, predict=True), **entry.get("settings", {})}
    predicted = Predictive(model, posterior_samples=subset, return_sites=entry["observed"])(
        jax.random.PRNGKey(seed + 1), **predict_kwargs
    )
    predict_ok = all(
        np.asarray(predicted[name]).shape[1:] == np.shape(dataset["observed"][name])
        and bool(np.all(np.isfinite(np.asarray(predicted[name]))))
        for name in entry["observed"]
    )

    passed = worst_mean <= MEAN_TOL and all(
        SD_LOW <= r <= SD_HIGH for row in rows.values() for r in row["sd_ratio"]
    )
    return {
        "name": entry["name"],
        "posterior": entry["posterior"],
        "passed": passed,
        "worst_mean_err_sd": worst_mean,
        "worst_sd_ratio": worst_ratio,
        "min_ess": min_ess,
        "max_rhat": max_rhat,
        "divergences": divergences,
        "predict_ok": predict_ok,
        "seconds": seconds,
        "x64": entry["x64"],
        "nuts": {
            "chains": chains,
            "warmup": warmup,
            "draws": draws,
            "seed": seed,
            "dense_mass": True,
            "target_accept_prob": 0.9,
            "chain_method": "sequential",
        },
        "numpyro": numpyro.__version__,
        "jax": jax.__version__,
        "sites": rows,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="suite names (default: all)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one posterior, print JSON
    args = parser.parse_args()
    suite = json.loads((HERE / "suite.json").read_text())

    if args.one:
        entry = next(e for e in suite if e["name"] == args.one)
        print(json.dumps(run_one(entry, args.chains, args.warmup, args.draws, args.seed)))
        return

    unknown = [n for n in args.names if n not in {e["name"] for e in suite}]
    if unknown:
        parser.error(f"unknown names {unknown}; the suite has {[e['name'] for e in suite]}")
    chosen = [e for e in suite if not args.names or e["name"] in args.names]
    out_path = HERE / "validation.json"
    results = {r["name"]: r for r in json.loads(out_path.read_text())} if out_path.exists() else {}
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    print(
        f"{'name':20s} {'dim':>3s} {'x64':>3s} {'|mean err|/sd':>13s} {'sd ratio':>8s} "
        f"{'min ESS':>7s} {'R-hat':>5s} {'div':>4s} {'pred':>4s} {'s':>5s}  verdict",
        flush=True,
    )
    for entry in chosen:
        command = [
            sys.executable,
            __file__,
            "--one",
            entry["name"],
            "--chains",
            str(args.chains),
            "--warmup",
            str(args.warmup),
            "--draws",
            str(args.draws),
            "--seed",
            str(args.seed),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{entry['name']:20s} FAILED to run:\n{done.stderr[-3000:]}", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results[entry["name"]] = result
        print(
            f"{entry['name']:20s} {entry['dimension']:3d} {'yes' if entry['x64'] else 'no':>3s} "
            f"{result['worst_mean_err_sd']:13.3f} {result['worst_sd_ratio']:8.3f} "
            f"{result['min_ess']:7.0f} {result['max_rhat']:5.3f} {result['divergences']:4d} "
            f"{'ok' if result['predict_ok'] else 'BAD':>4s} {result['seconds']:5.0f}  "
            f"{'validated' if result['passed'] else 'FAILS'}",
            flush=True,
        )
        ordered = [results[e["name"]] for e in suite if e["name"] in results]
        out_path.write_text(json.dumps(ordered, indent=1) + "\n")


if __name__ == "__main__":
    main()
