"""Never silently wrong (issue 17, items 2-6), the library's side: each case once gave a wrong
number with exit code 0, a bare traceback, a hang, or a corrupt file read back as data, and is
now refused with one message that names the file, key or line and says what to do. The same
cases through Snakemake itself are in tests/test_faults.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sviflow import data
from sviflow.errors import ConfigError

# --- 5. bad data: refused as they are read ---------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("x,y\n1,2\n2,nan\n", r"d\.csv, line 3, column 'y': 'nan' is not a finite number"),
        ("x,y\n1,2\n\n2, -inf\n", r"d\.csv, line 4, column 'y': '-inf' is not a finite number"),
        ("x,y\nInfinity,2\n", r"d\.csv, line 2, column 'x': 'Infinity' is not a finite number"),
        ("x,y\n1,1e39\n", r"d\.csv, line 2, column 'y': '1e39' is beyond float32's range"),
    ],
)
def test_a_csv_cell_that_is_not_finite_names_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"datasets\.d\.file: .*" + message + ".*remove or replace"):
        data.load_dataset({"file": str(path), "observed": ["y"]}, where="datasets.d")


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"x": [1, 2, 3], "y": [1.0, NaN, 3.0]}', r"array 'y', element \[1\]: nan is not a finite"),
        ('{"x": [[1, 2], [3, Infinity]], "y": [1, 2]}', r"array 'x', element \[1, 1\]: inf is not a finite"),
        ('{"x": [1, 2, 3], "y": -Infinity}', r"array 'y': -inf is not a finite"),
    ],
)
def test_a_json_value_that_is_not_finite_names_the_array_and_element(tmp_path, text, message):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"datasets\.d\.file: .*d\.json: " + message):
        data.load_dataset({"file": str(path), "observed": ["y"]}, where="datasets.d")


def test_an_hdf5_dataset_that_is_not_finite_is_named(tmp_path):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as handle:
        handle["y"] = np.array([0.5, 1.5, np.nan])
        handle["x"] = np.arange(3.0)
    with pytest.raises(ConfigError, match=r"d\.h5: dataset 'y', element \[2\]: nan is not a finite"):
        data.load_dataset({"file": str(path), "observed": ["y"]}, where="datasets.d")


@pytest.mark.parametrize(
    "content, observed, names",
    [
        ({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0]}, ["y"], "'y': 2; 'x': 3"),  # covariate vs observed
        ({"x": [1.0, 2.0], "y": [1.0, 2.0], "z": [1.0, 2.0, 3.0]}, ["y", "z"], "'y', 'x': 2; 'z': 3"),
        ({"X": [[1, 2], [3, 4], [5, 6]], "y": [1.0, 2.0], "w": [1.0, 2.0, 3.0]}, ["y"], "'y': 2; 'w': 3"),
    ],
)
def test_json_arrays_of_one_value_per_observation_must_share_a_length(tmp_path, content, observed, names):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(content))
    with pytest.raises(
        ConfigError,
        match=r"datasets\.d\.file: .*d\.json: arrays of one value per "
        r"observation .* differ in length: " + names,
    ):
        data.load_dataset({"file": str(path), "observed": observed}, where="datasets.d")


def test_a_scalar_and_a_matrix_of_another_size_are_legitimate(tmp_path):
    """Only the observed arrays' first axis and the 1-D covariates are compared: a scalar (a
    prior scale), a matrix (a design or distance matrix) and a per-group vector given as (J, 1)
    pass; so do arrays the config does not pass to the model."""
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            {
                "y": [1.0, 2.0, 3.0],
                "x": [0.1, 0.2, 0.3],
                "scale": 2.5,
                "K": [[1.0, 0.5], [0.5, 1.0]],
                "u": [[0.3], [0.4]],
                "unused": [1, 2, 3, 4, 5],
            }
        )
    )
    dataset = data.load_dataset(
        {"file": str(path), "observed": ["y"], "covariates": ["x", "scale", "K", "u"]}, where="datasets.d"
    )
    assert dataset["covariates"]["K"].shape == (2, 2) and dataset["covariates"]["u"].shape == (2, 1)


# --- 2. guide and model disagree: refused before fitting ---------------------------------------


def _two_site_model(y=None):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(a, b), obs=y)


def _guide_of(*names, observed=False):
    def guide(y=None):
        import numpyro
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        for name in names:
            loc = numpyro.param(f"{name}_loc", 0.5, constraint=constraints.positive)
            numpyro.sample(name, dist.LogNormal(loc, 0.1))
        if observed:
            numpyro.sample("y", dist.Normal(0.0, 1.0))

    return guide


KWARGS = {"y": np.array([0.5, 1.5], dtype=np.float32)}


@pytest.mark.parametrize(
    "guide, message",
    [
        (
            _guide_of("a"),
            r"fits\.f: the guide fits\.f\.guide\.name = 'g\.py:guide' has no sample site "
            r"for the model's latent site\(s\) 'b' \(the model 'm\.py:model' samples 'a', "
            r"'b'; the guide 'a'\).*add numpyro\.sample\('b', \.\.\.\)",
        ),
        (
            _guide_of("a", "b", "c"),
            r"fits\.f: the guide .* samples 'c', which the model 'm\.py:model' "
            r"does not sample \(its latent sites: 'a', 'b'\)",
        ),
        (_guide_of("a", "b", observed=True), r"samples 'y', which the model 'm\.py:model' observes"),
    ],
)
def test_a_guide_that_disagrees_with_its_model_is_refused(guide, message):
    from sviflow import sites

    model_sites = sites.check_model(_two_site_model, KWARGS, "fits.f", "models.m.function", "m.py:model", "d")
    assert model_sites == (["a", "b"], ["y"])
    with pytest.raises(ConfigError, match=message):
        sites.check_guide(model_sites, guide, KWARGS, "fits.f", "g.py:guide", "m.py:model")


def test_a_matching_guide_an_auxiliary_site_and_an_autoguide_pass():
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.autoguide import AutoNormal

    from sviflow import guides, models, sites

    def with_auxiliary(y=None):
        u = numpyro.sample("u", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
        numpyro.sample("a", dist.Delta(u))
        numpyro.sample("b", dist.LogNormal(u, 1.0))

    model_sites = sites.check_model(_two_site_model, KWARGS, "fits.f", "models.m.function", "m", None)
    for guide in (_guide_of("b", "a"), with_auxiliary, AutoNormal(_two_site_model)):
        sites.check_guide(model_sites, guide, KWARGS, "fits.f", "g", "m")
    # the post's guides on the post's models
    coin = {"obs": np.array([1.0, 0.0], dtype=np.float32)}
    for guide in (guides.beta_guide(), guides.normal_guide()):
        coin_sites = sites.check_model(models.coin_flips, coin, "fits.f", "k", "coin_flips", "c")
        sites.check_guide(coin_sites, guide, coin, "fits.f", "beta", "coin_flips")
    multimodal = sites.check_model(models.multimodal_2d, {}, "fits.f", "k", "multimodal_2d", None)
    sites.check_guide(multimodal, guides.mixture_2d_guide(), {}, "fits.f", "mixture_2d", "m")


def test_a_model_without_a_latent_site_is_refused():
    import numpyro
    import numpyro.distributions as dist

    from sviflow import sites

    def observes_only(y=None):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(
        ConfigError,
        match=r"fits\.f: the model models\.m\.function = 'm\.py:model' "
        r"has no latent sample site on the data of datasets\.d: "
        r"there is nothing to fit \(its sample sites: 'y', all "
        r"observed\)",
    ):
        sites.check_model(observes_only, KWARGS, "fits.f", "models.m.function", "m.py:model", "d")


# --- 4. sizes and time: known before, bounded during ----------------------------------------


def _plan(change=None):
    import copy

    import yaml
    from conftest import REPO

    from sviflow.config import Plan, validate

    config = copy.deepcopy(yaml.safe_load((REPO / "tests/configs/faults/base.yaml").read_text()))
    if change:
        change(config)
    validate(config)
    return Plan(config, REPO / "tests/configs/faults")


def test_the_estimate_counts_each_array_a_fit_writes():
    estimate = _plan().estimate("beta")  # 200 steps, 2 seeds, 50 points, 200 samples, coin: 20 flips
    parts = {key: value[0] for key, value in estimate["parts"].items()}
    assert estimate["components"] == 1
    assert parts["losses"] == 200 * 2 * 4
    assert parts["trajectory"] == 126 * 2 * 5 * 4  # at most 2.5 x 50 + 1 points
    assert parts["posterior"] == 200 * 2 * 1 * 4
    assert parts["log_weights"] == 200 * 2 * 8  # the checks ask for 200 (khat_particles)
    assert parts["mock"] == 2 * 2 * 50 * 20 * 4  # 50 sets of the 20 flips
    assert estimate["fit"] == parts["losses"] + parts["trajectory"]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["fits"]["beta"].update(steps=1.0e9),
            r"fits\.beta: results/fits/beta\.h5 would hold about 8,000 MB before compression, above "
            r"engine\.max_output_mb = 1000 \(losses 8,000\.0 MB \(1,000,000,000 steps x 2 seed\(s\)",
        ),
        (lambda c: c["fits"]["beta"].update(steps={"max": 10**9}), r"fits\.beta: .* 8,000 MB"),
        (
            lambda c: c["predictive"].update(num_samples=300_000_000),
            r"fits\.beta: results/predictive/beta\.h5 would hold about 7,200 MB .*lower "
            r"predictive\.num_samples",
        ),
        (
            lambda c: c["engine"].update(max_output_mb=0.001),
            r"fits\.beta: .* above engine\.max_output_mb = 0\.001",
        ),
    ],
)
def test_a_config_whose_files_would_be_too_large_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        _plan(change)


def test_a_large_limit_lets_a_large_config_through():
    _plan(lambda c: (c["fits"]["beta"].update(steps=1.0e9), c["engine"].update(max_output_mb=1e5)))


LOOPING = """
import numpyro
import numpyro.distributions as dist


