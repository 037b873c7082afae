"""Verdicts on real fits (issue 3, "what it must show"), through the workflow's own step
functions (sviflow.steps) with plain paths: simulate, reference, fit, predict, check.

- a fit stopped far too early is "not converged", and the reason names the parameters that
  still move;
- a fit run long enough, with a decaying step size, is "converged", and
  KL(q || p) = log Z - ELBO is close to 0;
- a mean-field guide on the post's correlated Gaussian (correlation 0.8) converges, but to
  KL = -log(1 - 0.8^2) / 2 = 0.51 nats: "converged, poor approximation" once a KL limit is set;
  the full-covariance guide on the same target, same settings, is "converged" with KL near 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from sviflow import steps
from sviflow.config import Plan, validate
from sviflow.diagnostics import CONVERGED, NOT_CONVERGED, POOR, weighted_draws
from sviflow.h5io import read_artifact

COIN = {"name": "coin", "function": "coin_flips", "args": {}}
CORRELATED = {
    "name": "correlated",
    "function": "correlated_gaussian_2d",
    "args": {"sig1": 1.0, "sig2": 3.0, "theta_deg": 45.0},
}
BETA_GUIDE = {"name": "beta", "args": {"alpha_init": 10.0, "beta_init": 10.0}}
LOG_Z_COIN = special.betaln(13, 9)
KL_MEAN_FIELD = -0.5 * math.log(1 - 0.8**2)  # 0.5108: the best any mean-field Gaussian can do
PREDICTIVE = {"num_samples": 2000, "num_mock": 20, "seed": 0}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The data and the two references every fit here is checked against."""
    root = tmp_path_factory.mktemp("verdicts")
    steps.simulate(
        {},
        {"data": root / "data.h5"},
        {"name": "coin_12_8", "spec": {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}},
    )
    steps.reference(
        {"data": root / "data.h5"},
        {"reference": root / "coin.h5"},
        {"model": COIN, "reference": {"method": "exact", "num_draws": 4000}},
    )
    steps.reference(
        {},
        {"reference": root / "correlated.h5"},
        {
            "model": CORRELATED,
            "reference": {
                "method": "grid",
                "points": 200,
                "bounds": [[-15, 15], [-15, 15]],
                "num_draws": 4000,
            },
        },
    )
    return root


def fit_spec(name, model, guide, step_size, steps_, particles=1, seeds=(1,), data=None, schedule=None):
    """The config slice of one fit, as the workflow builds it (sviflow.config.Plan.fit_spec)
    from a config of that one fit."""
    config = {
        "models": {model["name"]: {"function": model["function"], "args": model["args"]}},
        "datasets": {data: {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}} if data else {},
        "fits": {
            name: {
                "model": model["name"],
                "guide": guide,
                "steps": steps_,
                "seed": list(seeds),
                "optimizer": {
                    "name": "Adam",
                    "step_size": step_size,
                    **({"schedule": schedule} if schedule else {}),
                },
                "elbo": {"name": "Trace_ELBO", "num_particles": particles},
                **({"data": data} if data else {}),
            }
        },
    }
    validate(config)
    return Plan(config).fit_spec(name)


def run_fit(root, spec, reference, checks=None, data=True):
    """fit -> predict -> check, as the workflow chains them; -> (fit, check) artifacts."""
    name = spec["name"]
    data_input = {"data": root / "data.h5"} if data else {}
    paths = {kind: root / f"{name}.{kind}.h5" for kind in ("fit", "predictive", "check")}
    steps.fit(dict(data_input), {"fit": paths["fit"]}, {"spec": spec})
    steps.predict(
        {**data_input, "fit": paths["fit"]},
        {"predictive": paths["predictive"]},
        {"spec": spec, "predictive": PREDICTIVE, "weighted": weighted_draws(checks, PREDICTIVE)},
    )
    steps.check(
        {**data_input, "fit": paths["fit"], "predictive": paths["predictive"], "reference": root / reference},
        {"check": paths["check"]},
        {"spec": spec, "checks": checks or {}},
    )
    return read_artifact(paths["fit"], "fit"), read_artifact(paths["check"], "check")


