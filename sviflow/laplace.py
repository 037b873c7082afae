"""Start an autoguide at the Laplace approximation: the posterior's mode and curvature.

Adam moves each parameter by about its step size per step, whatever the posterior's scale: an
intercept at 25.9 or a coefficient at 6e4 takes thousands of steps to reach, and a posterior
sd of 0.001 needs a step size far below the one that got there. L-BFGS on the log density in
unconstrained space finds the mode in a few hundred iterations whatever the scales; the inverse
Hessian there is the Laplace approximation's covariance (Bishop 2006, 4.4; numpyro's
AutoLaplaceApproximation). Starting the guide there, SVI has only to refine it, with a step
size that the step budget lowers as it needs.

``laplace_init`` returns the guide's initial params (constrained values, as ``SVI.init``'s
``init_params`` takes them) for AutoMultivariateNormal, AutoLowRankMultivariateNormal,
AutoNormal and AutoDelta; None for any other guide, or where the mode is not found (then the
guide's own initialisation stands, and the log says why).
"""

from __future__ import annotations

import logging

import numpy as np

from sviflow.names import LAPLACE_GUIDES as GUIDES  # the guides it starts

log = logging.getLogger(__name__)


def laplace_init(model, guide, model_kwargs: dict, seed: int = 0, iterations: int = 500):
    """-> (the guide's initial params, the sd of the narrowest direction the guide must
    resolve, in unconstrained space), or (None, None) where there is no Laplace start."""
    import jax
    import optax
    from jax import lax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    kind = type(guide).__name__
    if kind not in GUIDES:
        return None, None
    info = initialize_model(jax.random.PRNGKey(seed), model, model_kwargs=model_kwargs)
    start, unravel = ravel_pytree(info.param_info.z)

    def potential(x):
        return info.potential_fn(unravel(x))

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(potential)

    def step(carry, _):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = solver.update(grad, state, x, value=value, grad=grad, value_fn=potential)
        return (optax.apply_updates(x, updates), state), value

    @jax.jit
    def solve(x0):
        (x, _), values = lax.scan(step, (x0, solver.init(x0)), None, length=iterations)
        return x, values, jax.hessian(potential)(x)

    mode, values, hessian = solve(start)
    mode, values = np.asarray(mode, np.float64), np.asarray(values, np.float64)
    hessian = np.asarray(hessian, np.float64)
    if not (np.all(np.isfinite(mode)) and np.all(np.isfinite(hessian)) and np.isfinite(values[-1])):
        log.warning(
            "Laplace start: the mode search ended at a non-finite point; the guide keeps "
            "its own initialisation"
        )
        return None, None
    hessian = (hessian + hessian.T) / 2
    eigenvalues, vectors = np.linalg.eigh(hessian)
    if eigenvalues.max() <= 0:
        log.warning(
            "Laplace start: the Hessian at the mode has no positive curvature; the guide "
            "keeps its own initialisation"
        )
        return None, None
    # a flat or saddle direction gets the flattest curvature seen (a cautious start, not a
    # claim); every positive one is kept, however small: a badly scaled posterior's widest
    # direction (an intercept's sd of 1e4) has a curvature 1e-12 of its narrowest's
    positive = eigenvalues > 0
    curvature = np.where(positive, eigenvalues, eigenvalues[positive].min())
    covariance = (vectors / curvature) @ vectors.T
    log.info(
        "Laplace start: mode found in %d L-BFGS iterations (potential %.6g -> %.6g), sds %s",
        iterations,
        values[0],
        values[-1],
        np.round(np.sqrt(np.diag(covariance)), 6).tolist()[:10],
    )
    sd = np.sqrt(np.diag(covariance))
    dtype = np.asarray(start).dtype
    # the narrowest direction the guide must resolve: for a full or low-rank covariance the
    # narrowest principal axis of the Laplace approximation, for a mean-field or point guide
    # the narrowest conditional sd (a mean-field Gaussian's sd at its optimum, 1 / sqrt(H_ii))
    if kind in ("AutoMultivariateNormal", "AutoLowRankMultivariateNormal"):
        narrowest = float(1.0 / np.sqrt(curvature.max()))
    else:
        narrowest = float(1.0 / np.sqrt(np.max(np.diag(hessian))))
    return _params(kind, guide, info, unravel, start, mode, covariance, sd, dtype), narrowest


def _params(kind, guide, info, unravel, start, mode, covariance, sd, dtype) -> dict:
    import jax.numpy as jnp

    def as_array(value):
        return jnp.asarray(value, dtype=dtype)

    if kind in ("AutoMultivariateNormal", "AutoLowRankMultivariateNormal"):
        # the guide's latent vector is its own ravel of the sites: map the mode into it
        latent = _guide_latent(guide, unravel(jnp.asarray(mode, dtype)), dtype)
        order = _guide_order(guide, unravel, start.shape[0])
        cov = covariance[np.ix_(order, order)]
        if kind == "AutoMultivariateNormal":
            return {
                f"{guide.prefix}_loc": latent,
                f"{guide.prefix}_scale_tril": as_array(np.linalg.cholesky(cov)),
            }
        rank = guide.rank if guide.rank is not None else max(1, int(round(np.sqrt(len(cov)))))
        values_, vectors_ = np.linalg.eigh(cov)
        top = np.argsort(values_)[::-1][:rank]
        factor = vectors_[:, top] * np.sqrt(np.maximum(values_[top], 0.0)) * 0.9
        residual = np.maximum(np.diag(cov) - (factor**2).sum(axis=1), 0.01 * np.diag(cov))
        return {
            f"{guide.prefix}_loc": latent,
            f"{guide.prefix}_cov_factor": as_array(factor),
            f"{guide.prefix}_scale": as_array(np.sqrt(residual)),
        }
    sites_mode, sites_sd = unravel(jnp.asarray(mode, dtype)), unravel(jnp.asarray(sd, dtype))
    if kind == "AutoNormal":
        params = {}
        for name in sites_mode:
            params[f"{name}_{guide.prefix}_loc"] = sites_mode[name]
            params[f"{name}_{guide.prefix}_scale"] = sites_sd[name]
        return params
    constrained = info.postprocess_fn(sites_mode)  # AutoDelta: the mode, constrained
    return {f"{name}_{guide.prefix}_loc": constrained[name] for name in sites_mode}


def _guide_latent(guide, unconstrained: dict, dtype):
    """The guide's flattened latent vector of these unconstrained site values."""
    import jax.numpy as jnp
    from numpyro.infer.autoguide import _ravel_dict

    ordered = {name: unconstrained[name] for name in guide._init_locs}
    return jnp.asarray(_ravel_dict(ordered)[0], dtype=dtype)


def _guide_order(guide, unravel, size: int) -> np.ndarray:
    """index[i]: the position in ravel_pytree's vector of the guide's latent component i."""
    import jax.numpy as jnp

    positions = unravel(jnp.arange(size, dtype=jnp.float32))
    return np.asarray(_guide_latent(guide, positions, jnp.float32)).astype(int)
