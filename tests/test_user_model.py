"""Bring your own model (issue 6): a model, guide and data of the user's, named in the config, run
through the whole workflow without touching its code.

The example in config/examples/linear_regression/ runs end to end, measured against NUTS; an edit
of its model file reruns that model's jobs; every name that is wrong, every file or function that
is missing, a model that fails when traced and a CSV cell that is not a number each give a message
that names the config key (or the file, line and column). Below them, the library's parts: the
data readers, each ELBO and optimizer under SVI, every autoguide class.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from conftest import REPO, copy_workflow, dry_run_jobs, run_snakemake
from numpyro.infer import SVI

from sviflow import data, guides, models, names, optim, resolve, userfiles
from sviflow.errors import ConfigError

EXAMPLE = Path("config/examples/linear_regression")
EXAMPLE_ARGS = ("--configfile", str(EXAMPLE / "config.yaml"), "--replace-workflow-config")
EXAMPLE_CONFIG = yaml.safe_load((REPO / EXAMPLE / "config.yaml").read_text())
FITS = list(EXAMPLE_CONFIG["fits"])
RESULTS = EXAMPLE_CONFIG["results"]  # the example's own results folder (results/linear_regression)
VERDICTS = ("converged", "not converged", "converged, poor approximation")


# --- helpers ---------------------------------------------------------------------------------


def variant(workdir: Path, edit, name: str = "variant.yaml") -> tuple[str, ...]:
    """The example's config changed by ``edit(config)``, written beside it (so that its relative
    paths still hold); -> the Snakemake arguments that run it."""
    config = yaml.safe_load((workdir / EXAMPLE / "config.yaml").read_text())
    edit(config)
    (workdir / EXAMPLE / name).write_text(yaml.safe_dump(config, sort_keys=False))
    return ("--configfile", str(EXAMPLE / name), "--replace-workflow-config")


def output(result) -> str:
    return result.stdout + "\n" + result.stderr


def planned_jobs(workdir: Path, *args: str) -> Counter:
    """(rule, wildcards) of every job Snakemake's dry run plans."""
    return Counter(list(dry_run_jobs(output(run_snakemake(workdir, "--dry-run", *args)))))


def read_h5(path: Path) -> tuple[dict, dict]:
    """(tree, attributes) of an artifact, read with h5py itself: groups as dicts, datasets as
    arrays, JSON attributes decoded."""
    import h5py

    def load(group):
        return {
            name: load(item) if isinstance(item, h5py.Group) else item[()] for name, item in group.items()
        }

    def attribute(value):
        if isinstance(value, str) and value[:1] in "[{":
            return json.loads(value)
        return value

    with h5py.File(path, "r") as handle:
        return load(handle), {k: attribute(v) for k, v in handle.attrs.items()}


# --- the example, end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> Path:
    """The example run as the README tells, in a copy of the workflow."""
    workdir = copy_workflow(tmp_path_factory.mktemp("byom") / "workflow")
    run_snakemake(workdir, "--cores", "2", *EXAMPLE_ARGS, timeout=1800)
    return workdir


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    """A copy with no results, for runs that must fail (they leave nothing behind)."""
    return copy_workflow(tmp_path_factory.mktemp("byom_errors") / "workflow")


@pytest.mark.workflow
def test_example_reference_is_nuts_on_the_users_model(example_run):
    reference, attrs = read_h5(example_run / f"{RESULTS}/references/regression--points.h5")
    assert attrs["method"] == "nuts"
    assert attrs["latent_sites"] == ["intercept", "slope", "sigma"]  # the model's order
    # the NUTS chains agree: a reference worth measuring against
    for site, rhat in reference["nuts"]["rhat"].items():
        assert float(rhat) < 1.05, site
    # and it finds the line the data were drawn from (y = 1.5 + 0.8 x + N(0, 1))
    assert abs(float(reference["moments"]["mean"]["slope"]) - 0.8) < 3 * float(
        reference["moments"]["sd"]["slope"]
    )
    assert len(reference["draws"]["slope"]) == 2 * 1000
    # the log says how far to trust it
    log = (example_run / f"{RESULTS}/logs/reference/regression--points.log").read_text()
    logged = re.search(r"reference regression \(nuts\): R-hat (\{.*?\}), ESS (\{.*?\})", log)
    assert logged, log
    rhat, ess = (yaml.safe_load(group) for group in logged.groups())
    assert set(rhat) == set(ess) == {"intercept", "slope", "sigma"}
    assert all(value < 1.01 for value in rhat.values()) and all(value > 400 for value in ess.values())