def truth(check, quantity):
    return next(row for row in check.attrs["truth"] if row["quantity"] == quantity)


def test_a_fit_stopped_far_too_early_is_not_converged(workdir):
    """The post's Beta fit (Adam 5e-4 from alpha = beta = 10) stopped after 200 of its 10,000
    steps: alpha_q and beta_q are still on their way to 13 and 9."""
    spec = fit_spec("early", COIN, BETA_GUIDE, 5e-4, 200, data="coin_12_8")
    fit, check = run_fit(workdir, spec, "coin.h5")
    assert check.attrs["verdict"] == NOT_CONVERGED
    assert check.attrs["problems"][0] == "guide still changing"
    reason = check.attrs["reasons"][0]
    assert reason.startswith("seed 1: the guide is still changing")
    assert "the mean of latent_fairness still moves steadily in one direction" in reason
    # in the posterior's units its window moved little; it is its steady pace that tells
    assert float(check["convergence"]["shift"][0, 0]) < 0.1
    assert float(check["convergence"]["rhat"][0, 0]) > 1.5
    assert float(check["convergence"]["speed"][0, 0]) > 0.5
    # every failing check is a reason: the distance to the exact posterior and KL too
    assert "means off the reference (1)" in check.attrs["problems"]
    assert any(p.startswith("KL") for p in check.attrs["problems"])
    # and the fit is indeed far from the exact Beta(13, 9)
    assert truth(check, "alpha_q")["target"] == 13.0 and truth(check, "beta_q")["target"] == 9.0
    assert abs(truth(check, "alpha_q")["error"]) > 1.5
    assert float(fit["params"]["alpha_q"][0]) < 11.0
    assert check["quality"]["kl"][0] > 0.1


def test_a_fit_run_long_enough_is_converged_with_kl_near_zero(workdir):
    """The Beta guide contains the exact posterior. With 4 particles and a step size that
    decays (Robbins-Monro) from 0.05 to 5e-5 over 10,000 steps it reaches it: the loss on a
    plateau, the guide stopped changing, and KL(q || p) = log Z - ELBO zero within its Monte
    Carlo error."""
    schedule = {"name": "exponential_decay", "transition_steps": 10_000, "decay_rate": 1e-3}
    spec = fit_spec(
        "long", COIN, BETA_GUIDE, 0.05, 10_000, particles=4, seeds=(1,), data="coin_12_8", schedule=schedule
    )
    fit, check = run_fit(workdir, spec, "coin.h5")
    assert check.attrs["verdict"] == CONVERGED, check.attrs["sentence"]
    assert check.attrs["problems"] == []
    assert "the guide stopped changing" in check.attrs["sentence"]
    assert "the loss is on a plateau" in check.attrs["sentence"]
    quality = check["quality"]
    assert float(quality["log_z"]) == pytest.approx(LOG_Z_COIN, rel=1e-9)
    kl, elbo_se = quality["kl"], quality["elbo_se"]
    assert kl.shape == (1,)
    np.testing.assert_allclose(kl, float(quality["log_z"]) - quality["elbo"])
    # KL >= 0 up to the ELBO's Monte Carlo error, and small
    assert np.all(kl > -4 * elbo_se) and np.all(kl < 0.01)
    assert np.all(quality["khat"] < 0.5)
    assert "KL(q || p)" in check.attrs["sentence"]
    # against the exact answers
    assert truth(check, "alpha_q")["fit"] == pytest.approx(13.0, abs=0.5)
    assert truth(check, "beta_q")["fit"] == pytest.approx(9.0, abs=0.5)
    assert truth(check, "posterior mean")["fit"] == pytest.approx(13 / 22, abs=0.01)
    assert truth(check, "posterior sd")["fit"] == pytest.approx(0.1025, abs=0.005)
    assert fit["losses"].shape == (1, 10_000)


