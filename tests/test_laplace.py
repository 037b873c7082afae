"""The Laplace start (sviflow.laplace) on a badly scaled regression whose posterior is known in
closed form: y = a + b x + N(0, 1) noise with x about 100 (uncentred, as kidiq's mom_iq), so
the intercept sits far from zero and is correlated -0.99 with the slope, whose sd is 0.007.

From the guide's own start, Adam needs thousands of steps to carry the intercept out to 25
and a step far below the one that got there to resolve the slope; the Laplace start is the
exact posterior here (it is Gaussian), and a step budget from there ends on it."""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal

from sviflow.engine import fit_svi
from sviflow.laplace import laplace_init
from sviflow.optim import make_optimizer
from sviflow.resolve import prepare_guide

RNG = np.random.default_rng(0)
X = (100 + 15 * RNG.standard_normal(60)).astype(np.float32)
Y = (25.0 + 0.6 * X + RNG.standard_normal(60)).astype(np.float32)
PRIOR_SD = 100.0


def regression(x, y=None):
    a = numpyro.sample("a", dist.Normal(0.0, PRIOR_SD))
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(a + b * x, 1.0), obs=y)


def exact_posterior():
    """Conjugate: precision = X'X + I / prior_sd^2, mean = precision^-1 X'y."""
    design = np.stack([np.ones_like(X), X], axis=1).astype(np.float64)
    precision = design.T @ design + np.eye(2) / PRIOR_SD**2
    covariance = np.linalg.inv(precision)
    return covariance @ design.T @ Y.astype(np.float64), covariance


KWARGS = {"x": X, "y": Y}


def prepared(guide_class):
    guide = guide_class(regression)
    prepare_guide(regression, guide, KWARGS, where="test")
    return guide


def test_the_laplace_start_of_a_gaussian_posterior_is_the_posterior():
    mean, covariance = exact_posterior()
    guide = prepared(AutoMultivariateNormal)
    params, smallest = laplace_init(regression, guide, KWARGS)
    np.testing.assert_allclose(np.asarray(params["auto_loc"]), mean, rtol=2e-3)
    tril = np.asarray(params["auto_scale_tril"], np.float64)
    np.testing.assert_allclose(tril @ tril.T, covariance, rtol=0.05)
    # the narrowest principal axis of the covariance, which the full-covariance guide resolves
    assert smallest == pytest.approx(np.sqrt(np.linalg.eigvalsh(covariance).min()), rel=0.05)
    # mean-field and point guides: the marginal sds and the mode
    normal, _ = laplace_init(regression, prepared(AutoNormal), KWARGS)
    assert float(normal["a_auto_loc"]) == pytest.approx(mean[0], rel=2e-3)
    assert float(normal["b_auto_scale"]) == pytest.approx(np.sqrt(covariance[1, 1]), rel=0.05)
    _, narrowest = laplace_init(regression, prepared(AutoNormal), KWARGS)  # 1 / sqrt(H_bb)
    assert narrowest == pytest.approx(1 / np.sqrt(np.linalg.inv(covariance)[1, 1]), rel=0.05)
    delta, _ = laplace_init(regression, prepared(AutoDelta), KWARGS)
    assert float(delta["b_auto_loc"]) == pytest.approx(mean[1], rel=1e-3)


def fit(init: bool):
    guide = prepared(AutoMultivariateNormal)
    step_size, params = 0.05, None
    if init:
        params, smallest = laplace_init(regression, guide, KWARGS)
        step_size = min(step_size, 0.1 * smallest)
    svi = SVI(
        regression,
        guide,
        make_optimizer({"name": "Adam", "step_size": step_size}, adaptive=True),
        loss=Trace_ELBO(4),
    )
    result = fit_svi(
        svi,
        None,
        [1],
        KWARGS,
        latent_sites=["a", "b"],
        progress=False,
        budget={"min": 2000, "max": 20000},
        decay={"factor": 0.5, "max_decays": 10},
        init_params=params,
    )
    loc = np.asarray(result.params["auto_loc"][0], np.float64)
    tril = np.asarray(result.params["auto_scale_tril"][0], np.float64)
    return result, loc, np.sqrt(np.diag(tril @ tril.T))


def test_from_the_laplace_start_a_budget_ends_on_the_posterior():
    mean, covariance = exact_posterior()
    sd = np.sqrt(np.diag(covariance))
    result, loc, guide_sd = fit(init=True)
    assert np.all(np.abs(loc - mean) / sd < 0.3), (loc, mean, sd)
    assert np.all((0.8 < guide_sd / sd) & (guide_sd / sd < 1.25)), (guide_sd, sd)
    assert result.stop["reason"].startswith("converged")
    # it starts where it ends: the first trajectory point is already within 0.3 sd
    first = np.asarray(result.trajectory["auto_loc"][0, 0], np.float64)
    assert np.all(np.abs(first - mean) / sd < 0.3)
