"""Reference posteriors (issue 3, "three kinds agree"): the coin model's exact conjugate answer,
grid quadrature and NUTS agree within their own errors; the grid recovers the post's 2-D targets
(covariance and evidence of the correlated Gaussian, the two equal modes of the multimodal one)."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import integrate, special, stats

from sviflow import models, references, steps
from sviflow.errors import ConfigError
from sviflow.h5io import read_artifact

OBS = np.concatenate([np.ones(12), np.zeros(8)]).astype(np.float32)
EXACT_MEAN = 13 / 22
EXACT_SD = math.sqrt(13 * 9 / (22**2 * 23))
LOG_Z = special.betaln(13, 9)


@pytest.fixture(scope="module")
def exact():
    return references.exact_coin({"obs": OBS}, {}, num_draws=20_000, seed=0)


@pytest.fixture(scope="module")
def coin_grid():
    return references.grid(models.coin_flips, {"obs": OBS}, points=400, num_draws=20_000)


@pytest.fixture(scope="module")
def coin_nuts():
    return references.nuts(
        models.coin_flips, {"obs": OBS}, num_warmup=500, num_samples=1000, num_chains=2, seed=0
    )


def test_exact_coin_is_beta_13_9_with_evidence_log_b(exact):
    assert exact["method"] == "exact"
    assert exact["exact"] == {"alpha": 13.0, "beta": 9.0, "heads": 12.0, "tails": 8.0}
    assert exact["latent_sites"] == ["latent_fairness"]
    assert float(exact["mean"]["latent_fairness"]) == pytest.approx(EXACT_MEAN, rel=1e-12)
    assert float(exact["sd"]["latent_fairness"]) == pytest.approx(EXACT_SD, rel=1e-12)
    np.testing.assert_allclose(exact["covariance"], [[EXACT_SD**2]], rtol=1e-12)
    assert exact["log_z"] == pytest.approx(LOG_Z, rel=1e-12)
    # the post's "truth" Beta(12, 8) is not the posterior: its mean is 0.6, not 0.591
    assert abs(12 / 20 - exact["mean"]["latent_fairness"]) > 0.009
    # the draws are from Beta(13, 9): mean within MC error, and a KS test that does not reject
    draws = exact["draws"]["latent_fairness"]
    assert draws.shape == (20_000,)
    assert abs(draws.mean() - EXACT_MEAN) < 4 * EXACT_SD / math.sqrt(len(draws))
    assert stats.kstest(draws, stats.beta(13, 9).cdf).pvalue > 1e-3
    np.testing.assert_allclose(exact["density"]["pdf"], stats.beta(13, 9).pdf(exact["density"]["x"]))


def test_exact_coin_with_a_beta_prior():
    reference = references.exact_coin({"obs": OBS}, {"prior_alpha": 2.0, "prior_beta": 3.0}, num_draws=100)
    assert (reference["exact"]["alpha"], reference["exact"]["beta"]) == (14.0, 11.0)
    assert reference["log_z"] == pytest.approx(special.betaln(14, 11) - special.betaln(2, 3))


def test_grid_agrees_with_exact_on_the_coin(coin_grid, exact):
    assert coin_grid["method"] == "grid"
    assert coin_grid["latent_sites"] == ["latent_fairness"]
    # quadrature error, not Monte Carlo: tight
    assert coin_grid["log_z"] == pytest.approx(exact["log_z"], abs=1e-4)
    assert float(coin_grid["mean"]["latent_fairness"]) == pytest.approx(EXACT_MEAN, abs=1e-5)
    assert float(coin_grid["sd"]["latent_fairness"]) == pytest.approx(EXACT_SD, abs=1e-5)
    # the grid's draws: within Monte Carlo error of the exact moments
    draws = coin_grid["draws"]["latent_fairness"]
    assert abs(draws.mean() - EXACT_MEAN) < 4 * EXACT_SD / math.sqrt(len(draws))
    assert abs(draws.std() - EXACT_SD) < 4 * EXACT_SD / math.sqrt(2 * len(draws))
    assert stats.kstest(draws, stats.beta(13, 9).cdf).pvalue > 1e-3
    pdf = coin_grid["density"]["pdf"]
    np.testing.assert_allclose(
        pdf, stats.beta(13, 9).pdf(coin_grid["density"]["axis_0"]), rtol=1e-3, atol=1e-6
    )


def test_grid_agrees_with_exact_under_a_beta_prior():
    """The grid takes its bounds from the prior's support (here a Beta's), and the evidence
    includes the prior's normaliser."""
    kwargs = {"obs": OBS, "prior_alpha": 2.0, "prior_beta": 3.0}
    grid = references.grid(models.coin_flips, kwargs, points=400, num_draws=100)
    assert grid["log_z"] == pytest.approx(special.betaln(14, 11) - special.betaln(2, 3), abs=1e-4)
    assert float(grid["mean"]["latent_fairness"]) == pytest.approx(14 / 25, abs=1e-5)


