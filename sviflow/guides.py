"""The post's hand-written guides, as factories, and NumPyro's autoguides by class name.

A factory takes the guide's settings (initial values, the site it covers) and returns a guide
function that accepts the model's arguments, as NumPyro requires.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def beta_guide(site: str = "latent_fairness", alpha_init: float = 10.0, beta_init: float = 10.0):
    """Beta(alpha_q, beta_q) over one site in (0, 1); the post initialises both at 10."""

    def guide(*args, **kwargs):
        alpha_q = numpyro.param("alpha_q", float(alpha_init), constraint=constraints.positive)
        beta_q = numpyro.param("beta_q", float(beta_init), constraint=constraints.positive)
        numpyro.sample(site, dist.Beta(alpha_q, beta_q))

    return guide


def normal_guide(
    site: str = "latent_fairness",
    mean_init: float = 0.5,
    sd_init: float = 0.1,
    mean_constraint: str = "unit_interval",
):
    """Normal(mean, sd); the post keeps the mean in (0, 1) and names the sd ``var``."""
    mean_support = {"unit_interval": constraints.unit_interval, "real": constraints.real}[mean_constraint]

    def guide(*args, **kwargs):
        mean = numpyro.param("mean", float(mean_init), constraint=mean_support)
        sd = numpyro.param("sd", float(sd_init), constraint=constraints.positive)
        numpyro.sample(site, dist.Normal(mean, sd))

    return guide


def mixture_2d_guide(
    sites=("x", "y"),
    b_init: float = 1.0,
    sig1_init: float = 1.0,
    sig2_init: float = 1.0,
    theta_init: float = 0.0,
    learn_weight: bool = False,
    weight_init: float = 0.5,
):
    """The post's two-mode guide: a mixture of two Normals at +-b along u1, a Normal along u2,
    rotated by theta; x and y are Delta sites of the auxiliary u1, u2.

    With ``learn_weight`` the weight of the +b mode is a parameter in (0, 1), as the post
    suggests; otherwise both modes weigh 0.5.
    """
    x_site, y_site = sites

    def guide(*args, **kwargs):
        sig1_q = numpyro.param("sig1_q", float(sig1_init), constraint=constraints.positive)
        sig2_q = numpyro.param("sig2_q", float(sig2_init), constraint=constraints.positive)
        b = numpyro.param("b", float(b_init), constraint=constraints.positive)
        theta = numpyro.param(
            "theta", float(theta_init), constraint=constraints.interval(-math.pi / 2, math.pi / 2)
        )
        if learn_weight:
            weight = numpyro.param("weight", float(weight_init), constraint=constraints.unit_interval)
            weights = jnp.stack([weight, 1.0 - weight])
        else:
            weights = jnp.array([0.5, 0.5])
        modes = dist.MixtureGeneral(
            dist.Categorical(weights),
            [dist.Normal(loc=b, scale=sig1_q), dist.Normal(loc=-b, scale=sig1_q)],
        )
        u1 = numpyro.sample("u1", modes, infer={"is_auxiliary": True})
        u2 = numpyro.sample("u2", dist.Normal(0.0, sig2_q), infer={"is_auxiliary": True})
        c, s = jnp.cos(theta), jnp.sin(theta)
        numpyro.sample(x_site, dist.Delta(c * u1 - s * u2))
        numpyro.sample(y_site, dist.Delta(c * u2 + s * u1))

    return guide


BUILTIN_GUIDES = {
    "beta": beta_guide,
    "normal": normal_guide,
    "mixture_2d": mixture_2d_guide,
}


def autoguide_names() -> list[str]:
    """Every concrete autoguide class of ``numpyro.infer.autoguide``."""
    import inspect

    from numpyro.infer import autoguide

    return sorted(
        name
        for name, obj in vars(autoguide).items()
        if inspect.isclass(obj)
        and issubclass(obj, autoguide.AutoGuide)
        and name.startswith("Auto")
        and not inspect.isabstract(obj)
        and name not in ("AutoGuide", "AutoContinuous")
    )


def init_strategy(name: str, **kwargs):
    """``init_loc_fn`` by name: init_to_median, init_to_mean, init_to_sample, init_to_uniform,
    init_to_feasible, init_to_value (with ``values``)."""
    from numpyro.infer import initialization

    valid = sorted(n for n in dir(initialization) if n.startswith("init_to_"))
    if name not in valid:
        raise ValueError(f"unknown init_loc_fn {name!r}; valid: {', '.join(valid)}")
    return getattr(initialization, name)(**kwargs)
