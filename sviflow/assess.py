"""The check of one fit: its convergence (sviflow.convergence) and how far its guide is from
the posterior (sviflow.diagnostics), from the fit, predictive and reference files, as the
arrays and attributes the check file stores. numpy, h5py and ArviZ only: no JAX."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sviflow import convergence
from sviflow import diagnostics as dg
from sviflow.h5io import ArtifactError


@dataclass
class Assessment:
    """What the check file holds: ``tree`` its arrays, ``attrs`` the verdict, its reasons and
    problems, the sentence, the truth table and what the verdict rests on."""

    tree: dict
    attrs: dict


def assess(spec: dict, checks: dict | None, fitted, predictive, ref=None) -> Assessment:
    """The verdict on one fit. ``spec``: the fit's config slice; ``checks``: the check settings
    (the schema's defaults fill what they leave out); ``fitted``, ``predictive``, ``ref``: the
    fit's artifacts (``sviflow.h5io.read_artifact``), ``ref`` None without a reference."""
    settings = dg.merged(checks)
    rule = convergence.settings(settings["convergence"])
    seeds = fitted.attrs.get("seeds") or []
    losses = fitted["losses"]
    nonfinite = fitted["diverged_step"]
    stop = fitted.attrs.get("stop") or {}
    labels = fitted.attrs.get("moment_labels") or []
    plateau = dg.plateau(losses, **settings["plateau"])
    moments = fitted["trajectory"]["moments"]
    windows = convergence.windows(
        fitted["trajectory"]["step"], moments["mean"], moments["sd"], rule, stop.get("since_step")
    )
    tree = {
        "losses_window_mean": plateau["window_mean"],
        "rel_change": plateau["rel_change"],
        "diverged_step": nonfinite,
        "convergence": {
            key: np.stack([np.asarray(getattr(w, key), dtype=np.float64) for w in windows])
            for key in ("shift", "sd_change", "mcse", "rhat", "speed")
        },
        "window": np.array([[w.start_step, w.end_step] for w in windows], dtype=np.int64),
        "seed_spread": {k: np.float64(v) for k, v in dg.seed_spread(fitted["params"]).items()},
    }
    quality = {}
    khat_values = kl = distances = None
    support, point_sites = [], []
    khat_limit = dg.khat_threshold(settings["quality"]["khat_particles"], settings["quality"]["khat_max"])
    diverged = bool((nonfinite >= 0).any())
    latent = predictive.attrs.get("latent_sites") or []
    truth = []
    if not diverged:
        q = settings["quality"]
        khat_values, elbo, elbo_se, outside = [], [], [], []
        # drawn by the predict step: one set of draws serves the ELBO (its first elbo_particles)
        # and k-hat (its first khat_particles); log w = log p(x, z) - log q(z) is the
        # integrand of both
        weights_all = np.asarray(predictive["log_weights"], dtype=np.float64)
        needed = max(int(q["elbo_particles"]), int(q["khat_particles"]))
        if weights_all.shape[-1] < needed:
            raise ArtifactError(
                f"{predictive.path}: has {weights_all.shape[-1]} log weights per "
                f"seed, the check needs {needed}; run snakemake --forcerun "
                f"{predictive.path} to draw them"
            )
        for weights in weights_all:
            for_elbo = weights[: int(q["elbo_particles"])]
            elbo.append(for_elbo.mean())
            elbo_se.append(for_elbo.std() / np.sqrt(len(for_elbo)))
            khat_values.append(dg.khat_from_log_weights(weights[: int(q["khat_particles"])]))
            outside.append(int(np.sum(~np.isfinite(weights[:needed]))))
        quality = {"khat": np.array(khat_values), "elbo": np.array(elbo), "elbo_se": np.array(elbo_se)}
        posterior = predictive["posterior"]
        pooled = {k: v.reshape(-1, *v.shape[2:]) for k, v in posterior.items()}
        point_sites = [
            site
            for site in latent
            if site in posterior and np.any(np.std(np.asarray(posterior[site], np.float64), axis=1) == 0)
        ]
        if ref is not None:
            log_z = float(ref["log_z"])
            quality["log_z"] = np.float64(log_z)
            if np.isfinite(log_z):
                kl = log_z - np.array(elbo)
                quality["kl"] = kl
            pooled_distances = dg.sample_distances(pooled, ref, int(q["energy_draws"]), int(settings["seed"]))
            # each seed on its own: two seeds either side of the truth would pool into a good one
            distances = [
                dg.sample_distances(
                    {k: v[i] for k, v in posterior.items()},
                    ref,
                    int(q["energy_draws"]),
                    int(settings["seed"]),
                )["sites"]
                for i in range(len(weights_all))
            ]
            # the reference's own Monte Carlo error widens no bar: it narrows it (see
            # diagnostics.distance_problems), by its ESS per component
            ess = dg.reference_ess(ref)
            for rows in distances:
                for label, row in rows.items():
                    row["reference_ess"] = ess.get(label, math.inf)
                    row["guide_draws"] = int(np.shape(next(iter(posterior.values())))[1])
            quality["energy_distance"] = np.float64(pooled_distances["energy"])
            quality["sites"] = {
                site: {
                    **{k: np.float64(v) for k, v in row.items()},
                    "mean_error_sd_per_seed": np.array([d[site]["mean_error_sd"] for d in distances]),
                    "sd_ratio_per_seed": np.array([d[site]["sd_ratio"] for d in distances]),
                }
                for site, row in pooled_distances["sites"].items()
            }
        from sviflow.truth import truth_table

        truth = truth_table(
            spec["model"]["function"],
            spec["model"].get("args") or {},
            spec["guide"]["name"],
            fitted["params"],
            ref,
            pooled,
        )
        excess = predictive.attrs.get("support_excess") or {}
        quality["mass_outside"] = {
            site: np.asarray(info["mass_outside"], dtype=np.float64) for site, info in excess.items()
        }
        if any(outside):
            # log p = -inf there: KL(q || p) is infinite, and the ELBO -inf, in truth, not by accident
            support.append(
                f"the guide puts mass where the posterior has none: {max(outside)} of "
                f"{needed} draws fall outside the model's support, so KL(q || p) is infinite"
            )
        else:  # no draw fell outside, but the guide's support is wider: the same truth, from the cdf
            for site, mass in quality["mass_outside"].items():
                if np.all(mass == 0):
                    continue  # below float32's resolution: nothing to say from here
                amount = (
                    f"{np.nanmax(mass):.2g} of its mass"
                    if np.isfinite(mass).any()
                    else "some of its mass (it has no cdf to say how much)"
                )
                estimate = (
                    f"; the KL estimate {float(np.max(kl)):.3g} is over draws that all fell inside"
                    if kl is not None
                    else ""
                )
                support.append(
                    f"{site}: the guide's support, {excess[site]['guide_support']}, is wider than "
                    f"the model's, {excess[site]['model_support']}; it puts {amount} outside, so "
                    f"KL(q || p) is infinite and the ELBO -inf in truth{estimate}"
                )
    tree["quality"] = quality
    agreement = dg.seeds_rhat(predictive["posterior"], latent) if len(seeds) > 1 and not diverged else {}
    tree["seeds_rhat"] = {k: np.float64(v) for k, v in agreement.items()}
    reference_warnings = list(ref.attrs.get("warnings") or []) if ref is not None else []
    result = dg.verdict(
        nonfinite=nonfinite,
        windows=windows,
        labels=labels,
        settings=settings,
        stop=stop,
        plateau_result=plateau,
        seeds_rhat_values=agreement,
        khat_values=khat_values,
        khat_limit=khat_limit,
        kl=kl,
        seeds=seeds,
        skipped_steps=fitted["skipped_steps"],
        distances=distances,
        point_sites=point_sites,
        support_problems=support,
        reference_warnings=reference_warnings,
        start_advice=_start_advice(losses, spec),
    )
    return Assessment(
        tree,
        {
            "verdict": result.verdict,
            "reasons": result.reasons,
            "problems": result.problems,
            "sentence": result.sentence,
            "truth": truth,
            "khat_limit": khat_limit,
            "diverged": diverged,
            "stop": stop,
            "reference_warnings": reference_warnings,
            "plateau_converged": bool(np.all(plateau["converged"])),
        },
    )


def _start_advice(losses, spec: dict) -> str | None:
    """What to say when the loss is not finite from the very first step (float32?)."""
    from sviflow.precision import nonfinite_at_start_advice, precision_of

    return nonfinite_at_start_advice(losses, precision_of({"spec": spec}), spec["model"]["name"])
