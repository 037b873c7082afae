"""Config validation, the config slices each job gets, and input functions."""

import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def _describe(schema):
    """What a schema node allows, in words: its type, bounds, choices and description."""
    if not isinstance(schema, dict):
        return ""
    words = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        words.append(" or ".join(map(str, kinds)))
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                      ("exclusiveMaximum", "<")):
        if key in schema:
            words.append(f"{sign} {schema[key]}")
    if "enum" in schema:
        words.append("one of " + ", ".join(map(str, schema["enum"])))
    if "pattern" in schema:
        words.append(f"matching {schema['pattern']}")
    text = " ".join(words)
    if schema.get("description"):
        text += (" " if text else "") + f"({' '.join(str(schema['description']).split())})"
    return text


def _validate_config(config, schema):
    """Snakemake's validate() (which also fills in the schema's defaults), its error reduced to
    the key's path, what is wrong and what is allowed (Snakemake's own prints the schema)."""
    import difflib

    from jsonschema.exceptions import ValidationError

    try:
        validate(config, schema)
    except WorkflowError as error:
        cause = error.__context__
        if not isinstance(cause, ValidationError):
            raise
        path = ".".join(map(str, cause.absolute_path)) or "(top level)"
        if cause.validator == "additionalProperties":
            allowed = list(cause.schema.get("properties", {}))
            unknown = [key for key in cause.instance if key not in allowed]
            hints = [f"{key!r}: did you mean {close[0]!r}?" for key in unknown
                     if (close := difflib.get_close_matches(str(key), allowed, n=1))]
            allowed_text = "keys " + ", ".join(allowed) + ("; " + " ".join(hints) if hints else "")
        elif cause.validator in ("oneOf", "anyOf"):
            # the branches as the errors resolved them ($ref followed)
            allowed_text = " or ".join(dict.fromkeys(
                _describe(e.schema) or e.message for e in cause.context)) or _describe(cause.schema)
            if cause.context and cause.schema.get("description"):
                allowed_text += f" ({' '.join(str(cause.schema['description']).split())})"
        else:
            allowed_text = _describe(cause.schema)
        raise WorkflowError(f"config error: {path}: {cause.message}; allowed: {allowed_text}") from None


# Snakemake 9.27 does not pass --replace-workflow-config on to the jobs it spawns (SLURM jobs):
# they would merge config/config.yaml back in. The main process tells them through the
# environment (sbatch --export=ALL passes it on) and they replace the config as it did.
if workflow.config_settings.replace_workflow_config:
    os.environ.update(SVIFLOW_REPLACE_WORKFLOW_CONFIG="1")  # set for the jobs, not read from the user
elif (os.environ.get("SVIFLOW_REPLACE_WORKFLOW_CONFIG") == "1"
      and workflow.config_settings.overwrite_config):
    import copy

    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))

_validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

# paths in the config are relative to the config file that the user gave
_CONFIG_FILES = list(workflow.overwrite_configfiles or []) or list(workflow.configfiles)
CONFIG_DIR = Path(_CONFIG_FILES[-1]).parent if _CONFIG_FILES else Path(".")
FITS = list(config["fits"])
DATASETS = list(config.get("datasets", {}))
MODELS = list(config["models"])
COMPARISONS = list(config.get("comparisons", {}))
ENGINE = config.get("engine", {})
# Passed to the jobs through the environment, not params: moving the cache reruns nothing.
CACHE_DIR = ENGINE.get("cache_dir", ".jax_cache")
if CACHE_DIR:
    # set for the jobs, not read from the user: no envvars directive is needed
    os.environ.update(SVIFLOW_JAX_CACHE=os.path.abspath(CACHE_DIR))
else:  # disabled: a value inherited from the shell would turn it on again in the jobs
    os.environ.pop("SVIFLOW_JAX_CACHE", None)
