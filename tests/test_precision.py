"""float64 where a model needs it (issue 16, item 5): ``precision: float64`` runs a model's fit,
predict and reference with jax_enable_x64, through the workflow's own step functions; a model
whose float32 density is not finite (a Gaussian process whose kernel matrix a float32
Cholesky cannot factor) then fits; a loss NaN from the first step is explained as such."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

# the completed tiny run and its dry-run reader (fixtures: completed, run_copy)
from test_reruns import SUMMARY, completed, edit_config, fit_jobs, planned_jobs, run_copy  # noqa: F401

from sviflow import steps
from sviflow.h5io import read_artifact
from sviflow.precision import nonfinite_at_start_advice, precision_of, set_precision

GP = '''
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def gp(x, y=None):
    """A squared-exponential GP with jitter 1e-8: its 30 x 30 kernel matrix has eigenvalues far
    below float32's resolution, so a float32 Cholesky is NaN; float64 factors it. (Not
    validated: the loss meets the NaN, not the eager trace that checks the model first.)"""
    amplitude = numpyro.sample("amplitude", dist.LogNormal(0.0, 0.5))
    d = x[:, None] - x[None, :]
    kernel = amplitude * jnp.exp(-0.5 * d**2 / 0.25) + 1e-8 * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(x.shape[0]), scale_tril=jnp.linalg.cholesky(kernel),
                                                validate_args=False), obs=y)


def gp_guide(x, y=None):
    """The post's kind of guide: its params start where they are set, unchecked."""
    loc = numpyro.param("loc", 0.0)
    scale = numpyro.param("scale", 0.1, constraint=dist.constraints.positive)
    numpyro.sample("amplitude", dist.LogNormal(loc, scale))