def forever():
    numpyro.sample("a", dist.Normal(0.0, 1.0))
    print("a print of the model's")
    while True:
        pass
"""


def test_a_step_by_hand_stops_at_its_runtime_and_its_prints_go_to_the_log(tmp_path):
    """scripts/fit.py --runtime 0.25 (15 s) on a model that never ends when traced: one line,
    exit code 1, nothing written; the model's print is in the log, not on the terminal.

    15 s, not less: on a loaded 2-core CI machine the imports and the guide's set-up alone took
    over 3 s, so a shorter limit stopped the step before the model had printed."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    from sviflow.config import Plan, validate

    (tmp_path / "loop.py").write_text(LOOPING)
    config = {
        "models": {"loop": {"function": "loop.py:forever"}},
        "fits": {"hang": {"model": "loop", "guide": {"name": "AutoNormal"}, "steps": 10}},
    }
    validate(config)
    spec = Plan(config, tmp_path).fit_spec("hang")
    spec["model"]["function"] = f"{tmp_path / 'loop.py'}:forever"
    (tmp_path / "spec.json").write_text(json.dumps({"spec": spec}))
    log, output = tmp_path / "fit.log", tmp_path / "out" / "hang.h5"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "fit.py"),
            "--output",
            f"fit={output}",
            "--params",
            f"@{tmp_path / 'spec.json'}",
            "--log",
            str(log),
            "--runtime",
            "0.25",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    message = (
        "sviflow fit: rule fit, fits.hang: stopped after 0.25 minute(s), its time limit "
        "(resources: runtime = 0.25, in minutes)"
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message) and "run it with --runtime 1.25" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    text = log.read_text()
    assert "a print of the model's" in text and message.removeprefix("sviflow fit: ") in text
    assert not output.parent.exists() or not any(output.parent.iterdir())
