"""Rebuild the calibration suite's data, gold summaries and listing from posteriordb.

    python benchmarks/calibration/build_from_posteriordb.py --posteriordb GIT_DIR

GIT_DIR is a git directory of github.com/stan-dev/posteriordb (a bare clone works; files are
read with ``git show <commit>:<path>``). Writes, next to this file:

- ``data/<name>.json``: the posterior's data as named arrays (sviflow's JSON dataset format),
  without the sizes (N, K, T, J), which the models take from array shapes;
- ``gold/<name>.json``: mean and sd of every parameter in posteriordb's reference draws
  (10 chains x 1,000 draws), per site, flattened in C order;
- ``suite.json``: the listing.

Only numpy and the standard library: no JAX.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COMMIT = "28f8d3d6e975315f42aa274a8399f21e07a43b30"  # stan-dev/posteriordb, 2025-04-29
PDB = "posterior_database"


def _log(values):
    return np.log(np.asarray(values, dtype=np.float64))


# name -> posterior, model function, data columns (posteriordb key, or (new key, function of the
# posteriordb data)), observed keys, latent (sampled) sites, kind, float64 needed, why.
SUITE = [
    dict(
        name="kidiq_momiq",
        dim=3,
        posterior="kidiq-kidscore_momiq",
        model="kidscore_momiq",
        data=["mom_iq", "kid_score"],
        observed=["kid_score"],
        latent=["beta", "sigma"],
        kind="correlated regression",
        why="uncentred predictor (mom_iq about 100): intercept and slope correlated -0.989",
    ),
    dict(
        name="kidiq_interaction",
        dim=5,
        posterior="kidiq-kidscore_interaction",
        model="kidscore_interaction",
        data=["mom_iq", "mom_hs", "kid_score"],
        observed=["kid_score"],
        latent=["beta", "sigma"],
        kind="correlated regression",
        why="uncentred predictor and its interaction: 4 pairs correlated beyond "
        "+-0.9 (up to -0.99), sds from 0.15 to 15",
    ),
    dict(
        name="kilpisjarvi",
        dim=3,
        posterior="kilpisjarvi_mod-kilpisjarvi",
        model="kilpisjarvi",
        data=["x", "y"],
        settings=["pmualpha", "psalpha", "pmubeta", "psbeta"],
        observed=["y"],
        latent=["alpha", "beta", "sigma"],
        kind="correlated and badly scaled regression",
        why="year + 2000 as predictor: alpha and beta correlated -0.99999, sds 30 and 0.0075",
    ),
    dict(
        name="earn_height",
        dim=3,
        posterior="earnings-earn_height",
        model="earn_height",
        data=["height", "earn"],
        observed=["earn"],
        latent=["beta", "sigma"],
        kind="badly scaled regression",
        why="dollars: intercept -6e4 (sd 1e4), sigma 2e4, slope sd 144; intercept and slope "
        "correlated -0.998; flat priors",
    ),
    dict(
        name="logearn_height",
        dim=3,
        posterior="earnings-logearn_height",
        model="logearn_height",
        data=["height", ("log_earn", lambda d: _log(d["earn"]))],
        observed=["log_earn"],
        latent=["beta", "sigma"],
        kind="correlated regression",
        why="uncentred height (about 66): intercept and slope correlated -0.998, slope sd 0.007",
    ),
    dict(
        name="mesquite_logvolume",
        dim=3,
        posterior="mesquite-logmesquite_logvolume",
        model="logmesquite_logvolume",
        data=["diam1", "diam2", "canopy_height", ("log_weight", lambda d: _log(d["weight"]))],
        observed=["log_weight"],
        latent=["beta", "sigma"],
        kind="plain regression",
        why="easy: 46 points, near-Gaussian posterior, mild correlation",
    ),
    dict(
        name="nes1976",
        dim=10,
        posterior="nes1976-nes",
        model="nes",
        data=["real_ideo", "race_adj", "age_discrete", "educ1", "gender", "income", "partyid7"],
        observed=["partyid7"],
        latent=["beta", "sigma"],
        kind="plain regression",
        why="easy but 10-dimensional: 9 coefficients on 1,184 points, correlations with the "
        "intercept up to -0.66",
    ),
    dict(
        name="sblrc_blr",
        dim=6,
        posterior="sblrc-blr",
        model="blr",
        data=["X", "y"],
        observed=["y"],
        latent=["beta", "sigma"],
        kind="badly scaled regression",
        why="posterior sds of beta about 0.001 against sigma's 0.08, betas correlated up to 0.82",
    ),
    dict(
        name="arK",
        dim=7,
        posterior="arK-arK",
        model="arK",
        data=[
            ("y_init", lambda d: np.asarray(d["y"][: d["K"]])),
            ("time", lambda d: np.arange(d["K"] + 1, d["T"] + 1)),
            ("y", lambda d: np.asarray(d["y"][d["K"] :])),
        ],
        observed=["y"],
        latent=["alpha", "beta", "sigma"],
        kind="time series",
        why="AR(5): lag coefficients correlated (up to -0.63), sds from 0.008 to 0.09",
    ),
    dict(
        name="garch11",
        dim=4,
        posterior="garch-garch11",
        model="garch11",
        data=[("time", lambda d: np.arange(1, d["T"] + 1)), "y"],
        observed=["y"],
        settings=["sigma1"],
        latent=["mu", "alpha0", "alpha1", "beta1_unit"],
        deterministic=["beta1"],
        kind="time series",
        why="GARCH(1,1): alpha1 + beta1 < 1 (beta1 = (1 - alpha1) beta1_unit, as Stan "
        "transforms it), alpha0 and beta1 correlated -0.75, alpha0 right-skewed",
    ),
    dict(
        name="arma11",
        dim=4,
        posterior="arma-arma11",
        model="arma11",
        data=[("time", lambda d: np.arange(1, d["T"] + 1)), "y"],
        observed=["y"],
        latent=["mu", "phi", "theta", "sigma"],
        kind="time series",
        why="ARMA(1,1) near a unit root (phi 0.96, sd 0.02); theta outside (-1, 1) "
        "makes the likelihood overflow",
    ),
    dict(
        name="eight_schools_nc",
        dim=10,
        posterior="eight_schools-eight_schools_noncentered",
        model="eight_schools_noncentered",
        data=["sigma", "y"],
        observed=["y"],
        latent=["theta_trans", "mu", "tau"],
        deterministic=["theta"],
        kind="hierarchical",
        why="heavy-tailed, skewed tau (half-Cauchy prior, 8 groups); theta_trans is not in "
        "the reference draws, theta = mu + tau theta_trans is",
    ),
    dict(
        name="gp_regr",
        dim=3,
        posterior="gp_pois_regr-gp_regr",
        model="gp_regr",
        data=["x", "y"],
        observed=["y"],
        latent=["rho", "alpha", "sigma"],
        kind="Gaussian process",
        why="GP hyperparameters on 11 points: nearly uncorrelated, alpha and sigma right-skewed",
    ),
    dict(
        name="gp_pois_regr",
        dim=13,
        posterior="gp_pois_regr-gp_pois_regr",
        model="gp_pois_regr",
        data=["x", "k"],
        observed=["k"],
        latent=["rho", "alpha", "f_tilde"],
        deterministic=["f"],
        kind="latent Gaussian process",
        x64=True,
        why="13 latent dimensions: a whitened latent GP (f = L f_tilde) under a Poisson "
        "likelihood; f_tilde is not in the reference draws, f is",
    ),
    dict(
        name="low_dim_gauss_mix",
        dim=5,
        posterior="low_dim_gauss_mix-low_dim_gauss_mix",
        model="low_dim_gauss_mix",
        data=["y"],
        settings=[("num_obs", lambda d: d["N"])],
        observed=["y"],
        latent=["mu", "sigma", "theta"],
        kind="mixture",
        why="two-component Gaussian mixture, well separated, ordered means: unimodal",
    ),
]


class Posteriordb:
    def __init__(self, git_dir: str, commit: str):
        self.git_dir, self.commit = git_dir, commit

    def show(self, path: str) -> bytes:
        return subprocess.run(
            ["git", "--git-dir", self.git_dir, "show", f"{self.commit}:{path}"],
            capture_output=True,
            check=True,
        ).stdout

    def json(self, path: str):
        if not path.endswith(".zip"):
            return json.loads(self.show(path))
        archive = zipfile.ZipFile(io.BytesIO(self.show(path)))
        (member,) = archive.namelist()
        return json.loads(archive.read(member))


def _site_of(stan_name: str) -> tuple[str, tuple[int, ...]]:
    """'beta[2]' -> ('beta', (1,)); 'a[1,3]' -> ('a', (0, 2)); 'sigma' -> ('sigma', ())."""
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9, ]+)\])?", stan_name)
    if match is None:
        raise ValueError(f"cannot parse parameter name {stan_name!r}")
    index = () if match.group(2) is None else tuple(int(i) - 1 for i in match.group(2).split(","))
    return match.group(1), index


def gold_summary(chains: list[dict]) -> dict:
    """{site: {shape, mean, sd}} from posteriordb's list of chains {stan name: draws}."""
    names = list(chains[0])
    draws = {
        name: np.concatenate([np.asarray(chain[name], dtype=np.float64) for chain in chains])
        for name in names
    }
    sites: dict[str, dict[tuple[int, ...], str]] = {}
    for name in names:
        site, index = _site_of(name)
        sites.setdefault(site, {})[index] = name
    out = {}
    for site, entries in sites.items():
        shape = tuple(max(ix[d] for ix in entries) + 1 for d in range(len(next(iter(entries)))))
        order = list(np.ndindex(*shape)) if shape else [()]
        if sorted(order) != sorted(entries):
            raise ValueError(f"{site}: the reference draws do not fill the shape {shape}")
        stacked = np.stack([draws[entries[ix]] for ix in order], axis=-1)
        out[site] = {
            "shape": list(shape),
            "mean": [float(f"{v:.7g}") for v in stacked.mean(axis=0)],
            "sd": [float(f"{v:.7g}") for v in stacked.std(axis=0, ddof=1)],
        }
    return out, len(draws[names[0]])