os.environ.update(SVIFLOW_FIT_CHUNKS=str(ENGINE.get("chunks", 20)))
# numpyro's Trace_ELBO sums the sites in `set` order, which follows Python's per-process string
# hashing: without a fixed hash seed each job traces a differently ordered program, misses the
# persistent compilation cache, and differs from the last run in the last bits of the loss.
if os.environ.setdefault("PYTHONHASHSEED", "0") == "random":  # a fixed value of the user's is kept
    os.environ.update(PYTHONHASHSEED="0")


def _fail(message):
    raise WorkflowError(f"config error: {message}")


def _user_file(name, where):
    """path.py:function in the config -> the same with the path relative to the working
    directory (as given, relative to the config file); checks that the file exists."""
    path_text, sep, function = name.partition(":")
    if not (sep and path_text.endswith(".py")):
        return name, None
    path = Path(path_text) if Path(path_text).is_absolute() else CONFIG_DIR / path_text
    if not path.is_file():
        _fail(f"{where}: file {path_text!r} not found (looked for {path}); paths are "
              f"relative to the config file")
    # the function must be defined there (read from the file's syntax, the file is not run)
    from sviflow.registry import ConfigError, check_reference

    try:
        check_reference(name, where, path)
    except ConfigError as error:
        _fail(str(error))
    relative = os.path.relpath(path)
    return f"{relative}:{function}", relative


def _cross_check():
    """What the schema cannot say: names that must point at other entries."""
    for fit, entry in config["fits"].items():
        if entry["model"] not in config["models"]:
            _fail(f"fits.{fit}.model: {entry['model']!r} is not a key of models "
                  f"(models: {', '.join(MODELS)})")
        if "data" in entry and entry["data"] not in config.get("datasets", {}):
            _fail(f"fits.{fit}.data: {entry['data']!r} is not a key of datasets "
                  f"(datasets: {', '.join(DATASETS) or 'none'})")
    # model and guide names: built in, an autoguide, or path/to/file.py:function
    from sviflow.registry import check_names

    for problem in check_names(config):
        _fail(problem)
    for name, entry in config.get("comparisons", {}).items():
        unknown = [f for f in entry["fits"] if f not in config["fits"]]
        if unknown:
            _fail(f"comparisons.{name}.fits: {', '.join(unknown)} not in fits")


_cross_check()


def library(*modules):
    """The sviflow modules that do a stage's work, as inputs: editing one reruns that stage
    (Snakemake tracks the scripts' code, not what they import)."""
    return [os.path.relpath(Path(workflow.basedir) / "sviflow" / module) for module in modules]


MODEL_CODE = ("models.py", "guides.py", "registry.py")

# A JAX job (fit, predict, reference) runs XLA's thread pools, for compiling and for the
# compiled steps; two such jobs on one core spin against each other. Claiming two of
# Snakemake's cores each keeps `--cores 4` on a 2-core machine at two JAX jobs at a time
# (cold default run measured: 40.4 s -> 34.2 s wall, 76 -> 63 CPU-s). Per rule on the command
# line: --set-threads fit=1 predict=1 reference=1.
JAX_THREADS = 2


