"""Turns the config's model and guide entries into NumPyro objects: a built-in model or guide,
an autoguide with its arguments, or the user's function from ``path/to/file.py:function``;
and the first trace of a model with its guide (``prepare_guide``), which turns a user's error
there into a message that names the fit and the line of the user's file.

jax and numpyro are imported by the functions, not at import time."""

from __future__ import annotations

import inspect

from sviflow.errors import ConfigError
from sviflow.names import AUTOGUIDES, GUIDES, INIT_STRATEGIES, MODELS
from sviflow.userfiles import _user_location, is_file_reference, load_function


def _bind(function, args: dict):
    if not args:
        return function

    def bound(*a, **kw):
        return function(*a, **{**args, **kw})

    bound.__name__ = getattr(function, "__name__", "model")
    return bound


def resolve_model(spec: dict, where: str = "model"):
    """``spec``: ``{"function": name or file.py:function, "args": {...}}`` -> a model callable."""
    name = spec["function"]
    if is_file_reference(name):
        function = load_function(name, f"{where}.function")
    elif name in MODELS:
        from sviflow.models import BUILTIN_MODELS

        function = BUILTIN_MODELS[name]
    else:
        raise ConfigError(
            f"{where}.function: unknown model {name!r}; built-in models: "
            f"{', '.join(MODELS)}, or path/to/file.py:function"
        )
    return _bind(function, spec.get("args") or {})


# autoguide keyword arguments whose value is a function, given in the config by name
_MODEL_ARGS = ("local_model", "surrogate_model")  # a model: built-in name or file reference
_FUNCTION_ARGS = ("global_guide", "local_guide", "hessian_fn", "create_plates")  # file reference


def _autoguide_args(name: str, args: dict, model, where: str) -> dict:
    """The config's autoguide arguments with names turned into the objects they name."""
    from sviflow.guides import init_strategy

    args = dict(args)
    if "init_loc_fn" in args:
        init = args.pop("init_loc_fn")
        init = {"name": init} if isinstance(init, str) else dict(init)
        try:
            args["init_loc_fn"] = init_strategy(init.pop("name"), **init)
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigError(
                f"{where}.args.init_loc_fn: {error}; give a name "
                f"({', '.join(INIT_STRATEGIES)}) or "
                f"{{name: init_to_value, values: {{site: value}}}}"
            ) from error
    if isinstance(args.get("nonlinearity"), str):
        from jax.example_libraries import stax

        layer = getattr(stax, args["nonlinearity"], None)
        valid = ("Elu", "Gelu", "LeakyRelu", "Relu", "Selu", "Sigmoid", "Softplus", "Tanh")
        if args["nonlinearity"] not in valid or layer is None:
            raise ConfigError(
                f"{where}.args.nonlinearity: unknown {args['nonlinearity']!r}; "
                f"valid: {', '.join(valid)} (jax.example_libraries.stax)"
            )
        args["nonlinearity"] = layer
    for key in _MODEL_ARGS:
        if isinstance(args.get(key), str):
            args[key] = resolve_model({"function": args[key]}, f"{where}.args.{key}")
    for key in _FUNCTION_ARGS:
        if isinstance(args.get(key), str):
            if not is_file_reference(args[key]):
                raise ConfigError(f"{where}.args.{key}: give path/to/file.py:function")
            args[key] = load_function(args[key], f"{where}.args.{key}")
    if name == "AutoGuideList":
        parts = args.pop("guides", None)
        if not parts:
            raise ConfigError(
                f"{where}.args.guides: AutoGuideList needs its parts: a list of "
                f"{{name: AutoNormal, args: {{...}}, expose: [sites]}} (or hide: "
                f"[sites]), one per group of the model's sample sites"
            )
        args["_parts"] = parts
    return args


