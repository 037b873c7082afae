"""ArviZ InferenceData per fit, and one table of every fit with its verdict.

The seeds of a fit are ArviZ's chains, so ``az.summary``'s R-hat compares the seeds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from sviflow.h5io import ArtifactError, read_artifact

warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
import arviz as az  # noqa: E402  (after the filter: its import warns once per process)


def inference_data(inputs: dict, spec: dict):
    """posterior (chain = seed, draw), posterior_predictive and observed_data where the model
    has data; the fit's verdict in the attributes. ``inputs``: the fit's predictive, check and
    (optional) data files; ``spec``: {"name", "model", "guide"} (names)."""
    predictive = read_artifact(inputs["predictive"], "predictive")
    check = read_artifact(inputs["check"], "check")
    latent = predictive.attrs.get("latent_sites") or []
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
    attrs = {"fit": spec["name"], "verdict": check.attrs["verdict"],
             "reasons": check.attrs["sentence"], "model": spec["model"],
             "guide": spec["guide"], "inference_library": "numpyro (SVI)"}
    return az.from_dict(**{k: v for k, v in groups.items() if v is not None}, dims=dims, attrs=attrs)


def write_netcdf(idata, path) -> None:
    """``idata`` to ``path`` through a temporary name in the same folder: a run cut off
    mid-write leaves no file that a later run could take for a whole one."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(descriptor)
    try:
        idata.to_netcdf(temporary, engine="h5netcdf")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(text: str, path) -> None:
    """``text`` to ``path`` atomically (a temporary name, then a rename)."""
    import os
    from pathlib import Path

    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_netcdf(path):
    """An InferenceData file, or an error that names it and says how to remake it."""
    try:
        return az.from_netcdf(path, engine="h5netcdf")
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: not a readable netCDF file ({error}); it is corrupt or "
                            f"truncated: delete it and run snakemake again to remake it") from error


def _quality_columns(check) -> dict:
    quality = check.get("quality", {})

    def worst(key, fn=np.nanmax):
        value = quality.get(key)
        return float(fn(value)) if value is not None and np.size(value) else math.nan

    return {"khat": worst("khat"), "elbo": worst("elbo", np.nanmean),
            "kl": worst("kl", np.nanmax), "energy_distance": worst("energy_distance")}


def summary_table(fits: list[str], netcdfs: list, check_paths: list[str]):
    """``az.summary`` rows of every fit, with fit, verdict, reasons and the quality numbers.
    ``netcdfs``: InferenceData objects, or paths of netCDF files."""
    import pandas as pd

    frames = []
    for fit, netcdf, check_path in zip(fits, netcdfs, check_paths):
        check = read_artifact(check_path, "check")
        extra = {"fit": fit, "verdict": check.attrs["verdict"], **_quality_columns(check),
                 "reasons": check.attrs["sentence"]}
        idata = read_netcdf(netcdf) if isinstance(netcdf, (str, bytes)) or hasattr(netcdf, "__fspath__") else netcdf
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


def write_markdown(table, check_paths: list[str], fits: list[str], path) -> None:
    """The summary as Markdown: the verdicts, each fit's truth table, then ``az.summary``."""
    from pathlib import Path

    verdict_rows, truth_sections = [], []
    for fit, check_path in zip(fits, check_paths):
        check = read_artifact(check_path, "check")
        q = _quality_columns(check)
        verdict_rows.append([fit, check.attrs["verdict"], q["khat"], q["kl"], q["elbo"],
                             check.attrs["sentence"]])
        truth = check.attrs.get("truth") or []
        if truth:
            truth_sections.append(f"### {fit}\n\n" + _markdown_table(
                ["quantity", "target", "fit", "error", "note"],
                [[r["quantity"], r["target"], r["fit"], r["error"], r["note"]] for r in truth]))
    columns = [c for c in ("fit", "variable", "mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "r_hat")
               if c in table.columns]
    text = ["# sviflow summary", "", "## Verdicts", "",
            _markdown_table(["fit", "verdict", "PSIS k-hat", "KL(q||p)", "ELBO", "reasons"], verdict_rows),
            "", "## Against the exact answers", ""]
    text += [s + "\n" for s in truth_sections] or ["(no fit has a known exact answer)", ""]
    text += ["## Posterior summaries (az.summary; chains are seeds)", "",
             _markdown_table(columns, table[columns].values.tolist()), ""]
    write_text("\n".join(text), path)
