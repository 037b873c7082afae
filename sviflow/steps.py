"""One function per workflow step: read HDF5 in, call the library, write HDF5 out.

Every function has the signature ``step(inputs, outputs, params, progress_file=None)`` with
three dicts of names to paths / settings, so that Snakemake (through ``scripts/``), the command
line and the tests call the same code. The heavy imports (jax, numpyro, arviz, matplotlib) are
made inside the steps that need them, so that no step pays for another's.

A fit's config slice ("spec") is the dict that ``workflow/rules/common.smk`` builds:
``{"name", "model": {"name", "function", "args"}, "data", "guide", "optimizer", "elbo",
"steps", "seeds", "stable_update", "engine": {"trajectory_points"}}``; the number of chunks,
which changes no number, comes through the environment (``SVIFLOW_FIT_CHUNKS``) or
``engine.chunks`` when a step is run by hand.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from sviflow.config import BUDGET_DEFAULTS, default, schema_defaults
from sviflow.errors import ConfigError
from sviflow.h5io import read_artifact, write_artifact

log = logging.getLogger("sviflow")


def _cache_dir(params: dict):
    return params.get("cache_dir") or os.environ.get("SVIFLOW_JAX_CACHE")


def _set_precision(params: dict) -> None:
    """jax_enable_x64 as the job's model asks (models.<name>.precision): first in a JAX step."""
    from sviflow.precision import set_precision

    set_precision(params)


def _jax_step(params: dict) -> None:
    """First in a JAX step: the model's precision, then the persistent compilation cache."""
    _set_precision(params)
    from sviflow.engine import enable_compilation_cache

    enable_compilation_cache(_cache_dir(params))


def _dataset(inputs: dict):
    return read_artifact(inputs["data"], "data") if inputs.get("data") else None


def _model_and_guide(spec: dict, kwargs: dict, check_sites: bool = False):
    """The fit's model and guide, set up; with ``check_sites`` (the fit step, before any SVI
    step) also -> the model's (latent, observed) sites, once the model is known to have a latent
    site and the guide to sample exactly those (sviflow.sites)."""
    from sviflow.resolve import prepare_guide, resolve_guide, resolve_model

    where, model_key = f"fits.{spec['name']}", f"models.{spec['model']['name']}.function"
    model = resolve_model(spec["model"], where=f"models.{spec['model']['name']}")
    guide = resolve_guide(spec["guide"], model, where=f"{where}.guide")
    sources = {model_key: spec["model"]["function"], f"{where}.guide.name": spec["guide"]["name"]}
    if check_sites:
        from sviflow import sites

        try:
            model_sites = sites.check_model(
                model, kwargs, where, model_key, spec["model"]["function"], spec.get("data")
            )
        except ConfigError:
            raise
        except Exception:
            # the model fails when traced: prepare_guide says so with its file and line
            prepare_guide(model, guide, kwargs, where=where, sources=sources)
            raise
    # once, eagerly, before any jit or vmap: fixes an autoguide's latent order in every step,
    # and a model that fails says so with its config key and file
    prepare_guide(model, guide, kwargs, where=where, sources=sources)
    if not check_sites:
        return model, guide
    sites.check_guide(model_sites, guide, kwargs, where, spec["guide"]["name"], spec["model"]["function"])
    return model, guide, model_sites


def model(inputs, outputs, params, progress_file=None):
    """A model's config slice (function, arguments, precision) as JSON: the file its fits and
    its reference start from (workflow/rules/model.smk says why)."""
    import json

    from sviflow.h5io import written_atomically

    with written_atomically(outputs["spec"]) as temporary, open(temporary, "w") as handle:
        json.dump(params["spec"], handle, indent=1, sort_keys=True)
    log.info(
        "model %s: function %s, args %s",
        params["spec"]["name"],
        params["spec"]["function"],
        params["spec"].get("args"),
    )


def simulate(inputs, outputs, params, progress_file=None):
    """A dataset from its generator or its file -> ``sviflow.data``."""
    from sviflow.data import load_dataset

    dataset = load_dataset(params["spec"], where=f"datasets.{params['name']}")
    for group, arrays in dataset.items():
        for name, value in arrays.items():
            log.info(
                "dataset %s: %s %s shape %s, mean %.4g",
                params["name"],
                group,
                name,
                np.shape(value),
                float(np.mean(value)) if np.size(value) else float("nan"),
            )
    write_artifact(outputs["data"], "data", dataset, config=params["spec"])


