"""Has the guide stopped changing, measured in the posterior's own units?

The one rule that the fit engine applies between chunks (to stop a fit with a step budget, and
to lower its step size) and that the check applies to the finished fit. Numpy only: the check
runs it without JAX.

What it reads: the guide's mean and sd of every latent component at every point of the fit's
thinned trajectory (``sviflow.engine`` estimates them from the same draws of the guide's noise
at every point, so that their changes are not drowned in Monte Carlo noise).

What it computes, over the *window*, the last ``window`` share of the steps (at least
``min_points`` trajectory points; after a lowered step size, only the points since):

- ``shift``: how far each mean moved between the window's first and second half, in units of
  that component's guide sd averaged over the window (a point estimate, whose sd is zero, in
  units of max(|mean|, 1));
- ``sd_change``: |log| of the ratio of the two halves' sds (0.1 is about 10 %);
- ``mcse``: Monte Carlo standard error of the window's average mean, in the same units (batch
  means, Flegal & Jones 2010);
The window is judged only once it lies wholly after the last lowered step size, so a fit
whose step size was lowered at step N is judged again from step N / (1 - window) on.

- ``rhat``: split-R-hat of each mean and log sd over the two halves (Gelman-Rubin with the
  iterates as draws): at most ``rhat`` (1.1) and the iterates are a stationary chain (Dhaka et
  al. 2020), jittering around the optimum;
- ``speed``: how fast each mean (or log sd) moves across the window against its average speed
  since the first point. A guide whose R-hat is above ``travel_rhat`` (1.5: it moves in one direction
  far more than it jitters) and whose speed is above ``travel_speed`` (0.5: it has not slowed
  to half its pace) is still on its way, and the window cannot say how far it has to go,
  however small its move: not converged. (R-hat alone would flag the slow final approach of
  a fit with little jitter, 32 particles say, however small against the posterior's sd.)

The promise of "converged": between the window's two halves no mean moved by more than
``mean_shift`` (0.1) of its sd, no sd changed by more than ``sd_change`` (about 10 %), and the
window's average is known to ``mcse`` (0.05) sd. Stationarity is not asked for: constant-step
Adam wanders slowly for ever, and a wander far below the posterior's sd is no reason to distrust
the guide. Stationary iterates are averaged (Polyak-Ruppert) by the engine. Stationary but not that precise: the step size is too large
for the precision asked, and a fit with a step budget lowers it (``decay``, Welandawe et al.
2024's rule of thumb of halving it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sviflow.config import schema_defaults

# the rule's thresholds, from the schema (checks.convergence), less the engine's draws
DEFAULTS = {key: value for key, value in schema_defaults("checks", "convergence").items() if key != "draws"}
BATCHES = 10


def component_labels(shapes: dict) -> list[str]:
    """``site`` for a scalar site, ``site[i]`` / ``site[i,j]`` (0-based) for its components."""
    labels = []
    for site, shape in shapes.items():
        if len(shape) == 0:
            labels.append(site)
        else:
            labels += [f"{site}[{','.join(map(str, index))}]" for index in np.ndindex(*shape)]
    return labels


def settings(values: dict | None) -> dict:
    """The rule's settings with the defaults filled in."""
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in (values or {}).items() if k in DEFAULTS})
    return merged


@dataclass
class Window:
    """The rule's numbers for one seed: arrays over the latent components."""

    start_step: int
    end_step: int
    points: int
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sd_change: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mcse: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rhat: np.ndarray = field(default_factory=lambda: np.zeros(0))
    speed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    too_short: bool = False

    def stationary(self, rule: dict) -> bool:
        return not self.too_short and bool(np.all(self.rhat <= rule["rhat"]))

    def travelling(self, rule: dict) -> bool:
        return bool(np.any((self.rhat > rule["travel_rhat"]) & (self.speed > rule["travel_speed"])))

    def converged(self, rule: dict) -> bool:
        # not stationarity: constant-step Adam wanders slowly, and a wander far below the
        # posterior's sd is no reason to distrust the guide (R-hat <= 1.1 would say otherwise);
        # but a guide that moves in one direction far more than it jitters (travel_rhat) is
        # on its way, however slowly: its window cannot say how far it still has to go
        return (
            not self.too_short
            and not self.travelling(rule)
            and bool(np.all(self.shift < rule["mean_shift"]))
            and bool(np.all(self.sd_change < math.log1p(rule["sd_change"])))
            and bool(np.all(self.mcse < rule["mcse"]))
        )

    def as_dict(self) -> dict:
        return {
            "start_step": self.start_step,
            "end_step": self.end_step,
            "points": self.points,
            "too_short": self.too_short,
            "shift": self.shift,
            "sd_change": self.sd_change,
            "mcse": self.mcse,
            "rhat": self.rhat,
            "speed": self.speed,
        }


