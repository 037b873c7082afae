"""Did the optimisation converge, and how close is the guide to the posterior?

Convergence, from a fit's stored loss trace and the guide's moments along its trajectory:

- NaN or inf in the losses: the fit diverged at that step.
- The guide still changing, in the posterior's own units (``sviflow.convergence``, the rule the
  engine applies too): over the last share of the steps, the move of every guide mean in units
  of its sd, the change of every guide sd, the Monte Carlo error of the window's average.
- With several seeds, do their guides agree? R-hat of the guides' posterior draws with seeds
  as chains, <= 1.1.
- Loss plateau (Stan ADVI, Kucukelbir et al. 2017), reported, not deciding: the ELBO averaged
  over windows of ``window`` steps; the relative change between consecutive windows; "on a
  plateau" when the mean or the median of the last ``max(0.1 * windows, 2)`` changes is below
  ``tolerance`` (0.01). Known to stop at the wrong time, and meaningless where the ELBO is near
  zero; the loss figure draws it.

Quality, from the guide and the model:

- PSIS k-hat (Yao, Vehtari, Simpson, Gelman 2018): ArviZ's ``psislw`` k of the log weights
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

from sviflow import convergence
from sviflow.config import schema_defaults

# The literature's thresholds, from the schema (workflow/schemas/config.schema.yaml, checks),
# which says where each comes from. khat from 10,000 draws: at 2,000 its spread (0.5 to 0.9 for
# a true 0.8) hides poor guides. max_kl has no literature value; 0.1 nats is a mean off by
# 0.45 sd or an sd 30 % too small. max_mean_error and sd_ratio: the bar for an autoguide
# against posteriordb's gold draws (deepppl/evaluation-autoguide's 0.3 sd on means; the sd
# ratio catches the under-dispersed mean-field fits that pass on means alone).
DEFAULTS = schema_defaults("checks")


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
    num_samples = {**schema_defaults("predictive"), **(predictive or {})}["num_samples"]
    return max(int(num_samples), int(quality["elbo_particles"]), int(quality["khat_particles"]))


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


def plateau(losses: np.ndarray, window: int = 100, tolerance: float = 0.01, diverging: float = 0.5) -> dict:
    """Stan ADVI's relative-ELBO-change test on each seed's loss trace (seed, step)."""
    losses = np.atleast_2d(losses)
    n_windows = losses.shape[1] // window
    if n_windows < 2:
        return {
            "window_mean": np.full((losses.shape[0], max(n_windows, 0)), np.nan),
            "rel_change": np.full((losses.shape[0], 0), np.nan),
            "buffer": 0,
            "mean": np.full(losses.shape[0], np.nan),
            "median": np.full(losses.shape[0], np.nan),
            "converged": np.zeros(losses.shape[0], bool),
            "diverging": np.zeros(losses.shape[0], bool),
            "too_short": True,
        }
    # nanmean: steps that stable_update skipped (loss NaN) do not count
    elbo = -np.nanmean(losses[:, : n_windows * window].reshape(losses.shape[0], n_windows, window), axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_change = np.abs(np.diff(elbo, axis=1)) / np.abs(elbo[:, 1:])
    buffer = int(max(0.1 * n_windows, 2))
    recent = rel_change[:, -buffer:]
    mean, median = recent.mean(axis=1), np.median(recent, axis=1)
    return {
        "window_mean": -elbo,
        "rel_change": rel_change,
        "buffer": buffer,
        "mean": mean,
        "median": median,
        "converged": (mean < tolerance) | (median < tolerance),
        "diverging": median > diverging,
        "too_short": False,
    }


def _rhat(chains: np.ndarray) -> float:
    import arviz as az

    chains = np.asarray(chains, dtype=np.float64)
    if not np.all(np.isfinite(chains)):
        return float("nan")
    if np.ptp(chains) == 0:
        return 1.0  # a parameter that does not move at all is as settled as it gets
    return float(az.rhat(chains, method="rank"))


def seeds_rhat(posterior: dict, latent_sites) -> dict[str, float]:
    """R-hat of the guides' posterior draws with seeds as chains, per latent component.

    Do several seeds give the same distribution? The draws within a seed are independent, so
    this compares the seeds' guides with each other relative to the posterior's own width.
    Components are named as everywhere else in the check (``convergence.component_labels``)."""
    result = {}
    for site in latent_sites:
        draws = np.asarray(posterior.get(site, []), dtype=np.float64)
        if draws.ndim < 2 or draws.shape[0] < 2:
            continue
        flat = draws.reshape(draws.shape[0], draws.shape[1], -1)
        for index, label in enumerate(convergence.component_labels({site: draws.shape[2:]})):
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
    """Pareto k-hat of the importance ratios: PSIS (Vehtari et al. 2024, Algorithm 1), the
    shape of a generalized Pareto fitted to the largest ``ceil(min(S / 5, 3 sqrt(S)))`` ratios.

    The numbers are ArviZ's ``psislw`` (r_eff 1) and numpyro's ``psis_diagnostic``, to the
    last bit on the tests' weights (tests/test_diagnostics.py). Computed here in numpy as
    numpyro 0.22 does: importing ArviZ (with SciPy's stats, xarray and matplotlib) costs a
    check 2.5-3 CPU-s, most of that step's time, where this takes milliseconds."""
    log_w = np.asarray(log_w, dtype=np.float64).ravel()
    if not np.all(np.isfinite(log_w)) or log_w.size < 2:
        return float("inf")
    x = log_w - log_w.max()
    tail_size = int(math.ceil(min(x.size / 5.0, 3 * math.sqrt(x.size))))
    ordered = np.sort(x)
    cutoff = max(ordered[max(-(tail_size + 1), -x.size)], math.log(np.finfo(float).tiny))
    tail = ordered[ordered > cutoff]
    if tail.size <= 4:  # too few for a fit (ArviZ's rule)
        return float("inf")
    return _generalized_pareto_shape(np.exp(tail) - np.exp(cutoff))


def _generalized_pareto_shape(ary: np.ndarray) -> float:
    """Shape k of a generalized Pareto fitted to sorted exceedances ``ary``: Zhang and Stephens
    (2009)'s empirical Bayes estimate with Vehtari et al. (2024)'s weak prior on k (mean 0.5,
    10 pseudo-observations), step for step as ArviZ's ``_gpdfit`` and numpyro's
    ``_fit_generalized_pareto``."""
    n = len(ary)
    m_est = 30 + int(n**0.5)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        b_ary = 1 - np.sqrt(m_est / (np.arange(1, m_est + 1, dtype=float) - 0.5))
        b_ary /= 3 * ary[int(n / 4 + 0.5) - 1]
        b_ary += 1 / ary[-1]
        k_ary = np.log1p(-b_ary[:, None] * ary).mean(axis=1)
        len_scale = n * (np.log(-(b_ary / k_ary)) - k_ary - 1)
        weights = 1 / np.exp(len_scale - len_scale[:, None]).sum(axis=1)
        keep = weights >= 10 * np.finfo(float).eps
        if not np.all(keep):
            weights, b_ary = weights[keep], b_ary[keep]
        weights /= weights.sum()
        b_post = np.sum(b_ary * weights)
        k_post = np.log1p(-b_post * ary).mean()
    return float((n * k_post + 10 * 0.5) / (n + 10))


def khat_threshold(num_particles: int, khat_max: float = 0.7) -> float:
    """Vehtari et al.'s sample-size dependent threshold min(1 - 1/log10 S, 0.7)."""
    return min(1.0 - 1.0 / math.log10(num_particles), khat_max)


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| of two samples (n, d) (Szekely & Rizzo)."""

    def mean_dist(a, b):
        return float(np.mean(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))))

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def wasserstein_distance(u: np.ndarray, v: np.ndarray) -> float:
    """The 1-D Wasserstein-1 distance of two samples: the area between their empirical cdfs,
    as SciPy's ``scipy.stats.wasserstein_distance`` of unweighted samples computes it (the same
    numbers, tests/test_diagnostics.py), without importing ``scipy.stats`` (1.3 CPU-s a job)."""
    u, v = np.sort(np.asarray(u, dtype=np.float64)), np.sort(np.asarray(v, dtype=np.float64))
    values = np.sort(np.concatenate((u, v)), kind="mergesort")
    deltas = np.diff(values)
    u_cdf = u.searchsorted(values[:-1], "right") / u.size
    v_cdf = v.searchsorted(values[:-1], "right") / v.size
    return float(np.vecdot(np.abs(u_cdf - v_cdf), deltas))


def sample_distances(guide_draws: dict, reference: dict, energy_draws: int = 2000, seed: int = 0) -> dict:
    """Mean and sd errors (in reference sd), 1-D Wasserstein per component, joint energy distance.

    ``guide_draws``: {site: (draw, ...)} pooled over seeds; ``reference``: a reference artifact.
    """
    sites = [s for s in reference["draws"] if s in guide_draws]
    rng = np.random.default_rng(seed)
    rows, guide_cols, ref_cols = {}, [], []
    for site in sites:
        g = np.asarray(guide_draws[site], dtype=np.float64).reshape(len(guide_draws[site]), -1)
        r = np.asarray(reference["draws"][site], dtype=np.float64).reshape(len(reference["draws"][site]), -1)
        ref_mean = np.atleast_1d(reference["moments"]["mean"][site]).ravel()
        ref_sd = np.atleast_1d(reference["moments"]["sd"][site]).ravel()
        shape = np.shape(guide_draws[site])[1:]
        for index, label in enumerate(convergence.component_labels({site: shape})):
            scale = ref_sd[index] if ref_sd[index] > 0 else 1.0
            rows[label] = {
                "guide_mean": float(g[:, index].mean()),
                "reference_mean": float(ref_mean[index]),
                "guide_sd": float(g[:, index].std()),
                "reference_sd": float(ref_sd[index]),
                "mean_error_sd": float((g[:, index].mean() - ref_mean[index]) / scale),
                "sd_ratio": float(g[:, index].std() / scale),
                "wasserstein": wasserstein_distance(g[:, index], r[:, index]),
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
    reasons: list[str] = field(default_factory=list)  # the failing checks first, then notes
    problems: list[str] = field(default_factory=list)  # the failing checks in a few words each

    @property
    def sentence(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all checks passed"


def reference_ess(reference) -> dict[str, float]:
    """{component label: bulk ESS} of a reference's draws (NUTS's or a draws file's chains);
    empty where its moments are exact (closed form, quadrature) or its draws independent."""
    for group in ("nuts", "chains"):
        ess = (reference.get(group) or {}).get("ess") if hasattr(reference, "get") else None
        if ess:
            labels = {}
            for site, values in ess.items():
                values = np.asarray(values, dtype=np.float64)
                names = convergence.component_labels({site: values.shape})
                labels.update(zip(names, values.ravel().tolist()))
            return labels
    return {}


# how many standard errors of the two estimates a distance must clear: the bar is for the
# truth, and the reference and the guide's draws each know their moments only so well
MARGIN_Z = 2.0


def distance_problems(per_seed: list[dict], quality: dict, seeds: list[int]) -> list[tuple[str, str]]:
    """(short, sentence) for every component whose guide mean or sd is off the reference's,
    any seed (``per_seed``: one ``sample_distances(...)["sites"]`` per seed).

    The bars (``max_mean_error`` sds, ``sd_ratio``) are promises about the true posterior, and
    a reference from draws knows its mean to 1/sqrt(ESS) of its sd (its sd to about
    1/sqrt(2 ESS)): each bar is narrowed by MARGIN_Z such standard errors of the reference and
    of the guide's own draws, so that a fit the reference only just passes is not called
    converged on the reference's noise."""
    low, high = quality["sd_ratio"]
    worst_mean, worst_sd = {}, {}
    for seed, rows in zip(seeds, per_seed):
        for label, row in rows.items():
            error, ratio = abs(row["mean_error_sd"]), row["sd_ratio"]
            noise = 1.0 / max(float(row.get("reference_ess", math.inf)), 1.0) + 1.0 / max(
                float(row.get("guide_draws", math.inf)), 1.0
            )
            mean_bar = max(quality["max_mean_error"] - MARGIN_Z * math.sqrt(noise), 0.0)
            log_margin = MARGIN_Z * math.sqrt(noise / 2)
            lo, hi = low * math.exp(log_margin), high * math.exp(-log_margin)
            if not error <= mean_bar and error > worst_mean.get(label, (0, 0))[0]:
                worst_mean[label] = (error, seed, row["mean_error_sd"])
            off = max(ratio / hi, lo / ratio) if ratio > 0 else math.inf
            if not lo <= ratio <= hi and off > worst_sd.get(label, (0, 0, 0))[2]:
                worst_sd[label] = (ratio, seed, off)
    found = []
    if worst_mean:
        listed = _listed(
            sorted(worst_mean.items(), key=lambda item: -item[1][0]),
            lambda label, value: f"{label} {value[2]:+.2f} sd (seed {value[1]})",
        )
        found.append(
            (
                f"means off the reference ({len(worst_mean)})",
                f"guide means off the reference's by more than {quality['max_mean_error']:g} "
                f"reference sd (less {MARGIN_Z:g} standard errors of the reference's and the "
                f"draws' own Monte Carlo error): {listed}",
            )
        )
    if worst_sd:
        listed = _listed(
            sorted(worst_sd.items(), key=lambda item: -item[1][2]),
            lambda label, value: f"{label} x{value[0]:.2f} (seed {value[1]})",
        )
        found.append(
            (
                f"sds off the reference ({len(worst_sd)})",
                f"guide sds outside [{low:g}, {high:g}] x the reference's (narrowed by the "
                f"same Monte Carlo error): {listed}",
            )
        )
    return found