def _fit_setup(spec: dict, kwargs: dict, adaptive: bool = False) -> dict:
    """What a fit needs before its first step: model, guide, latent sites, the SVI object and
    the engine's settings (a budget, a decay, a Laplace start)."""
    from numpyro.infer import SVI

    from sviflow.optim import make_elbo, make_optimizer

    where = f"fits.{spec['name']}"
    # refused before any SVI step: a model without a latent site, a guide that leaves one out
    # or samples one the model does not have
    model, guide, (latent, _) = _model_and_guide(spec, kwargs, check_sites=True)
    # a budget's defaults (the schema cannot fill them inside its oneOf)
    budget = {**BUDGET_DEFAULTS, **spec["steps"]} if isinstance(spec["steps"], dict) else None
    decay = None
    if budget is not None and float(budget["decay"]) < 1 and not spec["optimizer"].get("schedule"):
        decay = {"factor": float(budget["decay"]), "max_decays": int(budget["max_decays"])}
    optimizer, init_params = {**default("fits", "optimizer"), **spec["optimizer"]}, None
    if spec.get("init", "guide") == "laplace":
        from sviflow.laplace import laplace_init

        init_params, smallest = laplace_init(model, guide, kwargs, int(spec["seeds"][0]))
        if init_params is None:
            log.warning(
                "fit %s: no Laplace start for guide %s; it starts from its own initialisation",
                spec["name"],
                spec["guide"]["name"],
            )
        elif not optimizer.get("schedule"):
            # Adam moves every parameter by about its step size a step: to resolve the
            # narrowest posterior direction it must start well below that direction's sd
            cap = 0.1 * smallest
            if cap < float(optimizer["step_size"]):
                log.info(
                    "fit %s: first step size %.3g, a tenth of the sd of the narrowest "
                    "direction of the Laplace approximation (optimizer.step_size %.3g)",
                    spec["name"],
                    cap,
                    optimizer["step_size"],
                )
                optimizer["step_size"] = cap
    svi = SVI(
        model,
        guide,
        make_optimizer(optimizer, f"{where}.optimizer", adaptive=adaptive or decay is not None),
        loss=make_elbo(spec["elbo"], f"{where}.elbo"),
    )
    engine = spec.get("engine", {})
    # a budget's spec holds its chunks (they are where the rule is applied); a fixed number of
    # steps gets them by the environment: they change no number of such a fit
    chunks = engine.get("chunks") or os.environ.get("SVIFLOW_FIT_CHUNKS") or default("engine", "chunks")
    rule = {**schema_defaults("checks", "convergence"), **(spec.get("convergence") or {})}
    stable_update = bool(spec.get("stable_update", default("fits", "stable_update")))
    options = {
        "chunks": int(chunks),
        "trajectory_points": int(engine.get("trajectory_points", default("engine", "trajectory_points"))),
        "stable_update": stable_update,
        "latent_sites": latent,
        "rule": rule,
        "moment_draws": int(rule["draws"]),
        "budget": budget,
        "decay": decay,
    }
    return {
        "model": model,
        "guide": guide,
        "latent": latent,
        "svi": svi,
        "step_size": float(optimizer["step_size"]),
        "init_params": init_params,
        "options": options,
    }


def _traced(spec: dict, run):
    """``run()``, with a model or guide that fails when traced named by its config key."""
    try:
        return run()
    except (TypeError, ValueError, KeyError, NotImplementedError) as error:
        raise ConfigError(
            f"fits.{spec['name']}: the model {spec['model']['function']!r} with the guide "
            f"{spec['guide']['name']!r} failed when traced: "
            f"{type(error).__name__}: {error}"
        ) from error


def fit(inputs, outputs, params, progress_file=None):
    """One SVI fit (all its seeds at once) -> ``sviflow.fit``."""
    _jax_step(params)
    from sviflow.data import model_kwargs
    from sviflow.engine import fit_svi

    spec = params["spec"]
    kwargs = model_kwargs(_dataset(inputs))
    setup = _fit_setup(spec, kwargs)
    options = setup["options"]
    result = _traced(
        spec,
        lambda: fit_svi(
            setup["svi"],
            None if options["budget"] else int(spec["steps"]),
            spec["seeds"],
            kwargs,
            progress=True,
            progress_file=progress_file,
            init_params=setup["init_params"],
            **options,
        ),
    )
    _write_fit(outputs["fit"], spec, result, setup["latent"], options["stable_update"])


