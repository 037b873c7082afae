"""The workflow's config as its jobs see it: validation with messages that name the key, the
cross-checks the schema cannot make, each job's config slice (its ``params``), the files a job
depends on, the reference ids and the figures of each fit.

Everything here is a function of the validated config and the directory of the config file the
user gave (paths in the config are relative to it), so that tests call it without running
Snakemake. ``workflow/rules/common.smk`` builds one :class:`Plan` as the workflow is read and
keeps only what needs Snakemake: input functions, wildcard constraints, the jobs' environment.

Defaults live in one place, the schema (``workflow/schemas/config.schema.yaml``), which
Snakemake's ``validate`` fills in; :func:`schema_defaults` reads them for library code that runs
without a validated config. The one exception is the step budget's keys (a ``oneOf`` branch,
where Snakemake cannot fill defaults): :data:`BUDGET_DEFAULTS`, filled in by :meth:`Plan.fit_spec`.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
from pathlib import Path

import yaml

from sviflow.errors import ConfigError
from sviflow.names import LAPLACE_GUIDES
from sviflow.sweeps import DATASETS_KEY, member_of
from sviflow.sweeps import KEY as SWEEPS_KEY

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# A step budget's keys, which the schema's oneOf cannot default (its descriptions state them;
# tests/test_config.py keeps the two equal)
BUDGET_DEFAULTS = {"min": 2000, "decay": 0.5, "max_decays": 10}


# the figures every fit has, and those some fits have, by the short name of their plot rule
# (plot_with_<key>...): mock observations for a model with data, the covariance for AutoMVN
PLOT_FIGURES = ("loss", "trajectories", "posterior")
OPTIONAL_FIGURES = {"mock": "mock_observations", "covariance": "covariance"}

# the sections whose entries are named, and the key of each entry's name in messages
NAMED_SECTIONS = ("models", "datasets", "fits", "comparisons")


# --- the schema --------------------------------------------------------------------------------


@functools.cache
def load_schema(path: str | os.PathLike = SCHEMA) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _resolve(node: dict, schema: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        target = schema
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fill(instance, node: dict, schema: dict):
    """Fill ``instance`` (a dict) with the defaults of ``node``'s properties, recursively, as
    Snakemake's validate(set_default=True) does."""
    node = _resolve(node, schema)
    if not isinstance(instance, dict):
        return instance
    for key, child in (node.get("properties") or {}).items():
        child = _resolve(child, schema)
        if key not in instance and "default" in child:
            instance[key] = _copy(child["default"])
        if key in instance:
            _fill(instance[key], child, schema)
    return instance


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def schema_defaults(*path: str) -> dict:
    """The schema's defaults of a section: ``schema_defaults("checks")`` is the ``checks`` of a
    config that gives none. Named entries are passed over: ``schema_defaults("fits")`` is what
    one fit entry gets, ``schema_defaults("models", "reference")`` a model's reference."""
    return _copy(_schema_defaults(path))


@functools.cache
def _schema_defaults(path: tuple[str, ...]) -> dict:
    schema = load_schema()
    node = schema

    def entry(node):
        node = _resolve(node, schema)
        if not node.get("properties") and isinstance(node.get("additionalProperties"), dict):
            node = _resolve(node["additionalProperties"], schema)
        return node

    for key in path:
        node = entry(node)["properties"][key]
    return _fill({}, entry(node), schema)


def default(*path: str):
    """One default of the schema: ``default("engine", "trajectory_points")`` is 1000."""
    return schema_defaults(*path[:-1])[path[-1]]


def describe(schema: dict) -> str:
    """What a schema node allows, in words: its type, bounds, choices and description."""
    if not isinstance(schema, dict):
        return ""
    words = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        words.append(" or ".join(map(str, kinds)))
    for key, sign in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
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


def validation_message(cause) -> str:
    """A jsonschema ValidationError reduced to the key's path, what is wrong and what is allowed
    (Snakemake's own message prints the whole schema)."""
    path = ".".join(map(str, cause.absolute_path)) or "(top level)"
    if cause.validator == "additionalProperties":
        allowed = list(cause.schema.get("properties", {}))
        unknown = [key for key in cause.instance if key not in allowed]
        hints = [
            f"{key!r}: did you mean {close[0]!r}?"
            for key in unknown
            if (close := difflib.get_close_matches(str(key), allowed, n=1))
        ]
        allowed_text = "keys " + ", ".join(allowed) + ("; " + " ".join(hints) if hints else "")
        return f"{path}: {cause.message}; allowed: {allowed_text}"
    if cause.validator == "uniqueItems":
        seen, repeated = [], []
        for item in cause.instance:
            (repeated if item in seen else seen).append(item)
        return (
            f"{path}: {', '.join(map(repr, dict.fromkeys(repeated)))} given more than once; "
            f"each value may appear once"
        )
    if cause.validator == "minItems" and not cause.instance:
        return f"{path}: the list is empty; give at least {cause.validator_value} value(s)"
    if cause.validator in ("oneOf", "anyOf"):
        # a list that fails only on being empty or on a repeat: say that, not "not valid under
        # any of the given schemas"
        for branch in cause.context or ():
            if branch.validator in ("uniqueItems", "minItems") and isinstance(cause.instance, list):
                return validation_message(branch)
        # the branches as the errors resolved them ($ref followed)
        allowed_text = " or ".join(
            dict.fromkeys(describe(e.schema) or e.message for e in cause.context)
        ) or describe(cause.schema)
        if cause.context and cause.schema.get("description"):
            allowed_text += f" ({' '.join(str(cause.schema['description']).split())})"
        return f"{path}: {cause.message}; allowed: {allowed_text}"
    return f"{path}: {cause.message}; allowed: {describe(cause.schema)}"