def _jsonable(array: np.ndarray):
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating)
        and np.all(array == np.round(array))
        and np.all(np.abs(array) < 2**31)
    ):
        return array.astype(np.int64).tolist()
    return (
        [float(f"{v:.10g}") for v in array.ravel()] if array.ndim == 1 else [_jsonable(row) for row in array]
    )


def _listed(*values) -> list[str]:
    """The distinct non-empty strings among values (each a string, a list or None), in order."""
    out = []
    for value in values:
        for item in [value] if isinstance(value, str) else (value or []):
            if item and item not in out:
                out.append(item)
    return out


def build(pdb: Posteriordb) -> None:
    (HERE / "data").mkdir(exist_ok=True)
    (HERE / "gold").mkdir(exist_ok=True)
    listing = []
    for entry in SUITE:
        info = pdb.json(f"{PDB}/posteriors/{entry['posterior']}.json")
        raw = pdb.json(f"{PDB}/data/data/{info['data_name']}.json.zip")
        data_info = pdb.json(f"{PDB}/data/info/{info['data_name']}.info.json")
        columns = {}
        for column in entry["data"]:
            key, value = (column, raw[column]) if isinstance(column, str) else (column[0], column[1](raw))
            columns[key] = _jsonable(np.asarray(value))
        (HERE / "data" / f"{entry['name']}.json").write_text(
            json.dumps(columns, separators=(",", ":")) + "\n"
        )

        draws_path = f"{PDB}/reference_posteriors/draws/draws/{info['reference_posterior_name']}.json.zip"
        sites, num_draws = gold_summary(pdb.json(draws_path))
        gold = {
            "posterior": entry["posterior"],
            "reference_draws_file": draws_path,
            "posteriordb_commit": pdb.commit,
            "num_draws": num_draws,
            "sites": sites,
        }
        (HERE / "gold" / f"{entry['name']}.json").write_text(json.dumps(gold, indent=1) + "\n")

        # scalars of posteriordb's data that the model takes as keyword defaults
        settings = {}
        for setting in entry.get("settings", []):
            key, value = (
                (setting, raw[setting]) if isinstance(setting, str) else (setting[0], setting[1](raw))
            )
            settings[key] = value
        deterministic = entry.get("deterministic", [])
        missing = [s for s in sites if s not in entry["latent"] + deterministic]
        if missing:
            raise ValueError(f"{entry['name']}: reference sites {missing} are not model sites")
        listing.append(
            {
                "name": entry["name"],
                "posterior": entry["posterior"],
                "model": f"models.py:{entry['model']}",
                "data": f"data/{entry['name']}.json",
                "observed": entry["observed"],
                "gold": f"gold/{entry['name']}.json",
                "latent": entry["latent"],
                "deterministic": deterministic,
                "gold_sites": list(sites),
                "dimension": entry["dim"],
                "settings": settings,
                "kind": entry["kind"],
                "x64": entry.get("x64", False),
                "why": entry["why"],
                "source": _listed(info.get("urls"), data_info.get("urls")),
                "references": _listed(info.get("references"), data_info.get("references")),
            }
        )
    (HERE / "suite.json").write_text(json.dumps(listing, indent=1) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriordb", required=True, help="git directory of stan-dev/posteriordb")
    parser.add_argument("--commit", default=COMMIT)
    args = parser.parse_args()
    build(Posteriordb(args.posteriordb, args.commit))


if __name__ == "__main__":
    main()
