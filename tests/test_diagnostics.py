"""Convergence and quality diagnostics on synthetic inputs whose answer is known (issue 2): the
loss plateau (Stan ADVI), parameter drift (PyMC), split-R-hat of the late iterates, divergence
with and without stable_update, the energy distance, PSIS k-hat and its threshold, and how the
verdict combines them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sviflow import diagnostics as dg



# --- plateau ---------------------------------------------------------------------------------

def test_plateau_flat_noisy_loss_has_converged():
    rng = np.random.default_rng(0)
    losses = 15.0 + 0.5 * rng.standard_normal((2, 5000))
    result = dg.plateau(losses, window=100, tolerance=0.01)
    assert not result["too_short"]
    assert result["window_mean"].shape == (2, 50) and result["rel_change"].shape == (2, 49)
    assert result["buffer"] == 5  # max(0.1 * 50 windows, 2)
    assert result["converged"].all() and not result["diverging"].any()
    # windowed means of noise with sd 0.05 around 15: relative changes of order 0.005
    assert (result["mean"] < 0.01).all()
    np.testing.assert_allclose(result["window_mean"][0, 0], losses[0, :100].mean())


def test_plateau_steadily_decreasing_loss_has_not():
    rng = np.random.default_rng(0)
    steps = np.arange(5000)
    losses = (200.0 - 0.035 * steps)[None] + 0.1 * rng.standard_normal((1, 5000))
    result = dg.plateau(losses, window=100, tolerance=0.01)
    assert not result["converged"].any()
    # the loss falls 3.5 a window from about 30 at the end: relative change about 0.1
    assert result["mean"][0] == pytest.approx(3.5 / 30, rel=0.15)
    assert not result["diverging"].any()


def test_plateau_per_seed_and_the_diverging_flag():
    rng = np.random.default_rng(0)
    flat = 10.0 + 0.01 * rng.standard_normal(3000)
    jumping = 10.0 * np.repeat(np.where(np.arange(30) % 2, 1.0, 3.0), 100)  # ELBO doubles and halves
    result = dg.plateau(np.stack([flat, jumping]), window=100, tolerance=0.01, diverging=0.5)
    assert result["converged"].tolist() == [True, False]
    assert result["diverging"].tolist() == [False, True]


def test_plateau_mean_or_median_suffices():
    """Stan's rule: converged when the mean OR the median of the recent changes is small; one
    outlier window moves the mean, not the median."""
    rng = np.random.default_rng(0)
    losses = 100.0 + 0.01 * rng.standard_normal(10_000)
    losses[-350:-300] += 40.0  # one disturbed window among the last ten
    result = dg.plateau(losses[None], window=100, tolerance=0.01)
    assert result["buffer"] == 10
    assert result["mean"][0] > 0.01 and result["median"][0] < 0.01
    assert result["converged"][0]


def test_plateau_too_short_and_skipped_steps():
    short = dg.plateau(np.ones((1, 150)), window=100)
    assert short["too_short"] and not short["converged"].any()
    # stable_update's skipped steps (NaN losses) do not count in the windows
    losses = np.full((1, 1000), 5.0)
    losses[0, 250] = np.nan
    result = dg.plateau(losses, window=100)
    assert np.isfinite(result["window_mean"]).all() and result["converged"][0]


# --- drift -----------------------------------------------------------------------------------

def test_param_drift_measures_the_relative_change_over_every_steps():
    steps = np.arange(1, 51) * 20  # a point every 20 steps up to 1000
    moving = np.linspace(1.0, 2.0, 50)[None]  # (seed, point)
    settled = np.full((1, 50), 3.0)
    settled[0, -1] = 3.0 + 3e-5
    result = dg.param_drift(steps, {"moving": moving, "settled": settled}, every=100, tolerance=1e-3)
    assert result["gap"] == 100
    before = moving[0, -6]
    assert result["drift"]["moving"] == pytest.approx((moving[0, -1] - before + 1e-6) / (before + 1e-6))
    assert result["drift"]["settled"] == pytest.approx((3e-5 + 1e-6) / (3.0 + 1e-6))
    assert result["settled"] == {"moving": False, "settled": True}
    assert result["max"] == result["drift"]["moving"]


def test_param_drift_structural_zeros_do_not_count_as_drift():
    """The upper triangle of a Cholesky factor is zero throughout: PyMC's formula gives
    (0 + 1e-6) / (0 + 1e-6) = 1 there; here it is 0."""
    steps = np.arange(1, 11) * 100
    tril = np.zeros((2, 10, 2, 2))
    tril[:, :, 0, 0], tril[:, :, 1, 1] = 1.0, 3.0
    tril[:, :, 1, 0] = 2.0
    tril[1, -1, 1, 0] = 2.0 + 1e-5  # the lower triangle moves a little in seed 1
    result = dg.param_drift(steps, {"auto_scale_tril": tril}, every=100)
    assert set(result["drift"]) == {f"auto_scale_tril[{i}]" for i in range(4)}
    assert result["drift"]["auto_scale_tril[1]"] == 0.0  # the structural zero
    assert result["drift"]["auto_scale_tril[2]"] == pytest.approx((1e-5 + 1e-6) / (2.0 + 1e-6))
    assert all(result["settled"].values())


def test_param_drift_uses_the_worst_seed_and_the_nearest_point():
    steps = np.array([300, 600, 900, 1000])  # no point exactly 100 before the last: nearest is 900
    trajectory = {"p": np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.5]])}
    result = dg.param_drift(steps, trajectory, every=100)
    assert result["gap"] == 100
    assert result["drift"]["p"] == pytest.approx(0.5, rel=1e-5)
    assert dg.param_drift(np.array([10]), {"p": np.ones((1, 1))})["drift"] == {}


# --- late split-R-hat ------------------------------------------------------------------------

def test_late_rhat_of_stationary_noise_is_about_one():
    rng = np.random.default_rng(0)
    trajectory = {"p": 5.0 + rng.standard_normal((1, 400)),
                  "q": rng.standard_normal((1, 400, 2))}
    result = dg.late_rhat(trajectory, late_fraction=0.5)
    assert set(result["per_seed"]) == {"p", "q[0]", "q[1]"}
    for value in result["per_seed"].values():
        assert 0.98 < value < 1.03
    assert result["across_seeds"] == {}


def test_late_rhat_of_a_trend_is_large():
    rng = np.random.default_rng(0)
    trend = np.linspace(0.0, 5.0, 400)[None] + 0.1 * rng.standard_normal((1, 400))
    assert dg.late_rhat({"p": trend})["per_seed"]["p"] > 1.1


def test_late_rhat_only_looks_at_the_late_iterates():
    """A fast start then stationary noise: R-hat over the last half is about 1."""
    rng = np.random.default_rng(0)
    series = np.concatenate([np.linspace(10.0, 0.0, 200), rng.standard_normal(200)])[None]
    assert dg.late_rhat({"p": series}, late_fraction=0.5)["per_seed"]["p"] < 1.05
    assert dg.late_rhat({"p": series}, late_fraction=0.9)["per_seed"]["p"] > 1.1


def test_late_rhat_across_seeds_sees_seeds_that_disagree():
    rng = np.random.default_rng(0)
    agree = rng.standard_normal((3, 400))
    disagree = agree + np.array([[0.0], [3.0], [6.0]])
    result = dg.late_rhat({"agree": agree, "disagree": disagree})
    assert result["across_seeds"]["agree"] < 1.02
    assert result["across_seeds"]["disagree"] > 1.5
    # each seed by itself is stationary
    assert result["per_seed"]["disagree"] < 1.05


def test_late_rhat_constant_short_and_nonfinite():
    result = dg.late_rhat({"zero": np.zeros((1, 100)), "short": np.ones((1, 10)),
                           "nan": np.concatenate([np.ones(99), [np.nan]])[None]})
    assert result["per_seed"]["zero"] == 1.0
    assert math.isnan(result["per_seed"]["short"])  # fewer than 8 late iterates
    assert math.isnan(result["per_seed"]["nan"])


def test_seed_spread():
    spread = dg.seed_spread({"a": np.array([1.0, 3.0]), "m": np.array([[0.0, 1.0], [0.0, 3.0]])})
    assert spread == {"a": pytest.approx(math.sqrt(2)), "m[0]": 0.0, "m[1]": pytest.approx(math.sqrt(2))}
    assert dg.seed_spread({"a": np.array([1.0])}) == {"a": 0.0}


# --- divergence ------------------------------------------------------------------------------

def test_divergence_without_stable_update():
    losses = np.ones((3, 10))
    losses[1, 4:] = np.nan  # NaN from step 4: it poisons the optimizer
    losses[2, 7] = np.inf
    params = {"p": np.array([1.0, np.nan, 2.0])}
    diverged, skipped = dg.divergence(losses, params, stable_update=False)
    assert diverged.tolist() == [-1, 4, 7]
    assert skipped.tolist() == [0, 0, 0]
    assert dg.first_nonfinite(losses).tolist() == [-1, 4, 7]


def test_divergence_with_nonfinite_params_but_finite_losses():
    losses = np.ones((2, 10))
    diverged, _ = dg.divergence(losses, {"p": np.array([[1.0, 1.0], [1.0, np.inf]])})
    assert diverged.tolist() == [-1, 9]  # the last step: when it went wrong is unknown


def test_divergence_with_stable_update_counts_skipped_steps():
    losses = np.ones((2, 10))
    losses[0, [2, 5, 6]] = np.nan  # skipped by stable_update; the params stayed finite
    losses[1, 3] = np.nan
    params = {"p": np.array([0.5, np.nan])}  # seed 1 still ended non-finite: a real divergence
    diverged, skipped = dg.divergence(losses, params, stable_update=True)
    assert skipped.tolist() == [3, 1]
    assert diverged.tolist() == [-1, 3]
    # the same losses without stable_update: both seeds diverged
    assert dg.divergence(losses, params, stable_update=False)[0].tolist() == [2, 3]


# --- quality ---------------------------------------------------------------------------------

def test_energy_distance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 2))
    assert dg.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    same = dg.energy_distance(x, rng.standard_normal((500, 2)))
    shifted = dg.energy_distance(x, rng.standard_normal((500, 2)) + [1.0, 0.0])
    far = dg.energy_distance(x, rng.standard_normal((500, 2)) + [3.0, 0.0])
    assert abs(same) < 0.05
    assert shifted > 0.2 and far > shifted
    # 1-D: 2E|X-Y| - E|X-X'| - E|Y-Y'| for two points a, b is 2|a - b|
    assert dg.energy_distance(np.array([[0.0]]), np.array([[2.5]])) == pytest.approx(5.0)


def test_sample_distances_against_a_reference():
    rng = np.random.default_rng(0)
    draws = rng.normal(1.0, 2.0, 4000)
    reference = {"draws": {"z": draws}, "moments": {"mean": {"z": 1.0}, "sd": {"z": 2.0}}}
    same = dg.sample_distances({"z": rng.normal(1.0, 2.0, 4000)}, reference, energy_draws=1000)
    row = same["sites"]["z"]
    assert abs(row["mean_error_sd"]) < 0.1 and row["sd_ratio"] == pytest.approx(1.0, abs=0.05)
    assert row["wasserstein"] < 0.15 and abs(same["energy"]) < 0.02
    off = dg.sample_distances({"z": rng.normal(2.0, 1.0, 4000)}, reference, energy_draws=1000)
    row = off["sites"]["z"]
    assert row["mean_error_sd"] == pytest.approx(0.5, abs=0.05)
    assert row["sd_ratio"] == pytest.approx(0.5, abs=0.05)
    assert off["energy"] > 0.05 and row["wasserstein"] > 0.5
    assert math.isnan(dg.sample_distances({"other": draws}, reference)["energy"])


def test_khat_threshold_formula():
    assert dg.khat_threshold(100) == pytest.approx(0.5)
    assert dg.khat_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert dg.khat_threshold(2000) == pytest.approx(1 - 1 / math.log10(2000))
    assert dg.khat_threshold(10_000) == 0.7  # 0.75 capped at 0.7
    assert dg.khat_threshold(10_000, khat_max=0.8) == pytest.approx(0.75)
    for s in (50, 300, 3000, 10**6):
        assert dg.khat_threshold(s) == min(1 - 1 / math.log10(s), 0.7)


def test_khat_from_log_weights_light_and_heavy_tails():
    """Weights with a Pareto tail of shape k (log w = k E, E exponential): k-hat finds k.
    20,000 draws: the estimate's sd is about 0.1."""
    rng = np.random.default_rng(0)
    assert dg.khat_from_log_weights(rng.normal(0.0, 0.1, 20_000)) < 0.3  # nearly equal weights
    light = dg.khat_from_log_weights(0.2 * rng.exponential(size=20_000))
    heavy = dg.khat_from_log_weights(1.5 * rng.exponential(size=20_000))
    assert light < 0.5 < dg.khat_threshold(20_000) < heavy
    assert light == pytest.approx(0.2, abs=0.3) and heavy == pytest.approx(1.5, abs=0.4)
    assert dg.khat_from_log_weights(np.array([0.0, -np.inf, 1.0] * 100)) == math.inf


