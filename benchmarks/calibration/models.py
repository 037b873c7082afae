"""NumPyro ports of the calibration suite's posteriordb models, written by hand.

Every function here is a plain sviflow model: the dataset's arrays come in as keyword
arguments, the observed one (the response) is used as ``obs=`` and may be None, in which case
the model simulates it at the size of a covariate (or, where the model has no covariate, at the
size of a setting with the posteriordb data's size as its default). Sizes (N, K, T, J) are
taken from array shapes, never passed.

Each port keeps the Stan model's parameters, constraints and priors, with NumPyro site names
equal to the Stan names and vector parameters as one vector site (Stan ``beta[1..K]`` is the
site ``beta`` of shape (K,)). Stan's implicit flat priors are ``dist.ImproperUniform`` with the
parameter's support: the posterior is the same, but such a model cannot draw from its prior
(posterior predictive draws, which condition on the latent sites, work). Stan's transformed
parameters are ``numpyro.deterministic`` sites of the same name. Stan's "transformed data" is
computed here from the raw covariates; where the response itself is transformed (log weight,
log earnings) the data file holds the transformed response, since that is what is observed.

The Stan sources are in stan-dev/posteriordb, ``posterior_database/models/stan/<model>.stan``;
``suite.json`` names the posterior of each function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.distributions import constraints


def _float(x):
    """x as the default float type (float32, or float64 under jax_enable_x64); None stays None.

    sviflow's readers turn whole-number columns into int32 (scores, counts, 0/1 indicators)."""
    return None if x is None else jnp.asarray(x, dtype=jnp.result_type(float))


def _flat(shape=(), support=constraints.real):
    """Stan's implicit (improper) flat prior over ``support``, of event shape ``shape``."""
    return dist.ImproperUniform(support, (), tuple(shape))


def _normal_regression(name, mean, sigma, size, y):
    with numpyro.plate("obs", size):
        numpyro.sample(name, dist.Normal(mean, sigma), obs=_float(y))


# --------------------------------------------------------------------------- regressions