def fit_batch(inputs, outputs, params, progress_file=None):
    """Fits that share one program (``params["specs"]``, their files ``outputs["fit"]`` and
    their data ``inputs["data"]`` in the same order), run as one vmapped program compiled once
    -> one ``sviflow.fit`` file each, as the fit step writes it (sviflow.engine.fit_batch).

    The fits of a batch may differ in their data: every lane gets its fit's data as an argument
    of the program. Datasets of another shape (names, shapes or dtypes of their arrays: known
    only once read) make another program in the same job, compiled once for all its fits; so
    does each dataset where the guide's constraints depend on the data. Either way a fit's
    numbers depend on its own config and data only, never on the other fits of its job."""
    _jax_step(params)
    from sviflow.engine import DataDependentConstraints, data_signature

    specs = list(params["specs"])
    paths = _as_list(outputs["fit"])
    if len(paths) != len(specs):
        raise ValueError(f"fit_batch: {len(specs)} fits but {len(paths)} output files")
    data = _batch_data(inputs, specs)
    lanes = int(params.get("batch", {}).get("lanes") or default("engine", "batch", "lanes"))
    programs: dict[tuple, list[int]] = {}
    for index, path in enumerate(data["paths"]):
        programs.setdefault(data_signature(data["kwargs"][path]), []).append(index)
    names = [spec["name"] for spec in specs]
    log.info(
        "batch of %d fits, %d lanes at a time, %d program(s): %s",
        len(specs),
        lanes,
        len(programs),
        ", ".join(names),
    )
    setups: dict = {}
    results: dict[int, object] = {}
    for chosen in programs.values():
        try:
            results.update(zip(chosen, _fit_program(specs, data, chosen, setups, lanes, progress_file)))
        except DataDependentConstraints as why:
            log.info(
                "fits %s: %s: one program per dataset, its data constants in it",
                ", ".join(names[i] for i in chosen),
                why,
            )
            for path in dict.fromkeys(data["paths"][i] for i in chosen):
                own = [i for i in chosen if data["paths"][i] == path]
                results.update(
                    zip(own, _fit_program(specs, data, own, setups, lanes, progress_file, arguments=False))
                )
    for index, (spec, path) in enumerate(zip(specs, paths)):
        result = results[index]
        result.timings["batch"] = {"fits": names, "lanes": lanes}
        setup = setups[_setup_key(spec, data["paths"][index])]
        _write_fit(path, spec, result, setup["latent"], setup["options"]["stable_update"])


def _batch_data(inputs: dict, specs: list[dict]) -> dict:
    """A batch job's data: ``{"paths": [each fit's data file or None], "kwargs": {file: the
    model's keyword arguments}}``, each file read once."""
    from sviflow.data import model_kwargs

    paths = _as_list(inputs["data"]) if inputs.get("data") else [None] * len(specs)
    if len(paths) != len(specs):
        raise ValueError(f"a batch of {len(specs)} fits has {len(paths)} files for data")
    paths = [str(path) if path else None for path in paths]
    kwargs = {
        path: model_kwargs(read_artifact(path, "data")) if path else {} for path in dict.fromkeys(paths)
    }
    return {"paths": paths, "kwargs": kwargs}


def _setup_key(spec: dict, data_path) -> tuple:
    """Fits whose set-up is one: the same data and guide (a Laplace start: the fit's own)."""
    import json

    laplace = spec["name"] if spec.get("init", "guide") == "laplace" else None
    return (data_path, json.dumps(spec["guide"], sort_keys=True), laplace)


def _fit_program(specs, data, chosen, setups, lanes, progress_file, arguments: bool = True):
    """The fits ``chosen`` (indices into ``specs``, their data of one shape) as one program;
    with ``arguments`` their data are its arguments (raises DataDependentConstraints where the
    model cannot take them so), else constants in it (the fits of one dataset)."""
    from sviflow.engine import DataDependentConstraints, data_may_be_arguments, initial_params
    from sviflow.engine import fit_batch as run_batch

    members, starts = [], {}
    for index in chosen:
        spec, path = specs[index], data["paths"][index]
        kwargs = data["kwargs"][path]
        key = _setup_key(spec, path)
        if key not in setups:
            # its model traced on its own data: the site checks and an autoguide's set-up
            setups[key] = _fit_setup(spec, kwargs, adaptive=True)
        setup = setups[key]
        start = setup["init_params"]
        if start is None:
            # the guide's initial params on the fit's own data and first seed (once each)
            seed = int(spec["seeds"][0])
            if (key, seed) not in starts:
                starts[key, seed] = _traced(
                    spec, lambda s=setup, k=kwargs, n=seed: initial_params(s["guide"], k, n)
                )
            start = starts[key, seed]
        if key[2] is None:
            step_size = float({**default("fits", "optimizer"), **spec["optimizer"]}["step_size"])
        else:
            step_size = setup["step_size"]  # a Laplace start may lower it
        member = {"seeds": spec["seeds"], "init_params": start, "step_size": step_size}
        if kwargs and arguments:
            member["kwargs"] = kwargs  # a lane's data is an argument, whatever the others'
        members.append(member)
    first, path = specs[chosen[0]], data["paths"][chosen[0]]
    program = setups[_setup_key(first, path)]
    if (
        arguments
        and data["kwargs"][path]
        and not data_may_be_arguments(program["model"], data["kwargs"][path])
    ):
        raise DataDependentConstraints(
            "the model needs its data as concrete values, or builds a support from them"
        )
    return _traced(
        first,
        lambda: run_batch(
            program["svi"],
            members,
            int(first["steps"]),
            data["kwargs"][path],
            lanes=lanes,
            progress=True,
            progress_file=progress_file,
            **program["options"],
        ),
    )


