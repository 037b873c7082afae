"""HDF5 artifacts (issue 2): what is written is what is read, a write that fails leaves nothing
behind, and every unreadable input is refused with an error that names the file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sviflow import h5io
from sviflow.h5io import ArtifactError, read_artifact, write_artifact


def fit_tree(n_seeds=2, n_steps=50, points=5):
    rng = np.random.default_rng(0)
    return {
        "losses": rng.normal(size=(n_seeds, n_steps)),
        "params": {"alpha_q": rng.random(n_seeds) + 10, "auto_scale_tril": rng.random((n_seeds, 2, 2))},
        "last_params": {"alpha_q": rng.random(n_seeds) + 10, "auto_scale_tril": rng.random((n_seeds, 2, 2))},
        "trajectory": {
            "step": np.arange(1, points + 1) * 10,
            "params": {
                "alpha_q": rng.random((n_seeds, points)),
                "auto_scale_tril": rng.random((n_seeds, points, 2, 2)),
            },
            "moments": {"mean": rng.random((n_seeds, points, 2)), "sd": rng.random((n_seeds, points, 2))},
        },
        "first_nonfinite_step": np.full(n_seeds, -1),
        "diverged_step": np.full(n_seeds, -1),
        "skipped_steps": np.zeros(n_seeds, int),
    }


FIT_ATTRS = {
    "timings": {"compile_seconds": 1.5, "run_seconds": 0.25, "chunks": 4, "thin": 10},
    "diverged": False,
    "stop": {"mode": "fixed", "steps_run": 50},
    "moment_labels": ["x", "y"],
    "latent_sites": ["x", "y"],
}


def assert_trees_equal(read, written):
    assert set(read) == set(written)
    for key, value in written.items():
        if isinstance(value, dict):
            assert_trees_equal(read[key], value)
        elif isinstance(value, str):
            assert read[key] == value
        else:
            value = np.asarray(value)
            assert read[key].dtype == value.dtype, key
            np.testing.assert_array_equal(read[key], value)


def test_round_trip_of_a_nested_tree_and_its_attributes(tmp_path):
    tree = {
        "observed": {"obs": np.array([1, 0, 1], np.float32), "counts": np.arange(4, dtype=np.int32)},
        "covariates": {
            "x": np.linspace(0, 1, 6).reshape(2, 3),
            "deeper": {"still": {"deeper": np.array(3.5)}},
        },
        "label": "twelve heads, eight tails",
        "flag": np.bool_(True),
        "empty_group": {},
    }
    config = {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}, "list": [1, 2.5, "a"]}
    attrs = {
        "method": "exact",
        "latent_sites": ["latent_fairness"],
        "number": 3,
        "ratio": 0.25,
        "nothing": None,
        "truth": [{"quantity": "mean", "target": 0.59}],
        "not_json": "[not json",
    }
    path = tmp_path / "sub" / "dir" / "data.h5"  # folders are made
    assert write_artifact(path, "data", tree, config=config, seeds=[1, 2], attrs=attrs) == path
    artifact = read_artifact(path, "data")
    assert_trees_equal(artifact, tree)
    assert artifact.path == path
    assert artifact.config == config
    assert artifact.attrs["schema"] == "sviflow.data"
    assert artifact.attrs["schema_version"] == h5io.SCHEMA_VERSION
    assert artifact.attrs["seeds"] == [1, 2]
    assert artifact.attrs["versions"]["numpyro"] == "0.22.0"
    assert artifact.attrs["versions"]["h5py"] == h5py.__version__
    for key, value in attrs.items():
        assert artifact.attrs[key] == value, key
    assert isinstance(artifact.attrs["number"], int) and isinstance(artifact.attrs["ratio"], float)
    # seen by h5py itself: groups and datasets keep their natural shapes
    with h5py.File(path, "r") as handle:
        assert handle["covariates/x"].shape == (2, 3)
        assert isinstance(handle["covariates/deeper/still"], h5py.Group)
        assert handle["label"].asstr()[()] == "twelve heads, eight tails"


def test_round_trip_of_a_fit_artifact(tmp_path):
    tree = fit_tree()
    write_artifact(tmp_path / "fit.h5", "fit", tree, config={"name": "beta"}, seeds=[3, 4], attrs=FIT_ATTRS)
    artifact = read_artifact(tmp_path / "fit.h5", "fit")
    assert_trees_equal(artifact, tree)
    assert artifact.attrs["timings"] == FIT_ATTRS["timings"]
    assert artifact.attrs["diverged"] is False
    assert artifact.config == {"name": "beta"}


def test_numpy_values_in_json_attributes(tmp_path):
    attrs = {
        "latent_sites": ["x"],
        "method": "grid",
        "warnings": [],
        "extra": {"a": np.float32(1.5), "b": np.arange(3), "c": np.int64(7)},
    }
    write_artifact(
        tmp_path / "r.h5",
        "reference",
        {
            "moments": {"mean": {"x": 0.0}, "sd": {"x": 1.0}, "covariance": np.eye(1)},
            "draws": {"x": np.zeros(4)},
            "log_z": np.float64(-1.0),
        },
        attrs=attrs,
    )
    read = read_artifact(tmp_path / "r.h5", "reference")
    assert read.attrs["extra"] == {"a": 1.5, "b": [0, 1, 2], "c": 7}


def test_unknown_kind_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown artifact kind 'fits'"):
        write_artifact(tmp_path / "x.h5", "fits", {})
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.h5"
    tree = {"observed": {"obs": np.ones(3)}, "covariates": {"bad": object()}}
    with pytest.raises(TypeError):
        write_artifact(path, "data", tree)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_whole_file(tmp_path):
    path = tmp_path / "data.h5"
    good = {"observed": {"obs": np.arange(5.0)}, "covariates": {}}
    write_artifact(path, "data", good, config={"version": "old"})
    with pytest.raises(TypeError):
        write_artifact(
            path,
            "data",
            {"observed": {"obs": np.ones(3), "bad": {1, 2}}, "covariates": {}},
            config={"version": "new"},
        )
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]
    artifact = read_artifact(path, "data")
    assert artifact.config == {"version": "old"}
    np.testing.assert_array_equal(artifact["observed"]["obs"], np.arange(5.0))


class Interrupting:
    """An array-like whose conversion is interrupted, as Ctrl-C mid-write would."""

    def __array__(self, dtype=None, copy=None):
        raise KeyboardInterrupt


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "fit.h5"
    tree = fit_tree()
    tree["trajectory"]["params"]["late"] = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        write_artifact(path, "fit", tree, attrs=FIT_ATTRS)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_place_is_an_artifact_error_naming_the_file(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    path = blocker / "data" / "coin.h5"
    with pytest.raises(ArtifactError) as error:
        write_artifact(path, "data", {"observed": {}, "covariates": {}})
    assert str(path) in str(error.value) and "cannot write" in str(error.value)


def test_written_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    path = write_artifact(tmp_path / "d.h5", "data", {"observed": {}, "covariates": {}})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# --- reading what is not a whole artifact ----------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "results" / "fits" / "beta.h5"
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "fit")
    assert str(path) in str(error.value) and "no such file" in str(error.value)


def test_garbage_bytes(tmp_path):
    path = tmp_path / "fit.h5"
    path.write_bytes(b"this is not HDF5\n" * 100)
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "fit")
    message = str(error.value)
    assert str(path) in message and "not a readable HDF5 file" in message
    assert "delete it" in message


def test_empty_file(tmp_path):
    path = tmp_path / "fit.h5"
    path.write_bytes(b"")
    with pytest.raises(ArtifactError, match="not a readable HDF5 file") as error:
        read_artifact(path, "fit")
    assert str(path) in str(error.value)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file(tmp_path, keep):
    """A real artifact cut short, as a full disk or a killed copy leaves it."""
    path = tmp_path / "fit.h5"
    write_artifact(path, "fit", fit_tree(n_steps=20_000), attrs=FIT_ATTRS)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "fit")
    message = str(error.value)
    assert str(path) in message
    assert "corrupt or truncated" in message or "incomplete" in message


def test_wrong_kind(tmp_path):
    path = tmp_path / "data.h5"
    write_artifact(path, "data", {"observed": {}, "covariates": {}})
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "fit")
    message = str(error.value)
    assert str(path) in message
    assert "expected a sviflow.fit file" in message and "'sviflow.data'" in message


def test_a_foreign_hdf5_file(tmp_path):
    path = tmp_path / "theirs.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.arange(3)
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "data")
    assert str(path) in str(error.value) and "found schema None" in str(error.value)


def test_other_schema_version(tmp_path):
    path = tmp_path / "fit.h5"
    write_artifact(path, "fit", fit_tree(), attrs=FIT_ATTRS)
    with h5py.File(path, "r+") as handle:
        handle.attrs["schema_version"] = h5io.SCHEMA_VERSION + 1
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "fit")
    message = str(error.value)
    assert str(path) in message
    assert f"schema version {h5io.SCHEMA_VERSION + 1}" in message
    assert f"reads version {h5io.SCHEMA_VERSION}" in message


@pytest.mark.parametrize(
    "missing", ["losses", "trajectory/step", "trajectory/params", "params", "skipped_steps"]
)
def test_missing_required_dataset(tmp_path, missing):
    path = tmp_path / "fit.h5"
    write_artifact(path, "fit", fit_tree(), attrs=FIT_ATTRS)
    with h5py.File(path, "r+") as handle:
        del handle[missing]
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "fit")
    message = str(error.value)
    assert str(path) in message and "incomplete sviflow.fit file" in message
    assert missing in message


def test_missing_required_attribute(tmp_path):
    path = tmp_path / "fit.h5"
    write_artifact(path, "fit", fit_tree(), attrs={"timings": {}})  # no "diverged"
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "fit")
    assert str(path) in str(error.value) and "attribute diverged" in str(error.value)


def test_every_kind_documented_and_complete_trees_accepted(tmp_path):
    """describe_schemas covers every kind, and a tree holding every path of a schema reads back."""
    text = h5io.describe_schemas()
    for kind, entries in h5io.SCHEMAS.items():
        assert f"### sviflow.{kind}" in text
        tree = {}
        for key in entries:
            parts = key.strip("/").split("/")
            node = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = {} if key.endswith("/") else np.zeros(2)
        attrs = {key: 0 for key in h5io.ATTRIBUTES.get(kind, {})}
        write_artifact(tmp_path / f"{kind}.h5", kind, tree, attrs=attrs)
        read_artifact(tmp_path / f"{kind}.h5", kind)
        for key in entries:
            assert f"`{key}`" in text