@pytest.mark.workflow
@pytest.mark.parametrize("fit", FITS)
def test_example_checks_measure_each_fit_against_nuts(example_run, fit):
    check, attrs = read_h5(example_run / f"{RESULTS}/checks/{fit}.h5")
    assert attrs["verdict"] in VERDICTS and attrs["sentence"]
    quality = check["quality"]
    assert np.isnan(float(quality["log_z"]))  # NUTS gives no evidence, so no KL
    assert "kl" not in quality
    assert np.isfinite(float(quality["energy_distance"])) and float(quality["energy_distance"]) >= 0
    assert np.all(np.isfinite(quality["khat"])) and np.all(np.isfinite(quality["elbo"]))
    assert set(quality["sites"]) == {"intercept", "slope", "sigma"}
    for site, row in quality["sites"].items():
        # every guide here can represent this posterior: its means are within half a posterior sd
        # of NUTS's (an autoguide reading its latent vector in the wrong order is off by several)
        assert abs(float(row["mean_error_sd"])) < 0.5, (site, dict(row))
        assert 0.5 < float(row["sd_ratio"]) < 1.5, (site, dict(row))
        assert 0 <= float(row["wasserstein"]) < 0.5 * float(row["reference_sd"]), (site, dict(row))


@pytest.mark.workflow
def test_example_summary_lists_every_fit_with_its_verdict(example_run):
    import pandas as pd

    table = pd.read_csv(example_run / f"{RESULTS}/summary.csv")
    assert list(dict.fromkeys(table["fit"])) == FITS
    assert set(table["variable"]) == {"intercept", "slope", "sigma"}
    assert set(table["verdict"]) <= set(VERDICTS)
    assert table["energy_distance"].notna().all()
    markdown = (example_run / f"{RESULTS}/summary.md").read_text()
    for fit in FITS:
        assert f"| {fit} |" in markdown
    for fit in FITS:
        assert (example_run / f"{RESULTS}/figures/{fit}/posterior.png").stat().st_size > 0
        assert (example_run / f"{RESULTS}/figures/{fit}/mock_observations.png").stat().st_size > 0
        assert (example_run / f"{RESULTS}/arviz/{fit}.nc").stat().st_size > 0


@pytest.mark.workflow
def test_example_data_reach_the_model_as_keyword_arguments(example_run):
    dataset, _ = read_h5(example_run / f"{RESULTS}/data/points.h5")
    rows = np.loadtxt(REPO / EXAMPLE / "data.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(dataset["covariates"]["x"], rows[:, 0], rtol=1e-6)
    np.testing.assert_allclose(dataset["observed"]["y"], rows[:, 1], rtol=1e-6)
    predictive, _ = read_h5(example_run / f"{RESULTS}/predictive/autonormal.h5")
    # mock observations: the model called with y=None draws one y per x
    assert predictive["mock_from_guide"]["y"].shape[-1] == len(rows)


def _edit_and_restore(path: Path):
    """Append a comment to ``path``; -> a function that puts back its text and mtime."""
    text, stat = path.read_text(), path.stat()
    path.write_text(text + "\n# an edit\n")  # now: newer than every result

    def restore():
        path.write_text(text)
        os.utime(path, (stat.st_atime, stat.st_mtime))

    return restore


@pytest.mark.workflow
def test_editing_the_model_file_reruns_that_models_jobs(example_run):
    assert planned_jobs(example_run, *EXAMPLE_ARGS) == Counter()
    restore = _edit_and_restore(example_run / EXAMPLE / "model.py")
    try:
        jobs = planned_jobs(example_run, *EXAMPLE_ARGS)
    finally:
        restore()
    for fit in FITS:
        assert jobs[("fit", f"fit={fit}")] == 1, jobs
        assert jobs[("check", f"fit={fit}")] == 1, jobs
    assert jobs[("reference", "reference=regression--points")] == 1, jobs
    assert not any(rule == "simulate" for rule, _ in jobs)  # the data did not change


@pytest.mark.workflow
def test_editing_the_guide_file_reruns_only_the_fit_that_uses_it(example_run):
    restore = _edit_and_restore(example_run / EXAMPLE / "guide.py")
    try:
        jobs = planned_jobs(example_run, *EXAMPLE_ARGS)
    finally:
        restore()
    assert {wildcards for rule, wildcards in jobs if rule == "fit"} == {"fit=handwritten"}
    assert not any(rule in ("reference", "simulate") for rule, _ in jobs)
    assert planned_jobs(example_run, *EXAMPLE_ARGS) == Counter()  # restored: nothing to do


@pytest.mark.workflow
def test_a_missing_function_is_reported_even_when_results_exist(example_run):
    """Snakemake keeps existing outputs when an input function fails: the workflow checks every
    file reference as it is read, so the error cannot go unseen."""

    def rename(config):
        config["models"]["regression"]["function"] = "model.py:linear_regresion"

    result = run_snakemake(example_run, "--dry-run", *variant(example_run, rename), check=False)
    assert result.returncode != 0
    text = output(result)
    assert "models.regression.function" in text and "model.py" in text
    assert "'linear_regresion'" in text and "linear_regression" in text


# --- config errors before any job ------------------------------------------------------------


def _set(path: str, value):
    keys = path.split(".")

    def edit(config):
        node = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


@pytest.mark.workflow
@pytest.mark.parametrize(
    "key, value, valid",
    [
        (
            "models.regression.function",
            "linear_regression",
            ["coin_flips", "multimodal_2d", "path/to/file.py:function"],
        ),
        (
            "fits.autonormal.guide.name",
            "AutoNormall",
            ["AutoMultivariateNormal", "AutoDAIS", "AutoGuideList", "beta", "mixture_2d"],
        ),
        ("fits.handwritten.guide.name", "regression_guide", ["AutoNormal", "normal"]),
        ("fits.multivariate.optimizer.name", "Adamm", ["ClippedAdam", "SGD", "Adagrad", "RMSProp"]),
        (
            "fits.renyi.elbo.name",
            "Renyi",
            ["Trace_ELBO", "TraceMeanField_ELBO", "TraceGraph_ELBO", "RenyiELBO"],
        ),
        ("fits.schedule.optimizer.schedule.name", "cosine", ["exponential_decay", "warmup_cosine_decay"]),
    ],
)
def test_unknown_names_list_the_valid_ones_before_any_job(fresh_copy, key, value, valid):
    args = variant(fresh_copy, _set(key, value))
    result = run_snakemake(fresh_copy, "--cores", "1", *args, check=False)
    assert result.returncode != 0
    text = output(result)
    assert key in text and repr(value) in text, text[-3000:]
    for name in valid:
        assert name in text, (name, text[-3000:])
    assert not (fresh_copy / "results").exists()  # no job ran


@pytest.mark.workflow
@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("models.regression.function", "models.py:linear_regression", ["not found", "models.py"]),
        ("fits.handwritten.guide.name", "guides/guide.py:regression_guide", ["not found", "guides/guide.py"]),
        (
            "models.regression.function",
            "model.py:regression",
            ["model.py", "no function 'regression'", "functions in that file: linear_regression"],
        ),
        (
            "fits.handwritten.guide.name",
            "guide.py:guide",
            ["guide.py", "no function 'guide'", "regression_guide"],
        ),
    ],
)
def test_missing_file_or_function_names_the_key_and_the_file(fresh_copy, key, value, expected):
    result = run_snakemake(fresh_copy, "--cores", "1", *variant(fresh_copy, _set(key, value)), check=False)
    assert result.returncode != 0
    text = output(result)
    assert f"config error: {key}" in text, text[-3000:]
    for words in expected:
        assert words in text, (words, text[-3000:])
    assert not (fresh_copy / "results").exists()