def resolve_guide(spec: dict, model, where: str = "guide"):
    """``spec``: ``{"name": ..., "args": {...}}`` -> a guide callable for ``model``."""
    from sviflow.guides import BUILTIN_GUIDES

    name = spec["name"]
    args = dict(spec.get("args") or {})
    if is_file_reference(name):
        # a user's guide is a guide function itself, or a factory when args are given
        function = load_function(name, f"{where}.name")
        if not args:
            return function
        try:
            return function(**args)
        except TypeError as error:
            raise ConfigError(
                f"{where}.args: {error}; with args, {name} is called as a factory that returns the guide"
            ) from error
    if name in BUILTIN_GUIDES:
        try:
            return BUILTIN_GUIDES[name](**args)
        except TypeError as error:
            raise ConfigError(
                f"{where}.args: {error}; the {name} guide takes "
                f"{', '.join(inspect.signature(BUILTIN_GUIDES[name]).parameters)}"
            ) from error
    if name in AUTOGUIDES:
        from numpyro import handlers
        from numpyro.infer import autoguide

        cls = getattr(autoguide, name)
        args = _autoguide_args(name, args, model, where)
        parts = args.pop("_parts", None)
        try:
            guide = cls(model, **args)
        except TypeError as error:
            accepted = [p for p in inspect.signature(cls).parameters if p != "model"]
            raise ConfigError(f"{where}.args: {error}; {name} takes {', '.join(accepted)}") from error
        for index, part in enumerate(parts or []):
            here = f"{where}.args.guides[{index}]"
            if not isinstance(part, dict) or "name" not in part:
                raise ConfigError(f"{here}: expected {{name: AutoNormal, expose: [sites]}}")
            block = {k: part[k] for k in ("expose", "hide") if k in part}
            if part["name"] not in AUTOGUIDES or part["name"] == "AutoGuideList":
                raise ConfigError(
                    f"{here}.name: {part['name']!r}: a part of AutoGuideList is an "
                    f"autoguide: {', '.join(a for a in AUTOGUIDES if a != 'AutoGuideList')}"
                )
            try:
                guide.append(
                    resolve_guide(
                        {"name": part["name"], "args": part.get("args")}, handlers.block(model, **block), here
                    )
                )
            except ValueError as error:
                raise ConfigError(f"{here}: {error}") from error
        return guide
    raise ConfigError(
        f"{where}.name: unknown guide {name!r}; built-in guides: "
        f"{', '.join(GUIDES)}; autoguides: {', '.join(AUTOGUIDES)}; "
        f"or path/to/file.py:function"
    )


def prepare_guide(model, guide, model_kwargs: dict, where: str, sources: dict | None = None) -> None:
    """Set an autoguide up eagerly, then trace the guide and the model on the guide's draws,
    before any jit or vmap.

    Two reasons. An autoguide fixes the order of its flattened latent vector (``auto_loc``) on
    its first call, and NumPyro gives the model's order when that call is eager but the sorted
    names when it is under jit or vmap: the fit, the predictive and the check would read one
    ``auto_loc`` in different orders. And a model or guide that fails shows it here, with the
    config key (``where``) and the user's file and line. ``sources``: {config key: the model's
    or guide's name as the config gives it}.

    Only the set-up (``_setup_prototype``, what the guide's first call does first, with the key
    that call would use) runs eagerly: every eager op is an XLA compile of its own, and the rest
    of the call is traced on abstract values, which raises the same errors. Only for the
    autoguides whose call sets nothing more up: AutoGuideList and AutoSemiDAIS set up the guides
    they hold inside their call (traced, those would keep jit's tracers), so their whole first
    call is eager, as is any other guide's.
    """
    import jax
    from numpyro import handlers
    from numpyro.infer.autoguide import AutoContinuous, AutoDelta, AutoNormal

    def run_both():
        with handlers.block():
            guide_trace = handlers.trace(handlers.seed(guide, 0)).get_trace(**model_kwargs)
            handlers.trace(handlers.replay(handlers.seed(model, 1), guide_trace)).get_trace(**model_kwargs)

    try:
        if getattr(guide, "prototype_trace", False) is not None:
            jax.make_jaxpr(run_both)()  # set up already, or not an autoguide
        elif isinstance(guide, (AutoContinuous, AutoNormal, AutoDelta)):
            with handlers.block():
                handlers.seed(guide._setup_prototype, 0)(**model_kwargs)
            jax.make_jaxpr(run_both)()
        else:
            run_both()
    except ConfigError:
        raise
    except Exception as error:  # the user's model or guide: name it, its file and its line
        sources = sources or {}
        files = [ref.partition(":")[0] for ref in sources.values() if is_file_reference(ref)]
        named = " with ".join(f"{key} = {ref!r}" for key, ref in sources.items())
        hint = ""
        if "valid initial parameters" in str(error) and not jax.config.jax_enable_x64:
            from sviflow.precision import float32_hint

            # the model's density is not finite at any initial point the guide tried
            model_key = next((key for key in sources if key.startswith("models.")), "models.<name>.")
            hint = "; " + float32_hint(model_key.split(".")[1] if model_key.count(".") >= 2 else None)
        raise ConfigError(
            f"{where}: {named or 'the model and guide'} failed when traced on the "
            f"data (keyword arguments: {', '.join(model_kwargs) or 'none'}): "
            f"{type(error).__name__}: {error}{_user_location(error, files)}{hint}"
        ) from error