# --- the verdict -----------------------------------------------------------------------------

SETTINGS = dg.merged({})


def inputs(plateau_ok=True, drift=0.0, rhat=1.0, across=None):
    rng = np.random.default_rng(0)
    losses = (10.0 + 0.01 * rng.standard_normal((1, 1000)) if plateau_ok
              else np.linspace(100.0, 50.0, 1000)[None])
    return dict(nonfinite=np.array([-1]), plateau_result=dg.plateau(losses),
                drift={"gap": 100, "drift": {"alpha_q": drift}, "max": drift, "settled": {}},
                rhat={"per_seed": {"alpha_q": rhat}, "across_seeds": across or {}},
                settings=SETTINGS)


def test_verdict_converged_poor_and_not():
    assert dg.verdict(**inputs()).verdict == dg.CONVERGED
    result = dg.verdict(**inputs(), khat_values=[0.3], khat_limit=0.7, kl=np.array([0.01]))
    assert result.verdict == dg.CONVERGED and "k-hat 0.30: good" in result.sentence
    result = dg.verdict(**inputs(), khat_values=[0.9], khat_limit=0.7)
    assert result.verdict == dg.POOR and "PSIS k-hat 0.90 > 0.70" in result.sentence
    poor_kl = dg.merged({"quality": {"max_kl": 0.1}})
    result = dg.verdict(**{**inputs(), "settings": poor_kl}, khat_values=[0.3], khat_limit=0.7,
                        kl=np.array([0.51]))
    assert result.verdict == dg.POOR and "KL(q || p) 0.51 nats > 0.1" in result.sentence
    result = dg.verdict(**inputs(plateau_ok=False))
    assert result.verdict == dg.NOT_CONVERGED and "has not reached a plateau" in result.sentence