def test_nuts_agrees_with_exact_within_its_monte_carlo_error(coin_nuts, exact):
    assert coin_nuts["method"] == "nuts"
    assert math.isnan(coin_nuts["log_z"])
    draws = coin_nuts["draws"]["latent_fairness"]
    assert draws.shape == (2000,)
    ess = float(coin_nuts["nuts"]["ess"]["latent_fairness"])
    rhat = float(coin_nuts["nuts"]["rhat"]["latent_fairness"])
    assert 200 < ess <= 2000 * 1.5 and rhat < 1.01
    mean, sd = float(coin_nuts["mean"]["latent_fairness"]), float(coin_nuts["sd"]["latent_fairness"])
    assert mean == pytest.approx(draws.mean())
    # Monte Carlo standard errors of the mean and of the sd (near-Gaussian posterior)
    assert abs(mean - EXACT_MEAN) < 4 * EXACT_SD / math.sqrt(ess)
    assert abs(sd - EXACT_SD) < 4 * EXACT_SD / math.sqrt(2 * ess)
    assert coin_nuts["covariance"][0, 0] == pytest.approx(draws.var(ddof=1))


def test_three_kinds_agree_with_each_other(coin_nuts, coin_grid, exact):
    ess = float(coin_nuts["nuts"]["ess"]["latent_fairness"])
    tolerance = 4 * EXACT_SD / math.sqrt(ess)
    site = "latent_fairness"
    values = [float(r["mean"][site]) for r in (exact, coin_grid, coin_nuts)]
    assert max(values) - min(values) < tolerance
    sds = [float(r["sd"][site]) for r in (exact, coin_grid, coin_nuts)]
    assert max(sds) - min(sds) < 4 * EXACT_SD / math.sqrt(2 * ess)


def test_grid_of_the_correlated_gaussian_recovers_its_covariance_and_evidence():
    reference = references.grid(
        models.correlated_gaussian_2d, {}, bounds=[[-15, 15], [-15, 15]], points=200, num_draws=20_000
    )
    assert reference["latent_sites"] == ["x", "y"]
    np.testing.assert_allclose(reference["covariance"], [[5.0, 4.0], [4.0, 5.0]], atol=1e-4)
    np.testing.assert_allclose(reference["covariance"], models.correlated_gaussian_2d_covariance(), atol=1e-4)
    for site in ("x", "y"):
        assert abs(float(reference["mean"][site])) < 1e-6
        assert float(reference["sd"][site]) == pytest.approx(math.sqrt(5.0), abs=1e-5)
    # flat improper prior times exp(-z' P z / 2): Z = 2 pi sqrt(det C) = 2 pi * 1 * 3
    assert reference["log_z"] == pytest.approx(math.log(2 * math.pi * 1.0 * 3.0), abs=1e-4)
    draws = np.stack([reference["draws"]["x"], reference["draws"]["y"]])
    # sample covariance of 20,000 draws: each entry within ~4 standard errors (about 0.2)
    np.testing.assert_allclose(np.cov(draws), [[5.0, 4.0], [4.0, 5.0]], atol=0.25)


