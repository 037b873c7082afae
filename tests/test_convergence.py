"""The convergence rule (sviflow.convergence) on synthetic guide trajectories whose answer is
known: stationary jitter is converged, a guide still moving by a posterior sd is not, a slow
but steady journey is not, a slowing final approach with little jitter is, a changing sd is
not, and a window after a lowered step size waits for a whole window's share of the run."""

from __future__ import annotations

import numpy as np
import pytest

from sviflow import convergence

RULE = convergence.settings({})
STEPS = np.arange(1, 1001) * 10  # 1,000 points, every 10 steps


def judge(mean, sd, steps=STEPS, since=0):
    return convergence.window(steps, mean[:, None], sd[:, None], RULE, since)


def test_stationary_jitter_around_the_optimum_is_converged():
    rng = np.random.default_rng(0)
    mean = 0.59 + 0.005 * rng.standard_normal(len(STEPS))  # jitter of 0.05 sd
    sd = 0.1 * np.exp(0.01 * rng.standard_normal(len(STEPS)))
    result = judge(mean, sd)
    assert result.converged(RULE) and result.stationary(RULE) and not result.travelling(RULE)
    assert result.start_step == 8010 and result.end_step == 10000 and result.points == 200
    assert float(result.shift[0]) < 0.02 and float(result.rhat[0]) < 1.05


def test_a_guide_still_moving_by_a_posterior_sd_is_not_converged():
    """The mean travels 1 sd across the window (5 sd over the run), with jitter."""
    rng = np.random.default_rng(0)
    mean = np.linspace(0.0, 0.5, len(STEPS)) + 0.001 * rng.standard_normal(len(STEPS))
    result = judge(mean, np.full(len(STEPS), 0.1))
    assert not result.converged(RULE)
    assert float(result.shift[0]) == pytest.approx(0.5, abs=0.05)  # halves 1,000 steps apart
    words = convergence.describe(result, RULE, ["f"])
    assert words[0].startswith("the mean of f moved 0.5 sd between the halves of steps 8010-10000")
    assert "run more steps" in words[-1]


def test_a_slow_steady_journey_is_not_converged_however_small_its_window_move():
    """0.3 sd over the run at a constant pace: the window moves 0.03 sd only, but the guide is
    on its way (split-R-hat high, at its full average speed)."""
    rng = np.random.default_rng(0)
    mean = np.linspace(0.0, 0.03, len(STEPS)) + 1e-5 * rng.standard_normal(len(STEPS))
    result = judge(mean, np.full(len(STEPS), 0.1))
    assert float(result.shift[0]) < RULE["mean_shift"]
    assert result.travelling(RULE) and not result.converged(RULE)
    assert float(result.speed[0]) == pytest.approx(1.0, abs=0.15)
    assert "still moves steadily in one direction" in convergence.describe(result, RULE, ["f"])[0]


def test_a_slowing_final_approach_with_little_jitter_is_converged():
    """An exponential approach (as Adam's with many particles): the trend dominates the tiny
    jitter, so split-R-hat is high, but the guide has slowed to a crawl against its pace."""
    rng = np.random.default_rng(0)
    mean = 0.59 - 0.08 * np.exp(-STEPS / 1500) + 1e-5 * rng.standard_normal(len(STEPS))
    result = judge(mean, np.full(len(STEPS), 0.1))
    assert float(result.rhat[0]) > RULE["travel_rhat"]
    assert float(result.speed[0]) < RULE["travel_speed"]
    assert result.converged(RULE)


def test_an_sd_still_changing_is_not_converged():
    sd = 0.1 * np.exp(np.linspace(-3.0, 0.0, len(STEPS)))  # the last window's halves: 35 %
    result = judge(np.full(len(STEPS), 0.5), sd)
    assert not result.converged(RULE) and float(result.shift[0]) == 0
    assert float(result.sd_change[0]) == pytest.approx(0.3, abs=0.01)
    assert "the sd of f changed by 35 %" in convergence.describe(result, RULE, ["f"])[0]
    # a slow but steady change of the sd is a journey too
    slow = judge(np.full(len(STEPS), 0.5), 0.1 * np.exp(np.linspace(-0.2, 0.0, len(STEPS))))
    assert float(slow.sd_change[0]) < 0.05 and slow.travelling(RULE) and not slow.converged(RULE)


def test_stationary_but_imprecise_iterates_advise_a_lower_step_size():
    """Big jitter (2 sd) with no trend: stationary, but the window's average is not precise."""
    rng = np.random.default_rng(1)
    mean = 0.2 * rng.standard_normal(len(STEPS))
    result = judge(mean, np.full(len(STEPS), 0.1))
    assert result.stationary(RULE) and not result.converged(RULE)
    words = convergence.describe(result, RULE, ["f"])
    assert any("known to" in w for w in words) and "lower the step size" in words[-1]


def test_a_point_estimate_is_measured_against_its_size():
    """A Delta guide's sd is 0: its moves count in units of max(|mean|, 1)."""
    rng = np.random.default_rng(0)
    mean = 25.9 + 1e-3 * rng.standard_normal(len(STEPS))
    result = judge(mean, np.zeros(len(STEPS)))
    assert result.converged(RULE) and float(result.sd_change[0]) == 0
    moving = judge(np.linspace(0.0, 30.0, len(STEPS)), np.zeros(len(STEPS)))
    assert not moving.converged(RULE)


def test_after_a_lowered_step_size_the_window_waits_for_its_share_of_the_run():
    rng = np.random.default_rng(0)
    mean = 0.59 + 1e-4 * rng.standard_normal(len(STEPS))
    sd = np.full(len(STEPS), 0.1)
    assert judge(mean, sd, since=9000).too_short  # 1,000 steps since: less than 20 % of 10,000
    later = judge(mean, sd, since=8000)  # exactly 20 %
    assert not later.too_short and later.start_step > 8000 and later.converged(RULE)


def test_too_few_points_and_nonfinite_moments_are_not_converged():
    short = judge(np.zeros(10), np.ones(10), steps=np.arange(1, 11))
    assert short.too_short and not short.converged(RULE)
    assert "too few trajectory points" in convergence.describe(short, RULE, ["f"])[0]
    mean = np.zeros(len(STEPS))
    mean[-1] = np.nan
    assert not judge(mean, np.ones(len(STEPS))).converged(RULE)


def test_labels_name_every_component():
    assert convergence.component_labels({"a": (), "b": (2,), "c": (2, 2)}) == [
        "a",
        "b[0]",
        "b[1]",
        "c[0,0]",
        "c[0,1]",
        "c[1,0]",
        "c[1,1]",
    ]