def test_verdict_a_parameter_settles_by_drift_or_by_rhat():
    assert dg.verdict(**inputs(drift=0.05, rhat=1.02)).verdict == dg.CONVERGED   # jitters, stationary
    assert dg.verdict(**inputs(drift=1e-4, rhat=1.5)).verdict == dg.CONVERGED    # drifts too little
    result = dg.verdict(**inputs(drift=0.05, rhat=1.5))
    assert result.verdict == dg.NOT_CONVERGED
    assert "parameters still moving: alpha_q (drift 0.05" in result.sentence
    # late iterates that differ across seeds do not decide (a decaying step size freezes each
    # seed, so any difference looks huge); the seeds' posterior draws do
    assert dg.verdict(**inputs(across={"alpha_q": 1.4})).verdict == dg.CONVERGED
    result = dg.verdict(**inputs(), seeds_rhat_values={"latent_fairness": 1.4})
    assert result.verdict == dg.NOT_CONVERGED and "seeds' guides disagree" in result.sentence
    assert dg.verdict(**inputs(), seeds_rhat_values={"latent_fairness": 1.01}).verdict == dg.CONVERGED


def test_seeds_rhat_compares_the_guides_posterior_draws():
    rng = np.random.default_rng(0)
    same = {"f": rng.normal(0.6, 0.1, size=(2, 4000))}
    assert dg.seeds_rhat(same, ["f"])["f"] < 1.01
    apart = {"f": np.stack([rng.normal(0.5, 0.1, 4000), rng.normal(0.7, 0.1, 4000)])}
    assert dg.seeds_rhat(apart, ["f"])["f"] > 1.1
    assert dg.seeds_rhat({"f": same["f"][:1]}, ["f"]) == {}  # one seed: nothing to compare


