"""Outputs sized to their use (issue 16, item 6; issue 17's checksum): every array of an
artifact is checksummed and, above 1 KB, compressed in its narrowest exact type, read back as
written; a damaged file is refused, naming the file and what to do; the ArviZ files are
compressed and float32 where the numbers are; the predictive file stores each draw once and
as many mock sets as their use needs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sviflow import h5io
from sviflow.h5io import ArtifactError, read_artifact, storage_dtype, write_artifact


def data_tree():
    rng = np.random.default_rng(0)
    return {
        "observed": {
            "flips": (rng.random((4, 1000)) < 0.6).astype(np.int32),  # 0/1: int8 on disk
            "counts": rng.integers(-300, 300, 2000).astype(np.int64),  # int16 on disk
            "wide": np.array([0, 2**40] * 200, dtype=np.int64),  # stays int64
            "copy": rng.normal(size=3000).astype(np.float32).astype(np.float64),  # float32 on disk
            "genuine": rng.normal(size=3000),  # float64 stays
            "single": rng.normal(size=(2, 500)).astype(np.float32),
            "nan_inf": np.array([np.nan, np.inf, -np.inf, 0.5] * 100),  # float32 values too
        },
        "covariates": {
            "small": np.arange(5, dtype=np.int64),
            "scalar": np.float64(1234.5678),
            "empty": np.zeros((2, 0)),
            "flag": np.bool_(True),
        },
    }


def test_storage_dtype_is_the_narrowest_exact_type():
    assert storage_dtype(np.array([0, 1, 1], np.int32)) == np.int8
    assert storage_dtype(np.array([-129, 5], np.int64)) == np.int16
    assert storage_dtype(np.array([2**31], np.int64)) == np.int64
    assert storage_dtype(np.array([0, 255], np.uint8)) == np.uint8  # nothing narrower
    assert storage_dtype(np.array([0.1], np.float32).astype(np.float64)) == np.float32
    assert storage_dtype(np.array([0.1])) == np.float64
    assert storage_dtype(np.array([1e300])) == np.float64  # overflows float32: not exact
    assert storage_dtype(np.array([np.nan, -np.inf])) == np.float32


def test_every_array_is_checksummed_and_compressed_and_read_back_as_written(tmp_path):
    tree = data_tree()
    path = write_artifact(tmp_path / "d.h5", "data", tree)
    artifact = read_artifact(path, "data")
    for group, arrays in tree.items():
        for name, value in arrays.items():
            value = np.asarray(value)
            read = artifact[group][name]
            assert read.dtype == value.dtype and read.shape == value.shape, name
            np.testing.assert_array_equal(read, value, err_msg=name)
    on_disk = {
        "flips": np.int8,
        "counts": np.int16,
        "wide": np.int64,
        "copy": np.float32,
        "genuine": np.float64,
        "single": np.float32,
        "nan_inf": np.float32,
    }
    with h5py.File(path) as handle:
        # superblock 3, object headers 2 (format 1.10): HDF5 checksums all metadata
        assert handle.id.get_create_plist().get_version()[0] >= 3
        for name, dtype in on_disk.items():
            dataset = handle[f"observed/{name}"]
            assert dataset.dtype == dtype, name
            assert dataset.compression == "gzip" and dataset.compression_opts == h5io.GZIP_LEVEL, name
            assert dataset.shuffle and dataset.fletcher32 and dataset.chunks, name
        small = handle["covariates/small"]
        assert small.fletcher32 and small.compression is None  # 40 bytes: no gzip header
        assert handle["covariates/scalar"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
        # the bulk shrinks: 4000 0/1 values of int32 (16 kB) take a few hundred bytes
        assert handle["observed/flips"].id.get_storage_size() < 1000


def _flip_bytes(path, offset, count=4):
    data = bytearray(path.read_bytes())
    for index in range(offset, offset + count):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["observed/genuine", "observed/flips", "covariates/small"])
def test_a_damaged_dataset_is_refused_naming_the_file(tmp_path, name):
    """Bytes flipped inside a dataset's stored data (compressed or not): HDF5's Fletcher32
    checksum fails on the read, and the error names the file, the dataset and the remedy."""
    path = write_artifact(tmp_path / "d.h5", "data", data_tree())
    with h5py.File(path) as handle:
        chunk = handle[name].id.get_chunk_info(0)
    _flip_bytes(path, chunk.byte_offset + chunk.size // 2)
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "data")
    message = str(error.value)
    assert str(path) in message and f"/{name}" in message
    assert "damaged" in message and "checksum" in message
    assert "delete it and run snakemake again" in message


def test_a_damaged_scalar_is_refused_too(tmp_path):
    """A scalar lives in its object header, which HDF5 checksums: a flipped byte of the value
    is found as well."""
    path = write_artifact(tmp_path / "d.h5", "data", data_tree())
    raw = path.read_bytes()
    offset = raw.find(np.float64(1234.5678).tobytes())
    assert offset > 0 and raw.count(np.float64(1234.5678).tobytes()) == 1
    _flip_bytes(path, offset + 3, 1)
    with pytest.raises(ArtifactError) as error:
        read_artifact(path, "data")
    message = str(error.value)
    assert str(path) in message and "delete it and run snakemake again" in message


def test_an_undamaged_file_written_before_compression_is_still_read(tmp_path):
    """A version 2 data file (plain datasets) is read as it is: only the predictive layout
    changed in version 3; a version 2 predictive file is refused with the usual remedy."""
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs.update(
            schema="sviflow.data", schema_version=2, config="{}", seeds="[]", versions="{}", created="then"
        )
        handle["observed/obs"] = np.arange(3.0)
        handle.create_group("covariates")
    np.testing.assert_array_equal(read_artifact(path, "data")["observed"]["obs"], np.arange(3.0))
    with h5py.File(path, "r+") as handle:
        handle.attrs["schema"] = "sviflow.predictive"
    with pytest.raises(
        ArtifactError,
        match=rf"schema version 2, this sviflow reads version "
        rf"{h5io.SCHEMA_VERSION} \(sviflow.predictive files also "
        rf"from version 3 on\); delete it",
    ):
        read_artifact(path, "predictive")


# --- single-byte damage anywhere in a file (issue 17, item 3) ----------------------------------


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)):
        return a == b
    a, b = np.asarray(a), np.asarray(b)
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    )


def _small_fit(path):
    """A fit file as the fit step writes one, small: eleven root attributes (so HDF5 keeps them
    in its fractal heap, whose values it does not checksum), JSON ones among them."""
    rng = np.random.default_rng(1)
    tree = {
        "losses": rng.normal(size=(2, 300)),
        "params": {"alpha_q": np.array([13.1, 12.9])},
        "last_params": {"alpha_q": np.array([13.0, 12.8])},
        "trajectory": {
            "step": np.arange(1, 11) * 30,
            "params": {"alpha_q": rng.random((2, 10))},
            "moments": {"mean": rng.random((2, 10, 1)), "sd": rng.random((2, 10, 1))},
        },
        "first_nonfinite_step": np.full(2, -1),
        "diverged_step": np.full(2, -1),
        "skipped_steps": np.zeros(2, np.int64),
    }
    attrs = {
        "timings": {"compile_seconds": 1.5, "run_seconds": 0.25, "chunks": 2, "thin": 30},
        "diverged": False,
        "stop": {
            "mode": "fixed",
            "steps_run": 300,
            "reason": "steps",
            "averaged": [True, False],
            "since_step": [0, 0],
        },
        "moment_labels": ["latent_fairness"],
        "latent_sites": ["latent_fairness"],
    }
    return write_artifact(path, "fit", tree, config={"name": "beta", "steps": 300}, seeds=[1, 2], attrs=attrs)


def test_no_single_byte_flip_reads_back_silently_different(tmp_path):
    """One byte changed anywhere in a fit file (400 random places, and every byte of the JSON
    attributes' text, where HDF5 checks nothing): the file reads back exactly as written (the
    byte was unused) or is refused as damaged, naming the file and what to do; it never reads
    back different. Before the file's SHA-256, 21 of 200 random flips in a real fit file read
    back as a different config, stop or timings, and 19 escaped as bare RuntimeError or
    KeyError."""
    original_path = _small_fit(tmp_path / "beta.h5")
    original = read_artifact(original_path, "fit")
    raw = original_path.read_bytes()
    rng = np.random.default_rng(17)
    offsets = set(rng.integers(0, len(raw), 400).tolist())
    for text in (b'"steps_run"', b'"compile_seconds"', b"latent_fairness", b"sviflow.fit"):
        start = raw.find(text)
        assert start >= 0, text
        offsets |= set(range(start, start + len(text)))
    damaged = tmp_path / "damaged.h5"
    outcomes = {"refused": 0, "unchanged": 0}
    for offset in sorted(offsets):
        data = bytearray(raw)
        data[offset] ^= int(rng.integers(1, 256))
        damaged.write_bytes(bytes(data))
        try:
            read = read_artifact(damaged, "fit")
        except ArtifactError as error:
            # damaged, or (a flip in the schema's name or version) of another kind or version
            assert str(damaged) in str(error) and "delete" in str(error), str(error)
            assert "run snakemake" in str(error) and "to remake it" in str(error), str(error)
            outcomes["refused"] += 1
            continue
        assert _same(dict(read), dict(original)) and _same(read.attrs, original.attrs), (
            f"a flip at byte {offset} of {len(raw)} read back different"
        )
        outcomes["unchanged"] += 1
    assert outcomes["refused"] > len(offsets) / 2, outcomes


def test_a_file_that_lost_its_digest_is_refused(tmp_path):
    """The digest attribute gone (its name damaged, or deleted): a version 4 file is refused;
    a version 3 file, written before there were digests, is read as it is."""
    path = _small_fit(tmp_path / "beta.h5")
    with h5py.File(path, "r+") as handle:
        del handle.attrs[h5io.DIGEST_ATTR]
    with pytest.raises(ArtifactError, match="has lost its SHA-256.*delete it and run snakemake again"):
        read_artifact(path, "fit")
    with h5py.File(path, "r+") as handle:
        handle.attrs["schema_version"] = 3
    assert read_artifact(path, "fit").attrs["schema_version"] == 3


# --- ArviZ netCDF ------------------------------------------------------------------------------


def test_netcdf_is_compressed_float32_where_float32_and_reads_back(tmp_path):
    import arviz as az

    from sviflow.summary import write_netcdf

    rng = np.random.default_rng(1)
    float32_values = rng.normal(size=(2, 3000)).astype(np.float32)
    idata = az.from_dict(
        posterior={
            "x": float32_values.astype(np.float64),  # a float64 copy
            "z": rng.normal(size=(2, 3000)),
        },  # genuine float64
        posterior_predictive={"obs": (rng.random((2, 300, 10)) < 0.5).astype(np.int32)},
        observed_data={"obs": np.ones(20, np.float32)},
        attrs={"fit": "f", "verdict": "converged"},
    )
    path = tmp_path / "f.nc"
    write_netcdf(idata, path)
    back = az.from_netcdf(path)
    assert set(back.groups()) == {"posterior", "posterior_predictive", "observed_data"}
    assert back.attrs["verdict"] == "converged"
    assert back.posterior["x"].dtype == np.float32 and back.posterior["z"].dtype == np.float64
    np.testing.assert_array_equal(back.posterior["x"].values, float32_values)
    np.testing.assert_array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    np.testing.assert_array_equal(
        back.posterior_predictive["obs"].values, idata.posterior_predictive["obs"].values
    )
    with h5py.File(path) as handle:
        for name in ("posterior/x", "posterior/z", "posterior_predictive/obs"):
            assert handle[name].compression == "gzip" and handle[name].shuffle, name
            assert handle[name].fletcher32, name


def test_netcdf_of_a_diverged_fit_has_its_attributes_and_no_group(tmp_path):
    import arviz as az

    from sviflow.summary import write_netcdf

    write_netcdf(az.from_dict(attrs={"fit": "d", "verdict": "not converged"}), tmp_path / "d.nc")
    back = az.from_netcdf(tmp_path / "d.nc")
    assert back.attrs["fit"] == "d" and not back.groups()


# --- the predictive file ---------------------------------------------------------------------


def test_predictive_stores_latent_draws_once_and_sizes_the_mocks():
    """AutoMultivariateNormal's auxiliary _auto_latent (the same draws as x, y) is not kept;
    path 3 has as many mock sets as path 2; a mock budget cuts both for large data."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.autoguide import AutoMultivariateNormal

    from sviflow.predictive import mock_sets, predictive_paths, site_names

    def model(x, y=None):
        slope = numpyro.sample("slope", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)

    x = np.linspace(-1, 1, 50, dtype=np.float32)
    kwargs, predict_kwargs = {"x": x, "y": 2 * x}, {"x": x, "y": None}
    guide = AutoMultivariateNormal(model)
    numpyro.handlers.seed(guide, 0)(**kwargs)  # its params' shapes
    params = {"auto_loc": jnp.zeros((2, 1)), "auto_scale_tril": jnp.ones((2, 1, 1)) * 0.1}
    latent, observed = site_names(model, kwargs)
    paths = predictive_paths(
        model,
        guide,
        params,
        kwargs,
        predict_kwargs,
        observed,
        latent,
        num_samples=300,
        num_mock=40,
        seed=0,
        num_weighted=300,
    )
    assert set(paths["posterior"]) == {"slope"}  # no _auto_latent
    assert paths["posterior"]["slope"].shape == (2, 300)
    assert paths["mock_from_guide"]["y"].shape == (2, 40, 50)
    assert paths["mock_from_samples"]["y"].shape == (2, 40, 50)
    assert paths["log_weights"].shape == (2, 300)
    # 50 values a set: a budget of 1000 values is 20 sets, of 10 values still one
    assert mock_sets(model, predict_kwargs, observed, 40, 1000) == 20
    assert mock_sets(model, predict_kwargs, observed, 40, 10) == 1
    assert mock_sets(model, predict_kwargs, observed, 40, None) == 40
    assert mock_sets(model, predict_kwargs, [], 40, 1000) == 0
    capped = predictive_paths(
        model,
        guide,
        params,
        kwargs,
        predict_kwargs,
        observed,
        latent,
        num_samples=300,
        num_mock=40,
        seed=0,
        max_mock_values=1000,
    )
    assert capped["mock_from_guide"]["y"].shape == capped["mock_from_samples"]["y"].shape == (2, 20, 50)
