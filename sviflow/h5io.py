"""HDF5 artifacts: the only interface between the workflow's steps.

Every artifact is one HDF5 file. Its root attributes name the schema and its version, hold the
config slice that made it (JSON), its seeds, the package versions and the creation time. Groups
and datasets keep the natural shapes of the arrays; a leading ``seed`` axis stands wherever a
fit ran several seeds (ArviZ's ``chain``).

Files are written to a temporary name in the same folder and renamed when complete, so a run
cut off mid-write leaves no file that a later run could take for a whole one.

Storage (``_write_array``), invisible to ``read_artifact``, which returns what was written:
every array above ``COMPRESS_ABOVE`` bytes is chunked, shuffled and gzip-compressed (level
``GZIP_LEVEL``) and stored in the narrowest type that holds its values exactly (a float64 array
of float32 values as float32, 0/1 mock observations as int8; the attribute ``sviflow_dtype``
names the type read back); every other non-empty array is chunked too. Every chunked dataset
carries HDF5's Fletcher32 checksum and scalars are stored inside their object header, which
HDF5 checksums as it checksums all metadata of these files (format 1.10 and later): HDF5
verifies it on every read, and a damaged file is refused naming the file and the dataset.
HDF5 checksums neither the values of attributes kept in a fractal heap (a file with more than
eight root attributes keeps them all there: the config, the fit's stop) nor a heap's other
objects: of 200 random single-byte flips in a fit file, 21 read back as different attributes,
silently. So every file also carries a SHA-256 of everything it holds (``DIGEST_ATTR``, from
version 4 on): every dataset's values, type and shape, every attribute of every object, and every
name, read back as a reader reads them; the reader computes it again and refuses a file whose
digest differs or is missing.

``SCHEMAS`` below is the one definition of the layout; ``describe_schemas()`` renders it for the
docs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from sviflow.errors import disk_error

# 2: predictive files carry the log weights (the check needs no JAX); 3: compressed and
# checksummed, the predictive posterior holds the model's latent sites only (not the guide's
# auxiliaries, the same draws again) and path 3 as many mock sets as path 2; 4: the SHA-256 of
# the whole file's contents (DIGEST_ATTR), without which a version 4 file is refused
SCHEMA_VERSION = 4

# The oldest version read, by kind: version 3 changed the predictive layout, and the fit and
# check layouts (the guide's moments along the run, the convergence rule's numbers); data and
# reference files of version 2 are read as they are (the storage is HDF5's to undo), not remade.
# Version 4 changed no layout: a version 3 file is read, without the digest it does not have.
OLDEST_READABLE = {"data": 2, "reference": 2}
OLDEST_READABLE_DEFAULT = 3
DIGEST_ATTR = "sviflow_sha256"  # root attribute: the SHA-256 of the rest of the file (_walk)

COMPRESS_ABOVE = 1024  # bytes: smaller arrays gain nothing from gzip but its header
GZIP_LEVEL = 4  # level 9 saves under 2 % more on these arrays and writes 3 x slower
DTYPE_ATTR = "sviflow_dtype"  # on a dataset stored narrower than written: the type to read back
LIBVER = ("v110", "v114")  # object header v2: checksummed metadata; readable by HDF5 >= 1.10

# kind -> (required paths, one line on each). A path ending in "/" is a group of arrays
# named after the model's sample sites or the guide's params.
SCHEMAS: dict[str, dict[str, str]] = {
    "data": {
        "observed/": "arrays passed to the model as keyword arguments and set to None to predict",
        "covariates/": "arrays always passed to the model as keyword arguments",
    },
    "fit": {
        "losses": "(seed, step) the loss (negative ELBO estimate) at every step",
        "params/": "(seed, ...) the reported constrained value of every guide param: the "
        "average of the window's iterates where they are stationary, else the last "
        "iterate (attribute stop.averaged says which)",
        "last_params/": "(seed, ...) the last iterate's constrained value of every guide param",
        "trajectory/step": "(point,) the step after which each trajectory point was taken",
        "trajectory/params/": "(seed, point, ...) thinned trajectory of every guide param",
        "trajectory/moments/mean": "(seed, point, component) the guide's mean of every latent "
        "component (attribute moment_labels) at each point",
        "trajectory/moments/sd": "(seed, point, component) the guide's sd of the same",
        "first_nonfinite_step": "(seed,) first step whose loss is NaN or inf, -1 if none",
        "diverged_step": "(seed,) step at which the fit diverged, -1 if it did not (with "
        "stable_update, non-finite steps are skipped, not divergence)",
        "skipped_steps": "(seed,) steps stable_update skipped because the loss was not finite",
    },
    "predictive": {
        "posterior/": "(seed, draw, ...) samples of the model's latent sites from the guide, and its "
        "deterministic sites computed at them (the guide's "
        "auxiliary sites, from which they are made, are not stored)",
        "mock_from_guide/": "(seed, draw, ...) observed sites simulated by model + guide",
        "mock_from_samples/": "(seed, draw, ...) observed sites simulated by model + the first "
        "posterior samples, as many sets as mock_from_guide",
        "log_weights": "(seed, draw) log p(x, z) - log q(z) at the guide's draws z: the posterior "
        "samples, continued where the checks ask for more; the check's ELBO and PSIS "
        "k-hat ((seed, 0) when the fit diverged)",
    },
    "reference": {
        "moments/mean/": "posterior mean of every latent site",
        "moments/sd/": "posterior sd of every latent site",
        "moments/covariance": "covariance of the latent sites, flattened in latent_sites order",
        "draws/": "(draw, ...) draws from the reference posterior, for sample-based distances",
        "log_z": "log evidence (exact, grid); NaN where unknown (nuts)",
    },
    "check": {
        "losses_window_mean": "(seed, window) mean loss over each plateau window",
        "rel_change": "(seed, window) relative change of the windowed ELBO (Stan ADVI)",
        "diverged_step": "(seed,) step at which the fit diverged, -1 if it did not",
        "convergence/": "{shift, sd_change, mcse, rhat, speed} (seed, component): the convergence rule's "
        "numbers over the last window (sviflow.convergence), components as the "
        "fit's moment_labels",
        "window": "(seed, 2) the first and last step of each seed's window",
        "seeds_rhat/": "R-hat of the guides' posterior draws, seeds as chains (several seeds "
        "only): do the seeds' guides agree?",
        "seed_spread/": "sd across seeds of each final parameter component",
        "quality/": "khat, elbo, elbo_se (seed,); log_z, kl (seed,), energy_distance and "
        "sites/<site>/{mean_error_sd, sd_ratio, wasserstein, ...} where a reference "
        "exists; mass_outside/<site> (seed,): the guide's mass outside the model's "
        "support, where its support is wider (KL is then infinite)",
    },
}

# Root attributes beyond the common ones, by kind (JSON where not a plain number or string).
ATTRIBUTES: dict[str, dict[str, str]] = {
    "fit": {
        "timings": "compile_seconds, run_seconds, steps_per_second, chunks, thin",
        "diverged": "true when any seed diverged",
        "stop": "how the run ended: mode (fixed or budget), steps_run, reason, averaged "
        "(per seed), since_step (per seed: its last lowered step size), decays "
        "[[step, seed, new step size]], step_size, windows (the convergence rule's "
        "numbers per seed at the end) (JSON); trajectory/step_size (seed, point) "
        "where the step size can be lowered",
        "moment_labels": "the latent components of trajectory/moments, site[i,j] 0-based",
        "latent_sites": "the model's latent sample sites",
    },
    "predictive": {
        "latent_sites": "the model's latent sample sites",
        "observed_sites": "the model's observed sample sites",
        "deterministic_sites": "the model's numpyro.deterministic sites, drawn in "
        "posterior/ at its latent draws",
        "diverged": "true when the fit diverged: then no draws are made",
        "support_excess": "latent sites whose guide distribution has a wider support "
        "than the model's: {site: {guide_support, model_support, "
        "mass_outside (per seed, from the guide's cdf)}} (JSON)",
    },
    "reference": {
        "method": "exact, grid, nuts or draws",
        "latent_sites": "site order of moments/covariance",
        "warnings": "why the reference may not be trusted (R-hat above 1.01, bulk ESS "
        "below 400, divergences), each with what to change; [] when it is "
        "fine (JSON list). Beside it deterministic_sites (draws/ and moments/ "
        "hold them too, outside the covariance), source (draws: the file, "
        "format, chains, draws kept); groups nuts/ (rhat, ess, ess_tail per "
        "site in its shape; divergences and tree_depth_hits per chain; the "
        "settings) and chains/ (draws with chains: rhat, ess, ess_tail)",
    },
    "check": {
        "verdict": "converged | not converged | converged, poor approximation",
        "reasons": "the reasons, one sentence each (JSON list)",
        "sentence": "the reasons joined",
        "truth": "rows {quantity, target, fit, error, note} against the exact answers (JSON)",
        "khat_limit": "the k-hat threshold min(1 - 1/log10 S, 0.7)",
        "diverged": "true when the fit diverged",
        "problems": "the failing checks in a few words each, most important first (JSON list)",
        "stop": "the fit's stop attribute, as the check read it (JSON)",
        "reference_warnings": "why the reference is not to be trusted, if it is not (JSON list)",
    },
}


class ArtifactError(RuntimeError):
    """An HDF5 input that is missing, corrupt, or of another schema."""


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("sviflow", "numpyro", "jax", "jaxlib", "numpy", "h5py", "arviz"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def storage_dtype(value: np.ndarray) -> np.dtype:
    """The narrowest type that holds every value of ``value`` exactly: float32 for a float64
    array of float32 values (NaN and inf included), int8, int16 or int32 for integers in their
    range; else its own type."""
    if value.dtype == np.float64:
        with np.errstate(over="ignore", invalid="ignore"):
            narrow = value.astype(np.float32)
        if np.array_equal(narrow, value, equal_nan=True):
            return np.dtype(np.float32)
    elif value.dtype.kind in "iu" and value.size:
        low, high = value.min(), value.max()
        for kind in (np.int8, np.int16, np.int32):
            info = np.iinfo(kind)
            if np.dtype(kind).itemsize < value.dtype.itemsize and info.min <= low and high <= info.max:
                return np.dtype(kind)
    return value.dtype


def _write_array(group: h5py.Group, key: str, value: np.ndarray) -> None:
    """One array: scalars inside the (checksummed) object header; other non-empty arrays chunked
    with the Fletcher32 checksum, and above COMPRESS_ABOVE bytes shuffled, gzip-compressed and
    in their narrowest exact type."""
    if value.ndim == 0 or value.size == 0 or value.dtype.kind not in "biuf":
        if value.ndim == 0 and value.dtype.kind in "biuf":
            # h5py's create_dataset ignores a scalar's layout: HDF5's own call, as h5py makes it
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.COMPACT)
            dataset = h5py.h5d.create(
                group.id,
                key.encode(),
                h5py.h5t.py_create(value.dtype, logical=True),
                h5py.h5s.create(h5py.h5s.SCALAR),
                dcpl=dcpl,
            )
            dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(value))
        else:
            group.create_dataset(key, data=value)
        return
    if value.nbytes <= COMPRESS_ABOVE:
        group.create_dataset(key, data=value, chunks=value.shape, fletcher32=True)
        return
    stored = storage_dtype(value)
    dataset = group.create_dataset(
        key,
        data=value.astype(stored, copy=False),
        chunks=True,
        shuffle=True,
        compression="gzip",
        compression_opts=GZIP_LEVEL,
        fletcher32=True,
    )
    if stored != value.dtype:
        dataset.attrs[DTYPE_ATTR] = value.dtype.str


def _write_tree(group: h5py.Group, tree: dict) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            _write_tree(group.require_group(key), value)
        elif isinstance(value, str):
            group.create_dataset(key, data=value, dtype=h5py.string_dtype())
        else:
            _write_array(group, key, np.asarray(value))


def _attr(value):
    if isinstance(value, (dict, list, tuple)) or value is None:
        return json.dumps(value, sort_keys=True, default=_json_default)
    return value


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@contextlib.contextmanager
def written_atomically(path):
    """Yield a temporary path in ``path``'s folder to write; renamed to ``path`` when the block
    ends without error, removed otherwise: a run cut off mid-write leaves no file that a later
    run could take for a whole one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as error:
        problem = disk_error(error)
        advice = problem[1] if problem else "check that its folder exists and is writable"
        raise ArtifactError(f"cannot write {path}: {error.strerror}; {advice}") from error
    os.close(descriptor)
    try:
        yield temporary
        # mkstemp makes the file private (0600): a result gets the usual mode, 0666 less the umask
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        problem = disk_error(error)
        if problem is not None and not isinstance(error, ArtifactError):
            # a full disk (or quota); HDF5's own writes (netCDF) say so inside a RuntimeError
            raise ArtifactError(f"cannot write {path}: {os.strerror(problem[0])}; {problem[1]}") from error
        raise


