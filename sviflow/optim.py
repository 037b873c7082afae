"""The config's optimizer and ELBO entries as NumPyro objects: NumPyro's own optimizers, or
optax transforms with a learning-rate schedule (or an adjustable step size, for the engine's
step-size decay), and NumPyro's ELBOs. Defaults are the schema's (sviflow.config)."""

from __future__ import annotations

import inspect

from sviflow.config import default
from sviflow.errors import ConfigError
from sviflow.names import ELBOS, OPTIMIZERS, SCHEDULES

_SCHEDULE_FUNCTIONS = {
    "constant": "constant_schedule",
    "exponential_decay": "exponential_decay",
    "cosine_decay": "cosine_decay_schedule",
    "warmup_cosine_decay": "warmup_cosine_decay_schedule",
}


def _schedule(spec, step_size: float, where: str):
    import optax

    spec = dict(spec)
    kind = spec.pop("name", None)
    if kind not in SCHEDULES:
        raise ConfigError(f"{where}.schedule.name: unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    function = getattr(optax, _SCHEDULE_FUNCTIONS[kind])
    # the optimizer's step_size is the schedule's start (its peak, with a warmup)
    first = {"constant": "value", "warmup_cosine_decay": "peak_value"}.get(kind, "init_value")
    try:
        return function(**{first: step_size, **spec})
    except TypeError as error:
        takes = [p for p in inspect.signature(function).parameters if p != first]
        raise ConfigError(
            f"{where}.schedule: {kind}: {error}; it takes {', '.join(takes)} "
            f"(its {first} is the optimizer's step_size)"
        ) from error


# the optax form of each optimizer, and how numpyro's argument names map onto it
_OPTAX = {
    "Adam": ("adam", {}),
    "ClippedAdam": ("adam", {}),
    "SGD": ("sgd", {}),
    "Adagrad": ("adagrad", {}),
    "RMSProp": ("rmsprop", {"gamma": "decay"}),
    "Momentum": ("sgd", {"mass": "momentum"}),
    "RMSPropMomentum": ("rmsprop", {"gamma": "decay"}),
}


def make_optimizer(spec: dict, where: str = "optimizer", adaptive: bool = False):
    """``{"name": "Adam", "step_size": 5e-4, "args": {...}, "schedule": {...}}``.

    Without a schedule, NumPyro's own optimizer of that name; with one, the optax transform
    of that name with the schedule as its learning rate, wrapped by ``optax_to_numpyro``.
    ``adaptive``: the optax transform under ``optax.inject_hyperparams``, so that its step
    size is part of the state and the engine can lower it between chunks (no schedule).
    """
    import numpyro.optim

    spec = {**default("fits", "optimizer"), **spec}
    name, step_size = spec["name"], float(spec["step_size"])
    args = dict(spec.get("args") or {})
    if name not in OPTIMIZERS:
        raise ConfigError(f"{where}.name: unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if spec.get("schedule") or adaptive:
        import optax

        function_name, renames = _OPTAX[name]
        args = {renames.get(k, k): v for k, v in args.items()}
        if name == "Momentum":
            args.setdefault("momentum", 0.9)
        clip = args.pop("clip_norm", 10.0) if name == "ClippedAdam" else None
        schedule = _schedule(spec["schedule"], step_size, where) if spec.get("schedule") else step_size
        function = getattr(optax, function_name)
        if not spec.get("schedule"):
            function = optax.inject_hyperparams(function)
        try:
            transform = function(schedule, **args)
        except TypeError as error:
            takes = [p for p in inspect.signature(function).parameters if p != "learning_rate"]
            raise ConfigError(
                f"{where}.args: {error}; with a schedule, {name} is "
                f"optax.{function_name}, which takes {', '.join(takes)}"
            ) from error
        if clip is not None:
            # numpyro's ClippedAdam clips each gradient component to [-clip_norm, clip_norm]
            transform = optax.chain(optax.clip(float(clip)), transform)
        return numpyro.optim.optax_to_numpyro(transform)
    if name == "Momentum":
        args.setdefault("mass", 0.9)  # jax's momentum() has no default mass
    try:
        return getattr(numpyro.optim, name)(step_size, **args)
    except TypeError as error:
        raise ConfigError(f"{where}.args: {error}") from error


def make_elbo(spec: dict, where: str = "elbo"):
    """``{"name": "Trace_ELBO", "num_particles": 1, "args": {"alpha": 0.5}}``."""
    import numpyro.infer

    spec = {**default("fits", "elbo"), **spec}
    name = spec["name"]
    if name not in ELBOS:
        raise ConfigError(f"{where}.name: unknown ELBO {name!r}; valid: {', '.join(ELBOS)}")
    cls = getattr(numpyro.infer, name)
    try:
        return cls(num_particles=int(spec["num_particles"]), **(spec.get("args") or {}))
    except TypeError as error:
        takes = [p for p in inspect.signature(cls).parameters if p != "num_particles"]
        raise ConfigError(f"{where}.args: {error}; {name} takes {', '.join(takes)}") from error
