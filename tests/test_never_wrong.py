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

@pytest.mark.parametrize("text, message", [
    ("x,y\n1,2\n2,nan\n", r"d\.csv, line 3, column 'y': 'nan' is not a finite number"),
    ("x,y\n1,2\n\n2, -inf\n", r"d\.csv, line 4, column 'y': '-inf' is not a finite number"),
    ("x,y\nInfinity,2\n", r"d\.csv, line 2, column 'x': 'Infinity' is not a finite number"),
    ("x,y\n1,1e39\n", r"d\.csv, line 2, column 'y': '1e39' is beyond float32's range"),
])
def test_a_csv_cell_that_is_not_finite_names_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"datasets\.d\.file: .*" + message + ".*remove or replace"):
        data.load_dataset({"file": str(path), "observed": ["y"]}, where="datasets.d")


@pytest.mark.parametrize("text, message", [
    ('{"x": [1, 2, 3], "y": [1.0, NaN, 3.0]}', r"array 'y', element \[1\]: nan is not a finite"),
    ('{"x": [[1, 2], [3, Infinity]], "y": [1, 2]}', r"array 'x', element \[1, 1\]: inf is not a finite"),
    ('{"x": [1, 2, 3], "y": -Infinity}', r"array 'y': -inf is not a finite"),
])
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


@pytest.mark.parametrize("content, observed, names", [
    ({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0]}, ["y"], "'y': 2; 'x': 3"),          # covariate vs observed
    ({"x": [1.0, 2.0], "y": [1.0, 2.0], "z": [1.0, 2.0, 3.0]}, ["y", "z"], "'y', 'x': 2; 'z': 3"),
    ({"X": [[1, 2], [3, 4], [5, 6]], "y": [1.0, 2.0], "w": [1.0, 2.0, 3.0]}, ["y"], "'y': 2; 'w': 3"),
])
def test_json_arrays_of_one_value_per_observation_must_share_a_length(tmp_path, content, observed,
                                                                        names):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=r"datasets\.d\.file: .*d\.json: arrays of one value per "
                                          r"observation .* differ in length: " + names):
        data.load_dataset({"file": str(path), "observed": observed}, where="datasets.d")


def test_a_scalar_and_a_matrix_of_another_size_are_legitimate(tmp_path):
    """Only the observed arrays' first axis and the 1-D covariates are compared: a scalar (a
    prior scale), a matrix (a design or distance matrix) and a per-group vector given as (J, 1)
    pass; so do arrays the config does not pass to the model."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"y": [1.0, 2.0, 3.0], "x": [0.1, 0.2, 0.3], "scale": 2.5,
                                "K": [[1.0, 0.5], [0.5, 1.0]], "u": [[0.3], [0.4]],
                                "unused": [1, 2, 3, 4, 5]}))
    dataset = data.load_dataset({"file": str(path), "observed": ["y"],
                                 "covariates": ["x", "scale", "K", "u"]}, where="datasets.d")
    assert dataset["covariates"]["K"].shape == (2, 2) and dataset["covariates"]["u"].shape == (2, 1)