@pytest.mark.workflow
def test_a_model_that_fails_when_traced_names_the_fit_the_file_and_the_line(fresh_copy):
    model = (fresh_copy / EXAMPLE / "model.py").read_text()
    broken = model.replace(
        "dist.Normal(intercept + slope * x, sigma)", "dist.Normal(intercept + slope * x, sigma_y)"
    )
    assert broken != model
    (fresh_copy / EXAMPLE / "broken.py").write_text(broken)
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "sigma_y" in text)

    def edit(config):
        config["models"]["regression"]["function"] = "broken.py:linear_regression"
        config["models"]["regression"]["reference"] = {"method": "none"}

    args = variant(fresh_copy, edit, "broken.yaml")
    try:
        result = run_snakemake(
            fresh_copy, "--cores", "1", f"{RESULTS}/fits/autonormal.h5", *args, check=False
        )
        assert result.returncode != 0
        log = (fresh_copy / f"{RESULTS}/logs/fit/autonormal.log").read_text()
        for text in (output(result), log):
            assert "fits.autonormal" in text, text[-3000:]
            assert "models.regression.function" in text
            assert f"broken.py, line {line}" in text
            assert "NameError" in text and "sigma_y" in text
        assert not (fresh_copy / f"{RESULTS}/fits/autonormal.h5").exists()
    finally:
        shutil.rmtree(fresh_copy / "results", ignore_errors=True)


@pytest.mark.workflow
def test_a_csv_cell_that_is_not_a_number_names_file_line_and_column(fresh_copy):
    rows = (fresh_copy / EXAMPLE / "data.csv").read_text().splitlines()
    rows[4] = rows[4].split(",")[0] + ",n/a"  # line 5 of the file
    (fresh_copy / EXAMPLE / "bad.csv").write_text("\n".join(rows) + "\n")
    args = variant(fresh_copy, _set("datasets.points.file", "bad.csv"), "bad_data.yaml")
    try:
        result = run_snakemake(fresh_copy, "--cores", "1", f"{RESULTS}/data/points.h5", *args, check=False)
        assert result.returncode != 0
        assert re.search(
            r"datasets\.points\.file: \S*bad\.csv, line 5, column 'y': 'n/a' is not "
            r"a number",
            output(result),
        ), output(result)[-3000:]
    finally:
        shutil.rmtree(fresh_copy / "results", ignore_errors=True)