def validate(config: dict, schema: str | os.PathLike = SCHEMA) -> None:
    """Snakemake's validate() (which also fills in the schema's defaults); a failure is a
    ConfigError naming the key. A fit or dataset block with a ``sweep`` is expanded into its
    members (:mod:`sviflow.sweeps`), which are validated like any fit or dataset; the sweeps are
    kept in the config under ``sweeps.KEY`` and ``sweeps.DATASETS_KEY`` for :class:`Plan` (a
    config validated twice keeps them)."""
    from sviflow import sweeps as sweeping

    kept = config.pop(sweeping.KEY, None), config.pop(sweeping.DATASETS_KEY, None)
    if kept[0] is None:
        _validate(config, schema)
        found = sweeping.expand(config)
    else:
        found = kept[0], kept[1] or {}
    if any(found):
        # the members' names (sweep/step_size~0.001) are not the schema's names: validated under
        # stand-in names, which an error message turns back into the member's
        aliases, stand_in = {}, dict(config)
        for section, sweeps in zip(("fits", "datasets"), found):
            members = {name for sweep in sweeps.values() for name in sweep["members"]}
            entries = {}
            for name, entry in (config.get(section) or {}).items():
                alias = f"sweep-member-{len(aliases)}" if name in members else name
                if name in members:
                    aliases[alias] = name
                entries[alias] = entry
            if section in config:
                stand_in[section] = entries
        _validate(stand_in, schema, aliases)
        config[sweeping.KEY] = found[0]
        if found[1]:
            config[sweeping.DATASETS_KEY] = found[1]


def _validate(config: dict, schema, aliases: dict | None = None) -> None:
    from jsonschema.exceptions import ValidationError
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as snakemake_validate

    try:
        snakemake_validate(config, str(schema))
    except WorkflowError as error:
        cause = error.__context__
        if not isinstance(cause, ValidationError):
            raise
        if aliases and len(cause.absolute_path) > 1 and cause.absolute_path[1] in aliases:
            section, member = cause.absolute_path[0], aliases[cause.absolute_path[1]]
            cause.path[1] = member  # absolute_path is path here (the error is the root's)
            sweep = member.split("/", 1)[0]
            raise ConfigError(
                f"{validation_message(cause)} ({section}.{member} is a member of the sweep "
                f"{section}.{sweep}.sweep)"
            ) from None
        raise ConfigError(validation_message(cause)) from None