def test_grid_of_the_correlated_gaussian_with_other_settings():
    """sd 0.5 and 2 at -30 degrees (args bound as the config binds them): the covariance of the
    model's own formula, and evidence 2 pi sd1 sd2."""
    from sviflow.resolve import resolve_model

    args = {"sig1": 0.5, "sig2": 2.0, "theta_deg": -30.0}
    model = resolve_model({"function": "correlated_gaussian_2d", "args": args})
    reference = references.grid(model, {}, bounds=[[-10, 10], [-10, 10]], points=200, num_draws=100)
    np.testing.assert_allclose(
        reference["covariance"], models.correlated_gaussian_2d_covariance(**args), atol=1e-4
    )
    assert reference["covariance"][0, 1] < 0  # major axis at -30 degrees: negative correlation
    assert reference["log_z"] == pytest.approx(math.log(2 * math.pi * 0.5 * 2.0), abs=1e-4)


def multimodal_log_z(b=5.0, sig1=0.5, sig2=2.0, half_width=20.0):
    """The multimodal target's evidence by 1-D quadrature: in u1, u2 (a rotation, Jacobian 1)
    the box |x|, |y| <= w is |u1| + |u2| <= w sqrt2, and the u2 factor integrates in closed form."""
    scale = sig2 * math.sqrt(2)
    reach = half_width * math.sqrt(2)

    def along_u1(u1):
        modes = math.exp(-0.5 * ((u1 - b) / sig1) ** 2) + math.exp(-0.5 * ((u1 + b) / sig1) ** 2)
        return modes * 2 * scale * math.atan((reach - abs(u1)) / scale)

    value, _ = integrate.quad(along_u1, -reach, reach, points=[-b, 0.0, b], limit=200)
    return math.log(value / (2 * half_width) ** 2)


def test_grid_of_the_multimodal_target_has_two_equal_modes():
    reference = references.grid(
        models.multimodal_2d, {}, points=200, num_draws=20_000, split_direction=[1.0, 1.0]
    )
    assert reference["latent_sites"] == ["x", "y"]
    assert reference["split"]["mass_positive"] == pytest.approx(0.5, abs=1e-6)
    for site in ("x", "y"):
        assert abs(float(reference["mean"][site])) < 1e-6
    assert reference["log_z"] == pytest.approx(multimodal_log_z(), abs=1e-4)
    # the draws: each mode holds half of them, and they sit at u1 = +-5
    u1 = (reference["draws"]["x"] + reference["draws"]["y"]) / math.sqrt(2)
    positive = np.mean(u1 > 0)
    assert abs(positive - 0.5) < 4 * 0.5 / math.sqrt(len(u1))
    assert np.median(u1[u1 > 0]) == pytest.approx(5.0, abs=0.1)
    assert np.median(u1[u1 < 0]) == pytest.approx(-5.0, abs=0.1)


def test_an_asymmetric_split_is_measured():
    """The split is measured, not assumed even: split at its mean, the skewed Beta(13, 9) has
    P(f > mean) = 0.5106. The grid counts whole cells, so it is exact to one cell's mass
    (pdf <= 4 times the cell width 1/2000)."""
    grid = references.grid(models.coin_flips, {"obs": OBS}, points=2000, num_draws=10, split_direction=[1.0])
    expected = stats.beta(13, 9).sf(EXACT_MEAN)
    assert expected > 0.51
    assert grid["split"]["mass_positive"] == pytest.approx(expected, abs=4 / 2000)


def three_sites():
    for name in ("a", "b", "c"):
        numpyro.sample(name, dist.Uniform(0.0, 1.0))


def unbounded():
    numpyro.sample("z", dist.Normal(0.0, 1.0))