def _listed(items: list, describe, shown: int = 5) -> str:
    """The first ``shown`` items in words, and how many more."""
    text = ", ".join(describe(label, value) for label, value in items[:shown])
    return text + (f" and {len(items) - shown} more" if len(items) > shown else "")


def verdict(
    *,
    nonfinite: np.ndarray,
    windows: list,
    labels: list[str],
    settings: dict,
    stop: dict | None = None,
    plateau_result: dict | None = None,
    khat_values=None,
    khat_limit=None,
    kl=None,
    seeds: list[int] | None = None,
    skipped_steps=None,
    seeds_rhat_values: dict | None = None,
    distances: list[dict] | None = None,
    point_sites=(),
    support_problems=(),
    reference_warnings=(),
    start_advice: str | None = None,
) -> Verdict:
    """Combine the checks into one of "converged", "not converged",
    "converged, poor approximation". Every failing check is a reason, most important first:
    divergence, the guide still changing, seeds that disagree, then the approximation's
    distance from the reference, a point estimate, support, KL and k-hat. The notes follow.

    ``windows``: one ``sviflow.convergence.Window`` per seed, at the end of the fit;
    ``distances``: per seed, ``sample_distances(...)["sites"]`` against a reference;
    ``skipped_steps`` (seed,): with stable_update, steps whose loss was not finite and which
    were skipped; they are reported, and ``nonfinite`` then holds only real divergences."""
    seeds = seeds or list(range(len(nonfinite)))
    rule = convergence.settings(settings.get("convergence"))
    quality = settings["quality"]
    unconverged, poor, notes = [], [], []  # (short, sentence)

    def fail(kind, short, sentence):
        kind.append((short, sentence))

    if skipped_steps is not None and np.any(np.asarray(skipped_steps) > 0):
        notes.append(
            "stable_update skipped "
            + ", ".join(f"{int(n)} step(s) of seed {s}" for s, n in zip(seeds, skipped_steps) if n)
            + " whose loss was not finite"
        )
    diverged = [(s, int(step)) for s, step in zip(seeds, nonfinite) if step >= 0]
    if diverged:
        advice = start_advice or "lower the step size or use stable_update"
        fail(
            unconverged,
            "the loss became NaN or inf",
            "the loss became NaN or inf ("
            + ", ".join(f"seed {s} at step {step}" for s, step in diverged)
            + f"): the fit diverged; {advice}",
        )
    else:
        levels = (stop or {}).get("levels")
        for index, (seed, window) in enumerate(zip(seeds, windows)):
            if not window.converged(rule):
                words = convergence.describe(window, rule, labels)
                fail(
                    unconverged,
                    "guide still changing",
                    f"seed {seed}: the guide is still changing: " + "; ".join(words),
                )
            elif levels is not None and not stop["confirmed"][index]:
                # a budget that lowers its step size promises more: halving it changed nothing
                last = levels[index][-1] if levels[index] else {}
                moved = (
                    f" (the last halving moved a mean by {last['shift']:.2g} sd)" if "shift" in last else ""
                )
                fail(
                    unconverged,
                    "step size not confirmed",
                    f"seed {seed}: the guide settled, but halving the step size has not yet "
                    f"been seen to leave it in place{moved}",
                )
        if unconverged and stop and stop.get("mode") == "budget" and "ran out" in stop.get("reason", ""):
            unconverged.append(("budget ran out", f"{stop['reason']}: raise steps.max"))
        across = {k: v for k, v in (seeds_rhat_values or {}).items() if not v <= rule["rhat"]}
        if across:
            fail(
                unconverged,
                "seeds disagree",
                f"the seeds' guides disagree (R-hat of their posterior draws, seeds as chains, > "
                f"{rule['rhat']:g}): " + ", ".join(f"{k} {v:.3g}" for k, v in across.items()),
            )
    for warning in reference_warnings:
        notes.insert(0, f"the reference is not to be trusted: {warning}")
    if not diverged:
        if distances:
            for short, sentence in distance_problems(distances, quality, seeds):
                fail(poor, short, sentence)
        if point_sites:
            fail(
                poor,
                "a point estimate",
                "the guide is a point estimate (sd 0) of "
                + ", ".join(point_sites)
                + ": it has no posterior uncertainty to report",
            )
        for sentence in support_problems:
            fail(poor, "support wider than the model's", sentence)
        max_kl = quality.get("max_kl")
        if kl is not None and np.isfinite(kl).all():
            if max_kl is not None and float(np.max(kl)) > max_kl:
                fail(
                    poor,
                    f"KL {float(np.max(kl)):.3g} > {max_kl:g}",
                    f"KL(q || p) {float(np.max(kl)):.3g} nats > {max_kl:g}",
                )
            else:
                notes.append(f"KL(q || p) {float(np.max(kl)):.3g} nats")
        if khat_values is not None and len(khat_values):
            worst = float(np.nanmax(khat_values))
            if (
                not worst <= khat_limit
                and distances
                and not point_sites
                and not any(short.startswith(("means", "sds")) for short, _ in poor)
            ):
                # a reference measures the guide's means and sds directly, and they pass:
                # k-hat, a noisy estimate from the tail of the weights, judges the joint as
                # importance sampling would need it, which is more than the verdict promises
                notes.append(
                    f"PSIS k-hat {worst:.2f} > {khat_limit:.2f}: the joint is not good "
                    "enough for importance sampling (Yao et al. 2018), though every "
                    "mean and sd matches the reference"
                )
            elif not worst <= khat_limit:
                fail(
                    poor,
                    f"k-hat {worst:.2f} > {khat_limit:.2f}",
                    f"PSIS k-hat {worst:.2f} > {khat_limit:.2f}: the guide misses mass of the "
                    "posterior (Yao et al. 2018)",
                )
            elif worst > quality["khat_good"]:
                notes.append(f"PSIS k-hat {worst:.2f}: usable, not good")
            else:
                notes.append(f"PSIS k-hat {worst:.2f}: good")
        if distances and not any(short.startswith(("means", "sds")) for short, _ in poor):
            notes.append(
                f"every guide mean within {quality['max_mean_error']:g} sd and every sd "
                f"within [{quality['sd_ratio'][0]:g}, {quality['sd_ratio'][1]:g}] x the "
                "reference's"
            )
    if not unconverged:
        notes.insert(
            0,
            "the guide stopped changing (every mean moved < "
            f"{rule['mean_shift']:g} sd, every sd < {rule['sd_change'] * 100:g} % over "
            "the last window)",
        )
    if plateau_result is not None and not plateau_result["too_short"]:
        on = bool(np.all(plateau_result["converged"]))
        notes.append(
            "the loss is on a plateau (Stan ADVI's test)"
            if on
            else "the loss is not on a plateau by Stan ADVI's relative test (reported only)"
        )
    if stop and stop.get("mode") == "budget" and not unconverged:
        notes.append(stop["reason"])
    problems = unconverged + poor
    kind = NOT_CONVERGED if unconverged else POOR if poor else CONVERGED
    return Verdict(kind, [sentence for _, sentence in problems] + notes, [short for short, _ in problems])