'''


@pytest.fixture(autouse=True)
def float32_after():
    """x64 is process-wide: every test leaves it off, as the other tests expect."""
    yield
    import jax

    jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="module")
def gp_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    (root / "gp.py").write_text(GP)
    x = np.linspace(0.0, 1.0, 30)
    (root / "gp.json").write_text(json.dumps({"x": x.tolist(), "y": np.sin(3 * x).tolist()}))
    steps.simulate(
        {},
        {"data": root / "gp.h5"},
        {"name": "gp", "spec": {"file": str(root / "gp.json"), "observed": ["y"]}},
    )
    return root


def spec(root, precision=None, guide="gp_guide", steps_=60):
    model = {"name": "gp", "function": f"{root / 'gp.py'}:gp", "args": {}}
    if precision:
        model["precision"] = precision
    return {
        "name": f"gp_{precision}",
        "model": model,
        "data": "gp",
        "guide": {"name": f"{root / 'gp.py'}:{guide}" if guide == "gp_guide" else guide, "args": {}},
        "optimizer": {"name": "Adam", "step_size": 0.01},
        "elbo": {"name": "Trace_ELBO", "num_particles": 1},
        "steps": steps_,
        "seeds": [1, 2],
        "stable_update": False,
        "engine": {"trajectory_points": 20},
    }


def test_float32_density_not_finite_float64_fits_and_predicts(gp_data):
    data = {"data": gp_data / "gp.h5"}
    steps.fit(dict(data), {"fit": gp_data / "f32.h5"}, {"spec": spec(gp_data)})
    f32 = read_artifact(gp_data / "f32.h5", "fit")
    assert not np.isfinite(f32["losses"][:, 0]).any()  # NaN from the very first step
    advice = nonfinite_at_start_advice(f32["losses"], precision_of({"spec": spec(gp_data)}), "gp")
    assert "float32" in advice and "models.gp.precision: float64" in advice
    assert "step size will not help" in advice

    x64 = spec(gp_data, "float64")
    steps.fit(dict(data), {"fit": gp_data / "f64.h5"}, {"spec": x64})
    f64 = read_artifact(gp_data / "f64.h5", "fit")
    assert np.isfinite(f64["losses"]).all()
    assert f64["losses"].dtype == np.float64
    assert all(value.dtype == np.float64 for value in f64["params"].values())
    assert nonfinite_at_start_advice(f64["losses"], "float64") is None
    # the predict job of the float64 fit: float64 draws, finite log weights
    steps.predict(
        {**data, "fit": gp_data / "f64.h5"},
        {"predictive": gp_data / "p64.h5"},
        {"spec": x64, "predictive": {"num_samples": 500, "num_mock": 20, "seed": 0}, "weighted": 500},
    )
    predictive = read_artifact(gp_data / "p64.h5", "predictive")
    assert predictive["posterior"]["amplitude"].dtype == np.float64
    assert np.isfinite(predictive["log_weights"]).all()
    assert predictive["mock_from_samples"]["y"].shape == (2, 20, 30)


def test_an_autoguide_finds_no_initial_point_in_float32_and_fits_in_float64(gp_data):
    """An autoguide checks its initial point: in float32 it finds none; in float64 it fits."""
    from sviflow.errors import ConfigError

    data = {"data": gp_data / "gp.h5"}
    with pytest.raises(ConfigError, match="Cannot find valid initial parameters") as error:
        steps.fit(dict(data), {"fit": gp_data / "a32.h5"}, {"spec": spec(gp_data, guide="AutoNormal")})
    # and the message names float32 and the key that changes it
    assert "float32 may be the cause" in str(error.value) and ".precision: float64" in str(error.value)
    steps.fit(dict(data), {"fit": gp_data / "a64.h5"}, {"spec": spec(gp_data, "float64", guide="AutoNormal")})
    fitted = read_artifact(gp_data / "a64.h5", "fit")
    assert np.isfinite(fitted["losses"]).all()
    assert fitted["params"]["amplitude_auto_loc"].dtype == np.float64


def test_the_config_decides_not_the_environment(monkeypatch, caplog):
    import jax
    import jax.numpy as jnp

    assert set_precision({"spec": {"model": {"name": "m", "precision": "float64"}}}) == "float64"
    assert jnp.zeros(()).dtype == jnp.float64
    monkeypatch.setenv("JAX_ENABLE_X64", "1")
    with caplog.at_level(logging.WARNING, logger="sviflow"):
        assert set_precision({"model": {"name": "m"}}) == "float32"  # a reference's params
    assert jnp.zeros(()).dtype == jnp.float32
    assert "JAX_ENABLE_X64=1 in the environment is overridden: models.m.precision is float32" in caplog.text
    assert not jax.config.read("jax_enable_x64")


def test_unknown_precision_names_the_key():
    with pytest.raises(ValueError, match=r"models\.m\.precision: 'float16' is not one of float32, float64"):
        precision_of({"spec": {"model": {"name": "m", "precision": "float16"}}})


def test_a_float32_job_without_jax_imports_no_jax():
    """The exact coin reference imports no JAX: setting float32 must not import it either."""
    code = (
        "import sys; from sviflow.precision import set_precision; "
        "set_precision({'model': {'name': 'coin'}}); print('jax' in sys.modules)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "JAX_ENABLE_X64"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "losses, expected",
    [
        (np.full((2, 5), np.nan), "NaN"),
        (np.array([[np.inf, 1.0], [np.nan, 2.0]]), "NaN or inf"),
        (np.array([np.inf, np.nan, 3.0]), "inf"),  # one seed as (step,)
        (np.array([[np.nan, 1.0], [0.5, np.nan]]), None),  # one seed started finite
        (np.array([[1.0, np.nan]]), None),  # NaN later: a divergence, not the initial point
        (np.zeros((2, 0)), None),
    ],
)
def test_nonfinite_at_start_advice(losses, expected):
    advice = nonfinite_at_start_advice(losses)
    if expected is None:
        assert advice is None
        return
    assert advice.startswith(f"the loss is {expected} from the first step on, in every seed")
    assert "not finite at the initial point" in advice and "float32 may be the cause" in advice
    assert "models.<name>.precision: float64" in advice
    float64 = nonfinite_at_start_advice(losses, "float64", "gp")
    assert "not finite even in float64" in float64 and "float32" not in float64


# --- the config key reruns exactly the model's JAX jobs ---------------------------------------


@pytest.mark.workflow
def test_a_models_precision_reruns_its_fits_predictions_and_reference(run_copy):
    """models.correlated.precision is in the config slice of correlated's reference, and of its
    fit's fit and predict jobs: those rerun ('Params have changed'), and what reads them."""
    edit_config(run_copy, lambda config: config["models"]["correlated"].update(precision="float64"))
    jobs = planned_jobs(run_copy)
    reference = ("reference", "reference=correlated--none")
    model = ("model", "model=correlated")  # the model's own file, which its fit and reference read
    assert set(jobs) == fit_jobs("autoguide") | {reference, model} | SUMMARY
    # (the dry run names one reason a job: the model file's is its params; its fit's and its
    # reference's are their params or that new file, which Snakemake names first)
    assert jobs[model].startswith("Params have changed"), jobs[model]
    for job in (("fit", "fit=autoguide"), reference):
        assert jobs[job].startswith("Params have changed") or (
            "results/models/correlated.json" in jobs[job]
        ), (job, jobs[job])


@pytest.mark.workflow
def test_engine_precision_reruns_every_model_that_sets_none(run_copy):
    def change(config):
        config["engine"]["precision"] = "float64"
        config["models"]["coin"]["precision"] = "float32"  # a model's own key wins

    edit_config(run_copy, change)
    jobs = planned_jobs(run_copy)
    assert {job for job in jobs if job[0] in ("fit", "predict")} == {
        (rule, f"fit={fit}") for fit in ("multimodal", "autoguide") for rule in ("fit", "predict")
    }
    assert {job for job in jobs if job[0] == "reference"} == {
        ("reference", "reference=multimodal--none"),
        ("reference", "reference=correlated--none"),
    }
    assert {job for job in jobs if job[0] == "model"} == {
        ("model", "model=multimodal"),
        ("model", "model=correlated"),
    }