def test_grid_refuses_what_it_cannot_integrate():
    with pytest.raises(ConfigError, match="one or two scalar latent sites.*a, b, c.*nuts"):
        references.grid(three_sites, {})
    with pytest.raises(ConfigError, match="site 'z' is unbounded.*bounds"):
        references.grid(unbounded, {})
    # with bounds it integrates: a standard normal on [-8, 8] has evidence 1
    reference = references.grid(unbounded, {}, bounds=[[-8.0, 8.0]], points=400, num_draws=10)
    assert reference["log_z"] == pytest.approx(0.0, abs=1e-5)
    assert float(reference["sd"]["z"]) == pytest.approx(1.0, abs=1e-4)


def test_reference_step_writes_what_the_check_reads(tmp_path):
    """steps.simulate and steps.reference with plain paths: the artifact holds the moments,
    draws and evidence of each method, with its method and sites as attributes."""
    data = tmp_path / "data.h5"
    steps.simulate(
        {},
        {"data": data},
        {"name": "coin_12_8", "spec": {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}},
    )
    coin = {"name": "coin", "function": "coin_flips", "args": {}}
    for method, extra in (("exact", {}), ("grid", {"points": 200})):
        out = tmp_path / f"{method}.h5"
        steps.reference(
            {"data": data},
            {"reference": out},
            {"model": coin, "reference": {"method": method, "num_draws": 500, **extra}},
        )
        artifact = read_artifact(out, "reference")
        assert artifact.attrs["method"] == method
        assert artifact.attrs["latent_sites"] == ["latent_fairness"]
        assert float(artifact["log_z"]) == pytest.approx(LOG_Z, abs=1e-4)
        assert float(artifact["moments"]["mean"]["latent_fairness"]) == pytest.approx(EXACT_MEAN, abs=1e-5)
        assert artifact["draws"]["latent_fairness"].shape == (500,)
    correlated = {"name": "correlated", "function": "correlated_gaussian_2d", "args": {}}
    with pytest.raises(ConfigError, match="exact is known only for coin_flips"):
        steps.reference(
            {}, {"reference": tmp_path / "bad.h5"}, {"model": correlated, "reference": {"method": "exact"}}
        )
    assert not (tmp_path / "bad.h5").exists()


# --- issue 16: references for real models ------------------------------------------------------
# NUTS on vector, matrix and plate-indexed sites with R-hat and ESS per component and warnings
# when the chains fall short of posteriordb's bar; gold draws from a file in each of three formats.

SHAPES = {"beta": (2,), "W": (2, 3), "u": (4,)}


def shapes_model():
    """A vector, a matrix and a plate-indexed site, and a deterministic one."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("W", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    with numpyro.plate("group", 4):
        u = numpyro.sample("u", dist.Normal(beta[0], 1.0))
    numpyro.deterministic("shift", beta[1] + u)


@pytest.fixture(scope="module")
def gold():
    """(chain, draw, ...) draws of every site of shapes_model, as a user's file would hold them."""
    rng = np.random.default_rng(7)
    draws = {
        site: rng.normal(size=(2, 300, *shape)) + np.arange(np.prod(shape, dtype=int)).reshape(shape)
        for site, shape in SHAPES.items()
    }
    draws["shift"] = draws["beta"][..., 1:2] + draws["u"]
    return draws


def stan_columns(draws: dict, style: str, sites) -> dict:
    """{Stan-style column name: (chain, draw)} of each component, 1-based, row-major."""
    columns = {}
    for site in sites:
        values = draws[site]
        for index in np.ndindex(values.shape[2:]):
            one = [str(i + 1) for i in index]
            name = f"{site}[{','.join(one)}]" if style == "brackets" else ".".join([site, *one])
            columns[name if index else site] = values[(slice(None), slice(None), *index)]
    return columns


