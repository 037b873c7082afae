"""Truth tables: a fit's numbers beside the exact answers of the post's experiments.

- coin model: the guide's mean and sd against the exact posterior Beta(A + 1, B + 1) (and, for the
  Beta guide, alpha_q and beta_q against A + 1 and B + 1);
- correlated 2-D Gaussian with AutoMultivariateNormal: the covariance L L^T recovered from
  ``auto_scale_tril``, its principal sds and the angle of its major axis, against the target's;
- multimodal target with the two-mode mixture guide: b, sig1, sig2, theta against the target's
  (along u2 the target is Cauchy-like: its sig2 is a scale, not an sd).
"""

from __future__ import annotations

import math

import numpy as np


def correlated_gaussian_2d_covariance(sig1: float = 1.0, sig2: float = 3.0, theta_deg: float = 45.0):
    """Exact covariance of :func:`sviflow.models.correlated_gaussian_2d`'s target (numpy, 2x2)."""
    theta = math.radians(theta_deg)
    c, s = math.cos(theta), math.sin(theta)
    axes = np.array([[c, s], [-s, c]])  # columns: the sig1 axis (c, -s), the sig2 axis (s, c)
    return axes @ np.diag([sig1**2, sig2**2]) @ axes.T


def covariance_axes(covariance: np.ndarray) -> tuple[float, float, float]:
    """-> (minor sd, major sd, angle of the major axis in degrees, in (-90, 90])."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
    major = vectors[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    if angle <= -90:
        angle += 180
    elif angle > 90:
        angle -= 180
    return math.sqrt(max(values[0], 0.0)), math.sqrt(max(values[1], 0.0)), angle


def _row(quantity, target, fit, note=""):
    target, fit = float(target), float(fit)
    return {"quantity": quantity, "target": target, "fit": fit, "error": fit - target, "note": note}


def truth_table(
    model_function: str,
    model_args: dict,
    guide_name: str,
    params: dict,
    reference: dict | None,
    guide_draws: dict,
) -> list[dict]:
    """Rows of {quantity, target, fit, error, note}; ``params`` are (seed, ...) arrays and the
    fit column is their mean over seeds."""
    mean_over_seeds = {k: np.mean(np.asarray(v, dtype=np.float64), axis=0) for k, v in params.items()}
    rows = []
    if model_function == "coin_flips" and reference is not None and "exact" in reference:
        exact = reference["exact"]
        a, b = float(exact["alpha"]), float(exact["beta"])
        site = "latent_fairness"
        draws = np.asarray(guide_draws[site], dtype=np.float64)
        rows.append(_row("posterior mean", a / (a + b), draws.mean(), "exact Beta(A+1, B+1)"))
        rows.append(
            _row(
                "posterior sd",
                math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))),
                draws.std(),
                "exact Beta(A+1, B+1)",
            )
        )
        if guide_name == "beta":
            rows.append(_row("alpha_q", a, mean_over_seeds["alpha_q"], "= A + 1"))
            rows.append(_row("beta_q", b, mean_over_seeds["beta_q"], "= B + 1"))
        if guide_name == "normal":
            rows.append(_row("mean", a / (a + b), mean_over_seeds["mean"], "exact posterior mean"))
            rows.append(
                _row(
                    "sd",
                    math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))),
                    mean_over_seeds["sd"],
                    "exact posterior sd",
                )
            )
    elif model_function == "correlated_gaussian_2d" and "auto_scale_tril" in params:
        args = {"sig1": 1.0, "sig2": 3.0, "theta_deg": 45.0, **(model_args or {})}
        target = correlated_gaussian_2d_covariance(**args)
        tril = np.asarray(params["auto_scale_tril"], dtype=np.float64)
        fitted = np.mean(tril @ np.swapaxes(tril, -1, -2), axis=0)  # L L^T, the covariance
        for i, j in ((0, 0), (0, 1), (1, 1)):
            rows.append(_row(f"covariance[{i},{j}]", target[i, j], fitted[i, j], "L L^T of auto_scale_tril"))
        t_minor, t_major, t_angle = covariance_axes(target)
        f_minor, f_major, f_angle = covariance_axes(fitted)
        rows.append(_row("sigma1 (minor sd)", t_minor, f_minor))
        rows.append(_row("sigma2 (major sd)", t_major, f_major))
        rows.append(_row("angle of major axis (deg)", t_angle, f_angle))
    elif model_function == "multimodal_2d" and "b" in params:
        args = {"b": 5.0, "sig1": 0.5, "sig2": 2.0, **(model_args or {})}
        rows.append(_row("b (mode offset)", args["b"], mean_over_seeds["b"]))
        rows.append(_row("sig1 (mode sd)", args["sig1"], mean_over_seeds["sig1_q"]))
        rows.append(
            _row(
                "sig2",
                args["sig2"],
                mean_over_seeds["sig2_q"],
                "target is Cauchy-like along u2: a scale, not an sd",
            )
        )
        rows.append(_row("theta (deg)", 45.0, math.degrees(mean_over_seeds["theta"])))
        if reference is not None and "split" in reference:
            # the same plane as the reference's: through its mean, orthogonal to the direction
            sites = ("x", "y")
            mean = np.array([float(reference["moments"]["mean"][s]) for s in sites])
            points = np.stack([np.asarray(guide_draws[s], dtype=np.float64) for s in sites], axis=1)
            side = (points - mean) @ np.asarray(reference["split"]["direction"], dtype=np.float64) > 0
            rows.append(
                _row(
                    "mass on the positive side (one mode)",
                    reference["split"]["mass_positive"],
                    float(np.mean(side)),
                    "grid quadrature",
                )
            )
    return rows