def _split_rhat(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat of two chains (point, component) -> (component,)."""
    n = min(len(first), len(second))
    chains = np.stack([first[:n], second[:n]])  # (2, n, K)
    within = chains.var(axis=1, ddof=1).mean(axis=0)
    between = n * chains.mean(axis=1).var(axis=0, ddof=1)
    pooled = (n - 1) / n * within + between / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.sqrt(pooled / within)
    # a component that does not move at all is as settled as it gets; one that moves only
    # between the halves (no jitter within) is travelling
    return np.where(within > 0, rhat, np.where(between > 0, np.inf, 1.0))


def _mcse(series: np.ndarray) -> np.ndarray:
    """Batch-means standard error of the mean of (point, component)."""
    batches = min(BATCHES, len(series) // 2)
    if batches < 2:
        return np.full(series.shape[1:], np.inf)
    size = len(series) // batches
    means = series[len(series) - batches * size :].reshape(batches, size, -1).mean(axis=1)
    return means.std(axis=0, ddof=1) / math.sqrt(batches)


def window_indices(steps: np.ndarray, rule: dict, since_step: int = 0) -> np.ndarray:
    """Indices of the trajectory points in the window ending at the last point."""
    steps = np.asarray(steps)
    if len(steps) == 0:
        return np.zeros(0, int)
    last = int(steps[-1])
    start = max(last - rule["window"] * last, since_step)
    chosen = np.flatnonzero((steps > start) & (steps > since_step))
    if len(chosen) < rule["min_points"]:
        # at least min_points, but never reaching back past a change of step size
        allowed = np.flatnonzero(steps > since_step)
        chosen = allowed[-int(rule["min_points"]) :]
    return chosen


def window(steps: np.ndarray, mean: np.ndarray, sd: np.ndarray, rule: dict, since_step: int = 0) -> Window:
    """The rule's numbers for one seed. ``mean``, ``sd``: (point, component)."""
    steps = np.asarray(steps)
    mean = np.asarray(mean, dtype=np.float64).reshape(len(steps), -1)
    sd = np.asarray(sd, dtype=np.float64).reshape(len(steps), -1)
    chosen = window_indices(steps, rule, since_step)
    k = mean.shape[1]
    last = int(steps[-1]) if len(steps) else 0
    # after a lowered step size the window waits until it is a whole window's share of the
    # run again (Welandawe et al.: a window at the new step size, not a glimpse of it)
    if len(chosen) < max(4, int(rule["min_points"])) or last - since_step < rule["window"] * last:
        return Window(
            int(steps[chosen[0]]) if len(chosen) else 0,
            int(steps[-1]) if len(steps) else 0,
            len(chosen),
            np.full(k, np.inf),
            np.full(k, np.inf),
            np.full(k, np.inf),
            np.full(k, np.inf),
            np.full(k, np.inf),
            too_short=True,
        )
    m, s = mean[chosen], sd[chosen]
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
        bad = np.full(k, np.inf)
        return Window(int(steps[chosen[0]]), int(steps[chosen[-1]]), len(chosen), bad, bad, bad, bad, bad)
    half = len(chosen) // 2
    first, second = slice(0, half), slice(len(chosen) - half, len(chosen))
    scale = s.mean(axis=0)
    point = scale <= 1e-12 * np.maximum(np.abs(m).mean(axis=0), 1.0)  # a Delta guide's site
    unit = np.where(point, np.maximum(np.abs(m).mean(axis=0), 1.0), scale)
    shift = np.abs(m[second].mean(axis=0) - m[first].mean(axis=0)) / unit
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = s[second].mean(axis=0) / s[first].mean(axis=0)
        sd_change = np.where(point, 0.0, np.abs(np.log(ratio)))
        log_sd = np.where(point, 0.0, np.log(s))
    rhat = np.maximum(_split_rhat(m[first], m[second]), _split_rhat(log_sd[first], log_sd[second]))
    # the window's speed against the average speed since the first point, per component: a
    # guide that has slowed to a fraction of its pace is arriving; one at its old pace travels
    window_steps = max(float(steps[chosen[-1]] - steps[chosen[0]]), 1.0)
    run_steps = max(float(steps[chosen[-1]] - steps[0]), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        all_log_sd = np.where(point, 0.0, np.log(sd))

        def pace(values, window_values):  # of the means, and of the log sds
            moved_in_window = 2 * np.abs(
                window_values[second].mean(axis=0) - window_values[first].mean(axis=0)
            )
            moved_in_run = np.abs(window_values[second].mean(axis=0) - values[0])
            return np.where(
                moved_in_window > 0, (moved_in_window / window_steps) / (moved_in_run / run_steps), 0.0
            )

        speed = np.maximum(pace(mean, m), pace(all_log_sd, log_sd))
    return Window(
        int(steps[chosen[0]]),
        int(steps[chosen[-1]]),
        len(chosen),
        shift,
        np.nan_to_num(sd_change, nan=np.inf),
        _mcse(m) / unit,
        rhat,
        np.nan_to_num(speed, nan=np.inf),
    )


def windows(steps, mean, sd, rule: dict, since_steps=None) -> list[Window]:
    """One :class:`Window` per seed; ``mean``, ``sd``: (seed, point, component)."""
    mean, sd = np.asarray(mean), np.asarray(sd)
    since_steps = np.zeros(len(mean), int) if since_steps is None else np.asarray(since_steps)
    return [window(steps, mean[i], sd[i], rule, int(since_steps[i])) for i in range(len(mean))]


def level_change(before: dict, after: dict) -> dict:
    """How far the settled guide moved between two step sizes (``{"mean", "sd"}`` lists of the
    window averages): the largest move of a mean in the later level's sds (a point estimate's
    in max(|mean|, 1)) and the largest |log| ratio of the sds."""
    m0, m1 = np.asarray(before["mean"], float), np.asarray(after["mean"], float)
    s0, s1 = np.asarray(before["sd"], float), np.asarray(after["sd"], float)
    point = s1 <= 1e-12 * np.maximum(np.abs(m1), 1.0)
    unit = np.where(point, np.maximum(np.abs(m1), 1.0), s1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd_change = np.where(point, 0.0, np.abs(np.log(s1 / s0)))
    shift = np.abs(m1 - m0) / unit
    return {
        "shift": float(np.nan_to_num(shift, nan=np.inf).max(initial=0.0)),
        "sd_change": float(np.nan_to_num(sd_change, nan=np.inf).max(initial=0.0)),
    }


def describe(result: Window, rule: dict, labels: list[str]) -> list[str]:
    """What fails the rule, in words: the worst component of each kind."""
    if result.too_short:
        return [
            f"too few trajectory points to judge ({result.points} since step "
            f"{result.start_step}, needs {rule['min_points']})"
        ]
    words = []

    def worst(values):
        index = int(np.nanargmax(values))
        return labels[index] if index < len(labels) else str(index), float(values[index])

    span = f"steps {result.start_step}-{result.end_step}"
    if not np.all(result.shift < rule["mean_shift"]):
        name, value = worst(result.shift)
        words.append(
            f"the mean of {name} moved {value:.2g} sd between the halves of {span} "
            f"(needs < {rule['mean_shift']:g})"
        )
    if not np.all(result.sd_change < math.log1p(rule["sd_change"])):
        name, value = worst(result.sd_change)
        words.append(
            f"the sd of {name} changed by {math.expm1(value) * 100:.3g} % over {span} "
            f"(needs < {rule['sd_change'] * 100:g} %)"
        )
    if not np.all(result.mcse < rule["mcse"]):
        name, value = worst(result.mcse)
        words.append(
            f"the average of {name} over {span} is known to {value:.2g} sd only "
            f"(needs < {rule['mcse']:g}): the iterates jitter too much"
        )
    if result.travelling(rule):
        name, value = worst(result.rhat)
        moving = (result.rhat > rule["travel_rhat"]) & (result.speed > rule["travel_speed"])
        name, value = worst(np.where(moving, result.speed, -np.inf))
        words.append(
            f"the mean of {name} still moves steadily in one direction, at "
            f"{value:.2g} x its average speed since the start (a trend far above its "
            f"jitter, split-R-hat > {rule['travel_rhat']:g}), so how far it still has to "
            "go is unknown: run more steps, or give steps as a budget ({min, max})"
        )
    elif words:
        if result.stationary(rule):
            words.append(
                "the iterates are stationary (split-R-hat <= "
                f"{rule['rhat']:g}) but jitter: lower the step size, or give steps as a "
                "budget ({min, max}), which lowers it"
            )
        else:
            name, value = worst(result.rhat)
            words.append(
                f"the iterates still travel (split-R-hat of {name} {value:.3g}): "
                "run more steps, or give steps as a budget ({min, max})"
            )
    return words
