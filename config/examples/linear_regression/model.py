"""A linear regression as a plain NumPyro model: the kind of model sviflow runs unchanged.

The workflow passes the dataset's columns as keyword arguments: ``x`` (a covariate, always
given) and ``y`` (observed: the data when fitting, None when drawing mock observations).
"""

import numpyro
import numpyro.distributions as dist


def linear_regression(x, y=None):
    """y ~ Normal(intercept + slope * x, sigma), weakly informative priors."""
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 10.0))
    slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(intercept + slope * x, sigma), obs=y)