# --- names: the registry's lists are the code's ----------------------------------------------


def test_the_registrys_names_are_what_the_code_and_the_schema_provide():
    assert names.MODELS == tuple(sorted(models.BUILTIN_MODELS))
    assert names.GUIDES == tuple(sorted(guides.BUILTIN_GUIDES))
    assert names.AUTOGUIDES == tuple(guides.autoguide_names())
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    fit = schema["properties"]["fits"]["additionalProperties"]["properties"]
    assert tuple(fit["optimizer"]["properties"]["name"]["enum"]) == names.OPTIMIZERS
    assert tuple(fit["elbo"]["properties"]["name"]["enum"]) == names.ELBOS
    assert tuple(fit["optimizer"]["properties"]["schedule"]["properties"]["name"]["enum"]) == names.SCHEDULES
    from numpyro.infer import initialization

    assert names.INIT_STRATEGIES == tuple(sorted(n for n in dir(initialization) if n.startswith("init_to_")))


def test_check_names_accepts_the_example_and_names_each_unknown():
    assert names.check_names(EXAMPLE_CONFIG) == []
    config = json.loads(json.dumps(EXAMPLE_CONFIG))
    config["models"]["regression"]["function"] = "lin_reg"
    config["fits"]["renyi"]["guide"]["name"] = "AutoFoo"
    problems = names.check_names(config)
    assert len(problems) == 2
    assert problems[0].startswith("models.regression.function: unknown model 'lin_reg'")
    assert problems[1].startswith("fits.renyi.guide.name: unknown guide 'AutoFoo'")


def test_check_reference_reads_the_file_without_running_it(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "raise RuntimeError('never run')\nfrom x import imported\ndef model():\n    pass\nfactory = model\n"
    )
    for name in ("model", "factory", "imported"):
        userfiles.check_reference(f"{path}:{name}", "models.m.function")
    with pytest.raises(
        ConfigError,
        match=r"models\.m\.function: .*m\.py has no function 'nope'; "
        r"functions in that file: model",
    ):
        userfiles.check_reference(f"{path}:nope", "models.m.function")
    path.write_text("def model(:\n")
    with pytest.raises(ConfigError, match=r"models\.m\.function: .*m\.py, line 1: syntax error"):
        userfiles.check_reference(f"{path}:model", "models.m.function")


# --- data ------------------------------------------------------------------------------------


def test_coin_flips_from_heads_and_tails():
    flips = data.coin_flips(heads=12, tails=8)["observed"]["obs"]
    assert flips.dtype == np.float32 and flips.tolist() == [1.0] * 12 + [0.0] * 8


def test_coin_flips_from_n_p_and_seed():
    first = data.coin_flips(n=2000, p=0.3, seed=7)["observed"]["obs"]
    assert first.shape == (2000,) and set(np.unique(first)) <= {0.0, 1.0}
    assert abs(first.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)
    np.testing.assert_array_equal(first, data.coin_flips(n=2000, p=0.3, seed=7)["observed"]["obs"])
    assert not np.array_equal(first, data.coin_flips(n=2000, p=0.3, seed=8)["observed"]["obs"])
    assert data.coin_flips(n=50, p=1.0)["observed"]["obs"].sum() == 50


@pytest.mark.parametrize(
    "args, message",
    [
        ({"heads": 3, "n": 5, "p": 0.5}, "give either heads and tails, or n and p, not both"),
        ({"n": 5}, "give heads and tails, or n and p"),
        ({"n": 5, "p": 1.5}, "p is a probability"),
    ],
)
def test_coin_flips_arguments_that_do_not_fit(args, message):
    with pytest.raises(ConfigError, match=f"datasets.d.args: coin_flips: {message}"):
        data.load_dataset({"generator": "coin_flips", "args": args}, where="datasets.d")


def test_json_dataset_keeps_names_and_kinds(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"y": [0.5, 1.5, 2.5], "group": [0, 1, 1], "x": [[1, 2.5], [3, 4], [5, 6]]}))
    dataset = data.load_dataset({"file": str(path), "observed": ["y"]})
    assert list(dataset["observed"]) == ["y"] and list(dataset["covariates"]) == ["group", "x"]
    assert dataset["observed"]["y"].dtype == np.float32
    assert dataset["covariates"]["group"].dtype == np.int32  # whole numbers: an index
    assert dataset["covariates"]["x"].shape == (3, 2) and dataset["covariates"]["x"].dtype == np.float32
    kwargs = data.model_kwargs(dataset, predict=True)
    assert kwargs["y"] is None and kwargs["group"].tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"y": [1, 2,\n "x": 3}', r"d\.json, line 2: invalid JSON"),
        ("[1, 2, 3]", "expected a JSON object of named arrays"),
        ('{"y": [[1, 2], [3]]}', "array 'y' is not rectangular"),
        ('{"y": ["a", "b"]}', "array 'y' holds"),
    ],
)
def test_json_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        data.load_dataset({"file": str(path)}, where="datasets.d")


