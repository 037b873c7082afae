"""The post's models, written as plain NumPyro functions.

A model takes its data as keyword arguments (``obs=None`` means "predict") and its fixed
settings as further keyword arguments that the config binds (``models.<name>.args``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from sviflow.truth import correlated_gaussian_2d_covariance  # noqa: F401  (numpy: the check uses it)


def coin_flips(obs=None, num_flips: int = 10, prior_alpha: float = 1.0, prior_beta: float = 1.0):
    """Coin flips with unknown fairness ``latent_fairness``.

    The prior is Beta(prior_alpha, prior_beta); the default Beta(1, 1) is the post's
    Uniform(0, 1). With ``obs=None`` the model simulates ``num_flips`` flips (the post's 10).
    """
    if prior_alpha == 1.0 and prior_beta == 1.0:
        prior = dist.Uniform(0.0, 1.0)
    else:
        prior = dist.Beta(prior_alpha, prior_beta)
    fairness = numpyro.sample("latent_fairness", prior)
    with numpyro.plate("N", obs.shape[0] if obs is not None else num_flips):
        numpyro.sample("obs", dist.Bernoulli(fairness), obs=obs)


def multimodal_log_density(x, y, b: float = 5.0, sig1: float = 0.5, sig2: float = 2.0):
    """The post's unnormalised 2-D target: two Gaussian modes at +-b along (x+y)/sqrt2,
    Cauchy-like along (x-y)/sqrt2."""
    sqrt2 = math.sqrt(2.0)
    u1 = (x + y) / sqrt2
    u2 = (x - y) / sqrt2
    # logaddexp instead of log(exp + exp): the same function, without underflow far from the modes
    log_modes = jnp.logaddexp(-0.5 * ((u1 - b) / sig1) ** 2, -0.5 * ((u1 + b) / sig1) ** 2)
    return log_modes - jnp.log1p((u2 / sig2) ** 2 / 2.0)


def multimodal_2d(b: float = 5.0, sig1: float = 0.5, sig2: float = 2.0, half_width: float = 20.0):
    """The post's multimodal target: x, y ~ Uniform(-half_width, half_width) times a factor."""
    x = numpyro.sample("x", dist.Uniform(-half_width, half_width))
    y = numpyro.sample("y", dist.Uniform(-half_width, half_width))
    numpyro.factor("logfac", multimodal_log_density(x, y, b, sig1, sig2))


def correlated_log_density(x, y, sig1: float = 1.0, sig2: float = 3.0, theta_deg: float = 45.0):
    """The post's correlated Gaussian: sd sig1 along (cos t, -sin t), sig2 along (sin t, cos t)."""
    theta = math.radians(theta_deg)
    c, s = math.cos(theta), math.sin(theta)
    return -0.5 * (((c * x - s * y) / sig1) ** 2 + ((s * x + c * y) / sig2) ** 2)


def correlated_gaussian_2d(sig1: float = 1.0, sig2: float = 3.0, theta_deg: float = 45.0):
    """The post's autoguide target: improper flat prior on x, y times a rotated Gaussian factor."""
    x = numpyro.sample("x", dist.ImproperUniform(constraints.real, (), ()))
    y = numpyro.sample("y", dist.ImproperUniform(constraints.real, (), ()))
    numpyro.factor("logfac", correlated_log_density(x, y, sig1, sig2, theta_deg))


BUILTIN_MODELS = {
    "coin_flips": coin_flips,
    "multimodal_2d": multimodal_2d,
    "correlated_gaussian_2d": correlated_gaussian_2d,
}
