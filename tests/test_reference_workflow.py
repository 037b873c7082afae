"""Issue 16 through Snakemake: a model with a vector, a matrix and a plate-indexed site (and a
deterministic one) is fitted end to end and measured against NUTS and against gold draws from a
file; the reference file holds R-hat and ESS per component and its warnings; editing the draws
file reruns the reference; a draws file with a name that matches no site fails the reference job,
and the error names the name, the file, and the rule's own file (not simulate.smk)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow

VERDICTS = ("converged", "not converged", "converged, poor approximation")
HERE = Path("grouped")
ARGS = ("--configfile", str(HERE / "config.yaml"), "--replace-workflow-config")

MODEL = '''import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def grouped(x, g, y=None, num_groups=3):
    """y = beta[0] + beta[1] x + u[g] + noise; W, a 2 x 2 matrix site, scales the noise."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    W = numpyro.sample("W", dist.Normal(0.0, 0.3).expand([2, 2]).to_event(2))
    with numpyro.plate("group", num_groups):
        u = numpyro.sample("u", dist.Normal(0.0, 1.0))
    numpyro.deterministic("level", beta[0] + u)
    sigma = jnp.exp(W.sum() / 4)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(beta[0] + beta[1] * x + u[g.astype(jnp.int32)], sigma), obs=y)
