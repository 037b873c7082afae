"""Turns the config's names into NumPyro objects: models, guides, optimizers and ELBOs.

A model or guide is named either by a built-in name or as ``path/to/file.py:function``. Every
error names the config key it came from (``where``) and, for files, the file.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path


class ConfigError(ValueError):
    """A config entry that cannot be turned into what it names."""


def is_file_reference(name: str) -> bool:
    return ":" in name and name.split(":", 1)[0].endswith(".py")


def load_function(reference: str, where: str):
    """Load ``function`` from ``path/to/file.py:function``."""
    path_text, _, function_name = reference.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"{where}: file {path_text!r} not found (paths are relative to the "
                          f"config file); fix the path or create the file")
    module_name = f"sviflow_user_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's file: any error is theirs to see, with its place
            raise ConfigError(f"{where}: importing {path_text} failed: "
                              f"{type(error).__name__}: {error}") from error
        sys.modules[module_name] = module
    function = getattr(module, function_name, None)
    if not callable(function):
        available = sorted(n for n, v in vars(module).items()
                           if inspect.isfunction(v) and v.__module__ == module_name)
        raise ConfigError(f"{where}: {path_text} has no function {function_name!r}; "
                          f"functions in that file: {', '.join(available) or 'none'}")
    return function


def _bind(function, args: dict):
    if not args:
        return function

    def bound(*a, **kw):
        return function(*a, **{**args, **kw})

    bound.__name__ = getattr(function, "__name__", "model")
    return bound


def resolve_model(spec: dict, where: str = "model"):
    """``spec``: ``{"function": name or file.py:function, "args": {...}}`` -> a model callable."""
    from sviflow.models import BUILTIN_MODELS

    name = spec["function"]
    if is_file_reference(name):
        function = load_function(name, f"{where}.function")
    elif name in BUILTIN_MODELS:
        function = BUILTIN_MODELS[name]
    else:
        raise ConfigError(f"{where}.function: unknown model {name!r}; built-in models: "
                          f"{', '.join(sorted(BUILTIN_MODELS))}, or give path/to/file.py:function")
    return _bind(function, spec.get("args") or {})


def resolve_guide(spec: dict, model, where: str = "guide"):
    """``spec``: ``{"name": ..., "args": {...}}`` -> a guide callable for ``model``."""
    from sviflow.guides import BUILTIN_GUIDES, autoguide_names, init_strategy

    name = spec["name"]
    args = dict(spec.get("args") or {})
    if is_file_reference(name):
        # a user's guide is a guide function itself, or a factory when args are given
        function = load_function(name, f"{where}.name")
        return function(**args) if args else function
    if name in BUILTIN_GUIDES:
        try:
            return BUILTIN_GUIDES[name](**args)
        except TypeError as error:
            raise ConfigError(f"{where}.args: {error}; the {name} guide takes "
                              f"{', '.join(inspect.signature(BUILTIN_GUIDES[name]).parameters)}") from error
    autoguides = autoguide_names()
    if name in autoguides:
        from numpyro.infer import autoguide

        if "init_loc_fn" in args:
            init = args.pop("init_loc_fn")
            init = {"name": init} if isinstance(init, str) else dict(init)
            try:
                args["init_loc_fn"] = init_strategy(init.pop("name"), **init)
            except ValueError as error:
                raise ConfigError(f"{where}.args.init_loc_fn: {error}") from error
        try:
            return getattr(autoguide, name)(model, **args)
        except TypeError as error:
            raise ConfigError(f"{where}.args: {error}") from error
    raise ConfigError(f"{where}.name: unknown guide {name!r}; built-in guides: "
                      f"{', '.join(sorted(BUILTIN_GUIDES))}; autoguides: {', '.join(autoguides)}; "
                      f"or give path/to/file.py:function")


OPTIMIZERS = ("Adam", "ClippedAdam", "SGD", "Adagrad", "RMSProp", "Momentum", "RMSPropMomentum")
SCHEDULES = ("constant", "exponential_decay", "cosine_decay", "warmup_cosine_decay")
ELBOS = ("Trace_ELBO", "TraceMeanField_ELBO", "TraceGraph_ELBO", "RenyiELBO")


def _schedule(spec, step_size: float, where: str):
    import optax

    spec = dict(spec)
    kind = spec.pop("name")
    if kind == "constant":
        return optax.constant_schedule(step_size)
    if kind == "exponential_decay":
        return optax.exponential_decay(init_value=step_size, **spec)
    if kind == "cosine_decay":
        return optax.cosine_decay_schedule(init_value=step_size, **spec)
    if kind == "warmup_cosine_decay":
        return optax.warmup_cosine_decay_schedule(peak_value=step_size, **spec)
    raise ConfigError(f"{where}.schedule.name: unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")


def make_optimizer(spec: dict, where: str = "optimizer"):
    """``{"name": "Adam", "step_size": 5e-4, "args": {...}, "schedule": {...}}``.

    Without a schedule, NumPyro's own optimizer of that name; with one, the optax transform
    of that name with the schedule as its learning rate, wrapped by ``optax_to_numpyro``.
    """
    import numpyro.optim

    name = spec["name"]
    step_size = float(spec.get("step_size", 1e-3))
    args = dict(spec.get("args") or {})
    if name not in OPTIMIZERS:
        raise ConfigError(f"{where}.name: unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if spec.get("schedule"):
        import optax

        transforms = {"Adam": optax.adam, "ClippedAdam": optax.adam, "SGD": optax.sgd,
                      "Adagrad": optax.adagrad, "RMSProp": optax.rmsprop, "Momentum": optax.sgd}
        if name not in transforms:
            raise ConfigError(f"{where}.schedule: {name} has no optax form; use one of "
                              f"{', '.join(transforms)}")
        try:
            transform = transforms[name](_schedule(spec["schedule"], step_size, where), **args)
        except TypeError as error:
            raise ConfigError(f"{where}: {error}") from error
        if name == "ClippedAdam":
            transform = optax.chain(optax.clip(10.0), transform)
        return numpyro.optim.optax_to_numpyro(transform)
    try:
        return getattr(numpyro.optim, name)(step_size, **args)
    except TypeError as error:
        raise ConfigError(f"{where}.args: {error}") from error


def make_elbo(spec: dict, where: str = "elbo"):
    """``{"name": "Trace_ELBO", "num_particles": 1, "args": {"alpha": 0.5}}``."""
    import numpyro.infer

    name = spec.get("name", "Trace_ELBO")
    if name not in ELBOS:
        raise ConfigError(f"{where}.name: unknown ELBO {name!r}; valid: {', '.join(ELBOS)}")
    try:
        return getattr(numpyro.infer, name)(num_particles=int(spec.get("num_particles", 1)),
                                            **(spec.get("args") or {}))
    except TypeError as error:
        raise ConfigError(f"{where}.args: {error}") from error