def _sorted(value):
    """Params compare by their printed form: sorted keys, so reordering a config reruns nothing."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def model_spec(name):
    entry = config["models"][name]
    function, _ = _user_file(entry["function"], f"models.{name}.function")
    # float32 or float64 for every JAX job of the model (sviflow/precision.py): in the slice,
    # so that a change reruns its fits, predictions and reference
    precision = entry.get("precision") or ENGINE.get("precision", "float32")
    return _sorted({"name": name, "function": function, "args": entry.get("args", {}),
                    "precision": precision})


def fit_spec(fit):
    """The config slice of one fit: everything that changes its numbers, nothing else."""
    entry = config["fits"][fit]
    guide = dict(entry["guide"])
    guide["name"], _ = _user_file(guide["name"], f"fits.{fit}.guide.name")
    # autoguide arguments that are functions (local_model, ...) may be file references too
    if guide.get("args"):
        guide["args"] = {key: _user_file(value, f"fits.{fit}.guide.args.{key}")[0]
                         if isinstance(value, str) else value for key, value in guide["args"].items()}
    seeds = entry.get("seed", 0)
    return _sorted({
        "name": fit,
        "model": model_spec(entry["model"]),
        "data": entry.get("data"),
        "guide": guide,
        "optimizer": entry.get("optimizer", {"name": "Adam", "step_size": 5.0e-4}),
        "elbo": entry.get("elbo", {"name": "Trace_ELBO", "num_particles": 1}),
        "steps": entry["steps"],
        "seeds": seeds if isinstance(seeds, list) else [seeds],
        "stable_update": entry.get("stable_update", False),
        # what is stored; the number of chunks changes no number, so it travels by environment
        "engine": {"trajectory_points": ENGINE.get("trajectory_points", 1000)},
        # the rule the engine applies (to stop, to lower the step size, to average) and the
        # check applies again: a fit depends on it
        "convergence": config.get("checks", {}).get("convergence", {}),
        "init": fit_init(entry),
    })


LAPLACE_GUIDES = ("AutoMultivariateNormal", "AutoLowRankMultivariateNormal", "AutoNormal", "AutoDelta")


def fit_init(entry):
    """Where a fit starts: laplace (the posterior's mode and curvature) by default for a step
    budget with an autoguide that takes it, the guide's own initialisation otherwise."""
    if entry.get("init"):
        return entry["init"]
    budget = isinstance(entry["steps"], dict)
    return "laplace" if budget and entry["guide"]["name"] in LAPLACE_GUIDES else "guide"


def code_files(fit=None, model=None):
    """The user's model and guide files a job depends on: an edit reruns the job."""
    files = []
    if fit is not None:
        entry = config["fits"][fit]
        _, path = _user_file(entry["guide"]["name"], f"fits.{fit}.guide.name")
        files += [path] if path else []
        for key, value in (entry["guide"].get("args") or {}).items():
            _, path = _user_file(value, f"fits.{fit}.guide.args.{key}") if isinstance(value, str) else (None, None)
            files += [path] if path else []
        model = entry["model"]
    if model is not None:
        _, path = _user_file(config["models"][model]["function"], f"models.{model}.function")
        files += [path] if path else []
    return files


# Every file reference checked now, as the workflow is read: an input function's error is not
# reported when the job's outputs exist (Snakemake then keeps them and runs nothing).
for _name in FITS:
    code_files(fit=_name)
for _name in MODELS:
    code_files(model=_name)


def reference_method(model):
    return config["models"][model].get("reference", {}).get("method", "none")


def reference_id(fit):
    """A reference is one per model and dataset: '<model>--<dataset>' or '<model>--none'."""
    entry = config["fits"][fit]
    return f"{entry['model']}--{entry.get('data', 'none')}"


def reference_ids():
    return sorted({reference_id(f) for f in FITS if reference_method(config["fits"][f]["model"]) != "none"})


def reference_file(model):
    """method draws: the file of the model's draws, relative to the working directory (as given,
    relative to the config file, like a dataset's file); None for the other methods."""
    entry = config["models"][model].get("reference", {})
    if entry.get("method") != "draws":
        return None
    path = Path(entry["file"]) if Path(entry["file"]).is_absolute() else CONFIG_DIR / entry["file"]
    if not path.is_file():
        _fail(f"models.{model}.reference.file: file {entry['file']!r} not found (looked for "
              f"{path}); paths are relative to the config file")
    return os.path.relpath(path)


def reference_settings(model):
    """The reference's config slice; a draws file's path as the job opens it."""
    settings = dict(config["models"][model]["reference"])
    if settings.get("method") == "draws":
        settings["file"] = reference_file(model)
    return _sorted(settings)


# checked as the workflow is read, like the code files above
for _name in MODELS:
    reference_file(_name)


def reference_inputs(reference):
    model, dataset = reference.split("--", 1)
    inputs = {"code": code_files(model=model)}
    if dataset != "none":
        inputs["data"] = f"results/data/{dataset}.h5"
    return inputs


def fit_inputs(fit):
    inputs = {"code": code_files(fit=fit)}
    data = config["fits"][fit].get("data")
    if data:
        inputs["data"] = f"results/data/{data}.h5"
    return inputs


def with_reference(fit_name, **inputs):
    """``inputs`` plus the fit's reference posterior, where its model has one."""
    if reference_method(config["fits"][fit_name]["model"]) != "none":
        inputs["reference"] = f"results/references/{reference_id(fit_name)}.h5"
    return inputs


def fit_data(fit):
    """The data file of a fit, or None for a model without data."""
    data = config["fits"][fit].get("data")
    return f"results/data/{data}.h5" if data else None


PLOT_FIGURES = ("loss", "trajectories", "posterior")
# the figures some fits have, by the short name of their plot rule (plot_with_<key>...)
OPTIONAL_FIGURES = {"mock": "mock_observations", "covariance": "covariance"}


def figure_output(name):
    """A figure of a fit as a report item; its caption is workflow/report/<name>.rst."""
    return report(f"results/figures/{{fit}}/{name}.png", caption=f"../report/{name}.rst",
                  category="{fit}", labels={"figure": name.replace("_", " "), "fit": "{fit}"})


def figures(fit):
    """The figures of one fit: which apply depends on its model and guide."""
    names = ["loss", "trajectories", "posterior"]
    if config["fits"][fit].get("data"):
        names.append("mock_observations")
    if config["fits"][fit]["guide"]["name"] == "AutoMultivariateNormal":
        names.append("covariance")
    return names


def data_file_inputs(dataset):
    entry = config["datasets"][dataset]
    if "file" in entry:
        path = Path(entry["file"]) if Path(entry["file"]).is_absolute() else CONFIG_DIR / entry["file"]
        return [os.path.relpath(path)]
    return []


def dataset_spec(dataset):
    entry = dict(config["datasets"][dataset])
    if "file" in entry:
        entry["file"] = data_file_inputs(dataset)[0]
    return _sorted(entry)


def check_settings():
    """The checks' config slice; strict only gates the end, so toggling it reruns no check."""
    return _sorted({k: v for k, v in config.get("checks", {}).items() if k != "strict"})


def weighted_draws():
    """How many guide draws predict weighs for the check's ELBO and k-hat: the posterior
    samples, or more if the checks ask for more. Only a change of this number reruns predict."""
    from sviflow.diagnostics import weighted_draws as draws

    return draws(check_settings(), config.get("predictive", {}))


def plot_inputs(wildcards):
    inputs = with_reference(
        wildcards.fit,
        fit=f"results/fits/{wildcards.fit}.h5",
        predictive=f"results/predictive/{wildcards.fit}.h5",
        check=f"results/checks/{wildcards.fit}.h5",
    )
    data = config["fits"][wildcards.fit].get("data")
    if data:
        inputs["data"] = f"results/data/{data}.h5"
    return inputs


def all_outputs():
    outputs = ["results/summary.csv", "results/summary.md"]
    outputs += [f"results/figures/{fit}/{name}.png" for fit in FITS for name in figures(fit)]
    outputs += [f"results/figures/comparisons/{name}.png" for name in COMPARISONS]
    if config.get("checks", {}).get("strict", False):
        outputs.append("results/checks/strict.ok")
    return outputs


wildcard_constraints:
    fit="|".join(map(re.escape, FITS)) or "no-fits",
    dataset="|".join(map(re.escape, DATASETS)) or "no-datasets",
    reference="|".join(map(re.escape, reference_ids())) or "no-references",
    comparison="|".join(map(re.escape, COMPARISONS)) or "no-comparisons",


def cancel_rate_limiter_timers():
    """Snakemake 9's job rate limiter (--max-jobs-per-timespan, 100/1s by default) arms a
    threading.Timer, not a daemon thread, each time it waits for a job, and Python waits for
    the last one at exit: up to 1 s after every run that ran jobs. At the end of a run nothing
    is left to schedule, so the timers are cancelled (measured: 1.4 s -> 0.4 s from the last
    job's end to the exit of `snakemake`)."""
    import threading

    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