def _sorted(value):
    """Params compare by their printed form: sorted keys, so reordering a config reruns nothing."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


# --- the plan of one config --------------------------------------------------------------------


class Plan:
    """One validated config and the directory its paths are relative to.

    ``config`` must have been through :func:`validate` (its defaults filled in). Construction
    runs every check that needs no import of jax: the cross-references between entries, the
    names of models and guides, every file the config names, and the output paths."""

    def __init__(self, config: dict, config_dir: str | os.PathLike = "."):
        self.config = config
        self.config_dir = Path(config_dir)
        self.fits = list(config["fits"])
        # fit blocks with a sweep, expanded by validate() into their members (sviflow.sweeps)
        self.sweeps = config.get(SWEEPS_KEY) or {}
        # dataset blocks with a sweep, expanded the same way (coins/seed~0)
        self.dataset_sweeps = config.get(DATASETS_KEY) or {}
        self.datasets = list(config.get("datasets") or {})
        self.models = list(config["models"])
        self.comparisons = list(config.get("comparisons") or {})
        self.engine = config.get("engine") or {}
        # every output of this config under one folder (results by default): two configs run
        # in one directory, each with its own, keep each other's results
        self.results = os.path.normpath(config.get("results") or default("results"))
        self.check()

    # --- checks -------------------------------------------------------------------------------

    def check(self) -> None:
        self._check_results()
        self._check_names()
        self._cross_check()
        # every file reference, now: an input function's error is not reported when the job's
        # outputs exist (Snakemake then keeps them and runs nothing)
        for fit in self.fits:
            self.code_files(fit=fit)
        for model in self.models:
            self.code_files(model=model)
            self.reference_file(model)
        for dataset in self.datasets:
            self.data_file_inputs(dataset)
        self._check_outputs()
        self.check_sizes()
        self.check_cache_dir()

    def _check_results(self) -> None:
        results = self.config.get("results")
        if results is None:
            return
        path = Path(results)
        if path.is_absolute() or ".." in path.parts or not results.strip() or self.results == ".":
            raise ConfigError(
                f"results: {results!r}: give a folder inside the working directory "
                f"(a relative path without '..'), such as results/my_experiment"
            )
        if path.exists() and not path.is_dir():
            raise ConfigError(f"results: {results!r} is a file; give a folder")

    def _check_names(self) -> None:
        """Names become file names and wildcard values: the schema's pattern, matched in full
        (its ``$`` also matches before a final newline), no ``--`` (it joins a model and a
        dataset in a reference id), and no dataset called ``none`` (a model without data)."""
        pattern = load_schema()["$defs"]["name"]["pattern"]
        name_pattern = re.compile(pattern.removeprefix("^").removesuffix("$"))
        members = {
            section: {member: sweep for sweep, entry in sweeps.items() for member in entry["members"]}
            for section, sweeps in (("fits", self.sweeps), ("datasets", self.dataset_sweeps))
        }
        for section in NAMED_SECTIONS:
            for name in self.config.get(section) or {}:
                # sweep/step_size~0.001: the sweep's name is the user's
                name = members.get(section, {}).get(name, name)
                if not name_pattern.fullmatch(name):
                    raise ConfigError(
                        f"{section}.{name!r}: not a valid name (it names files under "
                        f"results/): letters, digits, _, . and -, starting with a "
                        f"letter or digit" + ("; this one ends in a newline" if name.endswith("\n") else "")
                    )
                if "--" in name:
                    raise ConfigError(
                        f"{section}.{name}: a name may not hold '--' (it joins a model "
                        f"and a dataset in a reference's name, results/references/"
                        f"<model>--<dataset>.h5); use '-' or '_'"
                    )
        if "none" in self.datasets:
            raise ConfigError(
                "datasets.none: 'none' stands for no data (results/references/"
                "<model>--none.h5); give the dataset another name"
            )

    def _cross_check(self) -> None:
        """What the schema cannot say: names that must point at other entries."""
        from sviflow.names import check_names

        config = self.config
        for fit, entry in config["fits"].items():
            if entry["model"] not in config["models"]:
                raise ConfigError(
                    f"fits.{fit}.model: {entry['model']!r} is not a key of models "
                    f"(models: {', '.join(self.models)}){self._member_note(fit)}"
                )
            if "data" in entry and entry["data"] not in (config.get("datasets") or {}):
                swept = f"; dataset sweeps: {', '.join(self.dataset_sweeps)}" if self.dataset_sweeps else ""
                raise ConfigError(
                    f"fits.{fit}.data: {entry['data']!r} is not a key of datasets "
                    f"(datasets: {', '.join(self.datasets) or 'none'}{swept}){self._member_note(fit)}"
                )
        # model and guide names: built in, an autoguide, or path/to/file.py:function
        for problem in check_names(config):
            raise ConfigError(problem)
        for fit, entry in config["fits"].items():
            if entry.get("batch") and isinstance(entry["steps"], dict):
                raise ConfigError(
                    f"fits.{fit}.batch: a fit with a step budget cannot be batched (each fit "
                    f"stops when its own rule holds); give steps a number, or batch: false"
                    f"{self._member_note(fit)}"
                )
        for name, entry in (config.get("comparisons") or {}).items():
            unknown = [f for f in entry["fits"] if f not in config["fits"]]
            if unknown:
                raise ConfigError(f"comparisons.{name}.fits: {', '.join(unknown)} not in fits")

    def _member_note(self, fit: str) -> str:
        """For a message about a sweep's member: which block the user wrote it in."""
        sweep = member_of(self.sweeps, fit)
        return f" (fits.{fit} is one of the fits of the sweep block fits.{sweep})" if sweep else ""

    def _check_outputs(self) -> None:
        """No two entries may write the same file, nor one a file where another needs a folder
        (a fit named ``comparisons`` would write its figures into the comparisons' folder)."""
        owners: dict[str, str] = {}
        for owner, paths in self.output_paths().items():
            for path in paths:
                key = os.path.normcase(os.path.normpath(path))
                if key in owners and owners[key] != owner:
                    raise ConfigError(
                        f"{owner}: its output {path} is also {owners[key]}'s; rename one of them"
                    )
                owners[key] = owner
        folders = {}
        for key, owner in owners.items():
            parent = os.path.dirname(key)
            while parent:
                folders.setdefault(parent, owner)
                parent = os.path.dirname(parent)
        for key, owner in owners.items():
            if key in folders and folders[key] != owner:
                raise ConfigError(
                    f"{owner}: its output {key} is the folder of {folders[key]}'s outputs; rename one of them"
                )
        for reserved in ("comparisons", "sweeps"):
            if reserved in self.fits or reserved in self.sweeps:
                raise ConfigError(
                    f"fits.{reserved}: results/figures/{reserved}/ holds the {reserved}' "
                    f"figures; give the fit another name"
                )
        if "comparisons" in self.fits:
            raise ConfigError(
                "fits.comparisons: results/figures/comparisons/ holds the "
                "comparisons' figures; give the fit another name"
            )

    # --- sizes: what a job would write, known before it runs --------------------------------

    # latent components of the built-in models (a user's model is not traced here: counted as 1)
    BUILTIN_COMPONENTS = {"coin_flips": 1, "multimodal_2d": 2, "correlated_gaussian_2d": 2}

    def _observations(self, fit: str) -> int | None:
        """Values of one mock set: known for the coin generator and the coin model without data;
        None where only the data file or the model knows (a file is not read here)."""
        entry = self.config["fits"][fit]
        model = self.config["models"][entry["model"]]
        data = (self.config.get("datasets") or {}).get(entry.get("data"))
        if data is None:
            if model["function"] == "coin_flips":
                return int((model.get("args") or {}).get("num_flips", 10))
            return 0 if model["function"] in self.BUILTIN_COMPONENTS else None
        if data.get("generator") == "coin_flips":
            args = data.get("args") or {}
            return int(args["n"]) if "n" in args else int(args.get("heads", 0)) + int(args.get("tails", 0))
        return None

    def estimate(self, fit: str) -> dict:
        """What a fit's jobs would write, in bytes, from the config alone (no data read, no model
        traced): ``{"fit": bytes, "predictive": bytes, "parts": {name: (bytes, how)},
        "components": latent components or None}``.

        The fit file: the losses (every step of every seed) and the thinned trajectory (at most
        2.5 x trajectory_points points; per point the guide's mean and sd of every component and
        a Gaussian guide's params, d^2 + 2d). The predictive file: the posterior draws
        (num_samples x components per seed), the log weights (float64, as many as the check
        needs) and both mock paths (num_mock sets of one value per observation, at most
        max_mock_values per seed and path). Numbers at the precision's width, before compression
        (the files are compressed, the job's arrays in memory are not). A user's model counts as
        one latent component, and mock sets of a data file at max_mock_values: an estimate
        that is low for models of many components."""
        entry = self.config["fits"][fit]
        model = self.config["models"][entry["model"]]
        width = 8 if (model.get("precision") or self.engine.get("precision")) == "float64" else 4
        seeds = len(entry["seed"]) if isinstance(entry["seed"], list) else 1
        steps = int(entry["steps"]["max"] if isinstance(entry["steps"], dict) else entry["steps"])
        components = self.BUILTIN_COMPONENTS.get(model["function"])
        d = components or 1
        points = min(
            steps,
            int(2.5 * int(self.engine.get("trajectory_points", default("engine", "trajectory_points")))) + 1,
        )
        predictive = self.config.get("predictive") or schema_defaults("predictive")
        num_samples = int(predictive["num_samples"])
        observations = self._observations(fit)
        max_mock = int(predictive["max_mock_values"])
        mock_values = (
            max_mock if observations is None else min(int(predictive["num_mock"]) * observations, max_mock)
        )
        parts = {
            "losses": (steps * seeds * width, f"{steps:,} steps x {seeds} seed(s) x {width} bytes"),
            "trajectory": (
                points * seeds * (d * d + 4 * d) * width,
                f"{points:,} points x {seeds} seed(s) x {d * d + 4 * d} values",
            ),
            "posterior": (
                num_samples * seeds * d * width,
                f"{num_samples:,} draws x {seeds} seed(s) x {d} component(s)"
                + ("" if components else " (a model of yours: counted as 1)"),
            ),
            "log_weights": (
                self.weighted_draws() * seeds * 8,
                f"{self.weighted_draws():,} draws x {seeds} seed(s) x 8 bytes",
            ),
            "mock": (2 * seeds * mock_values * width, f"2 paths x {seeds} seed(s) x {mock_values:,} values"),
        }
        return {
            "fit": parts["losses"][0] + parts["trajectory"][0],
            "predictive": sum(parts[k][0] for k in ("posterior", "log_weights", "mock")),
            "parts": parts,
            "components": components,
        }

    def max_output_bytes(self) -> float:
        return float(self.engine.get("max_output_mb", default("engine", "max_output_mb"))) * 1e6

    def check_sizes(self) -> None:
        """Refuse a fit whose fit or predictive file would exceed engine.max_output_mb: steps:
        1.0e9 would store 4 GB of losses per seed, predictive.num_samples: 3e8 held more than a
        job's memory (its predict job deadlocked), and neither said so before it ran."""
        limit = self.max_output_bytes()
        advice = {
            "fit": "lower fits.{fit}.steps (or engine.trajectory_points)",
            "predictive": "lower predictive.num_samples (and checks.quality.khat_particles, "
            "elbo_particles), predictive.num_mock or max_mock_values",
        }
        for fit in self.fits:
            estimate = self.estimate(fit)
            for kind, keys in (
                ("fit", ("losses", "trajectory")),
                ("predictive", ("posterior", "log_weights", "mock")),
            ):
                if estimate[kind] > limit:
                    shown = "; ".join(
                        f"{key} {estimate['parts'][key][0] / 1e6:,.1f} MB ({estimate['parts'][key][1]})"
                        for key in keys
                    )
                    folder = "fits" if kind == "fit" else "predictive"
                    raise ConfigError(
                        f"fits.{fit}: {self.out(f'{folder}/{fit}.h5')} would hold about "
                        f"{estimate[kind] / 1e6:,.0f} MB before compression, above "
                        f"engine.max_output_mb = {limit / 1e6:g} ({shown}); "
                        f"{advice[kind].format(fit=fit)}, or raise engine.max_output_mb if the disk "
                        f"and the job's memory can take it"
                    )

    def check_cache_dir(self) -> None:
        """engine.cache_dir must be a folder or creatable as one (relative to the working
        directory): a file there ended every JAX job in a FileExistsError traceback."""
        directory = self.engine.get("cache_dir")
        if not directory:
            return
        path = Path(directory)
        for part in (path, *path.parents):
            if part.exists():
                if not part.is_dir():
                    what = "is a file" if part == path else f"lies under {part}, which is a file"
                    raise ConfigError(
                        f"engine.cache_dir: {directory!r} {what}, not a folder: it "
                        f"holds the compilation cache; give a folder's path (or "
                        f"remove the file), or '' to turn the cache off"
                    )
                return

    # --- paths --------------------------------------------------------------------------------

    def out(self, path: str) -> str:
        """``path`` under this config's results folder: ``out("fits/{fit}.h5")``."""
        return f"{self.results}/{path}"

    def user_file(self, name: str, where: str) -> tuple[str, str | None]:
        """path.py:function in the config -> the same with the path relative to the working
        directory (as given, relative to the config file), and that path; checks that the file
        exists and defines the function (read from its syntax: the file is not run)."""
        path_text, sep, function = name.partition(":")
        if not (sep and path_text.endswith(".py")):
            return name, None
        path = Path(path_text) if Path(path_text).is_absolute() else self.config_dir / path_text
        if not path.is_file():
            raise ConfigError(
                f"{where}: file {path_text!r} not found (looked for {path}); paths "
                f"are relative to the config file"
            )
        from sviflow.userfiles import check_reference

        check_reference(name, where, path)
        relative = os.path.relpath(path)
        return f"{relative}:{function}", relative

    def _config_path(self, text: str) -> Path:
        return Path(text) if Path(text).is_absolute() else self.config_dir / text

    def output_paths(self) -> dict[str, list[str]]:
        """Every file the workflow writes, by the config entry that owns it."""
        paths = {}
        for fit in self.fits:
            paths[f"fits.{fit}"] = [
                self.out(f"fits/{fit}.h5"),
                self.out(f"predictive/{fit}.h5"),
                self.out(f"checks/{fit}.h5"),
                self.out(f"arviz/{fit}.nc"),
                *(self.out(f"figures/{fit}/{name}.png") for name in self.figures(fit)),
                self.out(f"figures/{fit}/verdict.html"),
            ]
        for dataset in self.datasets:
            paths[f"datasets.{dataset}"] = [self.out(f"data/{dataset}.h5")]
        for name in self.comparisons:
            paths[f"comparisons.{name}"] = [self.out(f"figures/comparisons/{name}.png")]
        for name in self.sweeps:
            paths[f"fits.{name}.sweep"] = [self.out(f"figures/sweeps/{name}.png")]
        for model in self.models:
            paths[f"models.{model}"] = [self.out(f"models/{model}.json")]
        for reference in self.reference_ids():
            paths[f"the reference {reference}"] = [self.out(f"references/{reference}.h5")]
        paths["the workflow"] = [
            self.out("summary.csv"),
            self.out("summary.md"),
            self.out("verdicts.html"),
            self.out("checks/strict.ok"),
        ]
        return paths

    # --- the jobs' config slices ----------------------------------------------------------------

    def model_spec(self, name: str) -> dict:
        entry = self.config["models"][name]
        function, _ = self.user_file(entry["function"], f"models.{name}.function")
        # float32 or float64 for every JAX job of the model (sviflow/precision.py): in the slice,
        # so that a change reruns its fits, predictions and reference
        precision = entry.get("precision") or self.engine["precision"]
        return _sorted({"name": name, "function": function, "args": entry["args"], "precision": precision})

    def fit_spec(self, fit: str) -> dict:
        """The config slice of one fit: everything that changes its numbers, nothing else."""
        entry = self.config["fits"][fit]
        guide = dict(entry["guide"])
        guide["name"], _ = self.user_file(guide["name"], f"fits.{fit}.guide.name")
        # autoguide arguments that are functions (local_model, ...) may be file references too
        if guide.get("args"):
            guide["args"] = {
                key: self.user_file(value, f"fits.{fit}.guide.args.{key}")[0]
                if isinstance(value, str)
                else value
                for key, value in guide["args"].items()
            }
        seeds = entry["seed"]
        steps = entry["steps"]
        if isinstance(steps, dict):
            steps = {**BUDGET_DEFAULTS, **steps}
        return _sorted(
            {
                "name": fit,
                "model": self.model_spec(entry["model"]),
                "data": entry.get("data"),
                "guide": guide,
                "optimizer": entry["optimizer"],
                "elbo": entry["elbo"],
                "steps": steps,
                "seeds": seeds if isinstance(seeds, list) else [seeds],
                "stable_update": entry["stable_update"],
                # what is stored; and for a budget the chunks, between which the engine applies the
                # rule (so they change where it stops). A fixed number of steps gets its chunks by
                # the environment: they change none of its numbers, and a change reruns nothing.
                "engine": {
                    "trajectory_points": self.engine["trajectory_points"],
                    **({"chunks": self.engine["chunks"]} if isinstance(steps, dict) else {}),
                },
                # the rule the engine applies (to stop, to lower the step size, to average) and the
                # check applies again: a fit depends on it
                "convergence": self.config["checks"]["convergence"],
                "init": self.fit_init(fit),
            }
        )

    def fit_init(self, fit: str) -> str:
        """Where a fit starts: laplace (the posterior's mode and curvature) by default for a step
        budget with an autoguide that takes it, the guide's own initialisation otherwise."""
        entry = self.config["fits"][fit]
        if entry.get("init"):
            return entry["init"]
        budget = isinstance(entry["steps"], dict)
        return "laplace" if budget and entry["guide"]["name"] in LAPLACE_GUIDES else "guide"

    def dataset_spec(self, dataset: str) -> dict:
        entry = dict(self.config["datasets"][dataset])
        if "file" in entry:
            entry["file"] = self.data_file_inputs(dataset)[0]
        return _sorted(entry)

    def check_settings(self) -> dict:
        """The checks' config slice; strict only gates the end, so toggling it reruns no check."""
        return _sorted({k: v for k, v in self.config["checks"].items() if k != "strict"})

    def predictive_settings(self) -> dict:
        return _sorted(self.config["predictive"])

    def weighted_draws(self) -> int:
        """How many guide draws predict weighs for the check's ELBO and k-hat: the posterior
        samples, or more if the checks ask for more. Only a change of this number reruns predict."""
        from sviflow.diagnostics import weighted_draws

        return weighted_draws(self.config["checks"], self.config["predictive"])

    def sweep_settings(self) -> dict:
        """The sweeps (their keys and members' values), for the summary's sweep tables."""
        return {name: self.sweeps[name] for name in sorted(self.sweeps)}  # members in grid order

    def summary_specs(self) -> dict:
        return {
            fit: {
                "name": fit,
                "model": self.config["fits"][fit]["model"],
                "guide": self.config["fits"][fit]["guide"]["name"],
            }
            for fit in self.fits
        }

    # --- references ---------------------------------------------------------------------------

    def reference_method(self, model: str) -> str:
        return self.config["models"][model]["reference"]["method"]

    def reference_id(self, fit: str) -> str:
        """A reference is one per model and dataset: '<model>--<dataset>' or '<model>--none'
        (names hold no '--' and no dataset is called none, so no two pairs share an id)."""
        entry = self.config["fits"][fit]
        return f"{entry['model']}--{entry.get('data', 'none')}"

    def reference_ids(self) -> list[str]:
        return sorted(
            {
                self.reference_id(f)
                for f in self.fits
                if self.reference_method(self.config["fits"][f]["model"]) != "none"
            }
        )

    @staticmethod
    def split_reference(reference: str) -> tuple[str, str | None]:
        """'<model>--<dataset>' -> (model, dataset or None)."""
        model, dataset = reference.split("--", 1)
        return model, None if dataset == "none" else dataset

    def reference_file(self, model: str) -> str | None:
        """method draws: the file of the model's draws, relative to the working directory (as
        given, relative to the config file, like a dataset's file); None for the other methods."""
        entry = self.config["models"][model]["reference"]
        if entry.get("method") != "draws":
            return None
        path = self._config_path(entry["file"])
        if not path.is_file():
            raise ConfigError(
                f"models.{model}.reference.file: file {entry['file']!r} not found "
                f"(looked for {path}); paths are relative to the config file"
            )
        return os.path.relpath(path)

    def reference_settings(self, model: str) -> dict:
        """The reference's config slice; a draws file's path as the job opens it."""
        settings = dict(self.config["models"][model]["reference"])
        if settings.get("method") == "draws":
            settings["file"] = self.reference_file(model)
        return _sorted(settings)

    def reference_inputs(self, reference: str) -> dict:
        model, dataset = self.split_reference(reference)
        inputs = {"code": self.code_files(model=model)}
        if dataset is not None:
            inputs["data"] = self.out(f"data/{dataset}.h5")
        return inputs

    # --- inputs -------------------------------------------------------------------------------

    def code_files(self, fit: str | None = None, model: str | None = None) -> list[str]:
        """The user's model and guide files a job depends on: an edit reruns the job."""
        files = []
        if fit is not None:
            entry = self.config["fits"][fit]
            _, path = self.user_file(entry["guide"]["name"], f"fits.{fit}.guide.name")
            files += [path] if path else []
            for key, value in (entry["guide"].get("args") or {}).items():
                if isinstance(value, str):
                    _, path = self.user_file(value, f"fits.{fit}.guide.args.{key}")
                    files += [path] if path else []
            model = entry["model"]
        if model is not None:
            _, path = self.user_file(self.config["models"][model]["function"], f"models.{model}.function")
            files += [path] if path else []
        return files

    def fit_data(self, fit: str) -> str | None:
        """The data file of a fit, or None for a model without data."""
        data = self.config["fits"][fit].get("data")
        return self.out(f"data/{data}.h5") if data else None

    def fit_inputs(self, fit: str) -> dict:
        inputs = {"code": self.code_files(fit=fit)}
        if self.fit_data(fit):
            inputs["data"] = self.fit_data(fit)
        return inputs

    def with_reference(self, fit_name: str, **inputs) -> dict:
        """``inputs`` plus the fit's reference posterior, where its model has one."""
        if self.reference_method(self.config["fits"][fit_name]["model"]) != "none":
            inputs["reference"] = self.out(f"references/{self.reference_id(fit_name)}.h5")
        return inputs

    def plot_inputs(self, fit: str, batch: list[str] | None = None) -> dict:
        """The plot job's inputs; with ``batch`` (fits sharing ``fit``'s model), each fit's
        files as lists in its order, its data and reference too (:meth:`batch_inputs`)."""
        if batch:
            return self.batch_inputs(
                batch,
                code=False,
                fit=[self.out(f"fits/{name}.h5") for name in batch],
                predictive=[self.out(f"predictive/{name}.h5") for name in batch],
                check=[self.out(f"checks/{name}.h5") for name in batch],
                reference=True,
            )
        inputs = self.with_reference(
            fit,
            fit=self.out(f"fits/{fit}.h5"),
            predictive=self.out(f"predictive/{fit}.h5"),
            check=self.out(f"checks/{fit}.h5"),
        )
        if self.fit_data(fit):
            inputs["data"] = self.fit_data(fit)
        return inputs

    def batch_inputs(
        self, fits: list[str], *, code: bool = True, data: bool = True, reference: bool = False, **inputs
    ) -> dict:
        """A batch job's inputs: ``inputs`` (each fit's files as lists), with ``code`` the
        model's code, with ``data`` each fit's data file and with ``reference`` its reference,
        as lists in the fits' order: the fits of a batch may differ in their data
        (:meth:`batch_key`)."""
        inputs = {**({"code": self.code_files(fit=fits[0])} if code else {}), **inputs}
        if data and self.fit_data(fits[0]):
            inputs["data"] = [self.fit_data(fit) for fit in fits]
        if reference and self.reference_method(self.config["fits"][fits[0]]["model"]) != "none":
            inputs["reference"] = [self.out(f"references/{self.reference_id(fit)}.h5") for fit in fits]
        return inputs

    def data_file_inputs(self, dataset: str) -> list[str]:
        entry = self.config["datasets"][dataset]
        if "file" in entry:
            return [os.path.relpath(self._config_path(entry["file"]))]
        return []

    # --- the references of a dataset sweep, made in one job ------------------------------------

    # the reference methods computed in a second or two (a job's start costs as much): one job
    # for a model's references on all datasets of a sweep. nuts and draws take minutes each,
    # and on a cluster each deserves a node of its own: one job per dataset
    BATCHED_REFERENCES = ("exact", "grid")

    def reference_batches(self) -> dict[str, list[str]]:
        """``{'<model>--<dataset sweep>': [reference ids]}``: a model's exact or grid references
        on every dataset of a sweep (of two or more) that some fit of the model has, in one
        job; each the same file, to the bit, as the reference job of one dataset makes. Every
        dataset of the sweep, not only those its fits need: what the job makes must not depend
        on the other fits (adding or dropping a fit would rerun the references of the rest)."""
        needed = set(self.reference_ids())
        batches = {}
        for model in self.models:
            if self.reference_method(model) not in self.BATCHED_REFERENCES:
                continue
            for name, sweep in self.dataset_sweeps.items():
                ids = [f"{model}--{member}" for member in sweep["members"]]
                if len(ids) > 1 and needed.intersection(ids):
                    batches[f"{model}--{name}"] = ids
        return batches

    @property
    def solo_references(self) -> list[str]:
        batched = {r for ids in self.reference_batches().values() for r in ids}
        return [r for r in self.reference_ids() if r not in batched]

    def reference_ids_made(self) -> list[str]:
        """Every reference some job makes: the fits' and the rest of their dataset sweeps'."""
        batched = [r for ids in self.reference_batches().values() for r in ids]
        return sorted(set(self.reference_ids()) | set(batched))

    # --- batches: fits that share a program, run as one vmapped program in one job -------------

    # the guide's arguments that only set its initial values (built-in guides: ``*_init``), which
    # fits of one batch may differ in (the batch passes each fit's initial params)
    INIT_ARGS = ("init_scale", "init_loc_fn")

    def work(self, fit: str, budget_max: bool = False) -> int | None:
        """steps x num_particles x seeds of a fit of a fixed number of steps; a budget's: None,
        or with ``budget_max`` its max steps'."""
        entry = self.config["fits"][fit]
        steps = entry["steps"]
        if isinstance(steps, dict):
            if not budget_max:
                return None
            steps = steps["max"]
        seeds = len(entry["seed"]) if isinstance(entry["seed"], list) else 1
        return int(steps) * int(entry["elbo"].get("num_particles", 1)) * seeds

    def priority(self, *fits: str) -> float:
        """Snakemake's job priority of the fit job of ``fits`` (one fit, or a batch's): the
        log10 of their work (:meth:`work`; a budget: its max steps), so that the fits that take
        longest start first. Snakemake otherwise starts ready jobs in an order of its own: on 2
        cores the default config's 32-particle fit, its longest, started 40 s into a 77 s run
        and the run waited on its chain at the end (benchmarks/README.md)."""
        total = sum(self.work(fit, budget_max=True) for fit in fits)
        return round(math.log10(max(total, 1)), 3)

    def batched(self, fit: str) -> bool:
        """Does ``fit`` run in a batch? Its ``batch`` if given; else a sweep's member of a fixed
        number of steps whose work (:meth:`work`) is at most engine.batch.max_work. A fit's
        own config decides, never the others': adding or changing a fit never moves another
        into or out of a batch."""
        entry = self.config["fits"][fit]
        if "batch" in entry:
            return bool(entry["batch"])
        work = self.work(fit)
        member = any(fit in sweep["members"] for sweep in self.sweeps.values())
        return member and work is not None and work <= float(self.engine["batch"]["max_work"])

    def batch_key(self, fit: str) -> str:
        """What must be equal for fits to share a batch: the fit's spec without its name,
        seeds, step size, the guide's initial values and which dataset it fits (whether it has
        data stays). Datasets of one shape share a program (their arrays are its arguments);
        a file's shape is known only once it is read, so the batch's jobs split its fits by
        the shapes of their data into programs of their own (sviflow.steps.fit_batch)."""
        import json

        spec = self.fit_spec(fit)
        spec = {key: value for key, value in spec.items() if key not in ("name", "seeds", "data")}
        spec["has_data"] = bool(self.config["fits"][fit].get("data"))
        spec["optimizer"] = {k: v for k, v in spec["optimizer"].items() if k != "step_size"}
        args = spec["guide"].get("args") or {}
        spec["guide"] = {
            **spec["guide"],
            "args": {k: v for k, v in args.items() if not (k.endswith("_init") or k in self.INIT_ARGS)},
        }
        return json.dumps(spec, sort_keys=True)

    @functools.cached_property
    def _batches(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for fit in self.fits:
            if self.batched(fit):
                groups.setdefault(self.batch_key(fit), []).append(fit)
        size, limit = int(self.engine["batch"]["max_fits"]), self.max_output_bytes()
        batches = {}
        for fits in groups.values():
            # at most max_fits fits, and at most engine.max_output_mb of their fit or predictive
            # arrays together: a batch's job holds every fit's arrays at once
            current, held = [], 0.0
            for fit in fits:
                estimate = self.estimate(fit)
                need = max(estimate["fit"], estimate["predictive"])
                if current and (len(current) == size or held + need > limit):
                    batches[f"batch_{len(batches) + 1}"] = current
                    current, held = [], 0.0
                current.append(fit)
                held += need
            if current:
                batches[f"batch_{len(batches) + 1}"] = current
        return batches

    def batches(self) -> dict[str, list[str]]:
        """``{batch_1: [fits], ...}``: the batched fits by program, in config order, at most
        engine.batch.max_fits to a batch and at most engine.max_output_mb of their arrays."""
        return dict(self._batches)

    def batch_of(self, fit: str) -> str | None:
        return next((name for name, fits in self._batches.items() if fit in fits), None)

    @property
    def solo_fits(self) -> list[str]:
        """The fits that run in jobs of their own (the fit, predict, check and plot rules)."""
        return [fit for fit in self.fits if self.batch_of(fit) is None]

    def batch_settings(self) -> dict:
        return {"lanes": int(self.engine["batch"]["lanes"])}

    # --- figures and targets --------------------------------------------------------------------

    def figures(self, fit: str) -> list[str]:
        """The figures of one fit: which apply depends on its model and guide."""
        names = list(PLOT_FIGURES)
        if self.config["fits"][fit].get("data"):
            names.append(OPTIONAL_FIGURES["mock"])
        if self.config["fits"][fit]["guide"]["name"] == "AutoMultivariateNormal":
            names.append(OPTIONAL_FIGURES["covariance"])
        return names

    def plot_sets(self) -> dict[tuple[str, ...], list[str]]:
        """The plot rules: the short names of each set of optional figures (``("mock",)``) and
        the fits that have exactly that set; only the sets some fit has."""
        sets = {}
        for extra in ((), ("mock",), ("covariance",), ("mock", "covariance")):
            names = list(PLOT_FIGURES) + [OPTIONAL_FIGURES[key] for key in extra]
            fits = [fit for fit in self.solo_fits if self.figures(fit) == names]
            if fits:
                sets[extra] = fits
        return sets

    @staticmethod
    def plot_rule_name(extra: tuple[str, ...]) -> str:
        return "plot_with_" + "_and_".join(extra) if extra else "plot"

    def plot_rule(self, fit: str) -> str:
        """The rule that draws ``fit``'s figures."""
        if self.batch_of(fit):
            return f"plot_{self.batch_of(fit)}"
        return next(self.plot_rule_name(extra) for extra, fits in self.plot_sets().items() if fit in fits)

    def draws_figures(self, fit: str) -> bool:
        """Are ``fit``'s figures targets of the run? Its ``figures``; by default yes, except for
        a sweep's members (the sweep figure compares them; their figures can still be asked for)."""
        entry = self.config["fits"][fit]
        if "figures" in entry:
            return bool(entry["figures"])
        return not any(fit in sweep["members"] for sweep in self.sweeps.values())

    def all_outputs(self) -> list[str]:
        outputs = [self.out("summary.csv"), self.out("summary.md")]
        outputs += [
            self.out(f"figures/{fit}/{name}.png")
            for fit in self.fits
            if self.draws_figures(fit)
            for name in self.figures(fit)
        ]
        outputs += [self.out(f"figures/comparisons/{name}.png") for name in self.comparisons]
        outputs += [self.out(f"figures/sweeps/{name}.png") for name in self.sweeps]
        if self.config["checks"]["strict"]:
            outputs.append(self.out("checks/strict.ok"))
        return outputs

    def wildcard_constraints(self) -> dict[str, str]:
        """Each wildcard matches exactly the config's names (an alternation of the escaped
        names), so no rule's pattern can take another's file."""

        def one_of(names, nothing):
            return "|".join(map(re.escape, names)) or nothing

        return {
            "fit": one_of(self.fits, "no-fits"),
            # the per-fit rules' (fit, predict, check, plot): a batched fit's files are its batch's
            "solo_fit": one_of(self.solo_fits, "no-solo-fits"),
            "sweep": one_of(self.sweeps, "no-sweeps"),
            "dataset": one_of(self.datasets, "no-datasets"),
            "reference": one_of(self.reference_ids_made(), "no-references"),
            # the reference rule's: a dataset sweep's exact or grid ones are its batch's
            "solo_reference": one_of(self.solo_references, "no-solo-references"),
            "comparison": one_of(self.comparisons, "no-comparisons"),
        }


def config_dir(configfiles) -> Path:
    """Paths in the config are relative to the last config file the user gave."""
    files = list(configfiles or [])
    return Path(files[-1]).parent if files else Path(".")
