"""Turns the config's names into NumPyro objects: models, guides, optimizers and ELBOs.

A model or guide is named either by a built-in name or as ``path/to/file.py:function``. Every
error names the config key it came from (``where``) and, for files, the file.

This module imports neither jax nor numpyro at import time: the workflow checks the config's
names with it (``check_names``, ``check_reference``) before any job runs, at the cost of a
Python import, not of a JAX start.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path


from sviflow.config import default
from sviflow.errors import ConfigError  # noqa: F401  (raised here; importable from here too)


# The names the config may use. They are plain tuples so that the workflow can check a config
# without importing jax; tests/test_user_model.py keeps them equal to what the code provides
# (sviflow.models.BUILTIN_MODELS, sviflow.guides.BUILTIN_GUIDES, numpyro.infer.autoguide).
MODELS = ("coin_flips", "correlated_gaussian_2d", "multimodal_2d")
GUIDES = ("beta", "mixture_2d", "normal")
AUTOGUIDES = (
    "AutoBNAFNormal", "AutoBatchedLowRankMultivariateNormal", "AutoBatchedMultivariateNormal",
    "AutoDAIS", "AutoDelta", "AutoDiagonalNormal", "AutoGuideList", "AutoIAFNormal",
    "AutoLaplaceApproximation", "AutoLowRankMultivariateNormal", "AutoMultivariateNormal",
    "AutoNormal", "AutoSemiDAIS", "AutoSurrogateLikelihoodDAIS",
)
OPTIMIZERS = ("Adam", "ClippedAdam", "SGD", "Adagrad", "RMSProp", "Momentum", "RMSPropMomentum")
SCHEDULES = ("constant", "exponential_decay", "cosine_decay", "warmup_cosine_decay")
ELBOS = ("Trace_ELBO", "TraceMeanField_ELBO", "TraceGraph_ELBO", "RenyiELBO")
INIT_STRATEGIES = ("init_to_feasible", "init_to_mean", "init_to_median", "init_to_sample",
                   "init_to_uniform", "init_to_value")


# --- user files ----------------------------------------------------------------------------

def is_file_reference(name) -> bool:
    return isinstance(name, str) and ":" in name and name.split(":", 1)[0].endswith(".py")


def defined_names(path: Path) -> tuple[list[str], list[str]]:
    """(functions, other names) a Python file defines at its top level (def; classes,
    assignments, imports), read from its syntax tree: the file is not run, jax is not started."""
    path = Path(path)
    functions, others = _defined_names(str(path.resolve()), path.stat().st_mtime_ns)
    return list(functions), list(others)


@functools.lru_cache(maxsize=64)
def _defined_names(path: str, mtime_ns: int):
    # the workflow asks once per job and input function: parse each version of a file once
    tree = ast.parse(Path(path).read_text(), filename=path)
    functions, others = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(node.name)
        elif isinstance(node, ast.ClassDef):
            others.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            others += [t.id for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            others += [(a.asname or a.name).split(".")[0] for a in node.names]
    return tuple(functions), tuple(others)


def check_reference(reference: str, where: str, path: Path | None = None) -> None:
    """``path/to/file.py:function``: the file exists, parses, and defines ``function``.

    ``path`` is where the file is looked for (the config's path made relative to the working
    directory); by default the reference's own path."""
    path_text, _, function_name = reference.partition(":")
    path = Path(path if path is not None else path_text)
    if not path.is_file():
        raise ConfigError(f"{where}: file {path_text!r} not found (looked for {path}); paths "
                          f"are relative to the config file")
    if not function_name:
        raise ConfigError(f"{where}: {reference!r} names no function; write {path_text}:function")
    try:
        functions, others = defined_names(path)
    except SyntaxError as error:
        raise ConfigError(f"{where}: {path}, line {error.lineno}: syntax error: {error.msg}") from error
    if function_name not in functions and function_name not in others and "*" not in others:
        raise ConfigError(f"{where}: {path} has no function {function_name!r}; functions in "
                          f"that file: {', '.join(functions) or 'none'}")


def _user_location(error: BaseException, paths) -> str:
    """' (path, line N: code)' for the deepest frame of ``error``'s traceback in one of ``paths``."""
    wanted = {os.path.realpath(p) for p in paths if p}
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if os.path.realpath(f.filename) in wanted]
    if not frames:
        return ""
    frame = frames[-1]
    return f" ({frame.filename}, line {frame.lineno}: {(frame.line or '').strip()})"


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
        # the file may import its neighbours (helpers of the model); only it is tracked for reruns
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.append(folder)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's file: any error is theirs to see, with its place
            raise ConfigError(f"{where}: importing {path_text} failed: "
                              f"{type(error).__name__}: {error}"
                              f"{_user_location(error, [path])}") from error
        sys.modules[module_name] = module
    function = getattr(module, function_name, None)
    if not callable(function):
        available = sorted(n for n, v in vars(module).items()
                           if inspect.isfunction(v) and v.__module__ == module_name)
        raise ConfigError(f"{where}: {path_text} has no function {function_name!r}; "
                          f"functions in that file: {', '.join(available) or 'none'}")
    return function


