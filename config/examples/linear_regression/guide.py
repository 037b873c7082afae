"""A hand-written guide for ``model.py:linear_regression``: the model's three latent sample
sites, each with its own variational parameters (``numpyro.param``, constrained where they must
be positive). It is the mean-field family AutoNormal builds, written out: intercept and slope
Normal, sigma LogNormal (positive, as the model's HalfNormal prior requires).
"""

import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def regression_guide(x, y=None):
    """q(intercept) q(slope) q(sigma); it takes the model's arguments, as NumPyro requires."""
    intercept_loc = numpyro.param("intercept_loc", 0.0)
    intercept_scale = numpyro.param("intercept_scale", 0.1, constraint=constraints.positive)
    slope_loc = numpyro.param("slope_loc", 0.0)
    slope_scale = numpyro.param("slope_scale", 0.1, constraint=constraints.positive)
    sigma_loc = numpyro.param("sigma_loc", 0.0)
    sigma_scale = numpyro.param("sigma_scale", 0.1, constraint=constraints.positive)

    numpyro.sample("intercept", dist.Normal(intercept_loc, intercept_scale))
    numpyro.sample("slope", dist.Normal(slope_loc, slope_scale))
    numpyro.sample("sigma", dist.LogNormal(sigma_loc, sigma_scale))