def write_gold(path, draws: dict, kind: str, sites=tuple(SHAPES)):
    import arviz as az
    import pandas as pd

    if kind == "netcdf":
        az.from_dict(posterior={s: draws[s] for s in sites}).to_netcdf(str(path))
    elif kind in ("csv", "csv_dots"):
        columns = stan_columns(draws, "brackets" if kind == "csv" else "dots", sites)
        chains, per_chain = next(iter(columns.values())).shape
        names = list(columns)
        table = np.stack([columns[n].ravel() for n in names], axis=1)
        if kind == "csv":  # CmdStanPy's draws_pd: a chain__ column and Stan's own columns
            names = ["chain__", "lp__", *names]
            table = np.column_stack(
                [np.repeat(np.arange(1, chains + 1), per_chain), np.zeros(len(table)), table]
            )
        with open(path, "w") as handle:  # pandas quotes the names with commas, as Stan's do
            handle.write("# written by a test\n")
            pd.DataFrame(table, columns=names).to_csv(handle, index=False)
    else:
        columns = stan_columns(draws, "brackets", sites)
        chains = [{n: v[c].tolist() for n, v in columns.items()} for c in range(2)]
        text = json.dumps(chains)
        if kind == "posteriordb_zip":
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("model-data.json", text)
        else:
            path.write_text(text)
    return path


FORMATS = {
    "netcdf": "gold.nc",
    "csv": "gold.csv",
    "csv_dots": "gold_dots.csv",
    "posteriordb": "gold.json",
    "posteriordb_zip": "gold.json.zip",
}


@pytest.mark.parametrize("kind", FORMATS)
def test_gold_draws_from_each_format_have_the_moments_they_were_written_with(tmp_path, gold, kind):
    path = write_gold(tmp_path / FORMATS[kind], gold, kind, sites=[*SHAPES, "shift"])
    reference = references.from_draws(shapes_model, {}, path, where="models.m.reference")
    assert reference["method"] == "draws"
    assert reference["latent_sites"] == list(SHAPES)  # the model's order
    assert reference["deterministic_sites"] == ["shift"]
    assert reference["source"]["format"] == kind.removesuffix("_zip").removesuffix("_dots")
    pooled = {s: v.reshape(-1, *v.shape[2:]) for s, v in gold.items()}
    for site, values in pooled.items():
        np.testing.assert_allclose(reference["draws"][site], values, rtol=1e-12, err_msg=site)
        np.testing.assert_allclose(reference["mean"][site], values.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(reference["sd"][site], values.std(axis=0), rtol=1e-12)
    flat = np.concatenate([pooled[s].reshape(600, -1) for s in SHAPES], axis=1)
    np.testing.assert_allclose(reference["covariance"], np.cov(flat, rowvar=False), rtol=1e-10)
    # chains kept apart (all but the CSV without a chain column) are judged like NUTS's
    if kind == "csv_dots":
        assert reference["source"]["chains"] == 1
    else:
        assert reference["source"]["chains"] == 2
        assert reference["chains"]["rhat"]["W"].shape == (2, 3)
        assert reference["chains"]["ess"]["u"].shape == (4,)
        assert np.all(reference["chains"]["rhat"]["W"] < 1.01)
    assert reference["warnings"] == []  # 600 independent draws: R-hat ~1, ESS ~600


def test_gold_draws_are_thinned_evenly_and_the_moments_use_all(tmp_path, gold):
    path = write_gold(tmp_path / "gold.nc", gold, "netcdf")
    reference = references.from_draws(shapes_model, {}, path, num_draws=100)
    assert reference["draws"]["W"].shape == (100, 2, 3)
    assert reference["deterministic_sites"] == []  # not in the file: not required
    pooled = gold["W"].reshape(600, 2, 3)
    np.testing.assert_allclose(reference["draws"]["W"][[0, -1]], pooled[[0, -1]])
    np.testing.assert_allclose(reference["mean"]["W"], pooled.mean(axis=0), rtol=1e-12)


def test_too_few_gold_draws_are_a_warning(tmp_path, gold):
    few = {s: v[:, :150] for s, v in gold.items()}
    reference = references.from_draws(shapes_model, {}, write_gold(tmp_path / "few.json", few, "posteriordb"))
    assert len(reference["warnings"]) == 1
    assert "bulk ESS below 400" in reference["warnings"][0] and "few.json" in reference["warnings"][0]


@pytest.mark.parametrize(
    "change, names",
    [
        (lambda c: c.update({"gamma[1]": c["beta[1]"]}), ["gamma[1]"]),  # no such site
        (lambda c: c.update({"beta[3]": c["beta[1]"]}), ["beta[3]", "out of range"]),  # beta is (2,)
        (lambda c: c.update({"W[1]": c["beta[1]"]}), ["W[1]", "out of range"]),  # W is a matrix
    ],
)
def test_a_name_that_matches_no_site_is_an_error_naming_it(tmp_path, gold, change, names):
    columns = stan_columns(gold, "brackets", SHAPES)
    change(columns)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{n: v[c].tolist() for n, v in columns.items()} for c in range(2)]))
    with pytest.raises(ConfigError) as error:
        references.from_draws(shapes_model, {}, path, where="models.m.reference")
    message = str(error.value)
    assert "models.m.reference.file" in message and str(path) in message
    assert "match no site" in message
    for name in names:
        assert name in message
    # and the model's sites, to say what the names should be
    assert "beta (2,), W (2, 3), u (4,)" in message and "shift (4,)" in message


