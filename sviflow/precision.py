"""Floating-point precision of a model's JAX jobs (config key ``precision``).

JAX computes in float32 unless ``jax_enable_x64`` is on. Some models need float64: a Gaussian
process whose kernel matrix is too ill-conditioned for a float32 Cholesky (NaN from the first
step), a likelihood whose terms overflow float32 (exp above 88.7), a posterior whose scales
differ by more than float32's 7 digits. ``precision: float64`` under ``models.<name>`` (or
``engine.precision`` for every model) runs every JAX job of that model, fit, predict and
reference, with x64 on; ``workflow/rules/common.smk`` puts the resolved value into the model's
config slice (``spec["model"]["precision"]``, ``params["model"]["precision"]``), so a change
reruns exactly those jobs.

The jobs call ``set_precision(params)`` first, before any JAX array exists: a value turned on
later would leave arrays made before it in float32. The config decides, not the environment:
``JAX_ENABLE_X64`` set in the shell is overridden (with a warning) where the config says
otherwise, so that what a job computes is what its config slice says.
"""

from __future__ import annotations

import logging
import math
import os
import sys

log = logging.getLogger("sviflow")

PRECISIONS = ("float32", "float64")
DEFAULT = "float32"


def precision_of(params: dict) -> str:
    """The precision a job's params ask for: its model spec's ``precision`` (a fit's, predict's
    ``params["spec"]["model"]``, a reference's ``params["model"]``), float32 when not set."""
    spec = params.get("spec") if isinstance(params.get("spec"), dict) else {}
    model = spec.get("model") if isinstance(spec.get("model"), dict) else params.get("model")
    value = (model or {}).get("precision") or DEFAULT
    if value not in PRECISIONS:
        name = (model or {}).get("name", "<model>")
        raise ValueError(f"models.{name}.precision: {value!r} is not one of {', '.join(PRECISIONS)}")
    return value


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on", "t", "y")


def set_precision(params: dict) -> str:
    """Turn ``jax_enable_x64`` on or off as the job's model asks (``precision_of``); -> the
    precision. Call it first in a JAX step. Imports JAX only where it must: a float32 job in a
    process that has not imported JAX and no ``JAX_ENABLE_X64`` in the environment has nothing
    to change (the exact coin reference never imports JAX)."""
    precision = precision_of(params)
    x64 = precision == "float64"
    environment = os.environ.get("JAX_ENABLE_X64")
    if environment is not None and _truthy(environment) != x64:
        model = (params.get("spec") or {}).get("model") or params.get("model") or {}
        log.warning(
            "JAX_ENABLE_X64=%s in the environment is overridden: models.%s.precision is "
            "%s (set precision: float64 in the config for float64)",
            environment,
            model.get("name", "<model>"),
            precision,
        )
    if x64 or "jax" in sys.modules or environment is not None:
        import jax

        jax.config.update("jax_enable_x64", x64)
    if x64:
        log.info("precision: float64 (jax_enable_x64 on)")
    return precision


def nonfinite_at_start_advice(losses, precision: str | None = None, model: str | None = None) -> str | None:
    """The reason to give when every seed's loss is NaN or inf from its very first step: the
    model's density is not finite at the initial point, so a smaller step size cannot help.
    ``losses``: (seed, step) or (step,); ``precision``: the fit's (``precision_of``), which picks
    the advice; ``model``: the model's config name, for the key to set. -> the sentence, or None when some seed's first loss is finite (or there is
    none)."""
    import numpy as np

    values = np.asarray(losses, dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        return None
    first = values[:, 0]
    if np.isfinite(first).any():
        return None
    kinds = sorted({"NaN" if math.isnan(v) else "inf" for v in first})
    sentence = (
        f"the loss is {' or '.join(kinds)} from the first step on, in every seed: the "
        f"model's log density (or the guide's) is not finite at the initial point, so a "
        f"smaller step size will not help; "
    )
    if precision == "float64":
        return sentence + (
            "it is not finite even in float64: check the model at the guide's "
            "initial values (init_loc_fn, the guide's *_init args) and the data"
        )
    return sentence + float32_hint(model) + ", or check the model at the guide's initial values and the data"


def float32_hint(model: str | None = None) -> str:
    """The clause that names float32 as a possible cause of a density that is not finite, and
    the key that changes it; for any message about a model that is NaN or inf at its start (an
    autoguide's "Cannot find valid initial parameters" too)."""
    return (
        "float32 may be the cause (a Cholesky of an ill-conditioned matrix, an exp above "
        f"88.7, a sum that loses its digits): set models.{model or '<name>'}.precision: "
        "float64 (or engine.precision for every model)"
    )