def write_artifact(
    path, kind: str, tree: dict, *, config: dict | None = None, seeds=None, attrs: dict | None = None
) -> Path:
    """Write ``tree`` (nested dicts of arrays) as an artifact of ``kind``, atomically.

    HDF5 builds the file in memory (the core driver, no backing store) and Python writes its
    image to disk: a disk that fills up then raises one OSError (ENOSPC) from ``write``. Written
    by HDF5 itself, the failed flush left objects that h5py could neither close nor free, and
    the job died in a segfault."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    with written_atomically(path) as temporary:
        with h5py.File(temporary, "w", libver=LIBVER, driver="core", backing_store=False) as handle:
            handle.attrs["schema"] = f"sviflow.{kind}"
            handle.attrs["schema_version"] = SCHEMA_VERSION
            handle.attrs["config"] = _attr(config or {})
            handle.attrs["seeds"] = _attr(list(seeds) if seeds is not None else [])
            handle.attrs["versions"] = _attr(package_versions())
            handle.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for key, value in (attrs or {}).items():
                handle.attrs[key] = _attr(value)
            _write_tree(handle, tree)
            # read back as a reader reads it, so that the reader's digest is this one
            digest = hashlib.sha256()
            _walk(handle, digest)
            handle.attrs[DIGEST_ATTR] = digest.hexdigest()
            handle.flush()
            image = handle.id.get_file_image()
        with open(temporary, "wb") as output:
            output.write(image)
    return Path(path)


class _Damaged(Exception):
    """A dataset that HDF5 could not read back: its checksum failed, or its chunks are gone."""

    def __init__(self, name: str, error: OSError):
        super().__init__(name, error)
        self.name, self.error = name, error


# what h5py raises for a damaged object: OSError for a failed checksum, RuntimeError while
# iterating over damaged attributes, KeyError for a link whose object cannot be opened,
# ValueError or TypeError for a type or shape that cannot be decoded
_DAMAGE = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _feed(digest, *parts) -> None:
    """Each part with its length first: no two sequences of parts hash alike."""
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)


def _feed_value(digest, value) -> None:
    if isinstance(value, (str, bytes)):
        _feed(digest, type(value).__name__, value)
        return
    array = np.asarray(value)
    if array.dtype.kind in "OSU":  # strings: their text, not Python object pointers
        _feed(digest, "strings", array.shape, *(str(v) for v in array.ravel().tolist()))
        return
    _feed(digest, array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes())


def _walk(group: h5py.Group, digest, path: str = "/") -> dict:
    """The tree of arrays under ``group`` as written (a narrowed dataset back in its written
    type), with every name, attribute and value fed to ``digest`` (hashlib) in sorted order.
    A damaged object raises _Damaged."""
    try:
        for name in sorted(group.attrs):
            if path == "/" and name == DIGEST_ATTR:
                continue
            _feed(digest, "attribute", path, name)
            _feed_value(digest, group.attrs[name])
        keys = sorted(group.keys())
    except _DAMAGE as error:
        raise _Damaged(path, OSError(str(error))) from error
    tree = {}
    for key in keys:
        name = f"{path.rstrip('/')}/{key}"
        try:
            item = group[key]  # opening checks the object header's checksum
            is_group = isinstance(item, h5py.Group)
        except _DAMAGE as error:
            raise _Damaged(name, OSError(str(error))) from error
        _feed(digest, "group" if is_group else "dataset", name)
        if is_group:
            tree[key] = _walk(item, digest, name)
            continue
        try:
            for attribute in sorted(item.attrs):
                _feed(digest, "attribute", name, attribute)
                _feed_value(digest, item.attrs[attribute])
            if item.dtype.kind in ("O", "S"):
                value = item.asstr()[()]
                _feed_value(digest, value)
                tree[key] = value
                continue
            value = item[()]
            _feed_value(digest, value)
            written = item.attrs.get(DTYPE_ATTR)
            tree[key] = value.astype(np.dtype(written)) if written is not None else value
        except _DAMAGE as error:
            raise _Damaged(name, error if isinstance(error, OSError) else OSError(str(error))) from error
    return tree


class Artifact(dict):
    """The arrays of an artifact as nested dicts, with ``attrs`` (JSON attributes decoded)."""

    def __init__(self, tree: dict, attrs: dict, path: Path):
        super().__init__(tree)
        self.attrs = attrs
        self.path = path

    @property
    def config(self) -> dict:
        return self.attrs.get("config", {})


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in '[{"' or value == "null":
        try:
            return json.loads(value)
        except (json.JSONDecodeError, TypeError):
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_artifact(path, kind: str) -> Artifact:
    """Read an artifact and check that it is a whole one of ``kind`` at this schema version."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file; run the step that makes it (snakemake {path})")
    digest = hashlib.sha256()
    try:
        with h5py.File(path, "r") as handle:
            try:
                attrs = {key: _decode(value) for key, value in handle.attrs.items()}
            except _DAMAGE as error:
                raise _Damaged("/", OSError(str(error))) from error
            tree = _walk(handle, digest)
    except _Damaged as damaged:
        what = "its root attributes" if damaged.name == "/" else f"dataset {damaged.name}"
        raise ArtifactError(
            f"{path}: damaged: {what} does not read back as it was "
            f"written, its checksum fails or its data are cut off (HDF5: "
            f"{damaged.error}); delete it and run snakemake again to remake it"
        ) from damaged.error
    except _DAMAGE as error:
        raise ArtifactError(
            f"{path}: not a readable HDF5 file ({error}); it is corrupt or "
            f"truncated: delete it and run snakemake again to remake it"
        ) from error
    schema = attrs.get("schema")
    if schema != f"sviflow.{kind}":
        raise ArtifactError(
            f"{path}: expected a sviflow.{kind} file, found schema {schema!r}; "
            f"check the path, or delete the file and run snakemake to remake it"
        )
    version = attrs.get("schema_version")
    oldest = OLDEST_READABLE.get(kind, OLDEST_READABLE_DEFAULT)
    if not (isinstance(version, int) and oldest <= version <= SCHEMA_VERSION):
        also = f" (sviflow.{kind} files also from version {oldest} on)" if oldest < SCHEMA_VERSION else ""
        raise ArtifactError(
            f"{path}: written with schema version {version}, this sviflow reads "
            f"version {SCHEMA_VERSION}{also}; delete it and run snakemake again (or "
            f"run snakemake --forcerun {path}) to remake it with this version"
        )
    missing = [key for key in SCHEMAS[kind] if not _has(tree, key)]
    missing += [f"attribute {key}" for key in ATTRIBUTES.get(kind, {}) if key not in attrs]
    if missing:
        raise ArtifactError(
            f"{path}: incomplete sviflow.{kind} file, missing {', '.join(missing)}; "
            f"delete it and run snakemake again to remake it"
        )
    stored = attrs.pop(DIGEST_ATTR, None)
    if stored != digest.hexdigest() and (stored is not None or version >= 4):
        found = "has lost its SHA-256" if stored is None else "does not match its SHA-256"
        raise ArtifactError(
            f"{path}: damaged: its contents {found} (root attribute {DIGEST_ATTR}, "
            f"written with the file): a byte of it changed after it was written; "
            f"delete it and run snakemake again to remake it"
        )
    return Artifact(tree, attrs, path)


def _has(tree: dict, key: str) -> bool:
    node = tree
    for part in key.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def describe_schemas() -> str:
    """The layout of every artifact kind, as Markdown."""
    lines = [
        f"All artifacts: root attributes schema (sviflow.<kind>), schema_version "
        f"({SCHEMA_VERSION}), config (JSON), seeds (JSON), versions (JSON), created, "
        f"{DIGEST_ATTR} (SHA-256 of everything else the file holds).",
        "",
    ]
    for kind, entries in SCHEMAS.items():
        lines.append(f"### sviflow.{kind}")
        lines.extend(f"- `{key}`: {doc}" for key, doc in entries.items())
        lines.extend(f"- attribute `{key}`: {doc}" for key, doc in ATTRIBUTES.get(kind, {}).items())
        lines.append("")
    return "\n".join(lines)