def test_hdf5_dataset_reads_root_arrays(tmp_path):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as handle:
        handle["y"] = np.linspace(0.0, 1.0, 4)  # float64 on disk
        handle["counts"] = np.array([1, 0, 3, 2], dtype=np.int64)
        handle["x"] = np.arange(8.0).reshape(4, 2)
        handle.create_group("notes")["ignored"] = np.zeros(2)
    dataset = data.load_dataset({"file": str(path), "observed": ["y", "counts"], "covariates": ["x"]})
    assert dataset["observed"]["y"].dtype == np.float32
    assert dataset["observed"]["counts"].dtype == np.int32
    np.testing.assert_array_equal(dataset["covariates"]["x"], np.arange(8.0).reshape(4, 2))
    with pytest.raises(
        ConfigError,
        match=r"datasets\.d\.observed: .*d\.h5 has no column 'z'; its "
        r"columns: .*counts",
    ):
        data.load_dataset({"file": str(path), "observed": ["z"]}, where="datasets.d")
    (tmp_path / "e.h5").write_text("not hdf5")
    with pytest.raises(ConfigError, match="not a readable HDF5 file"):
        data.load_dataset({"file": str(tmp_path / "e.h5")}, where="datasets.d")


@pytest.mark.parametrize(
    "text, message",
    [
        ("x,y\n1,2\n\n3,abc\n", r"line 4, column 'y': 'abc' is not a number"),  # after a blank line
        ("x,y\n1,2\n3,\n", r"line 3, column 'y': '' is not a number"),
        ("x,y\n1,2\n3,4,5\n", r"line 3: 3 fields, the header has 2"),
        ("x,x\n1,2\n", r"line 1: the header needs distinct"),
        ("", "empty CSV file"),
        ("x,y\n", "no rows of data"),
    ],
)
def test_csv_errors_name_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"datasets\.d\.file: .*d\.csv" + ".*" + message):
        data.load_dataset({"file": str(path)}, where="datasets.d")


def test_csv_columns_observed_covariates_and_kinds(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(" x , group ,y\n0.5, 0, 1\n1.5, 1, 2.5\n")
    dataset = data.load_dataset({"file": str(path), "observed": ["y"]})
    assert list(dataset["covariates"]) == ["x", "group"]  # default: every other column
    assert dataset["covariates"]["group"].dtype == np.int32
    assert dataset["observed"]["y"].tolist() == [1.0, 2.5]
    assert data.load_dataset({"file": str(path), "observed": ["y"], "covariates": []})["covariates"] == {}
    with pytest.raises(ConfigError, match="both observed and covariate"):
        data.load_dataset({"file": str(path), "observed": ["y"], "covariates": ["y"]})
    with pytest.raises(ConfigError, match=r"unknown format '\.txt'"):
        (tmp_path / "d.txt").write_text("x\n1\n")
        data.load_dataset({"file": str(tmp_path / "d.txt")})


# --- the user's model under the registry -----------------------------------------------------


def regression_data():
    dataset = data.load_dataset(
        {"file": str(REPO / EXAMPLE / "data.csv"), "observed": ["y"], "covariates": ["x"]}
    )
    return data.model_kwargs(dataset)


def example_model():
    return resolve.resolve_model({"function": f"{REPO / EXAMPLE}/model.py:linear_regression"})


def svi_steps(model, guide, optimizer, elbo, kwargs, steps=4):
    """A few SVI steps, compiled as a fit compiles them; -> (losses, params before, after)."""
    svi = SVI(model, guide, optimizer, loss=elbo)
    state = svi.init(jax.random.PRNGKey(0), **kwargs)
    before = svi.get_params(state)
    update = jax.jit(svi.update)
    losses = []
    for _ in range(steps):
        state, loss = update(state, **kwargs)
        losses.append(float(loss))
    return losses, before, svi.get_params(state)


def moved(before, after) -> bool:
    """Did any parameter change? (Params may be pytrees: the flows' networks.)"""
    return any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after))
    )


@pytest.mark.parametrize(
    "elbo",
    [
        {"name": "Trace_ELBO", "num_particles": 4},
        {"name": "TraceMeanField_ELBO", "num_particles": 2},
        {"name": "TraceGraph_ELBO", "num_particles": 2},
        {"name": "RenyiELBO", "num_particles": 4, "args": {"alpha": 0.5}},
    ],
)
def test_each_elbo_takes_svi_steps_on_the_users_model(elbo):
    model, kwargs = example_model(), regression_data()
    guide = resolve.resolve_guide({"name": "AutoNormal"}, model)
    losses, before, after = svi_steps(
        model, guide, optim.make_optimizer({"name": "Adam", "step_size": 0.05}), optim.make_elbo(elbo), kwargs
    )
    assert np.all(np.isfinite(losses)) and moved(before, after)


