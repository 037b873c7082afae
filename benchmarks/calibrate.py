"""The calibration suite: does sviflow's verdict tell the truth on real posteriors?

Every posterior of ``benchmarks/calibration/suite.json`` (posteriordb's, ported to NumPyro and
validated against its gold-standard draws: benchmarks/calibration/README.md) is fitted through
the workflow itself (one Snakemake run on a generated config, a NUTS reference per posterior)
with AutoNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal and AutoDelta, each seed
as a fit of its own, in two modes:

- ``fixed``: Adam 0.01, 8 particles, 10,000 steps (the setting issue 15 measured);
- ``budget``: the stopping rule, ``steps: {min: 2000, max: 100000}``, Adam from 0.05 with the
  step size halved whenever the iterates are stationary but not precise.

Truth, per fit: GOOD when every latent component's guide mean is within 0.3 gold sd of the gold
mean and every guide sd within [0.8, 1.25] x the gold sd; else BAD. The verdict is the check's
(against the NUTS reference), and again without any reference (the check step run by hand
without it: what a user with no reference is told).

    python benchmarks/calibrate.py                      # the whole suite (about an hour on 2 cores)
    python benchmarks/calibrate.py --only kidiq_momiq,arK --guides AutoNormal --modes budget
    python benchmarks/calibrate.py --out DIR --table-only   # the tables again from DIR's files

It prints the confusion tables (verdict against truth), the count of FALSE CONVERGED (verdict
converged, truth BAD), of false alarms (verdict not converged or poor, truth GOOD), and the
share of fits that end GOOD, and writes them with every fit's row to DIR/calibration.md and
DIR/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workflow import REPO, SNAKEMAKE, clean_env, copy_workflow, timed  # noqa: E402

SUITE = REPO / "benchmarks" / "calibration"
GUIDES = ("AutoNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal", "AutoDelta")
MODES = {
    "fixed": {"optimizer": {"name": "Adam", "step_size": 0.01}, "steps": 10000},
    "budget": {"optimizer": {"name": "Adam", "step_size": 0.05}, "steps": {"min": 2000, "max": 100000}},
}
GOOD_MEAN, GOOD_SD = 0.3, (0.8, 1.25)


def load_suite(only=None) -> list[dict]:
    entries = json.loads((SUITE / "suite.json").read_text())
    if only:
        unknown = set(only) - {e["name"] for e in entries}
        if unknown:
            raise SystemExit(f"--only: no posterior {', '.join(sorted(unknown))} in {SUITE / 'suite.json'}")
        entries = [e for e in entries if e["name"] in only]
    return entries


def fit_name(posterior: str, guide: str, mode: str, seed: int) -> str:
    return f"{posterior}.{guide}.{mode}.s{seed}"


def make_config(entries, guides, modes, seeds, nuts: dict) -> dict:
    models, datasets, fits = {}, {}, {}
    for entry in entries:
        name = entry["name"]
        models[name] = {
            "function": str(SUITE / entry["model"]),
            "args": entry.get("settings") or {},
            "reference": {"method": "nuts", **nuts},
        }
        if entry.get("x64"):
            models[name]["precision"] = "float64"
        datasets[name] = {"file": str(SUITE / entry["data"]), "observed": list(entry["observed"])}
        for guide in guides:
            for mode in modes:
                for seed in seeds:
                    fits[fit_name(name, guide, mode, seed)] = {
                        "model": name,
                        "data": name,
                        "guide": {"name": guide},
                        "elbo": {"name": "Trace_ELBO", "num_particles": 8},
                        "seed": seed,
                        **MODES[mode],
                    }
    return {
        "models": models,
        "datasets": datasets,
        "fits": fits,
        "predictive": {"num_samples": 4000, "num_mock": 10, "seed": 0},
        "engine": {"cache_dir": ".jax_cache"},
    }


def gold_summary(entry) -> dict:
    gold = json.loads((SUITE / entry["gold"]).read_text())
    return {
        site: (np.asarray(v["mean"], float), np.asarray(v["sd"], float))
        for site, v in gold["sites"].items()
        if site in entry["latent"]
    }


def truth(posterior: dict, gold: dict) -> dict:
    """GOOD or BAD, with the worst mean error (gold sds) and the worst sd ratio."""
    worst_error, worst_ratio, where = 0.0, 1.0, ""
    for site, (mean, sd) in gold.items():
        draws = np.asarray(posterior[site], dtype=np.float64)[0]  # one seed a fit
        draws = draws.reshape(len(draws), -1)
        error = (draws.mean(axis=0) - mean) / sd
        ratio = draws.std(axis=0) / sd
        i = int(np.argmax(np.abs(error)))
        if abs(error[i]) > abs(worst_error):
            worst_error, where = float(error[i]), f"{site}[{i}]" if draws.shape[1] > 1 else site
        j = int(np.argmax(np.maximum(ratio / GOOD_SD[1], GOOD_SD[0] / np.maximum(ratio, 1e-300))))
        if max(ratio[j] / GOOD_SD[1], GOOD_SD[0] / max(ratio[j], 1e-300)) > max(
            worst_ratio / GOOD_SD[1], GOOD_SD[0] / max(worst_ratio, 1e-300)
        ):
            worst_ratio = float(ratio[j])
    good = abs(worst_error) <= GOOD_MEAN and GOOD_SD[0] <= worst_ratio <= GOOD_SD[1]
    return {
        "truth": "GOOD" if good else "BAD",
        "mean_error": worst_error,
        "sd_ratio": worst_ratio,
        "worst_mean_at": where,
    }


def check_without_reference(workdir: Path, fit: str, entry: dict, spec_params: dict) -> dict:
    """The check step run by hand on the same files, with no reference."""
    from sviflow import steps
    from sviflow.h5io import read_artifact

    out = workdir / "results" / "checks_noref" / f"{fit}.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    steps.check(
        {
            "data": workdir / "results" / "data" / f"{entry['name']}.h5",
            "fit": workdir / "results" / "fits" / f"{fit}.h5",
            "predictive": workdir / "results" / "predictive" / f"{fit}.h5",
        },
        {"check": out},
        spec_params,
    )
    return dict(read_artifact(out, "check").attrs)


def rows_from(workdir: Path, entries, guides, modes, seeds) -> list[dict]:
    from sviflow.h5io import read_artifact

    rows = []
    for entry in entries:
        gold = gold_summary(entry)
        for guide in guides:
            for mode in modes:
                for seed in seeds:
                    fit = fit_name(entry["name"], guide, mode, seed)
                    if not (workdir / "results" / "checks" / f"{fit}.h5").exists():
                        rows.append(
                            {
                                "posterior": entry["name"],
                                "guide": guide,
                                "mode": mode,
                                "seed": seed,
                                "fit": fit,
                                "verdict": "failed",
                                "verdict_without_reference": "failed",
                                "problems": ["the workflow made no check file (see logs/snakemake.log)"],
                                "problems_without_reference": [],
                                "steps_run": 0,
                                "stop": "",
                                "khat": float("nan"),
                                "truth": "BAD",
                                "mean_error": float("nan"),
                                "sd_ratio": float("nan"),
                                "worst_mean_at": "failed",
                            }
                        )
                        continue
                    check = read_artifact(workdir / "results" / "checks" / f"{fit}.h5", "check")
                    fitted = read_artifact(workdir / "results" / "fits" / f"{fit}.h5", "fit")
                    predictive = read_artifact(workdir / "results" / "predictive" / f"{fit}.h5", "predictive")
                    noref = check_without_reference(workdir, fit, entry, dict(check.config))
                    row = {
                        "posterior": entry["name"],
                        "guide": guide,
                        "mode": mode,
                        "seed": seed,
                        "fit": fit,
                        "verdict": check.attrs["verdict"],
                        "verdict_without_reference": noref["verdict"],
                        "problems": check.attrs.get("problems", []),
                        "problems_without_reference": noref.get("problems", []),
                        "steps_run": int(fitted.attrs["stop"]["steps_run"]),
                        "stop": fitted.attrs["stop"]["reason"],
                        "khat": float(np.max(check["quality"]["khat"]))
                        if "khat" in check.get("quality", {})
                        else float("nan"),
                    }
                    if fitted.attrs.get("diverged"):
                        row.update(
                            truth="BAD",
                            mean_error=float("nan"),
                            sd_ratio=float("nan"),
                            worst_mean_at="diverged",
                        )
                    else:
                        row.update(truth(predictive["posterior"], gold))
                    rows.append(row)
    return rows


def confusion(rows, verdict_key: str) -> dict:
    table = {}
    for row in rows:
        key = (row[verdict_key], row["truth"])
        table[key] = table.get(key, 0) + 1
    good = [r for r in rows if r["truth"] == "GOOD"]
    return {
        "table": {f"{v} / {t}": n for (v, t), n in sorted(table.items())},
        "false_converged": sum(1 for r in rows if r[verdict_key] == "converged" and r["truth"] == "BAD"),
        "false_alarms": sum(1 for r in good if r[verdict_key] != "converged"),
        "good": len(good),
        "fits": len(rows),
    }


def markdown(rows, modes, guides) -> str:
    lines = ["# Calibration suite", ""]
    for key, title in (
        ("verdict", "with the NUTS reference"),
        ("verdict_without_reference", "without a reference"),
    ):
        lines += [f"## Verdict {title}", "", "| verdict | truth GOOD | truth BAD |", "|---|---|---|"]
        for verdict in ("converged", "converged, poor approximation", "not converged"):
            good = sum(1 for r in rows if r[key] == verdict and r["truth"] == "GOOD")
            bad = sum(1 for r in rows if r[key] == verdict and r["truth"] == "BAD")
            lines.append(f"| {verdict} | {good} | {bad} |")
        c = confusion(rows, key)
        alarm_share = c["false_alarms"] / c["good"] if c["good"] else float("nan")
        lines += [
            "",
            f"FALSE CONVERGED: {c['false_converged']} of {c['fits']} fits; false alarms: "
            f"{c['false_alarms']} of {c['good']} GOOD fits ({alarm_share:.0%})",
            "",
        ]
    lines += [
        "## Fits that end GOOD",
        "",
        "| guide | " + " | ".join(modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    for guide in guides:
        cells = []
        for mode in modes:
            chosen = [r for r in rows if r["guide"] == guide and r["mode"] == mode]
            good = sum(1 for r in chosen if r["truth"] == "GOOD")
            cells.append(f"{good}/{len(chosen)} ({good / len(chosen):.0%})" if chosen else "-")
        lines.append(f"| {guide} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every fit",
        "",
        "| fit | truth | worst mean error (sd) | worst sd ratio | verdict | without reference "
        "| steps | k-hat | failing checks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fit']} | {r['truth']} | {r['mean_error']:+.2f} ({r['worst_mean_at']}) "
            f"| {r['sd_ratio']:.2f} | {r['verdict']} | {r['verdict_without_reference']} "
            f"| {r['steps_run']} | {r['khat']:.2f} | {'; '.join(r['problems'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="working directory (default: a new temp dir, kept)")
    parser.add_argument("--only", help="comma-separated posterior names")
    parser.add_argument("--guides", default=",".join(GUIDES))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--cores", default="4", help="Snakemake's cores (a JAX job claims 2)")
    parser.add_argument(
        "--nuts",
        default="num_warmup=1000,num_samples=1000,num_chains=4,dense_mass=true,target_accept_prob=0.9",
        help="the NUTS reference's settings, key=value,...",
    )
    parser.add_argument("--table-only", action="store_true", help="no run: the tables from --out")
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="no run: one table from the rows of several calibration.json files "
        "(a later file's row replaces an earlier one of the same fit)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the results already in --out (the workflow reruns only what changed)",
    )
    args = parser.parse_args(argv)
    if args.combine:
        rows = {}
        for path in args.combine:
            rows.update({row["fit"]: row for row in json.loads(path.read_text())["rows"]})
        rows = list(rows.values())
        modes = list(dict.fromkeys(row["mode"] for row in rows))
        guides = [g for g in GUIDES if any(row["guide"] == g for row in rows)]
        print(markdown(rows, modes, guides))
        return 0
    entries = load_suite(args.only.split(",") if args.only else None)
    guides, modes = args.guides.split(","), args.modes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    nuts = {k: yaml.safe_load(v) for k, v in (item.split("=") for item in args.nuts.split(",") if item)}
    out = args.out or Path(tempfile.mkdtemp(prefix="sviflow-calibration-"))
    workdir = out / "workflow"
    if not args.table_only:
        if args.resume and (workdir / "results").exists():
            results = workdir.parent / "results.kept"
            (workdir / "results").rename(results)
            copy_workflow(workdir)
            results.rename(workdir / "results")
        else:
            copy_workflow(workdir)
        config = make_config(entries, guides, modes, seeds, nuts)
        (workdir / "calibration.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        targets = [f"results/checks/{fit}.h5" for fit in config["fits"]]
        start = time.perf_counter()
        print(
            f"calibration: {len(config['fits'])} fits of {len(entries)} posteriors in {workdir}", flush=True
        )
        timed(
            [
                SNAKEMAKE,
                "--cores",
                args.cores,
                "--rerun-incomplete",
                "--configfile",
                "calibration.yaml",
                "--replace-workflow-config",
                "--keep-going",
                *targets,
            ],
            workdir,
            clean_env(workdir),
            log=out / "logs" / "snakemake.log",
            timeout=6 * 3600,
        )
        print(f"calibration: the workflow took {time.perf_counter() - start:.0f} s", flush=True)
    sys.path.insert(0, str(workdir))
    rows = rows_from(workdir, entries, guides, modes, seeds)
    text = markdown(rows, modes, guides)
    (out / "calibration.md").write_text(text)
    (out / "calibration.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "with_reference": confusion(rows, "verdict"),
                "without_reference": confusion(rows, "verdict_without_reference"),
            },
            indent=1,
        )
    )
    print(text)
    print(f"calibration: tables in {out / 'calibration.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