def test_a_site_without_draws_is_an_error_naming_it(tmp_path, gold):
    path = write_gold(tmp_path / "no_u.csv", gold, "csv", sites=["beta", "W"])
    with pytest.raises(ConfigError, match=r"no_u\.csv.*sites without draws: u \(4,\): no draws"):
        references.from_draws(shapes_model, {}, path)
    columns = stan_columns(gold, "dots", SHAPES)
    del columns["W.2.3"]
    path = tmp_path / "no_w23.json"
    path.write_text(json.dumps([{n: v[c].tolist() for n, v in columns.items()} for c in range(2)]))
    with pytest.raises(ConfigError, match=r"W \(2, 3\): no draws of W\[2,3\]"):
        references.from_draws(shapes_model, {}, path)


def test_draws_files_that_cannot_be_read_name_the_file(tmp_path):
    (tmp_path / "draws.txt").write_text("1 2 3")
    with pytest.raises(ConfigError, match=r"draws\.txt: unknown draws format.*\.nc.*\.csv.*\.zip"):
        references.from_draws(shapes_model, {}, tmp_path / "draws.txt")
    (tmp_path / "draws.nc").write_text("not netCDF")
    with pytest.raises(ConfigError, match=r"draws\.nc: not an ArviZ netCDF file"):
        references.from_draws(shapes_model, {}, tmp_path / "draws.nc")
    (tmp_path / "draws.csv").write_text("beta[1],beta[2]\n1,x\n")
    with pytest.raises(ConfigError, match=r"draws\.csv: column 'beta\[2\]' is not a number in row 2"):
        references.from_draws(shapes_model, {}, tmp_path / "draws.csv")


def test_nuts_on_vector_matrix_and_plate_sites_judges_every_component():
    reference = references.nuts(shapes_model, {}, num_warmup=200, num_samples=300, num_chains=2)
    assert reference["latent_sites"] == list(SHAPES) and reference["deterministic_sites"] == ["shift"]
    for site, shape in {**SHAPES, "shift": (4,)}.items():
        assert reference["draws"][site].shape == (600, *shape)
        for statistic in ("rhat", "ess", "ess_tail"):
            values = reference["nuts"][statistic][site]
            assert values.shape == shape and np.all(np.isfinite(values)), (site, statistic)
    assert reference["covariance"].shape == (12, 12)
    assert reference["nuts"]["divergences"].shape == (2,)
    # the posterior is the prior here: u's mean is beta[0]'s, 0, with sd sqrt(2)
    assert np.all(np.abs(reference["mean"]["u"]) < 0.4)
    np.testing.assert_allclose(reference["sd"]["u"], math.sqrt(2), rtol=0.2)