CORRELATED_CHECKS = {"quality": {"elbo_particles": 20_000, "khat_particles": 2000, "max_kl": 0.1}}


def test_a_mean_field_guide_on_a_correlated_target_is_a_poor_approximation(workdir):
    """AutoNormal (independent x and y) on the post's Gaussian with correlation 0.8: the
    optimisation converges, but the best mean-field Gaussian is KL = 0.51 nats from the target
    and its marginal sds are sqrt(1.8) instead of sqrt(5)."""
    spec = fit_spec("mean_field", CORRELATED, {"name": "AutoNormal"}, 0.05, 2000, particles=64)
    fit, check = run_fit(workdir, spec, "correlated.h5", CORRELATED_CHECKS, data=False)
    assert check.attrs["verdict"] == POOR, check.attrs["sentence"]
    assert "the guide stopped changing" in check.attrs["sentence"]
    # both failing checks, the marginal sds (against the reference) first, then KL
    assert check.attrs["problems"][0] == "sds off the reference (2)"
    assert len(check.attrs["problems"]) == 2 and check.attrs["problems"][1].startswith("KL 0.5")
    assert check.attrs["reasons"][0].startswith("guide sds outside [0.8, 1.25] x the reference's")
    assert check.attrs["reasons"][1].startswith("KL(q || p) 0.5") and "> 0.1" in check.attrs["reasons"][1]
    quality = check["quality"]
    assert float(quality["log_z"]) == pytest.approx(math.log(2 * math.pi * 3.0), abs=1e-4)
    kl, elbo_se = float(quality["kl"][0]), float(quality["elbo_se"][0])
    # not below the mean-field optimum (up to Monte Carlo error), and not far above it
    assert KL_MEAN_FIELD - 4 * elbo_se < kl < KL_MEAN_FIELD + 0.05
    # the guide's marginal sds: 1 / sqrt(precision_ii) = sqrt(9 / 5), against sqrt(5)
    for site in ("x", "y"):
        row = check["quality"]["sites"][site]
        assert float(row["sd_ratio"]) == pytest.approx(math.sqrt(1.8 / 5.0), abs=0.1)
        assert float(fit["params"][f"{site}_auto_scale"][0]) == pytest.approx(math.sqrt(1.8), abs=0.15)
    assert float(quality["energy_distance"]) > 0.05


def test_the_full_covariance_guide_on_the_same_target_is_converged(workdir):
    """The control: AutoMultivariateNormal, same target, settings and KL limit: KL near 0 and
    the covariance [[5, 4], [4, 5]] recovered from auto_scale_tril."""
    spec = fit_spec(
        "full_covariance", CORRELATED, {"name": "AutoMultivariateNormal"}, 0.05, 2000, particles=64
    )
    fit, check = run_fit(workdir, spec, "correlated.h5", CORRELATED_CHECKS, data=False)
    assert check.attrs["verdict"] == CONVERGED, check.attrs["sentence"]
    quality = check["quality"]
    kl, elbo_se = float(quality["kl"][0]), float(quality["elbo_se"][0])
    assert -4 * elbo_se < kl < 0.03
    # a constant step size leaves the final iterate jittering: entries within 20 %
    for quantity, target in (("covariance[0,0]", 5.0), ("covariance[0,1]", 4.0), ("covariance[1,1]", 5.0)):
        row = truth(check, quantity)
        assert row["target"] == pytest.approx(target)
        assert row["fit"] == pytest.approx(target, rel=0.2)
    assert truth(check, "sigma1 (minor sd)")["fit"] == pytest.approx(1.0, abs=0.1)
    assert truth(check, "sigma2 (major sd)")["fit"] == pytest.approx(3.0, abs=0.2)
    assert truth(check, "angle of major axis (deg)")["fit"] == pytest.approx(45.0, abs=5.0)
    for site in ("x", "y"):
        assert float(quality["sites"][site]["sd_ratio"]) == pytest.approx(1.0, abs=0.15)