def kidscore_momiq(mom_iq, kid_score=None):
    """kidiq-kidscore_momiq: kid_score ~ Normal(beta[1] + beta[2] mom_iq, sigma); flat beta,
    sigma ~ half-Cauchy(0, 2.5). mom_iq is not centred (mean 100): beta[1] and beta[2] are
    correlated about -0.99."""
    mom_iq = _float(mom_iq)
    beta = numpyro.sample("beta", _flat((2,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    _normal_regression("kid_score", beta[0] + beta[1] * mom_iq, sigma, mom_iq.shape[0], kid_score)


def kidscore_interaction(mom_iq, mom_hs, kid_score=None):
    """kidiq-kidscore_interaction: kid_score ~ Normal(beta[1] + beta[2] mom_hs + beta[3] mom_iq
    + beta[4] mom_hs mom_iq, sigma); flat beta, sigma ~ half-Cauchy(0, 2.5)."""
    mom_iq, mom_hs = _float(mom_iq), _float(mom_hs)
    inter = mom_hs * mom_iq
    beta = numpyro.sample("beta", _flat((4,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    mean = beta[0] + beta[1] * mom_hs + beta[2] * mom_iq + beta[3] * inter
    _normal_regression("kid_score", mean, sigma, mom_iq.shape[0], kid_score)


def kilpisjarvi(x, y=None, pmualpha=9.31290322580645, psalpha=100.0, pmubeta=0.0, psbeta=0.0333333333333333):
    """kilpisjarvi_mod-kilpisjarvi: y ~ Normal(alpha + beta x, sigma) with x the year shifted by
    +2000 (3952..4013), alpha ~ Normal(pmualpha, psalpha), beta ~ Normal(pmubeta, psbeta), flat
    sigma > 0. The prior settings are posteriordb's data values (defaults here, since they are
    scalars, not columns). alpha and beta are correlated about -0.99999."""
    x = _float(x)
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", _flat((), constraints.positive))
    _normal_regression("y", alpha + beta * x, sigma, x.shape[0], y)


def earn_height(height, earn=None):
    """earnings-earn_height: earn ~ Normal(beta[1] + beta[2] height, sigma), all flat (sigma > 0).
    Earnings in dollars: beta[1] about -6e4, sigma about 2e4."""
    height = _float(height)
    beta = numpyro.sample("beta", _flat((2,)))
    sigma = numpyro.sample("sigma", _flat((), constraints.positive))
    _normal_regression("earn", beta[0] + beta[1] * height, sigma, height.shape[0], earn)


def logearn_height(height, log_earn=None):
    """earnings-logearn_height: log_earn ~ Normal(beta[1] + beta[2] height, sigma), all flat
    (sigma > 0). log_earn = log(earn) is the Stan model's transformed data, stored as such."""
    height = _float(height)
    beta = numpyro.sample("beta", _flat((2,)))
    sigma = numpyro.sample("sigma", _flat((), constraints.positive))
    _normal_regression("log_earn", beta[0] + beta[1] * height, sigma, height.shape[0], log_earn)


def logmesquite_logvolume(diam1, diam2, canopy_height, log_weight=None):
    """mesquite-logmesquite_logvolume: log_weight ~ Normal(beta[1] + beta[2]
    log(diam1 diam2 canopy_height), sigma), all flat (sigma > 0)."""
    diam1, diam2, canopy_height = _float(diam1), _float(diam2), _float(canopy_height)
    log_canopy_volume = jnp.log(diam1 * diam2 * canopy_height)
    beta = numpyro.sample("beta", _flat((2,)))
    sigma = numpyro.sample("sigma", _flat((), constraints.positive))
    _normal_regression("log_weight", beta[0] + beta[1] * log_canopy_volume, sigma, diam1.shape[0], log_weight)


def nes(real_ideo, race_adj, age_discrete, educ1, gender, income, partyid7=None):
    """nes1976-nes: partyid7 ~ Normal(beta[1] + beta[2] real_ideo + beta[3] race_adj
    + beta[4..6] (age category 2, 3, 4 indicators) + beta[7] educ1 + beta[8] gender
    + beta[9] income, sigma), all flat (sigma > 0)."""
    real_ideo, race_adj, educ1 = _float(real_ideo), _float(race_adj), _float(educ1)
    gender, income = _float(gender), _float(income)
    age = jnp.asarray(age_discrete)
    age30_44, age45_64, age65up = (_float(age == k) for k in (2, 3, 4))
    beta = numpyro.sample("beta", _flat((9,)))
    sigma = numpyro.sample("sigma", _flat((), constraints.positive))
    mean = (
        beta[0]
        + beta[1] * real_ideo
        + beta[2] * race_adj
        + beta[3] * age30_44
        + beta[4] * age45_64
        + beta[5] * age65up
        + beta[6] * educ1
        + beta[7] * gender
        + beta[8] * income
    )
    _normal_regression("partyid7", mean, sigma, real_ideo.shape[0], partyid7)


def blr(X, y=None):
    """sblrc-blr: y ~ Normal(X beta, sigma), beta ~ Normal(0, 10), sigma ~ half-Normal(0, 10).
    The columns of X have sd about 100: the posterior sds of beta are about 0.001, with
    correlation 0.8 between the betas."""
    X = _float(X)
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    _normal_regression("y", X @ beta, sigma, X.shape[0], y)


# --------------------------------------------------------------------------- time series


def arK(y_init, time, y=None):
    """arK-arK: y[t] ~ Normal(alpha + sum_k beta[k] y[t-k], sigma) for t = K+1..T, given the
    first K values ``y_init`` (K = len(y_init), 5 here); alpha ~ Normal(0, 10),
    beta ~ Normal(0, 10), sigma ~ half-Cauchy(0, 2.5). ``y`` holds y[K+1..T], ``time`` their
    time indices (K+1..T), which size the simulation when y is None."""
    y_init = _float(y_init)
    K, n = y_init.shape[0], jnp.shape(time)[0]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    if y is not None:
        series = jnp.concatenate([y_init, _float(y)])
        # lags[t, k] = y[t - k - 1] for the n modelled steps
        lags = jnp.stack([series[K - 1 - k : K - 1 - k + n] for k in range(K)], axis=-1)
        with numpyro.plate("time", n):
            numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=_float(y))
        return

    def step(history, _):  # history[k] = y[t - k - 1]
        value = numpyro.sample("y", dist.Normal(alpha + history @ beta, sigma))
        return jnp.concatenate([value[None], history[:-1]]), value

    scan(step, y_init[::-1], None, length=n)


def garch11(time, y=None, sigma1=0.5):
    """garch-garch11: y[t] ~ Normal(mu, sigma[t]), sigma[1] = sigma1 (0.5, posteriordb's data),
    sigma[t]^2 = alpha0 + alpha1 (y[t-1] - mu)^2 + beta1 sigma[t-1]^2. Flat priors on mu (real),
    alpha0 > 0, alpha1 in (0, 1) and beta1 in (0, 1 - alpha1): one flat density on that
    triangle. ``time`` (1..T) sizes the simulation when y is None.

    beta1's bound depends on alpha1. NumPyro's NUTS handles such a support, but its reported
    draws of beta1 are wrong when the support object is wrapped (ImproperUniform), and
    AutoNormal-style guides always transform with the bound of their prototype trace. So, as
    Stan does internally, the port samples ``beta1_unit`` flat on (0, 1) and sets the
    deterministic ``beta1 = (1 - alpha1) beta1_unit``, with the Jacobian log(1 - alpha1) as a
    factor: the joint density of (alpha1, beta1) is flat on the triangle, as in Stan."""
    n = jnp.shape(time)[0]
    mu = numpyro.sample("mu", _flat())
    alpha0 = numpyro.sample("alpha0", _flat((), constraints.positive))
    alpha1 = numpyro.sample("alpha1", dist.Uniform(0.0, 1.0))  # flat on (0, 1): density 1
    beta1_unit = numpyro.sample("beta1_unit", dist.Uniform(0.0, 1.0))
    beta1 = numpyro.deterministic("beta1", (1.0 - alpha1) * beta1_unit)
    numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))  # d beta1 / d beta1_unit = 1 - alpha1
    var1 = jnp.square(_float(sigma1))
    if y is not None:
        y = _float(y)

        def recurse(var, y_prev):
            var = alpha0 + alpha1 * jnp.square(y_prev - mu) + beta1 * var
            return var, var

        _, later = jax.lax.scan(recurse, var1, y[:-1])
        scale = jnp.sqrt(jnp.concatenate([var1[None], later]))
        with numpyro.plate("time", n):
            numpyro.sample("y", dist.Normal(mu, scale), obs=y)
        return

    def step(var, _):  # var: this step's variance
        value = numpyro.sample("y", dist.Normal(mu, jnp.sqrt(var)))
        return alpha0 + alpha1 * jnp.square(value - mu) + beta1 * var, value

    scan(step, var1, None, length=n)


def arma11(time, y=None):
    """arma-arma11: y[t] = mu + phi y[t-1] + theta err[t-1] + err[t], err ~ Normal(0, sigma),
    with y[0] := mu and err[0] := 0 (Stan: nu[1] = mu + phi mu); mu ~ Normal(0, 10),
    phi ~ Normal(0, 2), theta ~ Normal(0, 2), sigma ~ half-Cauchy(0, 2.5). Stan writes the
    likelihood as err ~ Normal(0, sigma), the same density as y[t] ~ Normal(nu[t], sigma).
    ``time`` (1..T) sizes the simulation when y is None.

    With |theta| > 1 the error recursion explodes (1e60 after 200 steps: inf in float32, as in
    Stan, which rejects such a point); the likelihood skips NumPyro's argument validation so that
    this is a -inf or NaN log density (NUTS then draws another initial point) rather than an
    exception."""
    n = jnp.shape(time)[0]
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    if y is not None:
        y = _float(y)
        y_prev = jnp.concatenate([mu[None], y[:-1]])
        base = mu + phi * y_prev  # nu[t] without the moving-average term

        def recurse(err_prev, inputs):
            y_t, base_t = inputs
            nu_t = base_t + theta * err_prev
            return y_t - nu_t, nu_t

        _, nu = jax.lax.scan(recurse, jnp.zeros_like(mu), (y, base))
        with numpyro.plate("time", n):
            numpyro.sample("y", dist.Normal(nu, sigma, validate_args=False), obs=y)
        return

    def step(carry, _):
        y_prev, err_prev = carry
        nu_t = mu + phi * y_prev + theta * err_prev
        value = numpyro.sample("y", dist.Normal(nu_t, sigma))
        return (value, value - nu_t), value

    scan(step, (mu, jnp.zeros_like(mu)), None, length=n)


# --------------------------------------------------------------------------- hierarchical


def eight_schools_noncentered(sigma, y=None):
    """eight_schools-eight_schools_noncentered: theta = mu + tau theta_trans, theta_trans ~
    Normal(0, 1), mu ~ Normal(0, 5), tau ~ half-Cauchy(0, 5), y ~ Normal(theta, sigma)."""
    sigma = _float(sigma)
    J = sigma.shape[0]
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([J]).to_event(1))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta = numpyro.deterministic("theta", theta_trans * tau + mu)
    with numpyro.plate("school", J):
        numpyro.sample("y", dist.Normal(theta, sigma), obs=_float(y))


# --------------------------------------------------------------------------- Gaussian processes


def _exp_quad_cov(x, alpha, rho):
    """Stan's gp_exp_quad_cov: alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2))."""
    d = x[:, None] - x[None, :]
    return jnp.square(alpha) * jnp.exp(-0.5 * jnp.square(d / rho))


def gp_regr(x, y=None):
    """gp_pois_regr-gp_regr: y ~ MultiNormal(0, K(x; alpha, rho) + sigma I) -- note sigma, not
    sigma^2, on the diagonal, as in the Stan model; rho ~ Gamma(25, 4) (rate 4),
    alpha ~ half-Normal(0, 2), sigma ~ half-Normal(0, 1)."""
    x = _float(x)
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    cov = _exp_quad_cov(x, alpha, rho) + sigma * jnp.eye(x.shape[0])
    numpyro.sample(
        "y",
        dist.MultivariateNormal(jnp.zeros(x.shape[0]), scale_tril=jnp.linalg.cholesky(cov)),
        obs=_float(y),
    )


def gp_pois_regr(x, k=None):
    """gp_pois_regr-gp_pois_regr: f = L f_tilde with L L^T = K(x; alpha, rho) + 1e-10 I,
    f_tilde ~ Normal(0, 1), rho ~ Gamma(25, 4), alpha ~ half-Normal(0, 2), k ~ Poisson(exp(f)).
    The 1e-10 jitter is Stan's: in float32 the Cholesky factor of this nearly singular matrix
    is NaN, so this port needs jax_enable_x64 (suite.json says x64: true)."""
    x = _float(x)
    n = x.shape[0]
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([n]).to_event(1))
    cov = _exp_quad_cov(x, alpha, rho) + 1e-10 * jnp.eye(n)
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    with numpyro.plate("obs", n):
        numpyro.sample("k", dist.Poisson(jnp.exp(f)), obs=k)


# --------------------------------------------------------------------------- mixture


def low_dim_gauss_mix(y=None, num_obs=1000):
    """low_dim_gauss_mix-low_dim_gauss_mix: y ~ theta Normal(mu[1], sigma[1])
    + (1 - theta) Normal(mu[2], sigma[2]) with mu ordered (mu[1] < mu[2]), mu ~ Normal(0, 2)
    elementwise (on the ordered set: an ordered-vector site with a flat base and the Normal
    density as a factor), sigma ~ half-Normal(0, 2), theta ~ Beta(5, 5). The model has no
    covariate: ``num_obs`` (posteriordb's N) sizes the simulation when y is None."""
    mu = numpyro.sample("mu", _flat((2,), constraints.ordered_vector))
    numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    weights = jnp.stack([theta, 1.0 - theta])
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=weights), dist.Normal(mu, sigma))
    with numpyro.plate("obs", y.shape[0] if y is not None else num_obs):
        numpyro.sample("y", mixture, obs=_float(y))