def test_verdict_divergence_comes_first():
    result = dg.verdict(**{**inputs(), "nonfinite": np.array([-1, 57])}, seeds=[1, 2],
                        khat_values=[0.1], khat_limit=0.7)
    assert result.verdict == dg.NOT_CONVERGED
    assert "seed 2 at step 57" in result.sentence and "diverged" in result.sentence
    result = dg.verdict(**inputs(), skipped_steps=np.array([3]), seeds=[2])
    assert result.verdict == dg.CONVERGED and "stable_update skipped 3 step(s) of seed 2" in result.sentence


def test_merged_settings_keep_the_literature_defaults():
    settings = dg.merged({"plateau": {"window": 50}, "strict": True})
    assert settings["plateau"] == {"window": 50, "tolerance": 0.01, "diverging": 0.5}
    assert settings["drift"]["tolerance"] == 1e-3 and settings["rhat"]["threshold"] == 1.1
    assert settings["strict"] is True
    assert dg.DEFAULTS["plateau"]["window"] == 100  # the defaults themselves are untouched


def test_khat_of_the_predictive_weights_is_numpyros_psis_estimate():
    """The predict step weighs the guide's posterior draws; the check's k-hat of those weights
    (ArviZ's psislw) is numpyro's: psis_diagnostic's Pareto fit gives the same k on them."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers
    from numpyro.infer import Predictive
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.importance import _psis_khat  # what psis_diagnostic returns, of given weights

    from sviflow.models import correlated_gaussian_2d
    from sviflow.predictive import log_weights

    guide = AutoNormal(correlated_gaussian_2d)
    with handlers.seed(rng_seed=0):
        guide()  # an autoguide sets itself up on its first call
    params = {"x_auto_loc": jnp.float32(0.1), "y_auto_loc": jnp.float32(-0.1),
              "x_auto_scale": jnp.float32(1.3), "y_auto_scale": jnp.float32(1.3)}
    draws = Predictive(guide, params=params, num_samples=2000)(jax.random.PRNGKey(0))
    stacked = {k: jnp.stack([v, v]) for k, v in params.items()}  # two seeds of one fit
    weights = log_weights(correlated_gaussian_2d, guide, stacked, {},
                          {k: jnp.stack([v, v]) for k, v in draws.items()})
    assert weights.shape == (2, 2000) and np.isfinite(weights).all()
    np.testing.assert_array_equal(weights[0], weights[1])
    assert dg.khat_from_log_weights(weights[0]) == pytest.approx(_psis_khat(weights[0]), abs=1e-4)


def test_log_weights_are_log_joint_minus_log_guide_at_the_draws():
    """At draws z of Beta(13, 9), the exact posterior, log p(x, z) - log q(z) is log B(13, 9)
    for every draw; with another guide it is the coin's log joint minus that guide's log
    density, as scipy computes them."""
    from scipy import special, stats

    from sviflow.guides import beta_guide
    from sviflow.models import coin_flips
    from sviflow.predictive import log_weights

    obs = np.concatenate([np.ones(12), np.zeros(8)]).astype(np.float32)
    z = np.random.default_rng(0).beta(13, 9, size=(1, 500)).astype(np.float32)
    exact = log_weights(coin_flips, beta_guide(), {"alpha_q": np.array([13.0]), "beta_q": np.array([9.0])},
                        {"obs": obs}, {"latent_fairness": z})
    assert exact.shape == (1, 500)
    np.testing.assert_allclose(exact, special.betaln(13, 9), atol=2e-4)
    off = log_weights(coin_flips, beta_guide(), {"alpha_q": np.array([30.0]), "beta_q": np.array([5.0])},
                      {"obs": obs}, {"latent_fairness": z})
    z64 = z.astype(np.float64)
    expected = 12 * np.log(z64) + 8 * np.log1p(-z64) - stats.beta.logpdf(z64, 30, 5)
    np.testing.assert_allclose(off, expected, rtol=1e-4, atol=1e-3)