@pytest.mark.parametrize(
    "optimizer",
    [{"name": name, "step_size": 0.01} for name in names.OPTIMIZERS]
    + [
        {
            "name": "Adam",
            "step_size": 0.05,
            "schedule": {"name": "exponential_decay", "transition_steps": 100, "decay_rate": 0.5},
        },
        {
            "name": "ClippedAdam",
            "step_size": 0.05,
            "args": {"clip_norm": 1.0},
            "schedule": {"name": "cosine_decay", "decay_steps": 100},
        },
        {
            "name": "SGD",
            "step_size": 1e-4,
            "schedule": {
                "name": "warmup_cosine_decay",
                "init_value": 1e-5,
                "warmup_steps": 2,
                "decay_steps": 100,
            },
        },
        {"name": "RMSProp", "step_size": 0.01, "args": {"gamma": 0.8}, "schedule": {"name": "constant"}},
        {
            "name": "Momentum",
            "step_size": 1e-4,
            "args": {"mass": 0.5},
            "schedule": {"name": "exponential_decay", "transition_steps": 10, "decay_rate": 0.9},
        },
        {
            "name": "Adagrad",
            "step_size": 0.05,
            "schedule": {"name": "cosine_decay", "decay_steps": 50, "alpha": 0.1},
        },
    ],
    ids=lambda spec: spec["name"] + ("+" + spec["schedule"]["name"] if "schedule" in spec else ""),
)
def test_each_optimizer_takes_svi_steps_on_the_users_model(optimizer):
    model, kwargs = example_model(), regression_data()
    guide = resolve.resolve_guide({"name": "AutoNormal"}, model)
    losses, before, after = svi_steps(
        model, guide, optim.make_optimizer(optimizer), optim.make_elbo({"num_particles": 2}), kwargs
    )
    assert np.all(np.isfinite(losses)) and moved(before, after)


def test_optax_adam_with_a_constant_schedule_is_numpyros_adam():
    model, kwargs = example_model(), regression_data()
    results = []
    for spec in (
        {"name": "Adam", "step_size": 0.02},
        {"name": "Adam", "step_size": 0.02, "schedule": {"name": "constant"}},
    ):
        guide = resolve.resolve_guide({"name": "AutoNormal"}, model)
        results.append(
            svi_steps(model, guide, optim.make_optimizer(spec), optim.make_elbo({}), kwargs, steps=5)
        )
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4)
    for name in results[0][2]:
        np.testing.assert_allclose(results[0][2][name], results[1][2][name], rtol=1e-4, atol=1e-6)


def test_optax_forms_translate_numpyros_argument_names():
    # RMSProp's gamma is optax's decay, Momentum's mass optax's momentum, ClippedAdam's clip_norm a clip
    for spec in (
        {"name": "RMSProp", "args": {"gamma": 0.5}},
        {"name": "Momentum", "args": {"mass": 0.5}},
        {"name": "ClippedAdam", "args": {"clip_norm": 2.0}},
    ):
        optim.make_optimizer({**spec, "step_size": 0.1, "schedule": {"name": "constant"}})
    with pytest.raises(ConfigError, match=r"o\.args: .*optax\.adagrad, which takes"):
        optim.make_optimizer(
            {"name": "Adagrad", "args": {"momentum": 0.9}, "schedule": {"name": "constant"}}, where="o"
        )


# --- every autoguide -------------------------------------------------------------------------


def _small_models(tmp_path: Path) -> Path:
    """A file with the models the DAIS family needs (NumPyro's own docstring examples)."""
    path = tmp_path / "dais.py"
    path.write_text("""
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer.autoguide import AutoNormal

X = jnp.stack([jnp.linspace(-1, 1, 40), jnp.ones(40)], axis=1)
Y = (X[:, 0] > 0).astype(jnp.float32)


def logistic(X=X, Y=Y):
    theta = numpyro.sample("theta", dist.Normal(jnp.zeros(2), jnp.ones(2)).to_event(1))
    with numpyro.plate("N", 40, subsample_size=10):
        x = numpyro.subsample(X, event_dim=1)
        y = numpyro.subsample(Y, event_dim=0)
        numpyro.sample("obs", dist.Bernoulli(logits=theta @ x.T), obs=y)


def surrogate():
    theta = numpyro.sample("theta", dist.Normal(jnp.zeros(2), jnp.ones(2)).to_event(1))
    omegas = numpyro.param("omegas", 2.0 * jnp.ones(10), constraint=dist.constraints.positive)
    with numpyro.plate("N", 10), numpyro.handlers.scale(scale=omegas):
        numpyro.sample("obs", dist.Bernoulli(logits=theta @ X[::4].T), obs=Y[::4])


def global_model():
    return numpyro.sample("theta", dist.Normal(0, 1))


def local_model(theta):
    with numpyro.plate("data", 8, subsample_size=2):
        tau = numpyro.sample("tau", dist.Gamma(5.0, 5.0))
        numpyro.sample("obs", dist.Normal(theta, tau), obs=jnp.ones(2))


def semi():
    local_model(global_model())


global_guide = AutoNormal(global_model)


def batched(y=jnp.array([0.5, -1.0, 2.0])):
    with numpyro.plate("groups", 3):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
""")
    return path