def _write_fit(path, spec: dict, result, latent, stable_update: bool) -> None:
    from sviflow.diagnostics import divergence, first_nonfinite

    bad, skipped = divergence(result.losses, result.params, stable_update)
    for seed, step in zip(result.seeds, bad):
        if step >= 0:
            log.warning(
                "fit %s seed %d: loss NaN or inf from step %d on: the fit diverged", spec["name"], seed, step
            )
    final = {
        k: np.round(np.asarray(v, dtype=float).ravel()[:6], 4).tolist() for k, v in result.params.items()
    }
    log.info(
        "fit %s: final params %s; mean loss of the last 10%% of steps %.4f",
        spec["name"],
        final,
        float(np.nanmean(result.losses[:, -max(1, result.losses.shape[1] // 10) :])),
    )
    for seed, averaged, window in zip(result.seeds, result.stop["averaged"], result.stop["windows"]):
        log.info(
            "fit %s seed %d: %s; reported guide: %s",
            spec["name"],
            seed,
            result.stop["reason"],
            f"the average of the iterates of steps {window['start_step']}-{window['end_step']}"
            if averaged
            else "the last iterate",
        )
    trajectory = {
        "step": result.trajectory_step,
        "params": result.trajectory,
        "moments": {"mean": result.moments["mean"], "sd": result.moments["sd"]},
    }
    if result.step_size is not None:
        trajectory["step_size"] = result.step_size
    write_artifact(
        path,
        "fit",
        {
            "losses": result.losses,
            "params": result.params,
            "last_params": result.last_params,
            "trajectory": trajectory,
            "first_nonfinite_step": first_nonfinite(result.losses),
            "diverged_step": bad,
            "skipped_steps": skipped,
        },
        config=spec,
        seeds=result.seeds,
        attrs={
            "timings": result.timings,
            "diverged": bool((bad >= 0).any()),
            "stop": result.stop,
            "moment_labels": result.moments["labels"],
            "latent_sites": latent,
        },
    )


def _predict_setup(params: dict, inputs: dict) -> dict:
    """What the predict step of a fit needs besides its params: model, guide, data, sites."""
    from sviflow.data import model_kwargs
    from sviflow.diagnostics import weighted_draws
    from sviflow.predictive import site_names
    from sviflow.references import site_shapes

    spec, settings = params["spec"], {**schema_defaults("predictive"), **params["predictive"]}
    dataset = _dataset(inputs)
    fit_kwargs, predict_kwargs = model_kwargs(dataset), model_kwargs(dataset, predict=True)
    model, guide = _model_and_guide(spec, fit_kwargs)
    latent, observed = site_names(model, fit_kwargs)
    return {
        "model": model,
        "guide": guide,
        "fit_kwargs": fit_kwargs,
        "predict_kwargs": predict_kwargs,
        "latent": latent,
        "observed": observed,
        "deterministic": list(site_shapes(model, fit_kwargs)[1]),
        "settings": settings,
        # by hand without "weighted": as many as the check needs with its default settings
        "weighted": int(params.get("weighted") or weighted_draws(None, settings)),
    }


def _predict_draws(setup: dict, fit_params: dict):
    """-> (support excess, the predictive tree) of a fit's (seed, ...) params."""
    from sviflow.predictive import support_excess

    excess = support_excess(setup["model"], setup["guide"], fit_params, setup["fit_kwargs"], setup["latent"])
    return excess, _predict_tree(setup, fit_params)


def _predict_tree(setup: dict, fit_params: dict, keys=None, lanes: int | None = None, row_kwargs=None):
    """The predictive tree of (row, ...) params: a fit's seeds, or a batch's (with each fit's
    ``keys``, ``lanes`` and each row's data ``row_kwargs``: sviflow.predictive)."""
    from sviflow.predictive import predictive_paths

    settings = setup["settings"]
    return predictive_paths(
        setup["model"],
        setup["guide"],
        fit_params,
        setup["fit_kwargs"],
        setup["predict_kwargs"],
        setup["observed"],
        setup["latent"],
        num_samples=int(settings["num_samples"]),
        num_mock=int(settings["num_mock"]),
        seed=int(settings["seed"]),
        num_weighted=setup["weighted"],
        max_mock_values=int(settings["max_mock_values"]),
        deterministic_sites=setup["deterministic"],
        keys=keys,
        lanes=lanes,
        row_kwargs=row_kwargs,
    )


def _predict_write(path, params: dict, setup: dict, fitted, excess: dict | None, tree: dict | None) -> None:
    """One fit's predictive file; ``tree`` None: the fit diverged, no draws."""
    spec = params["spec"]
    n_seeds = len(fitted.attrs.get("seeds") or [0])
    if tree is None:
        log.warning("fit %s diverged: no predictive draws are made from it", spec["name"])
        excess = {}
        tree = {
            "posterior": {},
            "mock_from_guide": {},
            "mock_from_samples": {},
            "log_weights": np.zeros((n_seeds, 0)),
        }
    else:
        for site, info in excess.items():
            log.info(
                "%s: the guide's support is %s, the model's %s; mass outside per seed %s",
                site,
                info["guide_support"],
                info["model_support"],
                info["mass_outside"].tolist(),
            )
        log.info("fit %s: its predictive paths", spec["name"])
        for name in ("posterior", "mock_from_guide", "mock_from_samples"):
            log.info("%s: %s", name, {k: v.shape for k, v in tree[name].items()})
        log.info(
            "log_weights: %d draws per seed, mean %s",
            tree["log_weights"].shape[-1],
            np.round(np.mean(tree["log_weights"], axis=-1), 4).tolist(),
        )
    write_artifact(
        path,
        "predictive",
        tree,
        config=params,
        seeds=fitted.attrs.get("seeds"),
        attrs={
            "latent_sites": setup["latent"],
            "observed_sites": setup["observed"],
            "deterministic_sites": setup["deterministic"],
            "diverged": bool(fitted.attrs.get("diverged")),
            "support_excess": {
                site: {**info, "mass_outside": info["mass_outside"].tolist()} for site, info in excess.items()
            },
        },
    )


def predict(inputs, outputs, params, progress_file=None):
    """The post's three predictive paths, and the log weights of the guide's draws that the
    check needs (so that the check runs without JAX) -> ``sviflow.predictive``."""
    _jax_step(params)
    setup = _predict_setup(params, inputs)
    fitted = read_artifact(inputs["fit"], "fit")
    excess, tree = (None, None) if fitted.attrs.get("diverged") else _predict_draws(setup, fitted["params"])
    _predict_write(outputs["predictive"], params, setup, fitted, excess, tree)


def reference(inputs, outputs, params, progress_file=None):
    """A reference posterior of one model on one dataset -> ``sviflow.reference``."""
    _set_precision(params)
    from sviflow import references
    from sviflow.errors import ConfigError

    model_spec = params["model"]
    settings = {**schema_defaults("models", "reference"), **params["reference"]}
    method = settings.pop("method")
    where = f"models.{model_spec['name']}.reference"

    def compute():
        dataset = _dataset(inputs)
        if method != "exact":  # the exact answer is numpy and scipy: no JAX to import
            from sviflow.engine import enable_compilation_cache

            enable_compilation_cache(_cache_dir(params))
            from sviflow.data import model_kwargs
            from sviflow.resolve import resolve_model

            kwargs = model_kwargs(dataset)
            model = resolve_model(model_spec, where=f"models.{model_spec['name']}")
        num_draws, seed = int(settings["num_draws"]), int(settings["seed"])
        if method == "exact":
            if model_spec["function"] != "coin_flips":
                raise ConfigError(f"{where}.method: exact is known only for coin_flips; use grid or nuts")
            return references.exact_coin(
                dataset["observed"], model_spec.get("args") or {}, num_draws=num_draws, seed=seed
            )
        if method == "grid":
            return references.grid(
                model,
                kwargs,
                bounds=settings.get("bounds"),
                points=int(settings["points"]),
                num_draws=num_draws,
                seed=seed,
                split_direction=settings.get("split_direction"),
            )
        if method == "nuts":
            return references.nuts(
                model,
                kwargs,
                num_warmup=int(settings["num_warmup"]),
                num_samples=int(settings["num_samples"]),
                num_chains=int(settings["num_chains"]),
                target_accept_prob=float(settings["target_accept_prob"]),
                dense_mass=bool(settings["dense_mass"]),
                max_tree_depth=int(settings["max_tree_depth"]),
                num_draws=num_draws,
                seed=seed,
                where=where,
            )
        if method == "draws":
            # the file: an input of the job (Snakemake passes its path), else as the params give it
            path = inputs.get("draws")
            path = (path[0] if path else None) if isinstance(path, list) else path
            path = path or settings.get("file")
            if not path:
                raise ConfigError(f"{where}.file: method draws needs the file of the draws")
            return references.from_draws(
                model,
                kwargs,
                path,
                num_draws=num_draws,
                where=where,
                shown_path=settings.get("file") or str(path),
            )
        raise ConfigError(f"{where}.method: unknown method {method!r}; valid: exact, grid, nuts, draws")

    try:
        result = compute()
    except ConfigError:
        raise
    except Exception as error:  # the log says which job of which rule, and what it was doing
        log.error(
            "rule reference (workflow/rules/reference.smk), %s, method %s, model %s: %s",
            where,
            method,
            model_spec["function"],
            error,
        )
        raise
    log.info(
        "reference %s (%s): log Z %.6g, mean %s, sd %s",
        model_spec["name"],
        method,
        result["log_z"],
        {k: np.round(v, 5).tolist() for k, v in result["mean"].items()},
        {k: np.round(v, 5).tolist() for k, v in result["sd"].items()},
    )
    checked = result.get("nuts") or result.get("chains")
    if checked is not None:
        # the reference is only as good as its chains: say how they agree
        rhat = {k: round(float(np.max(v)), 4) for k, v in checked["rhat"].items()}
        ess = {k: round(float(np.min(v)), 1) for k, v in checked["ess"].items()}
        log.info("reference %s (%s): R-hat %s, ESS %s", model_spec["name"], method, rhat, ess)
    if "nuts" in result:
        log.info(
            "reference %s (nuts): %d divergences, %d transitions at max_tree_depth",
            model_spec["name"],
            int(np.sum(result["nuts"]["divergences"])),
            int(np.sum(result["nuts"]["tree_depth_hits"])),
        )
    for problem in result["warnings"]:
        log.warning("reference %s: not to be trusted: %s", model_spec["name"], problem)
    attrs = {
        "method": method,
        "latent_sites": result["latent_sites"],
        "deterministic_sites": result["deterministic_sites"],
        "warnings": result["warnings"],
    }
    if "source" in result:
        attrs["source"] = result["source"]
    write_artifact(outputs["reference"], "reference", references.to_tree(result), config=params, attrs=attrs)


def reference_batch(inputs, outputs, params, progress_file=None):
    """A model's references on the datasets of a dataset sweep (``inputs["data"]`` and
    ``outputs["reference"]`` in the same order), one after another in one process, each
    exactly as :func:`reference` makes it alone (the same params, the same file)."""
    shared = {key: value for key, value in inputs.items() if key != "data"}
    for data, path in zip(_as_list(inputs["data"]), _as_list(outputs["reference"])):
        log.info("reference of model %s on %s -> %s", params["model"]["name"], data, path)
        reference({**shared, "data": data}, {"reference": path}, params)


def check(inputs, outputs, params, progress_file=None):
    """Convergence and approximation quality of one fit -> ``sviflow.check``."""
    from sviflow.assess import assess

    spec = params["spec"]
    fitted = read_artifact(inputs["fit"], "fit")
    predictive = read_artifact(inputs["predictive"], "predictive")
    ref = read_artifact(inputs["reference"], "reference") if inputs.get("reference") else None
    result = assess(spec, params.get("checks"), fitted, predictive, ref)
    log.info("check %s: %s (%s)", spec["name"], result.attrs["verdict"], result.attrs["sentence"])
    for row in result.attrs["truth"]:
        log.info(
            "truth %s: target %.4g, fit %.4g, error %+.3g %s",
            row["quantity"],
            row["target"],
            row["fit"],
            row["error"],
            row["note"],
        )
    write_artifact(
        outputs["check"],
        "check",
        result.tree,
        config=params,
        seeds=fitted.attrs.get("seeds") or [],
        attrs=result.attrs,
    )


def plot(inputs, outputs, params, progress_file=None):
    """The fit's figures (PNG) from its artifacts; matplotlib only, no numpyro."""
    from sviflow import plots

    plots.plot_fit(inputs, outputs, params)


def compare(inputs, outputs, params, progress_file=None):
    """Loss curves of several fits in one figure (the post's 1 vs 32 particles)."""
    from sviflow import plots

    plots.plot_loss_comparison(
        inputs["fits"] if isinstance(inputs["fits"], list) else [inputs["fits"]],
        outputs["figure"],
        params.get("title", ""),
    )


def summarize(inputs, outputs, params, progress_file=None):
    """Every fit as ArviZ InferenceData (netCDF), and ``az.summary`` of every fit with its
    verdict, as CSV and Markdown. One job for all fits: ArviZ is imported once."""
    from sviflow.summary import inference_data, summary_table, write_markdown, write_netcdf, write_text

    fits = list(params["fits"])
    datasets = params.get("data") or {}
    checks = [read_artifact(path, "check") for path in inputs["checks"]]
    idatas = []
    for fit, predictive_path, check, netcdf_path in zip(
        fits, inputs["predictive"], checks, outputs["netcdf"]
    ):
        idata = inference_data(
            {"predictive": predictive_path, "data": datasets.get(fit)}, check, params["specs"][fit]
        )
        write_netcdf(idata, netcdf_path)
        log.info("arviz %s: groups %s -> %s", fit, list(idata.groups()), netcdf_path)
        idatas.append(idata)
    table = summary_table(fits, idatas, checks)
    write_text(table.to_csv(index=False), outputs["csv"])
    write_markdown(table, checks, fits, outputs["markdown"], params.get("sweeps"))
    if outputs.get("verdicts"):  # the report's landing page
        from sviflow.verdicts import verdict_table

        write_text(verdict_table(fits, checks, params.get("linked")), outputs["verdicts"])
    for fit, check in zip(fits, checks):
        if check.attrs["verdict"] != "converged":
            log.warning("fit %s: %s (%s)", fit, check.attrs["verdict"], check.attrs["sentence"])


def sweep(inputs, outputs, params, progress_file=None):
    """A sweep's figure: its fits' final ELBO, KL or distances and verdicts across the grid."""
    from sviflow import plots

    plots.sweep_figure(params["name"], params["sweep"], _as_list(inputs["checks"]), outputs["figure"])


def strict(inputs, outputs, params, progress_file=None):
    """``checks.strict``: fail, naming the fits and the reasons, when a fit did not pass."""
    from pathlib import Path

    from sviflow.errors import ConfigError

    failing = []
    for fit, check_path in zip(params["fits"], inputs["checks"]):
        attrs = read_artifact(check_path, "check").attrs
        if attrs["verdict"] != "converged":
            failing.append(f"{fit}: {attrs['verdict']} ({attrs['sentence']})")
    if failing:
        raise ConfigError(
            "checks.strict is true and these fits did not pass: "
            + "; ".join(failing)
            + f". The summary is in {inputs['summary']}."
        )
    Path(outputs["ok"]).write_text("every fit converged\n")


# --- batches: one job runs a step for every fit of a batch (workflow/rules/batch.smk) ----------

PER_FIT_INPUTS = ("fit", "predictive", "check", "data", "reference")  # a list, one per fit; others shared


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _members(inputs: dict, outputs: dict, params: dict):
    """A batch job's inputs, outputs and params as the per-fit step takes them, fit by fit:
    ``params["specs"]`` holds one spec per fit, each per-fit input and every output a list in
    the same order."""
    specs = list(params["specs"])
    per_input = {key: _as_list(value) for key, value in inputs.items() if key in PER_FIT_INPUTS}
    per_output = {key: _as_list(value) for key, value in outputs.items()}
    for key, value in [*per_input.items(), *per_output.items()]:
        if len(value) != len(specs):
            raise ValueError(f"a batch of {len(specs)} fits has {len(value)} files for {key}")
    shared = {key: value for key, value in params.items() if key != "specs"}
    for index, spec in enumerate(specs):
        yield (
            {**inputs, **{key: value[index] for key, value in per_input.items()}},
            {key: value[index] for key, value in per_output.items()},
            {**shared, "spec": spec},
        )


def predict_batch(inputs, outputs, params, progress_file=None):
    """The predict step of every fit of a batch as one vmapped program: every seed of every fit
    a row, ``batch.lanes`` rows at a time, each fit with the keys it has alone and its own data
    (an argument of the program; datasets of another shape make another program) -> each
    fit's predictive file as the predict step writes it."""
    _jax_step(params)
    import jax

    from sviflow.engine import data_may_be_arguments, data_signature
    from sviflow.predictive import support_excess

    members = list(_members(inputs, outputs, params))
    lanes = int(params.get("batch", {}).get("lanes") or default("engine", "batch", "lanes"))
    seed = int({**schema_defaults("predictive"), **params["predictive"]}["seed"])
    fitted = [read_artifact(member_inputs["fit"], "fit") for member_inputs, _, _ in members]
    paths = [member_inputs.get("data") for member_inputs, _, _ in members]
    live = [i for i, f in enumerate(fitted) if not f.attrs.get("diverged")]
    # model and guide set up on each dataset (the sites' checks), each data file read once
    setups, by_path = {}, {}
    for i in live:
        if paths[i] not in by_path:
            by_path[paths[i]] = _predict_setup(members[i][2], members[i][0])
        setups[i] = by_path[paths[i]]
    programs: dict[tuple, list[int]] = {}
    for i in live:
        programs.setdefault(data_signature(setups[i]["fit_kwargs"]), []).append(i)
    drawn, excess = {}, {}
    for chosen in programs.values():
        datasets = list(dict.fromkeys(paths[i] for i in chosen))
        per_dataset = [[i for i in chosen if paths[i] == path] for path in datasets]
        if datasets == [None]:
            drawn.update(_predict_rows(chosen, setups, fitted, seed, lanes, arguments=False))
        elif not data_may_be_arguments(setups[chosen[0]]["model"], setups[chosen[0]]["fit_kwargs"]):
            for own in per_dataset:  # the data as constants, one program per dataset (fit_batch)
                drawn.update(_predict_rows(own, setups, fitted, seed, lanes, arguments=False))
        else:
            try:
                drawn.update(_predict_rows(chosen, setups, fitted, seed, lanes, arguments=True))
            except jax.errors.JAXTypeError:  # the guide needs its data as concrete values
                for own in per_dataset:
                    drawn.update(_predict_rows(own, setups, fitted, seed, lanes, arguments=False))
        # the guide's mass outside the model's support, which may depend on the data: with each
        # dataset's own model (a small program each, only where a guide's support is wider)
        for own in per_dataset:
            setup = setups[own[0]]
            own_rows, _, own_spans = _batch_rows(fitted, own, seed, lanes)
            found = support_excess(
                setup["model"], setup["guide"], own_rows, setup["fit_kwargs"], setup["latent"], lanes=lanes
            )
            for i, (start, stop) in zip(own, own_spans):
                excess[i] = {
                    site: {**info, "mass_outside": info["mass_outside"][start:stop]}
                    for site, info in found.items()
                }
    for index, (member_inputs, member_outputs, member_params) in enumerate(members):
        if index not in drawn:  # a diverged fit: no draws
            setup = _predict_setup(member_params, member_inputs)
            _predict_write(member_outputs["predictive"], member_params, setup, fitted[index], None, None)
            continue
        _predict_write(
            member_outputs["predictive"],
            member_params,
            setups[index],
            fitted[index],
            excess[index],
            drawn[index],
        )


def _predict_rows(chosen, setups, fitted, seed, lanes, arguments: bool) -> dict:
    """The predictive trees of the fits ``chosen`` (their data of one shape) as one program, with
    ``arguments`` each row's data an argument of it, else the first fit's data constants in it
    (the fits of one dataset) -> {fit index: its tree}."""
    from sviflow.engine import data_arrays

    rows, keys, spans = _batch_rows(fitted, chosen, seed, lanes)
    row_kwargs = None
    if arguments:
        per_row = [setups[i] for i, (start, stop) in zip(chosen, spans) for _ in range(stop - start)]
        per_row += [per_row[0]] * (len(keys) - len(per_row))
        row_kwargs = tuple(
            _stack_rows([data_arrays(setup[part]) for setup in per_row])
            for part in ("fit_kwargs", "predict_kwargs")
        )
    tree = _predict_tree(setups[chosen[0]], rows, keys, lanes, row_kwargs)
    return {
        i: {
            name: value[start:stop] if name == "log_weights" else {k: v[start:stop] for k, v in value.items()}
            for name, value in tree.items()
        }
        for i, (start, stop) in zip(chosen, spans)
    }


def _batch_rows(fitted: list, chosen: list[int], seed: int, lanes: int):
    """The fits ``chosen``'s params as rows, one a seed, padded to whole groups of ``lanes``
    with copies of the first row, each fit's predictive keys as it has them alone -> (params,
    keys, [(start, stop) of each fit's rows])."""
    from sviflow.predictive import seed_keys

    spans, keys = [], []
    for i in chosen:
        n_seeds = len(next(iter(fitted[i]["params"].values())))
        spans.append((len(keys), len(keys) + n_seeds))
        keys.extend(np.asarray(seed_keys(seed, n_seeds)))
    pad = -len(keys) % lanes
    first = fitted[chosen[0]]["params"]
    params = {
        name: np.concatenate([fitted[i]["params"][name] for i in chosen] + [first[name][:1]] * pad)
        for name in first
    }
    return params, np.stack(keys + [keys[0]] * pad), spans


def _stack_rows(rows: list[dict]) -> dict:
    return {name: np.stack([np.asarray(row[name]) for row in rows]) for name in rows[0]}


def check_batch(inputs, outputs, params, progress_file=None):
    """The check step of every fit of a batch, in one process."""
    for member in _members(inputs, outputs, params):
        check(*member, progress_file=progress_file)


def plot_batch(inputs, outputs, params, progress_file=None):
    """The figures of every fit of a batch, in one process (matplotlib imported once)."""
    for member in _members(inputs, outputs, params):
        plot(*member, progress_file=progress_file)