def test_a_guide_wider_than_the_posteriors_support_has_infinite_kl(workdir):
    """The post's Normal guide on the coin's fairness: its support is the real line, the
    posterior's (0, 1). Its few thousand draws all fall inside, so log Z - ELBO over them is
    finite and small, but KL(q || p) is infinite: the check says so, with the guide's mass
    outside from its cdf."""
    guide = {"name": "normal", "args": {"mean_init": 0.5, "sd_init": 0.1}}
    spec = fit_spec("normal", COIN, guide, 5e-4, 2000, data="coin_12_8")
    spec["stable_update"] = True
    fit, check = run_fit(workdir, spec, "coin.h5")
    mean, sd = float(fit["params"]["mean"][0]), float(fit["params"]["sd"][0])
    expected = special.ndtr(-mean / sd) + special.ndtr((mean - 1.0) / sd)
    mass = check["quality"]["mass_outside"]["latent_fairness"]
    assert mass.shape == (1,)
    assert mass[0] == pytest.approx(expected, rel=1e-3)
    assert 1e-7 < mass[0] < 1e-3  # tiny: no draw of a few thousand falls outside
    assert np.isfinite(check["quality"]["kl"]).all()
    wider = [r for r in check.attrs["reasons"] if r.startswith("latent_fairness: the guide's support")]
    assert len(wider) == 1
    assert "the real line" in wider[0] and "(0, 1)" in wider[0]
    assert "KL(q || p) is infinite" in wider[0] and f"{mass[0]:.2g}" in wider[0]
    # the Beta guide's support is the posterior's: nothing of the kind
    spec = fit_spec("beta_short", COIN, BETA_GUIDE, 5e-4, 200, data="coin_12_8")
    _, check = run_fit(workdir, spec, "coin.h5")
    assert dict(check["quality"].get("mass_outside", {})) == {}
    assert not any("support" in r for r in check.attrs["reasons"])


def test_the_iterate_average_is_closer_to_the_exact_posterior_than_the_last_iterate(workdir):
    """The Beta guide at a constant step size of 0.05 jitters around Beta(13, 9): the fit
    reports the average of its stationary window's iterates, which is closer to the exact
    posterior (in KL) than the last iterate, kept beside it; the predictive draws use it."""
    spec = fit_spec("jitter", COIN, BETA_GUIDE, 0.05, 10_000, seeds=(2, 3), data="coin_12_8")
    fit, check = run_fit(workdir, spec, "coin.h5")
    assert check.attrs["verdict"] == CONVERGED, check.attrs["sentence"]
    stop = fit.attrs["stop"]
    assert stop["averaged"] == [True, True]
    averaged = [kl_to_exact(fit["params"]["alpha_q"][i], fit["params"]["beta_q"][i]) for i in range(2)]
    last = [kl_to_exact(fit["last_params"]["alpha_q"][i], fit["last_params"]["beta_q"][i]) for i in range(2)]
    assert all(a < b for a, b in zip(averaged, last)), (averaged, last)
    assert max(averaged) < 0.005  # and close in absolute terms
    # the window the average is over is the rule's: the last 20 % of the steps
    assert [w["start_step"] for w in stop["windows"]] == [8010, 8010]


def kl_to_exact(alpha, beta, a=13.0, b=9.0):
    """KL(Beta(alpha, beta) || Beta(a, b)) in closed form."""
    alpha, beta = float(alpha), float(beta)
    return (
        special.betaln(a, b)
        - special.betaln(alpha, beta)
        + (alpha - a) * special.digamma(alpha)
        + (beta - b) * special.digamma(beta)
        + (a - alpha + b - beta) * special.digamma(alpha + beta)
    )


