"""Did the optimisation converge, and how close is the guide to the posterior?

Convergence, from a fit's stored loss trace and parameter trajectory:

- NaN or inf in the losses: the fit diverged at that step.
- Loss plateau (Stan ADVI, Kucukelbir et al. 2017): the ELBO averaged over windows of
  ``window`` steps; the relative change between consecutive windows; converged when the mean or
  the median of the last ``max(0.1 * windows, 2)`` changes is below ``tolerance`` (0.01);
  "may be diverging" when their median is above 0.5. Known to stop at the wrong time: a
  minimum requirement only.
- Parameter drift (PyMC's CheckParametersConvergence): relative change
  (|delta| + 1e-6) / (|previous| + 1e-6) of every parameter over the last ``every`` steps;
  settled when its max-norm is below ``tolerance`` (1e-3).
- Iterates as a Markov chain (Dhaka et al. 2020; Welandawe et al. 2022): rank-normalised
  split-R-hat of each parameter over the late iterates; stationary when <= 1.1. SGD keeps
  jittering around the optimum, so a parameter counts as settled when it passes either the drift
  test or this one. With several seeds, do their guides agree? R-hat of the guides' posterior
  draws with seeds as chains, <= 1.1.

Quality, from the guide and the model:

- PSIS k-hat (Yao, Vehtari, Simpson, Gelman 2018): ArviZ's ``psislw`` of the log weights
  log p(x, z) - log q(z) of the guide's draws, which the predict step computes with its
  posterior samples (``sviflow.predictive``): < 0.5 good, up to min(1 - 1/log10 S, 0.7)
  usable, above unreliable. This module needs no JAX.
- A low-variance ELBO from many particles, with its Monte Carlo standard error; with a
  reference's exact log evidence, KL(q || p) = log Z - ELBO. Where the guide's support is wider
  than the model's (``sviflow.predictive.support_excess``, from the guide's cdf), KL(q || p) is
  infinite whatever the draws say, and the check says so.
- Against a reference's draws: mean and sd errors in units of the reference sd, 1-D Wasserstein
  distance per site, and the energy distance of the joint (standardised) draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULTS = {
    "plateau": {"window": 100, "tolerance": 0.01, "diverging": 0.5},
    "drift": {"every": 100, "tolerance": 1.0e-3},
    "rhat": {"threshold": 1.1, "late_fraction": 0.5},
    # khat from 10,000 draws: at 2,000 its spread (0.5 to 0.9 for a true 0.8) hides poor guides.
    # max_kl has no literature value; 0.1 nats is a mean off by 0.45 sd or an sd 30 % too small.
    "quality": {"elbo_particles": 5000, "khat_particles": 10000, "khat_good": 0.5,
                "khat_max": 0.7, "max_kl": 0.1, "energy_draws": 2000},
    "seed": 0,
    "strict": False,
}


def merged(settings: dict | None) -> dict:
    """The check settings with the literature's defaults filled in."""
    result = {key: (dict(value) if isinstance(value, dict) else value) for key, value in DEFAULTS.items()}
    for key, value in (settings or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key].update(value)
        else:
            result[key] = value
    return result


def weighted_draws(checks: dict | None, predictive: dict | None) -> int:
    """How many guide draws the predict step weighs: the posterior samples, or more where the
    check's ELBO or k-hat asks for more."""
    quality = merged(checks)["quality"]
    return max(int((predictive or {}).get("num_samples", 10000)), int(quality["elbo_particles"]),
               int(quality["khat_particles"]))


# --- convergence -----------------------------------------------------------------------------

def first_nonfinite(losses: np.ndarray) -> np.ndarray:
    """(seed,) first step whose loss is NaN or inf, -1 where none is."""
    bad = ~np.isfinite(losses)
    return np.where(bad.any(axis=-1), bad.argmax(axis=-1), -1)


def divergence(losses: np.ndarray, final_params: dict, stable_update: bool = False):
    """-> (diverged_step (seed,), skipped (seed,)).

    A seed diverged when its final parameters are not finite, or, without stable_update, when
    any loss is not finite (the NaN gradient has then poisoned the optimizer). With
    stable_update a step whose loss is not finite is skipped, and only counted."""
    losses = np.atleast_2d(losses)
    first = first_nonfinite(losses)
    params_bad = np.zeros(losses.shape[0], bool)
    for value in final_params.values():
        value = np.asarray(value, dtype=np.float64).reshape(losses.shape[0], -1)
        params_bad |= ~np.isfinite(value).all(axis=1)
    if stable_update:
        skipped = (~np.isfinite(losses)).sum(axis=1)
        return np.where(params_bad, np.maximum(first, 0), -1), skipped
    last = losses.shape[1] - 1
    return np.where((first < 0) & params_bad, last, first), np.zeros(losses.shape[0], int)