def check_names(config: dict) -> list[str]:
    """What the schema cannot say about names: every model and guide is built in, an autoguide,
    or a file reference. -> the problems, each naming its key and listing the valid names."""
    problems = []
    for name, entry in (config.get("models") or {}).items():
        function = entry.get("function") if isinstance(entry, dict) else None
        if isinstance(function, str) and not is_file_reference(function) and function not in MODELS:
            problems.append(f"models.{name}.function: unknown model {function!r}; built-in "
                            f"models: {', '.join(MODELS)}, or path/to/file.py:function")
    for fit, entry in (config.get("fits") or {}).items():
        guide = entry.get("guide") if isinstance(entry, dict) else None
        name = guide.get("name") if isinstance(guide, dict) else None
        if isinstance(name, str) and not is_file_reference(name) and name not in GUIDES + AUTOGUIDES:
            problems.append(f"fits.{fit}.guide.name: unknown guide {name!r}; built-in guides: "
                            f"{', '.join(GUIDES)}; autoguides: {', '.join(AUTOGUIDES)}; "
                            f"or path/to/file.py:function")
    return problems


# --- models and guides -----------------------------------------------------------------------

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
        raise ConfigError(f"{where}.function: unknown model {name!r}; built-in models: "
                          f"{', '.join(MODELS)}, or path/to/file.py:function")
    return _bind(function, spec.get("args") or {})


# autoguide keyword arguments whose value is a function, given in the config by name
_MODEL_ARGS = ("local_model", "surrogate_model")     # a model: built-in name or file reference
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
            raise ConfigError(f"{where}.args.init_loc_fn: {error}; give a name "
                              f"({', '.join(INIT_STRATEGIES)}) or "
                              f"{{name: init_to_value, values: {{site: value}}}}") from error
    if isinstance(args.get("nonlinearity"), str):
        from jax.example_libraries import stax

        layer = getattr(stax, args["nonlinearity"], None)
        valid = ("Elu", "Gelu", "LeakyRelu", "Relu", "Selu", "Sigmoid", "Softplus", "Tanh")
        if args["nonlinearity"] not in valid or layer is None:
            raise ConfigError(f"{where}.args.nonlinearity: unknown {args['nonlinearity']!r}; "
                              f"valid: {', '.join(valid)} (jax.example_libraries.stax)")
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
            raise ConfigError(f"{where}.args.guides: AutoGuideList needs its parts: a list of "
                              f"{{name: AutoNormal, args: {{...}}, expose: [sites]}} (or hide: "
                              f"[sites]), one per group of the model's sample sites")
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
            raise ConfigError(f"{where}.args: {error}; with args, {name} is called as a factory "
                              f"that returns the guide") from error
    if name in BUILTIN_GUIDES:
        try:
            return BUILTIN_GUIDES[name](**args)
        except TypeError as error:
            raise ConfigError(f"{where}.args: {error}; the {name} guide takes "
                              f"{', '.join(inspect.signature(BUILTIN_GUIDES[name]).parameters)}") from error
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
                raise ConfigError(f"{here}.name: {part['name']!r}: a part of AutoGuideList is an "
                                  f"autoguide: {', '.join(a for a in AUTOGUIDES if a != 'AutoGuideList')}")
            try:
                guide.append(resolve_guide({"name": part["name"], "args": part.get("args")},
                                           handlers.block(model, **block), here))
            except ValueError as error:
                raise ConfigError(f"{here}: {error}") from error
        return guide
    raise ConfigError(f"{where}.name: unknown guide {name!r}; built-in guides: "
                      f"{', '.join(GUIDES)}; autoguides: {', '.join(AUTOGUIDES)}; "
                      f"or path/to/file.py:function")


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
        raise ConfigError(f"{where}: {named or 'the model and guide'} failed when traced on the "
                          f"data (keyword arguments: {', '.join(model_kwargs) or 'none'}): "
                          f"{type(error).__name__}: {error}{_user_location(error, files)}{hint}") from error


# --- optimizers and ELBOs --------------------------------------------------------------------

_SCHEDULE_FUNCTIONS = {"constant": "constant_schedule", "exponential_decay": "exponential_decay",
                       "cosine_decay": "cosine_decay_schedule",
                       "warmup_cosine_decay": "warmup_cosine_decay_schedule"}


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
        raise ConfigError(f"{where}.schedule: {kind}: {error}; it takes {', '.join(takes)} "
                          f"(its {first} is the optimizer's step_size)") from error


# the optax form of each optimizer, and how numpyro's argument names map onto it
_OPTAX = {"Adam": ("adam", {}), "ClippedAdam": ("adam", {}), "SGD": ("sgd", {}),
          "Adagrad": ("adagrad", {}), "RMSProp": ("rmsprop", {"gamma": "decay"}),
          "Momentum": ("sgd", {"mass": "momentum"}),
          "RMSPropMomentum": ("rmsprop", {"gamma": "decay"})}


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
            raise ConfigError(f"{where}.args: {error}; with a schedule, {name} is "
                              f"optax.{function_name}, which takes {', '.join(takes)}") from error
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