'''

CONFIG = {
    "models": {
        "grouped": {
            "function": "model.py:grouped",
            "reference": {
                "method": "nuts",
                "num_warmup": 200,
                "num_samples": 300,
                "num_chains": 2,
                "num_draws": 500,
            },
        },
        "grouped_gold": {
            "function": "model.py:grouped",
            "reference": {"method": "draws", "file": "gold.csv"},
        },
    },
    "datasets": {"points": {"file": "data.csv", "observed": ["y"], "covariates": ["x", "g"]}},
    "fits": {
        name: {
            "model": model,
            "data": "points",
            "guide": {"name": "AutoNormal"},
            "optimizer": {"name": "Adam", "step_size": 0.05},
            "elbo": {"name": "Trace_ELBO", "num_particles": 4},
            "steps": 800,
            "seed": 1,
        }
        for name, model in (("against_nuts", "grouped"), ("against_gold", "grouped_gold"))
    },
    "predictive": {"num_samples": 1000, "num_mock": 50, "seed": 0},
    "checks": {"quality": {"elbo_particles": 500, "khat_particles": 500, "energy_draws": 200}},
}


def write_gold(path: Path, extra: dict | None = None, drop: tuple = ()):
    """800 draws of every component, Stan's names (1-based), two chains in a chain__ column."""
    rng = np.random.default_rng(3)
    names = (
        ["beta[1]", "beta[2]"]
        + [f"W[{i},{j}]" for i in (1, 2) for j in (1, 2)]
        + [f"u[{k}]" for k in (1, 2, 3)]
    )
    columns = {"chain__": np.repeat([1, 2], 400)}
    columns.update({name: rng.normal(size=800) for name in names if name not in drop})
    columns.update(extra or {})
    header = ",".join(f'"{name}"' for name in columns)
    rows = np.column_stack(list(columns.values()))
    path.write_text(header + "\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n")


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("grouped") / "workflow")
    folder = workdir / HERE
    folder.mkdir()
    (folder / "model.py").write_text(MODEL)
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=30), np.arange(30) % 3
    y = 0.5 + 1.0 * x + np.array([-1.0, 0.0, 1.0])[g] + 0.5 * rng.normal(size=30)
    np.savetxt(
        folder / "data.csv",
        np.column_stack([x, g, y]),
        delimiter=",",
        header="x,g,y",
        comments="",
        fmt="%.10g",
    )
    write_gold(folder / "gold.csv")
    run_snakemake(workdir, "--cores", "2", *ARGS, timeout=1800)
    return workdir


def attributes(path: Path) -> dict:
    with h5py.File(path) as handle:
        return {
            k: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for k, v in handle.attrs.items()
        }


def test_nuts_reference_holds_rhat_and_ess_per_component(grouped_run):
    path = grouped_run / "results/references/grouped--points.h5"
    attrs = attributes(path)
    assert attrs["method"] == "nuts"
    assert attrs["latent_sites"] == ["beta", "W", "u"]
    assert attrs["deterministic_sites"] == ["level"]
    assert isinstance(attrs["warnings"], list)
    with h5py.File(path) as reference:
        for site, shape in {"beta": (2,), "W": (2, 2), "u": (3,), "level": (3,)}.items():
            assert reference[f"draws/{site}"].shape == (500, *shape)  # thinned to num_draws
            for statistic in ("rhat", "ess", "ess_tail"):
                values = reference[f"nuts/{statistic}/{site}"][()]
                assert values.shape == shape and np.all(np.isfinite(values)), (site, statistic)
        assert reference["nuts/divergences"].shape == (2,)
        assert reference["moments/covariance"].shape == (9, 9)
        # the warnings are the verdict of these numbers
        worst = max(float(np.max(reference[f"nuts/rhat/{s}"][()])) for s in ("beta", "W", "u", "level"))
        lowest = min(float(np.min(reference[f"nuts/ess/{s}"][()])) for s in ("beta", "W", "u", "level"))
        diverged = int(reference["nuts/divergences"][()].sum())
    assert any("R-hat above" in w for w in attrs["warnings"]) == (worst > 1.01)
    assert any("bulk ESS below" in w for w in attrs["warnings"]) == (lowest < 400)
    assert any("divergent" in w for w in attrs["warnings"]) == (diverged > 0)
    log = (grouped_run / "results/logs/reference/grouped--points.log").read_text()
    assert re.search(r"reference grouped \(nuts\): R-hat \{'beta': [\d.]+, 'W': [\d.]+, 'u': ", log), log


def test_gold_reference_is_read_from_the_csv(grouped_run):
    path = grouped_run / "results/references/grouped_gold--points.h5"
    attrs = attributes(path)
    assert attrs["method"] == "draws"
    assert attrs["source"]["format"] == "csv" and attrs["source"]["chains"] == 2
    assert attrs["source"]["file"].endswith("grouped/gold.csv")
    table = np.genfromtxt(grouped_run / HERE / "gold.csv", delimiter=",", skip_header=1)
    with h5py.File(path) as reference:
        # row-major like Stan: W[1,2] is W[0, 1]
        np.testing.assert_allclose(reference["draws/W"][:, 0, 1], table[:, 4])
        np.testing.assert_allclose(reference["moments/mean/u"][()], table[:, 7:10].mean(axis=0))
        assert reference["chains/rhat/W"].shape == (2, 2)


@pytest.mark.parametrize("fit", ["against_nuts", "against_gold"])
def test_checks_and_summary_complete(grouped_run, fit):
    attrs = attributes(grouped_run / f"results/checks/{fit}.h5")
    assert attrs["verdict"] in VERDICTS and attrs["sentence"]
    with h5py.File(grouped_run / f"results/checks/{fit}.h5") as check:
        sites = set(check["quality/sites"])
    # every component is measured against the reference
    count = {site: sum(1 for label in sites if label.split("[")[0] == site) for site in ("beta", "W", "u")}
    assert count == {"beta": 2, "W": 4, "u": 3}, sites
    import pandas as pd

    table = pd.read_csv(grouped_run / "results/summary.csv")
    variables = set(table.loc[table["fit"] == fit, "variable"])
    assert {v.split("[")[0] for v in variables} >= {"beta", "W", "u"}, variables
    assert (grouped_run / f"results/figures/{fit}/posterior.png").stat().st_size > 0


def test_deterministic_sites_are_drawn_stored_summarised_and_checked(grouped_run):
    """level = beta[0] + u, a transformed parameter: drawn at the guide's latent draws, stored
    beside them, in the ArviZ posterior and the summary, and measured against the reference's
    own draws of it, component by component; k-hat and the guide's sites stay latent only."""
    with h5py.File(grouped_run / "results/predictive/against_nuts.h5") as predictive:
        level = predictive["posterior/level"][()]
        beta, u = predictive["posterior/beta"][()], predictive["posterior/u"][()]
        assert json.loads(predictive.attrs["deterministic_sites"]) == ["level"]
        assert "level" not in json.loads(predictive.attrs["latent_sites"])
    assert level.shape == (1, 1000, 3)
    np.testing.assert_allclose(level, beta[..., :1] + u, rtol=1e-5, atol=1e-6)
    with h5py.File(grouped_run / "results/checks/against_nuts.h5") as check:
        rows = {label: check[f"quality/sites/{label}"] for label in check["quality/sites"]}
        levels = sorted(label for label in rows if label.startswith("level"))
        assert levels == ["level[0]", "level[1]", "level[2]"]
        assert all(np.isfinite(rows[label]["mean_error_sd"][()]) for label in levels)
    import arviz as az
    import pandas as pd

    idata = az.from_netcdf(grouped_run / "results/arviz/against_nuts.nc")
    assert idata.posterior["level"].shape == (1, 1000, 3)
    table = pd.read_csv(grouped_run / "results/summary.csv")
    assert {"level[0]", "level[1]", "level[2]"} <= set(table.loc[table["fit"] == "against_nuts", "variable"])


def test_editing_the_draws_file_reruns_its_reference_and_a_bad_name_fails_naming_it(grouped_run):
    gold = grouped_run / HERE / "gold.csv"
    text = gold.read_text()
    try:
        write_gold(gold, extra={"gamma[1]": np.zeros(800)})
        dry = run_snakemake(grouped_run, "--dry-run", *ARGS)
        planned = dry.stdout + dry.stderr
        assert re.search(
            r"rule reference:\n(    .*\n)*?    wildcards: reference=grouped_gold--points", planned
        ), planned
        assert "reference=grouped--points" not in planned  # the NUTS reference stays
        failed = run_snakemake(grouped_run, "--cores", "2", *ARGS, check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "Error in rule reference" in output
        assert "reference.smk" in output and "simulate.smk" not in output, output[-3000:]
        log = (grouped_run / "results/logs/reference/grouped_gold--points.log").read_text()
        assert "names that match no site of the model: gamma[1]" in log
        assert "grouped/gold.csv" in log and "beta (2,), W (2, 2), u (3,)" in log
        assert "models.grouped_gold.reference.file" in log
        assert re.search(r"sviflow: reference: failed in \d+\.\d\d s$", log.strip()), log[-500:]
    finally:
        gold.write_text(text)