def plateau(losses: np.ndarray, window: int = 100, tolerance: float = 0.01,
            diverging: float = 0.5) -> dict:
    """Stan ADVI's relative-ELBO-change test on each seed's loss trace (seed, step)."""
    losses = np.atleast_2d(losses)
    n_windows = losses.shape[1] // window
    if n_windows < 2:
        return {"window_mean": np.full((losses.shape[0], max(n_windows, 0)), np.nan),
                "rel_change": np.full((losses.shape[0], 0), np.nan), "buffer": 0,
                "mean": np.full(losses.shape[0], np.nan), "median": np.full(losses.shape[0], np.nan),
                "converged": np.zeros(losses.shape[0], bool), "diverging": np.zeros(losses.shape[0], bool),
                "too_short": True}
    # nanmean: steps that stable_update skipped (loss NaN) do not count
    elbo = -np.nanmean(losses[:, : n_windows * window].reshape(losses.shape[0], n_windows, window), axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_change = np.abs(np.diff(elbo, axis=1)) / np.abs(elbo[:, 1:])
    buffer = int(max(0.1 * n_windows, 2))
    recent = rel_change[:, -buffer:]
    mean, median = recent.mean(axis=1), np.median(recent, axis=1)
    return {"window_mean": -elbo, "rel_change": rel_change, "buffer": buffer, "mean": mean,
            "median": median, "converged": (mean < tolerance) | (median < tolerance),
            "diverging": median > diverging, "too_short": False}


def _flat_components(trajectory: dict) -> dict[str, np.ndarray]:
    """{param[index]: (seed, point)} for every scalar component of every parameter."""
    components = {}
    for name, value in trajectory.items():
        value = np.asarray(value, dtype=np.float64)
        flat = value.reshape(value.shape[0], value.shape[1], -1)
        for index in range(flat.shape[2]):
            label = name if flat.shape[2] == 1 else f"{name}[{index}]"
            components[label] = flat[:, :, index]
    return components


def param_drift(trajectory_step: np.ndarray, trajectory: dict, every: int = 100,
                tolerance: float = 1e-3) -> dict:
    """PyMC's relative parameter change over the last ``every`` steps (or the nearest point)."""
    steps = np.asarray(trajectory_step)
    if len(steps) < 2:
        return {"gap": 0, "drift": {}, "max": np.nan, "settled": {}}
    target = steps[-1] - every
    previous = int(np.argmin(np.abs(steps[:-1] - target)))
    drift = {}
    for label, series in _flat_components(trajectory).items():
        delta = np.abs(series[:, -1] - series[:, previous])
        # a component that did not change at all (a structural zero) has no drift; PyMC's
        # (0 + 1e-6) / (0 + 1e-6) would call it 1
        relative = np.where(delta == 0, 0.0, (delta + 1e-6) / (np.abs(series[:, previous]) + 1e-6))
        drift[label] = float(np.max(relative))
    return {"gap": int(steps[-1] - steps[previous]), "drift": drift,
            "max": max(drift.values()) if drift else np.nan,
            "settled": {k: v < tolerance for k, v in drift.items()}}


def _rhat(chains: np.ndarray) -> float:
    import arviz as az

    chains = np.asarray(chains, dtype=np.float64)
    if not np.all(np.isfinite(chains)):
        return float("nan")
    if np.ptp(chains) == 0:
        return 1.0  # a parameter that does not move at all is as settled as it gets
    return float(az.rhat(chains, method="rank"))


def late_rhat(trajectory: dict, late_fraction: float = 0.5) -> dict:
    """Split-R-hat of every parameter component over its late iterates: per seed (the worst
    seed is kept) and, with several seeds, across seeds as chains."""
    per_seed, across = {}, {}
    for label, series in _flat_components(trajectory).items():
        start = int(series.shape[1] * (1.0 - late_fraction))
        late = series[:, start:]
        if late.shape[1] < 8:
            per_seed[label] = float("nan")
            continue
        half = late.shape[1] // 2  # split each seed's late iterates in two: split-R-hat
        per_seed[label] = max(_rhat(np.stack([late[i, :half], late[i, half:2 * half]]))
                              for i in range(late.shape[0]))
        if late.shape[0] > 1:
            across[label] = _rhat(late)
    return {"per_seed": per_seed, "across_seeds": across}


def seeds_rhat(posterior: dict, latent_sites) -> dict[str, float]:
    """R-hat of the guides' posterior draws with seeds as chains, per latent component.

    Do several seeds give the same distribution? The draws within a seed are independent, so
    this compares the seeds' guides with each other relative to the posterior's own width.
    (R-hat of the late *iterates* across seeds is kept in the check file, but does not decide:
    with a decaying step size each seed's iterates barely move, and any difference looks
    huge.)"""
    result = {}
    for site in latent_sites:
        draws = np.asarray(posterior.get(site, []), dtype=np.float64)
        if draws.ndim < 2 or draws.shape[0] < 2:
            continue
        flat = draws.reshape(draws.shape[0], draws.shape[1], -1)
        for index in range(flat.shape[2]):
            label = site if flat.shape[2] == 1 else f"{site}[{index}]"
            result[label] = _rhat(flat[:, :, index])
    return result


def seed_spread(params: dict) -> dict[str, float]:
    """sd across seeds of every final parameter component (zero with one seed)."""
    spread = {}
    for name, value in params.items():
        value = np.asarray(value, dtype=np.float64).reshape(len(value), -1)
        for index in range(value.shape[1]):
            label = name if value.shape[1] == 1 else f"{name}[{index}]"
            spread[label] = float(np.std(value[:, index], ddof=1)) if len(value) > 1 else 0.0
    return spread


# --- quality ---------------------------------------------------------------------------------

def khat_from_log_weights(log_w: np.ndarray) -> float:
    """Pareto k-hat of the importance ratios (Vehtari et al.'s PSIS, through ArviZ)."""
    import warnings

    import arviz as az

    log_w = np.asarray(log_w, dtype=np.float64)
    if not np.all(np.isfinite(log_w)):
        return float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns when k is high: that is the finding
        _, k = az.psislw(log_w)
    return float(k)


def khat_threshold(num_particles: int, khat_max: float = 0.7) -> float:
    """Vehtari et al.'s sample-size dependent threshold min(1 - 1/log10 S, 0.7)."""
    return min(1.0 - 1.0 / math.log10(num_particles), khat_max)


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| of two samples (n, d) (Szekely & Rizzo)."""
    def mean_dist(a, b):
        return float(np.mean(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))))

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def sample_distances(guide_draws: dict, reference: dict, energy_draws: int = 2000,
                     seed: int = 0) -> dict:
    """Mean and sd errors (in reference sd), 1-D Wasserstein per component, joint energy distance.

    ``guide_draws``: {site: (draw, ...)} pooled over seeds; ``reference``: a reference artifact.
    """
    from scipy.stats import wasserstein_distance

    sites = [s for s in reference["draws"] if s in guide_draws]
    rng = np.random.default_rng(seed)
    rows, guide_cols, ref_cols = {}, [], []
    for site in sites:
        g = np.asarray(guide_draws[site], dtype=np.float64).reshape(len(guide_draws[site]), -1)
        r = np.asarray(reference["draws"][site], dtype=np.float64).reshape(len(reference["draws"][site]), -1)
        ref_mean = np.atleast_1d(reference["moments"]["mean"][site]).ravel()
        ref_sd = np.atleast_1d(reference["moments"]["sd"][site]).ravel()
        for index in range(g.shape[1]):
            label = site if g.shape[1] == 1 else f"{site}[{index}]"
            scale = ref_sd[index] if ref_sd[index] > 0 else 1.0
            rows[label] = {
                "guide_mean": float(g[:, index].mean()), "reference_mean": float(ref_mean[index]),
                "guide_sd": float(g[:, index].std()), "reference_sd": float(ref_sd[index]),
                "mean_error_sd": float((g[:, index].mean() - ref_mean[index]) / scale),
                "sd_ratio": float(g[:, index].std() / scale),
                "wasserstein": float(wasserstein_distance(g[:, index], r[:, index])),
            }
            guide_cols.append(g[:, index] / scale)
            ref_cols.append(r[:, index] / scale)
    if not rows:
        return {"sites": {}, "energy": float("nan")}
    g_all, r_all = np.stack(guide_cols, 1), np.stack(ref_cols, 1)
    g_sub = g_all[rng.choice(len(g_all), min(energy_draws, len(g_all)), replace=False)]
    r_sub = r_all[rng.choice(len(r_all), min(energy_draws, len(r_all)), replace=False)]
    return {"sites": rows, "energy": energy_distance(g_sub, r_sub)}


# --- verdict ---------------------------------------------------------------------------------

CONVERGED = "converged"
NOT_CONVERGED = "not converged"
POOR = "converged, poor approximation"


@dataclass
class Verdict:
    verdict: str
    reasons: list[str] = field(default_factory=list)

    @property
    def sentence(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all checks passed"


def verdict(*, nonfinite: np.ndarray, plateau_result: dict, drift: dict, rhat: dict,
            settings: dict, khat_values=None, khat_limit=None, kl=None,
            seeds: list[int] | None = None, skipped_steps=None,
            seeds_rhat_values: dict | None = None) -> Verdict:
    """Combine the checks into one of "converged", "not converged",
    "converged, poor approximation", with the reasons in words.

    ``skipped_steps`` (seed,): with stable_update, steps whose loss was not finite and which
    were skipped; they are reported, and ``nonfinite`` then holds only real divergences."""
    seeds = seeds or list(range(len(nonfinite)))
    problems, notes = [], []
    if skipped_steps is not None and np.any(np.asarray(skipped_steps) > 0):
        notes.append("stable_update skipped " + ", ".join(
            f"{int(n)} step(s) of seed {s}" for s, n in zip(seeds, skipped_steps) if n)
            + " whose loss was not finite")
    diverged = [(s, int(step)) for s, step in zip(seeds, nonfinite) if step >= 0]
    if diverged:
        problems.append("the loss became NaN or inf (" + ", ".join(
            f"seed {s} at step {step}" for s, step in diverged) + "): the fit diverged; "
            "lower the step size or use stable_update")
        return Verdict(NOT_CONVERGED, problems)
    tol = settings["plateau"]["tolerance"]
    if plateau_result["too_short"]:
        problems.append(f"too few steps for the plateau test (needs two windows of "
                        f"{settings['plateau']['window']} steps)")
    elif not np.all(plateau_result["converged"]):
        worst = float(np.nanmax(np.minimum(plateau_result["mean"], plateau_result["median"])))
        word = "is diverging" if np.any(plateau_result["diverging"]) else "has not reached a plateau"
        problems.append(f"the loss {word}: relative ELBO change {worst:.3g} over the last "
                        f"{plateau_result['buffer']} windows (needs < {tol})")
    threshold = settings["rhat"]["threshold"]
    moving = []
    for label, value in drift["drift"].items():
        r = rhat["per_seed"].get(label, float("nan"))
        if value >= settings["drift"]["tolerance"] and not (r <= threshold):
            moving.append(f"{label} (drift {value:.2g} over {drift['gap']} steps, "
                          f"split-R-hat {r:.3g})")
    if moving:
        problems.append("parameters still moving: " + ", ".join(moving))
    across = {k: v for k, v in (seeds_rhat_values or {}).items() if not (v <= threshold)}
    if across:
        problems.append(f"the seeds' guides disagree (R-hat of their posterior draws, seeds as "
                        f"chains, > {threshold}): " + ", ".join(f"{k} {v:.3g}" for k, v in across.items()))
    if problems:
        return Verdict(NOT_CONVERGED, problems + notes)
    notes.append("loss on a plateau and parameters stationary")
    poor = []
    if khat_values is not None:
        worst = float(np.nanmax(khat_values))
        if not worst <= khat_limit:
            poor.append(f"PSIS k-hat {worst:.2f} > {khat_limit:.2f}: the guide misses mass "
                        "of the posterior (Yao et al. 2018)")
        elif worst > settings["quality"]["khat_good"]:
            notes.append(f"PSIS k-hat {worst:.2f}: usable, not good")
        else:
            notes.append(f"PSIS k-hat {worst:.2f}: good")
    max_kl = settings["quality"].get("max_kl")
    if kl is not None and np.isfinite(kl).all():
        if max_kl is not None and float(np.max(kl)) > max_kl:
            poor.append(f"KL(q || p) {float(np.max(kl)):.3g} nats > {max_kl}")
        else:
            notes.append(f"KL(q || p) {float(np.max(kl)):.3g} nats")
    if poor:
        return Verdict(POOR, poor + notes)
    return Verdict(CONVERGED, notes)