def _autoguide_cases(path: Path):
    """(model reference or None for the example, args as a config gives them) per class."""
    cases = {name: (None, {}) for name in names.AUTOGUIDES}
    cases.update(
        {
            "AutoNormal": (None, {"init_loc_fn": "init_to_median", "init_scale": 0.05}),
            "AutoDelta": (None, {"init_loc_fn": {"name": "init_to_value", "values": {"slope": 0.7}}}),
            "AutoLowRankMultivariateNormal": (None, {"rank": 1}),
            "AutoIAFNormal": (None, {"num_flows": 1, "hidden_dims": [4], "nonlinearity": "Tanh"}),
            "AutoBNAFNormal": (None, {"hidden_factors": [2]}),
            "AutoDAIS": (None, {"K": 2, "base_dist": "cholesky"}),
            "AutoGuideList": (
                None,
                {
                    "guides": [
                        {"name": "AutoMultivariateNormal", "expose": ["intercept", "slope"]},
                        {"name": "AutoDelta", "hide": ["intercept", "slope"]},
                    ]
                },
            ),
            "AutoBatchedMultivariateNormal": (f"{path}:batched", {"batch_ndim": 1}),
            "AutoBatchedLowRankMultivariateNormal": (f"{path}:batched", {"rank": 1}),
            "AutoSurrogateLikelihoodDAIS": (
                f"{path}:logistic",
                {"surrogate_model": f"{path}:surrogate", "K": 2},
            ),
            "AutoSemiDAIS": (
                f"{path}:semi",
                {"local_model": f"{path}:local_model", "global_guide": f"{path}:global_guide", "K": 2},
            ),
        }
    )
    return cases


def test_the_autoguide_cases_cover_every_class(tmp_path):
    assert set(_autoguide_cases(tmp_path / "dais.py")) == set(names.AUTOGUIDES)


@pytest.mark.parametrize("name", names.AUTOGUIDES)
def test_every_autoguide_class_builds_from_config_names_and_takes_a_step(tmp_path, name):
    from numpyro.infer import autoguide

    reference, args = _autoguide_cases(_small_models(tmp_path))[name]
    model = example_model() if reference is None else resolve.resolve_model({"function": reference})
    kwargs = regression_data() if reference is None else {}
    # args as YAML gives them: plain lists, dicts, strings
    guide = resolve.resolve_guide(
        {"name": name, "args": json.loads(json.dumps(args))}, model, where=f"fits.{name}.guide"
    )
    assert isinstance(guide, getattr(autoguide, name))
    resolve.prepare_guide(model, guide, kwargs, where=f"fits.{name}")
    losses, before, after = svi_steps(
        model,
        guide,
        optim.make_optimizer({"name": "Adam", "step_size": 0.01}),
        optim.make_elbo({}),
        kwargs,
        steps=2,
    )
    assert np.all(np.isfinite(losses)) and moved(before, after)


def test_autoguide_arguments_by_name_reach_the_guide():
    model = example_model()
    guide = resolve.resolve_guide({"name": "AutoNormal", "args": {"init_loc_fn": "init_to_median"}}, model)
    assert guide.init_loc_fn.func.__name__ == "init_to_median"
    guide = resolve.resolve_guide({"name": "AutoIAFNormal", "args": {"nonlinearity": "Tanh"}}, model)
    from jax.example_libraries import stax

    assert guide._nonlinearity is stax.Tanh
    guide = resolve.resolve_guide(
        {
            "name": "AutoGuideList",
            "args": {
                "guides": [
                    {"name": "AutoNormal", "expose": ["intercept"]},
                    {"name": "AutoDelta", "hide": ["intercept"]},
                ]
            },
        },
        model,
    )
    assert [type(part).__name__ for part in guide._guides] == ["AutoNormal", "AutoDelta"]
    for args, message in (
        ({"nonlinearity": "Swish"}, r"args\.nonlinearity: unknown 'Swish'; valid: Elu"),
        ({"guides": []}, r"args\.guides: AutoGuideList needs its parts"),
        ({"guides": [{"name": "AutoDAIS"}]}, r"args\.guides\[0\]: .*not supported"),
        ({"guides": [{"name": "beta"}]}, r"args\.guides\[0\]\.name: 'beta': a part of AutoGuideList"),
        ({"rank": 2}, r"args: .*AutoIAFNormal takes .*num_flows"),
    ):
        name = "AutoGuideList" if "guides" in args else "AutoIAFNormal"
        with pytest.raises(ConfigError, match=r"fits\.f\.guide\." + message):
            resolve.resolve_guide({"name": name, "args": args}, model, where="fits.f.guide")


