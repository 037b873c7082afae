"""The figures of the tiny run read on their own: what each draws, read back from the matplotlib
figure that sviflow.plots returns, against the numbers in the run's HDF5 files (h5py)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import stats

from sviflow import plots
from sviflow.h5io import read_artifact

pytestmark = pytest.mark.workflow

COIN = {"data": "results/data/coin_12_8.h5", "reference": "results/references/coin--coin_12_8.h5"}
REFERENCES = {
    "multimodal": "results/references/multimodal--none.h5",
    "autoguide": "results/references/correlated--none.h5",
}


def artifacts(run, fit):
    """fit, predictive, check, reference and data of ``fit``, as the plot job reads them."""
    paths = dict(COIN) if fit in ("beta", "beta_4_particles", "normal") else {"reference": REFERENCES[fit]}
    read = {
        kind: read_artifact(run / f"results/{folder}/{fit}.h5", kind)
        for kind, folder in (("fit", "fits"), ("predictive", "predictive"), ("check", "checks"))
    }
    read["reference"] = read_artifact(run / paths["reference"], "reference")
    read["data"] = read_artifact(run / paths["data"], "data") if "data" in paths else None
    return read


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend else []


@pytest.mark.parametrize("fit, family", [("beta", "Beta"), ("normal", "Normal")])
def test_posterior_draws_the_guides_own_density(tiny_run, tmp_path, fit, family):
    a = artifacts(tiny_run, fit)
    fig = plots.posterior_figure(
        a["predictive"], a["check"], a["reference"], fit, tmp_path / "posterior.png", fitted=a["fit"]
    )
    ax = fig.axes[0]
    (line,) = [line for line in ax.lines if line.get_label().startswith("guide density")]
    assert f"guide density {family}(" in line.get_label() and "SVI Result" in line.get_label()
    assert line.get_label() in legend_texts(ax)
    x, y = line.get_data()
    with h5py.File(tiny_run / f"results/fits/{fit}.h5") as handle:  # the fitted parameters
        if family == "Beta":
            expected = stats.beta(handle["params/alpha_q"][0], handle["params/beta_q"][0]).pdf(x)
        else:
            expected = stats.norm(handle["params/mean"][0], handle["params/sd"][0]).pdf(x)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-9)
    # beside the histogram of the draws and the reference
    labels = legend_texts(ax)
    assert any(label.startswith("histogram of the guide's") for label in labels)
    assert any(label.startswith("reference posterior") for label in labels)


def test_posterior_without_a_closed_form_says_it_is_a_kde(tiny_run, tmp_path):
    a = artifacts(tiny_run, "beta")
    a["fit"].config["guide"]["name"] = "AutoNormal"  # a guide whose density is not read from params
    fig = plots.posterior_figure(
        a["predictive"], a["check"], a["reference"], "beta", tmp_path / "posterior.png", fitted=a["fit"]
    )
    (line,) = [line for line in fig.axes[0].lines if line.get_label().startswith("guide density")]
    assert "KDE" in line.get_label()
    x, y = line.get_data()
    assert abs(np.trapezoid(y, x) - 1) < 0.05  # a density


def test_mock_observations_have_the_posts_two_bars_for_both_paths(tiny_run, tmp_path):
    a = artifacts(tiny_run, "beta")
    fig = plots.mock_observation_figure(a["predictive"], a["data"], a["check"], "beta", tmp_path / "mock.png")
    bars = [ax for ax in fig.axes if ax.get_title().endswith("0s and 1s")]
    assert [ax.get_title() for ax in bars] == [
        "model + guide: 0s and 1s",
        "model + posterior samples: 0s and 1s",
    ]
    with h5py.File(tiny_run / "results/predictive/beta.h5") as handle:
        for ax, key in zip(bars, ("mock_from_guide", "mock_from_samples")):
            values = handle[f"{key}/obs"][()]
            heights = [patch.get_height() for patch in ax.patches]
            np.testing.assert_allclose(heights, [np.mean(values == 0), np.mean(values == 1)])
            assert [t.get_text() for t in ax.get_xticklabels()] == ["0 (tails)", "1 (heads)"]
    # the heads-per-set histogram stays, below, saying what it counts
    sets = [ax for ax in fig.axes if ax.get_title().endswith("1s per mock set")]
    assert len(sets) == 2 and "in a mock set of 10 draws" in sets[0].get_xlabel()


def test_every_line_of_the_particle_comparison_is_in_its_legend(tiny_run, tmp_path):
    fig = plots.plot_loss_comparison(
        [tiny_run / "results/fits/beta.h5", tiny_run / "results/fits/beta_4_particles.h5"],
        tmp_path / "particles.png",
        "1 vs 4 particles",
    )
    ax = fig.axes[0]
    drawn = [line.get_label() for line in ax.lines]
    assert len(drawn) == 4 and not any(label.startswith("_") for label in drawn), drawn
    assert legend_texts(ax) == drawn
    assert sum("median of the last 10 %" in label for label in drawn) == 2


def test_trajectories_label_the_window_and_draw_only_free_parameters(tiny_run, tmp_path):
    a = artifacts(tiny_run, "autoguide")
    fig = plots.trajectory_figure(a["fit"], a["check"], "autoguide", tmp_path / "t.png")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["judging window: the last 20 % of steps"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    parameters = sorted(t.removeprefix("parameter ") for t in titles if t.startswith("parameter "))
    # the upper triangle of the Cholesky factor is zero by construction: no panel
    assert parameters == [
        "auto_loc[0]",
        "auto_loc[1]",
        "auto_scale_tril[0,0]",
        "auto_scale_tril[1,0]",
        "auto_scale_tril[1,1]",
    ]


def test_trajectories_draw_angles_in_degrees(tiny_run, tmp_path):
    a = artifacts(tiny_run, "multimodal")
    fig = plots.trajectory_figure(a["fit"], a["check"], "multimodal", tmp_path / "t.png")
    (ax,) = [ax for ax in fig.axes if ax.get_title() == "parameter theta (deg)"]
    with h5py.File(tiny_run / "results/fits/multimodal.h5") as handle:
        radians = handle["trajectory/params/theta"][0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.degrees(radians.astype(float)))
    # and the summary gives it in degrees too
    rows = {row["quantity"]: row for row in a["check"].attrs["truth"]}
    assert "theta (deg)" in rows


def test_loss_reference_line_is_the_floor_of_the_expected_loss(tiny_run, tmp_path):
    a = artifacts(tiny_run, "beta")
    fig = plots.loss_figure(a["fit"], a["check"], "beta", tmp_path / "loss.png")
    labels = legend_texts(fig.axes[0])
    (floor,) = [label for label in labels if label.startswith("-log Z")]
    assert floor.endswith("the floor of the expected loss")


def test_titles_are_short_and_the_captions_paragraph_has_every_reason(tiny_run, tmp_path):
    a = artifacts(tiny_run, "autoguide")
    fig = plots.loss_figure(a["fit"], a["check"], "autoguide", tmp_path / "loss.png")
    title = fig._suptitle.get_text()
    assert title.startswith("autoguide: ") and len(title.splitlines()) <= 3
    reasons = a["check"].attrs["reasons"]
    assert not any(reason in title for reason in reasons)  # the sentences are the caption's
    a["check"].attrs["problems"] = []  # nothing failing in a few words: the verdict alone
    fig = plots.loss_figure(a["fit"], a["check"], "autoguide", tmp_path / "loss.png")
    assert fig._suptitle.get_text() == f"autoguide: {a['check'].attrs['verdict']}"
    paragraph = (tiny_run / "results/figures/autoguide/verdict.html").read_text()
    import html

    assert all(html.escape(reason) in paragraph for reason in reasons)
