"""ArviZ InferenceData per fit, and one table of every fit with its verdict.

The seeds of a fit are ArviZ's chains, so ``az.summary``'s R-hat compares the seeds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from sviflow.h5io import read_artifact, written_atomically

warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
import arviz as az  # noqa: E402  (after the filter: its import warns once per process)


def inference_data(inputs: dict, check, spec: dict):
    """posterior (chain = seed, draw), posterior_predictive and observed_data where the model
    has data; the fit's verdict in the attributes. ``inputs``: the fit's predictive and
    (optional) data files; ``check``: its check artifact; ``spec``: {"name", "model", "guide"}."""
    predictive = read_artifact(inputs["predictive"], "predictive")
    # the latent sites, then the deterministic ones (transformed parameters), as ArviZ keeps them
    latent = (predictive.attrs.get("latent_sites") or []) + (
        predictive.attrs.get("deterministic_sites") or []
    )
    posterior = {k: v for k, v in predictive["posterior"].items() if k in latent}
    groups = {"posterior": posterior or None}
    if predictive["mock_from_samples"]:
        groups["posterior_predictive"] = predictive["mock_from_samples"]
    if inputs.get("data"):
        data = read_artifact(inputs["data"], "data")
        if data["observed"]:
            groups["observed_data"] = data["observed"]
        if data["covariates"]:
            groups["constant_data"] = data["covariates"]
    # the mock observations have the model's default size, not the data's: their own dims
    dims = {name: [f"{name}_mock_dim_0"] for name in predictive["mock_from_samples"]}
    attrs = {
        "fit": spec["name"],
        "verdict": check.attrs["verdict"],
        "reasons": check.attrs["sentence"],
        "model": spec["model"],
        "guide": spec["guide"],
        "inference_library": "numpyro (SVI)",
    }
    return az.from_dict(**{k: v for k, v in groups.items() if v is not None}, dims=dims, attrs=attrs)


def netcdf_encoding(dataset) -> dict:
    """Per variable of an xarray ``dataset``: shuffle + gzip (as the HDF5 artifacts) and the
    Fletcher32 checksum for numeric arrays above ``COMPRESS_ABOVE`` bytes, and float32 for a
    float64 array whose values are all float32 values. Integers keep their type: xarray reads
    back what is stored, and shuffle + gzip already packs small counts (int8 would save a fifth)."""
    from sviflow.h5io import COMPRESS_ABOVE, GZIP_LEVEL, storage_dtype

    encoding = {}
    for name, variable in dataset.variables.items():
        if variable.dtype.kind not in "biuf" or variable.ndim == 0 or variable.nbytes <= COMPRESS_ABOVE:
            continue
        entry = {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": True, "fletcher32": True}
        if variable.dtype == np.float64 and storage_dtype(np.asarray(variable.values)) == np.float32:
            entry["dtype"] = np.dtype(np.float32)
        encoding[name] = entry
    return encoding


def write_netcdf(idata, path) -> None:
    """``idata`` to ``path`` as netCDF (h5netcdf), atomically; every group as
    ``InferenceData.to_netcdf`` writes it, with ``netcdf_encoding`` instead of its plain zlib."""
    import xarray as xr

    with written_atomically(path) as temporary:
        mode = "w"
        if idata.attrs:
            xr.Dataset(attrs=idata.attrs).to_netcdf(temporary, mode=mode, engine="h5netcdf")
            mode = "a"
        for group in idata.groups():
            data = idata[group]
            data.to_netcdf(
                temporary, mode=mode, group=group, engine="h5netcdf", encoding=netcdf_encoding(data)
            )
            mode = "a"
        if mode == "w":  # no group and no attribute: an empty file ArviZ reads as empty
            xr.Dataset().to_netcdf(temporary, mode=mode, engine="h5netcdf")


def write_text(text: str, path) -> None:
    """``text`` to ``path``, atomically."""
    from pathlib import Path

    with written_atomically(path) as temporary:
        Path(temporary).write_text(text)


def _quality_columns(check) -> dict:
    quality = check.get("quality", {})

    def worst(key, fn=np.nanmax):
        value = quality.get(key)
        return float(fn(value)) if value is not None and np.size(value) else math.nan

    return {
        "khat": worst("khat"),
        "elbo": worst("elbo", np.nanmean),
        "kl": worst("kl", np.nanmax),
        "energy_distance": worst("energy_distance"),
    }


def summary_table(fits: list[str], idatas: list, checks: list):
    """``az.summary`` rows of every fit, with fit, verdict, reasons and the quality numbers.
    ``idatas``: each fit's InferenceData; ``checks``: its check artifact."""
    import pandas as pd

    frames = []
    for fit, idata, check in zip(fits, idatas, checks):
        extra = {
            "fit": fit,
            "verdict": check.attrs["verdict"],
            **_quality_columns(check),
            "reasons": check.attrs["sentence"],
        }
        if "posterior" in idata.groups() and not check.attrs.get("diverged"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one chain: ArviZ warns that R-hat needs two
                frame = az.summary(idata, kind="all", round_to="none")
            frame = frame.reset_index(names="variable")
        else:
            frame = pd.DataFrame({"variable": ["(no posterior: the fit diverged)"]})
        frames.append(frame.assign(**extra))
    table = pd.concat(frames, ignore_index=True)
    first = ["fit", "verdict", "variable"]
    return table[first + [c for c in table.columns if c not in first]]


def _markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def sweep_rows(info: dict, checks_by_fit: dict) -> tuple[list[str], list[list]]:
    """A sweep's table: one row per member, its swept values, verdict and quality numbers."""
    header = list(info["columns"]) + ["fit", "verdict", "ELBO", "KL(q||p)", "energy distance", "PSIS k-hat"]
    rows = []
    for member, values in info["members"].items():
        check = checks_by_fit[member]
        q = _quality_columns(check)
        rows.append(
            [values[key] for key in info["keys"]]
            + [member, check.attrs["verdict"], q["elbo"], q["kl"], q["energy_distance"], q["khat"]]
        )
    return header, rows


def write_markdown(table, checks: list, fits: list[str], path, sweeps: dict | None = None) -> None:
    """The summary as Markdown: the verdicts, each sweep's table, each fit's truth table, then
    ``az.summary``. ``checks``: each fit's check artifact; ``sweeps``: sviflow.sweeps.expand's."""
    verdict_rows, truth_sections = [], []
    for fit, check in zip(fits, checks):
        q = _quality_columns(check)
        verdict_rows.append(
            [fit, check.attrs["verdict"], q["khat"], q["kl"], q["elbo"], check.attrs["sentence"]]
        )
        truth = check.attrs.get("truth") or []
        if truth:
            truth_sections.append(
                f"### {fit}\n\n"
                + _markdown_table(
                    ["quantity", "target", "fit", "error", "note"],
                    [[r["quantity"], r["target"], r["fit"], r["error"], r["note"]] for r in truth],
                )
            )
    columns = [
        c
        for c in ("fit", "variable", "mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "r_hat")
        if c in table.columns
    ]
    text = [
        "# sviflow summary",
        "",
        "## Verdicts",
        "",
        _markdown_table(["fit", "verdict", "PSIS k-hat", "KL(q||p)", "ELBO", "reasons"], verdict_rows),
        "",
    ]
    by_fit = dict(zip(fits, checks))
    for name, info in (sweeps or {}).items():
        header, rows = sweep_rows(info, by_fit)
        done = sum(row[len(info["keys"]) + 1] == "converged" for row in rows)
        text += [
            f"## Sweep {name}",
            "",
            f"{len(rows)} fits over {', '.join(info['keys'])}; {done} converged. "
            f"Figure: figures/sweeps/{name}.png.",
            "",
            _markdown_table(header, rows),
            "",
        ]
    text += [
        "## Against the exact answers",
        "",
    ]
    text += [s + "\n" for s in truth_sections] or ["(no fit has a known exact answer)", ""]
    text += [
        "## Posterior summaries (az.summary; chains are seeds)",
        "",
        _markdown_table(columns, table[columns].values.tolist()),
        "",
    ]
    write_text("\n".join(text), path)