def test_an_autoguide_reads_its_latent_vector_in_one_order_in_every_step():
    """NumPyro orders an AutoContinuous guide's latent vector by the model when it first runs
    eagerly, by name when under jit or vmap. prepare_guide runs it eagerly first, so a fit with
    one seed (eager init) and the predictive (under jit and vmap) agree."""
    model, kwargs = example_model(), regression_data()
    orders = []
    for transformed in (False, True):
        guide = resolve.resolve_guide({"name": "AutoMultivariateNormal"}, model)
        resolve.prepare_guide(model, guide, kwargs, where="fits.f")
        svi = SVI(model, guide, optim.make_optimizer({"name": "Adam"}), optim.make_elbo({}))
        if transformed:
            jax.jit(lambda key: svi.init(key, **kwargs).optim_state)(jax.random.PRNGKey(0))  # noqa: B023 (called at once)
        else:
            svi.init(jax.random.PRNGKey(0), **kwargs)
        orders.append(list(guide._unpack_latent(jnp.arange(3.0))))
    assert orders[0] == orders[1] == ["intercept", "slope", "sigma"]


@pytest.mark.parametrize("name", ["AutoNormal", "AutoDelta", "AutoMultivariateNormal"])
def test_prepare_guide_sets_an_autoguide_up_as_its_own_first_call_would(name):
    """prepare_guide runs only the set-up eagerly; the guide's initial values and its latent
    order are those of a first call of the whole guide, eager, with the same seed."""
    from numpyro import handlers

    model, kwargs = example_model(), regression_data()
    prepared = resolve.resolve_guide({"name": name}, model)
    resolve.prepare_guide(model, prepared, kwargs, where="fits.f")
    called = resolve.resolve_guide({"name": name}, model)
    with handlers.block():
        handlers.seed(called, 0)(**kwargs)
    assert list(prepared._init_locs) == list(called._init_locs) == ["intercept", "slope", "sigma"]
    for site, value in called._init_locs.items():
        np.testing.assert_array_equal(prepared._init_locs[site], value)
    # and the same parameters when an SVI starts from them
    init = [
        SVI(model, guide, optim.make_optimizer({"name": "Adam"}), optim.make_elbo({})).init(
            jax.random.PRNGKey(3), **kwargs
        )
        for guide in (prepared, called)
    ]
    first, second = (jax.tree_util.tree_leaves(state.optim_state) for state in init)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# --- errors from the user's files, at the job ------------------------------------------------


def test_prepare_guide_names_the_key_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        "import numpyro, numpyro.distributions as dist\n\n"
        "def model(x, y=None):\n"
        "    a = numpyro.sample('a', dist.Normal(0, 1))\n"
        "    numpyro.sample('y', dist.Normal(a * x, 1.0), obs=y[::2] + x)\n"
    )
    reference = f"{path}:model"
    model = resolve.resolve_model({"function": reference})
    guide = resolve.resolve_guide({"name": "AutoNormal"}, model)
    with pytest.raises(ConfigError) as error:
        resolve.prepare_guide(
            model,
            guide,
            {"x": np.ones(4, np.float32), "y": np.ones(4, np.float32)},
            where="fits.mine",
            sources={"models.m.function": reference, "fits.mine.guide.name": "AutoNormal"},
        )
    message = str(error.value)
    assert message.startswith("fits.mine: models.m.function = ")
    assert str(path) in message and "line 5" in message and "keyword arguments: x, y" in message
    # the data's names that the model does not take
    guide = resolve.resolve_guide({"name": "AutoNormal"}, model)
    with pytest.raises(ConfigError, match=r"fits\.mine: .*TypeError: .*unexpected keyword argument 'z'"):
        resolve.prepare_guide(
            model,
            guide,
            {"x": np.ones(2), "y": np.ones(2), "z": np.ones(2)},
            where="fits.mine",
            sources={"models.m.function": reference},
        )


def test_a_file_that_fails_on_import_names_the_key_file_and_line(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("import numpyro\n\nundefined_name + 1\n")
    with pytest.raises(
        ConfigError,
        match=r"models\.m\.function: importing .*mine\.py failed: "
        r"NameError: .*mine\.py, line 3",
    ):
        resolve.resolve_model({"function": f"{path}:model"}, where="models.m")