FUNNEL = """import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def funnel():
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    with numpyro.plate("k", 3):
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)))
"""


def test_a_poor_nuts_reference_says_what_to_change_in_its_file(tmp_path):
    """Neal's funnel, 20 warmup steps, 50 draws, trees of depth 2: every check fails, and the
    file's warnings say so, each naming the key to change."""
    (tmp_path / "funnel.py").write_text(FUNNEL)
    out = tmp_path / "funnel.h5"
    steps.reference(
        {},
        {"reference": out},
        {
            "model": {"name": "funnel", "function": f"{tmp_path}/funnel.py:funnel", "args": {}},
            "reference": {
                "method": "nuts",
                "num_warmup": 20,
                "num_samples": 50,
                "num_chains": 2,
                "max_tree_depth": 2,
                "num_draws": 100,
            },
        },
    )
    artifact = read_artifact(out, "reference")
    warnings = artifact.attrs["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 4, warnings
    rhat, ess, divergent, depth = warnings
    assert "R-hat above 1.01" in rhat and "models.funnel.reference.num_warmup (now 20)" in rhat
    assert "num_chains" in rhat
    assert "bulk ESS below 400" in ess and "num_samples (now 50)" in ess
    assert "divergent transitions" in divergent and "target_accept_prob (now 0.8" in divergent
    assert "dense_mass" in divergent
    assert "max_tree_depth 2" in depth
    assert int(artifact["nuts"]["divergences"].sum()) == int(divergent.split(": ")[1].split()[0])
    assert int(artifact["nuts"]["tree_depth_hits"].sum()) == int(depth.split(": ")[1].split()[0])
    assert artifact["nuts"]["rhat"]["x"].shape == (3,) and artifact["nuts"]["ess"]["x"].shape == (3,)
    assert artifact["draws"]["x"].shape == (100, 3)  # thinned to num_draws


def test_a_failing_nuts_reference_logs_the_stage_and_the_rule(tmp_path, caplog):
    """A model whose density is NaN everywhere: NUTS finds no initial point, and the log says
    that sampling failed, in which rule and for which config key."""
    (tmp_path / "nan.py").write_text(
        "import jax.numpy as jnp\nimport numpyro\nimport numpyro.distributions as dist\n\n\n"
        "def nan_model():\n    z = numpyro.sample('z', dist.Normal(0.0, 1.0))\n"
        "    numpyro.factor('broken', jnp.nan * z)\n"
    )
    with caplog.at_level("ERROR", logger="sviflow"), pytest.raises(RuntimeError) as error:
        steps.reference(
            {},
            {"reference": tmp_path / "nan.h5"},
            {
                "model": {"name": "broken", "function": f"{tmp_path}/nan.py:nan_model", "args": {}},
                "reference": {"method": "nuts", "num_warmup": 5, "num_samples": 5},
            },
        )
    assert "reference failed while sampling with NUTS" in str(error.value)
    logged = caplog.text
    assert "rule reference (workflow/rules/reference.smk)" in logged
    assert "models.broken.reference" in logged and "while sampling with NUTS" in logged
    assert not (tmp_path / "nan.h5").exists()


def test_good_references_have_no_warnings(tmp_path, coin_nuts, exact, coin_grid):
    assert exact["warnings"] == [] and coin_grid["warnings"] == []
    assert coin_nuts["warnings"] == [], coin_nuts["warnings"]
    assert int(coin_nuts["nuts"]["divergences"].sum()) == 0
    out = tmp_path / "coin.h5"
    data = tmp_path / "data.h5"
    steps.simulate(
        {},
        {"data": data},
        {"name": "coin_12_8", "spec": {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}},
    )
    steps.reference(
        {"data": data},
        {"reference": out},
        {
            "model": {"name": "coin", "function": "coin_flips", "args": {}},
            "reference": {"method": "exact", "num_draws": 100},
        },
    )
    assert read_artifact(out, "reference").attrs["warnings"] == []