def test_a_step_budget_stops_when_done_at_the_same_step_on_a_rerun(workdir):
    """steps {min, max}: the fit stops at the first chunk where the rule holds, lowering the
    step size on the way; the fit file says why it stopped; a rerun stops at the same step
    with the same numbers, bit for bit."""
    spec = fit_spec("budget", COIN, BETA_GUIDE, 0.05, {"min": 2000, "max": 100_000}, data="coin_12_8")
    fit, check = run_fit(workdir, spec, "coin.h5")
    stop = fit.attrs["stop"]
    assert stop["mode"] == "budget" and stop["steps_run"] < 100_000
    assert stop["reason"] == (
        f"converged: the rule held at step {stop['steps_run']}, and halving "
        "the step size moved no guide mean by 0.1 sd or more"
    )
    # every seed was confirmed at a lowered step size: at least one halving, and the last one
    # moved the settled guide by less than the rule's tolerance
    assert stop["confirmed"] == [True] and len(stop["decays"]) >= 1
    assert stop["levels"][0][-1]["shift"] < 0.1
    assert fit["losses"].shape == (1, stop["steps_run"])
    assert check.attrs["verdict"] == CONVERGED, check.attrs["sentence"]
    assert stop["reason"] in check.attrs["sentence"]
    assert kl_to_exact(fit["params"]["alpha_q"][0], fit["params"]["beta_q"][0]) < 0.005
    again_spec = {**spec, "name": "budget_again"}
    again, _ = run_fit(workdir, again_spec, "coin.h5")
    assert again.attrs["stop"]["steps_run"] == stop["steps_run"]
    assert again.attrs["stop"]["decays"] == stop["decays"]
    np.testing.assert_array_equal(again["losses"], fit["losses"])
    for name in ("alpha_q", "beta_q"):
        np.testing.assert_array_equal(again["params"][name], fit["params"][name])


def test_a_budget_that_runs_out_says_so(workdir):
    """A budget too small for the rule: not converged, and the reason says the budget ran out."""
    spec = fit_spec("short_budget", COIN, BETA_GUIDE, 5e-4, {"min": 200, "max": 400}, data="coin_12_8")
    fit, check = run_fit(workdir, spec, "coin.h5")
    assert fit.attrs["stop"]["reason"] == "the budget of 400 steps ran out before the rule held"
    assert check.attrs["verdict"] == NOT_CONVERGED
    assert "budget ran out" in check.attrs["problems"]
    assert "raise steps.max" in check.attrs["sentence"]


class _Check(dict):
    """A check's numbers as the report reads them (``sviflow.h5io.read_artifact`` gives the
    file's groups as a dict and its attributes as ``attrs``)."""

    def __init__(self, khat, verdict=NOT_CONVERGED):
        super().__init__(quality={"khat": np.array(khat)})
        self.attrs = {
            "verdict": verdict,
            "reasons": ["k-hat"],
            "problems": [],
            "khat_limit": 0.7,
            "stop": {"reason": "fixed number of steps (10)", "steps_run": 10},
        }


def test_the_verdict_table_shows_an_infinite_khat_as_infinite_and_a_missing_one_as_na():
    """PSIS k-hat is infinite when the weights' tail cannot be fitted (a weight of +inf, fewer
    than 5 draws in the tail): the table says so, with the limit, and keeps "n/a" for a check
    without k-hat."""
    from sviflow.verdicts import verdict_table

    table = verdict_table(["a", "b", "c"], [_Check([0.2, math.inf]), _Check([0.31]), _Check([math.nan])])
    cells = [row.split("</td>")[3] for row in table.split("<tr data-fit=")[1:]]
    assert "&infin; (limit 0.7)" in cells[0], cells[0]
    assert "0.31 (limit 0.7)" in cells[1], cells[1]
    assert cells[2].endswith("n/a"), cells[2]
