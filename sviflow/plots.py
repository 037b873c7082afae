"""The post's figures and the diagnostics' figures, from the artifacts alone.

Only numpy, h5py and matplotlib (Agg) are imported here: restyling a figure never needs JAX.
Every figure's title carries the fit's verdict, so a figure of a failed fit cannot pass for a
result.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sviflow.h5io import read_artifact  # noqa: E402

VERDICT_COLOURS = {
    "converged": "tab:green",
    "not converged": "tab:red",
    "converged, poor approximation": "tab:orange",
}


def _title(fig, fit: str, check) -> None:
    """The verdict, and every failing check in a few words, above every figure of a fit. The
    reasons in full are the caption's (sviflow.verdicts.verdict_paragraph): a title is short."""
    import textwrap

    verdict = check.attrs["verdict"]
    if check.attrs.get("diverged"):
        verdict = "DIVERGED: not a result"
    # wrapped to the figure's width (about 5.5 pt a character at 10 pt), at most two lines
    problems = check.attrs.get("problems") or []
    width = max(40, int(fig.get_figwidth() * 72 / 5.5))
    short = (
        "\n".join(textwrap.wrap("; ".join(problems), width=width, max_lines=2, placeholder=" ..."))
        if problems
        else ""
    )
    fig.suptitle(
        f"{fit}: {verdict}" + (f"\n{short}" if short else ""),
        color=VERDICT_COLOURS.get(check.attrs["verdict"], "black"),
        fontsize=10 if short else 11,
    )


def _setting(check, group: str, key: str, default):
    """A check setting as the check used it (its config slice), or the default."""
    return ((check.config.get("checks") or {}).get(group) or {}).get(key, default)


def _save(fig, path, rect=None):
    """``fig`` to ``path`` (laid out within ``rect``, the whole figure by default); the figure
    is returned (closed to pyplot) for tests to read."""
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def loss_figure(fitted, check, fit: str, path) -> None:
    """The loss trace (the post's figure) with the plateau windows and their relative change."""
    losses = fitted["losses"]
    window = _setting(check, "plateau", "window", 100)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    steps = np.arange(1, losses.shape[1] + 1)
    for index, seed_losses in enumerate(losses):
        top.plot(
            steps,
            seed_losses,
            lw=0.5,
            alpha=0.7,
            label=f"seed {fitted.attrs['seeds'][index]}" if len(losses) > 1 else "loss per step",
        )
    means = check["losses_window_mean"]
    if means.size:
        centres = window * (np.arange(means.shape[1]) + 0.5)
        top.plot(centres, means[0], color="k", lw=1.2, label=f"mean over {window}-step windows")
        finite = losses[np.isfinite(losses)]
        if finite.size:
            late = np.median(finite.reshape(-1)[-max(1, finite.size // 10) :])
            top.axhline(late, c="k", ls="--", lw=0.8, label=f"median of the last 10%: {late:.3f}")
            low, high = np.percentile(finite, [0.5, 99.0])
            pad = 0.1 * (high - low or 1.0)
            top.set_ylim(low - pad, high + pad)
    log_z = check.get("quality", {}).get("log_z")
    if log_z is not None and np.isfinite(log_z):
        # the floor of the loss's expectation, the KL's zero: a single step's loss, an estimate
        # from one draw, goes below it
        top.axhline(
            -float(log_z),
            color="tab:green",
            lw=1,
            ls=":",
            label=f"-log Z = {-float(log_z):.3f} (exact evidence), the floor of the expected loss",
        )
    for step in check["diverged_step"]:
        if step >= 0:
            top.axvline(step + 1, color="tab:red", lw=1.5, label=f"diverged at step {step}")
    top.set_ylabel("loss (negative ELBO)")
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper right")
    rel = check["rel_change"]
    if rel.size:
        centres = window * (np.arange(1, rel.shape[1] + 1) + 0.5)
        tolerance = _setting(check, "plateau", "tolerance", 0.01)
        bottom.set_yscale("log")
        if not np.isfinite(rel).any():  # no finite change (a non-finite loss): an empty panel
            bottom.set_ylim(tolerance / 100, tolerance * 100)
        for seed_rel in rel:
            if np.isfinite(seed_rel).any():
                bottom.plot(centres, np.maximum(seed_rel, 1e-12), lw=0.8)
        bottom.axhline(tolerance, color="tab:red", ls="--", lw=1, label=f"tolerance {tolerance}")
        bottom.legend(fontsize=8)
    bottom.set_ylabel("relative ELBO change")
    bottom.set_xlabel("optimisation step")
    bottom.grid(alpha=0.3)
    _title(fig, fit, check)
    return _save(fig, path)


# guide parameters that are angles, in radians in the fit file: drawn in degrees, as the summary
# gives them (sviflow.truth: "theta (deg)", "angle of major axis (deg)")
ANGLE_PARAMS = ("theta",)


def parameter_components(params: dict) -> list[tuple[str, str, np.ndarray]]:
    """(label, unit, values of shape (seed, point)) of every free component of the guide's
    parameter trajectories: a Cholesky factor's (``*scale_tril``) upper triangle is zero by
    construction, not a parameter, and is left out; an angle is in degrees."""
    components = []
    for name in sorted(params):
        values = np.asarray(params[name], dtype=float)  # (seed, point, ...)
        unit = ""
        if name in ANGLE_PARAMS:
            values, unit = np.degrees(values), "deg"
        shape = values.shape[2:]
        if not shape:
            components.append((name, unit, values))
            continue
        for index in np.ndindex(*shape):
            if name.endswith("scale_tril") and len(index) >= 2 and index[-1] > index[-2]:
                continue  # above the diagonal: a structural zero
            label = f"{name}[{','.join(map(str, index))}]"
            components.append((label, unit, values[(slice(None), slice(None), *index)]))
    return components


def _window_label(check, window) -> str:
    """What the grey band is, in words: the share of the steps the convergence rule judges."""
    share = float(_setting(check, "convergence", "window", 0.2))
    since = [int(s) for s in np.ravel((check.attrs.get("stop") or {}).get("since_step") or [0])]
    text = f"judging window: the last {share:.0%} of steps".replace("%", " %")
    if max(since, default=0) > 0:
        text += f" (since the step size was lowered, step {max(since)})"
    return text


def trajectory_figure(fitted, check, fit: str, path):
    """The guide's mean (and +- 1 sd) of every latent component along the run, with the window
    that the convergence rule reads shaded: the rule's own units. Below, the trajectories of
    the guide's parameters (the post's numbers), structural zeros left out, angles in degrees."""
    steps = fitted["trajectory"]["step"]
    moments = fitted["trajectory"]["moments"]
    labels = list(fitted.attrs.get("moment_labels") or [])
    mean, sd = np.asarray(moments["mean"], float), np.asarray(moments["sd"], float)
    shown = labels[:9]
    parameters = parameter_components(fitted["trajectory"].get("params") or {})[:9]
    cols = min(max(len(shown), len(parameters), 1), 3)
    moment_rows = math.ceil(max(1, len(shown)) / cols)
    param_rows = math.ceil(len(parameters) / cols)
    rows = moment_rows + param_rows
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows + 0.4), squeeze=False)
    window = np.asarray(check["window"]) if "window" in check else None
    has_window = window is not None and len(window)
    convergence = check.get("convergence", {})
    moment_axes = axes[:moment_rows].ravel()
    param_axes = axes[moment_rows:].ravel()

    def shade(ax):
        if has_window:
            ax.axvspan(
                window[:, 0].min(),
                window[:, 1].max(),
                color="grey",
                alpha=0.2,
                lw=0,
                label=_window_label(check, window),
            )

    for index, (ax, label) in enumerate(zip(moment_axes, shown)):
        for seed in range(mean.shape[0]):
            (line,) = ax.plot(steps, mean[seed, :, index], lw=0.8)
            ax.fill_between(
                steps,
                mean[seed, :, index] - sd[seed, :, index],
                mean[seed, :, index] + sd[seed, :, index],
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
        shade(ax)
        if "shift" in convergence:
            shift = float(np.max(np.asarray(convergence["shift"])[:, index]))
            rhat = float(np.max(np.asarray(convergence["rhat"])[:, index]))
            ax.set_title(
                f"{label}: guide mean +- sd\nshift {shift:.2g} sd, split-R-hat {rhat:.3g}", fontsize=9
            )
        else:
            ax.set_title(f"{label}: guide mean +- sd", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in moment_axes[len(shown) :]:
        ax.set_visible(False)
    for ax, (label, unit, values) in zip(param_axes, parameters):
        for seed_values in values:
            ax.plot(steps, seed_values, lw=0.8)
        shade(ax)
        ax.set_title(f"parameter {label}" + (f" ({unit})" if unit else ""), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in param_axes[len(parameters) :]:
        ax.set_visible(False)
    if has_window:  # once, for every panel: what the grey band is
        handles, names = moment_axes[0].get_legend_handles_labels()
        fig.legend(handles[:1], names[:1], loc="lower center", fontsize=8, frameon=False)
    _title(fig, fit, check)
    return _save(fig, path, rect=(0, 0.06 if has_window else 0, 1, 1))


def _pooled(sites: dict) -> dict:
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in sites.items()}


def _beta_pdf(x, a: float, b: float):
    """Beta(a, b) density in closed form (scipy.stats alone costs this job 0.5 s to import)."""
    x = np.asarray(x, dtype=float)
    inside = (x > 0) & (x < 1)
    safe = np.where(inside, x, 0.5)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return np.where(inside, np.exp(log_norm + (a - 1) * np.log(safe) + (b - 1) * np.log1p(-safe)), 0.0)


def _normal_pdf(x, mean: float, sd: float):
    return np.exp(-0.5 * ((np.asarray(x, dtype=float) - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def _kde(values, x):
    """Gaussian kernel density estimate of ``values`` at ``x``, Scott's bandwidth."""
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size < 2 or not np.std(values) > 0:
        return np.zeros(np.shape(x))
    bandwidth = np.std(values) * values.size ** (-1 / 5)
    density = np.zeros(np.shape(x))
    for chunk in np.array_split(values, max(1, values.size // 2000)):
        density += np.exp(-0.5 * ((np.asarray(x)[:, None] - chunk[None, :]) / bandwidth) ** 2).sum(axis=1)
    return density / (values.size * bandwidth * math.sqrt(2 * math.pi))


def guide_densities(fitted, values, x) -> list[tuple[str, np.ndarray]]:
    """(label, density at ``x``) of the guide's marginal of a 1-D latent site: the post's "SVI
    Result". The post's Beta and Normal guides in closed form from their fitted parameters (one
    line per seed); any other guide as a Gaussian KDE of its draws ``values``, which the label
    says."""
    guide = ((fitted.config or {}).get("guide") or {}).get("name") if fitted is not None else None
    params = fitted["params"] if fitted is not None else {}
    seeds = (fitted.attrs.get("seeds") or []) if fitted is not None else []
    lines = []

    def seed_label(index):
        return f", seed {seeds[index]}" if len(seeds) > 1 and index < len(seeds) else ""

    if guide == "beta" and {"alpha_q", "beta_q"} <= set(params):
        for index, (a, b) in enumerate(zip(np.ravel(params["alpha_q"]), np.ravel(params["beta_q"]))):
            lines.append(
                (
                    f"guide density Beta({a:.3g}, {b:.3g}), the post's 'SVI Result'{seed_label(index)}",
                    _beta_pdf(x, float(a), float(b)),
                )
            )
    elif guide == "normal" and {"mean", "sd"} <= set(params):
        for index, (m, sd) in enumerate(zip(np.ravel(params["mean"]), np.ravel(params["sd"]))):
            lines.append(
                (
                    f"guide density Normal({m:.3g}, {sd:.3g}), the post's 'SVI Result'{seed_label(index)}",
                    _normal_pdf(x, float(m), float(sd)),
                )
            )
    else:
        lines.append(
            (f"guide density: Gaussian KDE of its {np.size(values)} draws (no closed form)", _kde(values, x))
        )
    return lines[:4]


def posterior_figure(predictive, check, reference, fit: str, path, fitted=None):
    """1 latent: the guide's density (closed form or a KDE), its draws and the reference pdf;
    2: the reference density beside the guide's samples; more: marginals."""
    latent = predictive.attrs.get("latent_sites") or []
    samples = _pooled(predictive["posterior"])
    if check.attrs.get("diverged") or not samples:
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.text(0.5, 0.5, "the fit diverged: no posterior to show", ha="center", va="center")
        ax.set_axis_off()
        _title(fig, fit, check)
        return _save(fig, path)
    scalar = [s for s in latent if samples[s].ndim == 1]
    if len(latent) == 1 and scalar:
        site = latent[0]
        fig, ax = plt.subplots(figsize=(8, 3.6))
        ax.hist(
            samples[site],
            bins=80,
            density=True,
            color="tab:blue",
            alpha=0.3,
            label=f"histogram of the guide's {len(samples[site])} draws",
        )
        x = None
        if reference is not None and "density" in reference:
            x = reference["density"].get("x", reference["density"].get("axis_0"))
            ax.plot(
                x,
                reference["density"]["pdf"],
                color="k",
                lw=1.5,
                label=f"reference posterior ({reference.attrs['method']})",
            )
            if "exact" in reference:
                heads, tails = reference["exact"]["heads"], reference["exact"]["tails"]
                ax.plot(
                    x,
                    _beta_pdf(x, float(heads), float(tails)),
                    color="grey",
                    ls="--",
                    lw=1,
                    label=f"the post's 'truth' Beta({heads:g}, {tails:g}) (normalised likelihood)",
                )
        if x is None:
            low, high = np.percentile(samples[site], [0.1, 99.9])
            pad = 0.1 * (high - low or 1.0)
            x = np.linspace(low - pad, high + pad, 400)
        for (label, density), colour in zip(
            guide_densities(fitted, samples[site], x), ("tab:orange", "tab:red", "tab:purple", "tab:brown")
        ):
            ax.plot(x, density, color=colour, lw=1.5, label=label)
        ax.set_xlabel(site)
        ax.set_ylabel("density")
        ax.set_yticklabels([])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    elif len(latent) == 2 and len(scalar) == 2:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.4))
        sx, sy = latent
        if reference is not None and "density" in reference and "axis_1" in reference["density"]:
            ax0, ax1 = reference["density"]["axis_0"], reference["density"]["axis_1"]
            extent = [ax0[0], ax0[-1], ax1[0], ax1[-1]]
            left.imshow(reference["density"]["pdf"].T, origin="lower", extent=extent, aspect="equal")
            left.set_title(f"true density ({reference.attrs['method']})", fontsize=10)
        elif reference is not None:
            left.scatter(reference["draws"][sx], reference["draws"][sy], s=2, c="k", alpha=0.1)
            left.set_title(f"reference draws ({reference.attrs['method']})", fontsize=10)
            extent = [*left.get_xlim(), *left.get_ylim()]
        else:
            extent = None
        right.scatter(samples[sx], samples[sy], s=2, c="k", alpha=0.05)
        right.set_title("guide samples", fontsize=10)
        for ax in (left, right):
            if extent is not None:
                ax.set_xlim(extent[0], extent[1])
                ax.set_ylim(extent[2], extent[3])
            ax.set_xlabel(sx)
            ax.set_ylabel(sy)
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
    else:
        names = [(s, i) for s in latent for i in range(int(np.prod(samples[s].shape[1:]) or 1))][:9]
        cols = min(3, len(names))
        fig, axes = plt.subplots(
            math.ceil(len(names) / cols),
            cols,
            figsize=(3.6 * cols, 2.6 * math.ceil(len(names) / cols)),
            squeeze=False,
        )
        for ax, (site, index) in zip(axes.ravel(), names):
            values = samples[site].reshape(len(samples[site]), -1)[:, index]
            ax.hist(values, bins=60, density=True, alpha=0.4, label="guide draws")
            grid = np.linspace(*np.percentile(values, [0.1, 99.9]), 200)
            ax.plot(grid, _kde(values, grid), color="tab:orange", lw=1.2, label="guide (KDE)")
            if reference is not None and site in reference["draws"]:
                ref = reference["draws"][site].reshape(len(reference["draws"][site]), -1)[:, index]
                ax.hist(ref, bins=60, density=True, histtype="step", color="k", label="reference")
            ax.set_xlabel(site if samples[site].ndim == 1 else f"{site}[{index}]")
            ax.legend(fontsize=7)
        for ax in axes.ravel()[len(names) :]:
            ax.set_visible(False)
    _title(fig, fit, check)
    return _save(fig, path)


def mock_observation_figure(predictive, data, check, fit: str, path):
    """The post's two mock-observation histograms, model + guide and model + posterior samples:
    for 0/1 observations the share of 0s and of 1s among all mock draws (the post's two bars),
    and below, how many 1s each mock set of the model's size has."""
    observed = predictive.attrs.get("observed_sites") or []
    paths = (("mock_from_guide", "model + guide"), ("mock_from_samples", "model + posterior samples"))
    drawn = {key: _pooled(predictive[key]) if predictive[key] else {} for key, _ in paths}
    binary = any(
        np.isin(sites[site], (0, 1)).all() for sites in drawn.values() for site in observed if site in sites
    )
    rows = 2 if binary else 1
    fig, axes = plt.subplots(rows, 2, figsize=(9, 3.0 * rows + 0.3), sharey="row", squeeze=False)
    for column, (key, label) in enumerate(paths):
        bars, sets = axes[0, column], axes[rows - 1, column]
        sites = drawn[key]
        for site in observed:
            if site not in sites:
                continue
            values = sites[site].reshape(len(sites[site]), -1)
            obs = (
                np.asarray(data["observed"][site]) if data is not None and site in data["observed"] else None
            )
            if np.isin(values, (0, 1)).all():
                shares = [np.mean(values == 0), np.mean(values == 1)]
                bars.bar(
                    [0, 1],
                    shares,
                    width=0.75,
                    color="tab:blue",
                    alpha=0.7,
                    label=f"all {values.size} mock values of {site}",
                )
                if obs is not None:
                    observed_shares = [np.mean(obs == 0), np.mean(obs == 1)]
                    bars.hlines(
                        observed_shares,
                        [-0.375, 0.625],
                        [0.375, 1.375],
                        colors="k",
                        linestyles="--",
                        label=f"the data's {obs.size} values",
                    )
                bars.set_xticks([0, 1], ["0 (tails)", "1 (heads)"])
                bars.set_ylabel("share of the draws")
                bars.set_ylim(0, 1)
                bars.set_title(f"{label}: 0s and 1s", fontsize=10)
                counts = values.sum(axis=1)
                bins = np.arange(values.shape[1] + 2) - 0.5
                sets.hist(
                    counts,
                    bins=bins,
                    density=True,
                    alpha=0.6,
                    label=f"{len(counts)} mock sets of {values.shape[1]}",
                )
                sets.set_xlabel(f"number of 1s ('heads') in a mock set of {values.shape[1]} draws of {site}")
                sets.set_ylabel("share of the sets")
                sets.set_title(f"{label}: 1s per mock set", fontsize=10)
                if obs is not None:
                    sets.axvline(
                        obs.mean() * values.shape[1],
                        color="k",
                        ls="--",
                        label=f"data's share of 1s x {values.shape[1]}",
                    )
            else:
                sets.hist(values.ravel(), bins=60, density=True, alpha=0.6, label="mock values")
                if obs is not None:
                    sets.hist(np.ravel(obs), bins=30, density=True, histtype="step", color="k", label="data")
                sets.set_xlabel(site)
                sets.set_ylabel("density")
                sets.set_title(label, fontsize=10)
        for ax in {id(bars): bars, id(sets): sets}.values():
            if not ax.get_title():
                ax.set_title(label, fontsize=10)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # nothing drawn when the fit made no draws
                ax.legend(fontsize=8)
    _title(fig, fit, check)
    return _save(fig, path)


def _ellipse(ax, covariance, mean, **style):
    values, vectors = np.linalg.eigh(covariance)
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])
    for k in (1, 2):
        points = vectors @ (k * np.sqrt(np.maximum(values, 0))[:, None] * circle) + np.asarray(mean)[:, None]
        ax.plot(points[0], points[1], **(style if k == 1 else {**style, "label": None}))


def covariance_figure(fitted, predictive, check, reference, fit: str, path) -> None:
    """The covariance L L^T recovered from ``auto_scale_tril`` against the target's, as 1 and 2
    sd ellipses over the guide's samples."""
    tril = np.asarray(fitted["params"]["auto_scale_tril"], dtype=float)
    loc = np.asarray(fitted["params"]["auto_loc"], dtype=float)
    covariance = np.mean(tril @ np.swapaxes(tril, -1, -2), axis=0)
    # a plane shows two coordinates: with more latent dimensions, the first two of the
    # flattened latent vector (unconstrained, as auto_scale_tril is)
    dims = covariance.shape[-1]
    covariance, centre = covariance[:2, :2], loc.mean(axis=0)[:2]
    fig, ax = plt.subplots(figsize=(5, 5))
    samples = _pooled(predictive["posterior"])
    latent = predictive.attrs.get("latent_sites") or []
    if len(latent) >= 2 and samples and all(samples[s].ndim == 1 for s in latent[:2]):
        ax.scatter(samples[latent[0]], samples[latent[1]], s=2, c="grey", alpha=0.08)
        ax.set_xlabel(latent[0] if dims == 2 else f"{latent[0]} (first 2 of {dims} coordinates)")
        ax.set_ylabel(latent[1])
    _ellipse(ax, covariance, centre, color="tab:blue", lw=1.5, label="guide: L L^T")
    if reference is not None:
        mean = np.concatenate([np.ravel(reference["moments"]["mean"][s]) for s in latent])[:2]
        _ellipse(
            ax,
            np.atleast_2d(reference["moments"]["covariance"])[:2, :2],
            mean,
            color="k",
            ls="--",
            lw=1.2,
            label=f"target ({reference.attrs['method']})",
        )
    rows = {r["quantity"]: r for r in check.attrs.get("truth") or []}
    text = "\n".join(
        f"{q}: {r['fit']:.3f} (target {r['target']:.3f})"
        for q, r in rows.items()
        if not q.startswith("covariance")
    )
    ax.text(
        0.02,
        0.98,
        text,
        transform=ax.transAxes,
        va="top",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _title(fig, fit, check)
    return _save(fig, path)


def plot_fit(inputs: dict, outputs: dict, params: dict) -> None:
    """Every figure named in ``outputs`` (loss, trajectories, posterior, mock_observations,
    covariance) for one fit."""
    fit = params["spec"]["name"]
    fitted = read_artifact(inputs["fit"], "fit")
    predictive = read_artifact(inputs["predictive"], "predictive")
    check = read_artifact(inputs["check"], "check")
    reference = read_artifact(inputs["reference"], "reference") if inputs.get("reference") else None
    data = read_artifact(inputs["data"], "data") if inputs.get("data") else None
    if "loss" in outputs:
        loss_figure(fitted, check, fit, outputs["loss"])
    if "trajectories" in outputs:
        trajectory_figure(fitted, check, fit, outputs["trajectories"])
    if "posterior" in outputs:
        posterior_figure(predictive, check, reference, fit, outputs["posterior"], fitted=fitted)
    if "mock_observations" in outputs:
        mock_observation_figure(predictive, data, check, fit, outputs["mock_observations"])
    if "covariance" in outputs:
        covariance_figure(fitted, predictive, check, reference, fit, outputs["covariance"])
    if "verdict" in outputs:  # the verdict in full, which every caption of the fit includes
        from sviflow.h5io import written_atomically
        from sviflow.verdicts import verdict_paragraph

        with written_atomically(outputs["verdict"]) as temporary:
            with open(temporary, "w") as handle:
                handle.write(verdict_paragraph(fit, check))


def plot_loss_comparison(fit_paths: list[str], path, title: str = "") -> None:
    """Loss traces of several fits in one figure, e.g. the post's 1 vs 32 ELBO particles."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    lows, highs = [], []
    for fit_path in fit_paths:
        fitted = read_artifact(fit_path, "fit")
        spec = fitted.config
        losses = fitted["losses"][0]
        seeds = fitted.attrs.get("seeds") or []
        # the first seed's curve: the post's figure has one run per setting
        label = f"{spec.get('name')}: num_particles = {spec.get('elbo', {}).get('num_particles', 1)}" + (
            f" (seed {seeds[0]}, the first of {len(seeds)})" if len(seeds) > 1 else ""
        )
        ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.5, label=label)
        finite = losses[np.isfinite(losses)]
        if finite.size:
            lows.append(np.percentile(finite, 0.5))
            highs.append(np.percentile(finite, 99.0))
            late = np.median(finite[-max(1, len(finite) // 10) :])
            ax.axhline(
                late,
                ls="--",
                lw=0.8,
                color=ax.lines[-1].get_color(),
                label=f"{spec.get('name')}: median of the last 10 % of steps, {late:.3f}",
            )
    if lows:
        pad = 0.1 * (max(highs) - min(lows) or 1.0)
        ax.set_ylim(min(lows) - pad, max(highs) + pad)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss (negative ELBO)")
    ax.set_title(title or "loss curves", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    return _save(fig, path)


# the sweep figure's panels: (quantity of the check's quality group, axis label, worst of seeds)
SWEEP_PANELS = (
    ("elbo", "final ELBO (mean over seeds)", np.nanmean),
    ("kl", "KL(q || p), nats (worst seed)", np.nanmax),
    ("energy_distance", "energy distance to the reference (worst seed)", np.nanmax),
    ("khat", "PSIS k-hat (worst seed)", np.nanmax),
)


def sweep_figure(sweep: str, info: dict, check_paths: list[str], path) -> None:
    """One sweep's fits side by side: each panel a quantity (final ELBO, KL or the energy
    distance where a reference gives them, k-hat) against the first swept key, one line per
    combination of the others; a filled marker is a fit that converged, an open one a fit that
    did not. ``info``: the sweep (sviflow.sweeps.expand); ``check_paths``: its members' checks,
    in the order of ``info["members"]``."""
    members = list(info["members"])
    keys, names = info["keys"], info["columns"]
    checks = [read_artifact(p, "check") for p in check_paths]
    panels = []
    for key, label, worst in SWEEP_PANELS:
        values = []
        for check in checks:
            value = check.get("quality", {}).get(key)
            values.append(float(worst(value)) if value is not None and np.size(value) else np.nan)
        if np.isfinite(values).any():
            panels.append((label, np.asarray(values)))
    x_key = keys[0]
    xs = [info["members"][m][x_key] for m in members]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    levels = list(dict.fromkeys(xs))
    position = (lambda x: float(x)) if numeric else (lambda x: float(levels.index(x)))
    lines: dict[tuple, list[int]] = {}
    for index, member in enumerate(members):
        rest = tuple(info["members"][member][k] for k in keys[1:])
        lines.setdefault(rest, []).append(index)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (label, values) in zip(axes[0], panels):
        for number, (rest, indices) in enumerate(lines.items()):
            color = colors[number % len(colors)]
            order = sorted(indices, key=lambda i: position(xs[i]))
            ax.plot([position(xs[i]) for i in order], values[order], color=color, lw=0.8, alpha=0.7)
            for i in order:
                converged = checks[i].attrs["verdict"] == "converged"
                ax.plot(
                    position(xs[i]),
                    values[i],
                    "o",
                    color=color,
                    mfc=color if converged else "none",
                    ms=5,
                    label=", ".join(f"{n} = {v}" for n, v in zip(names[1:], rest)) if i == order[0] else None,
                )
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            # a sweep over 50 datasets: every k-th name, slanted, so that the names stay legible
            shown = range(0, len(levels), max(1, math.ceil(len(levels) / 12)))
            slanted = {"rotation": 30, "ha": "right", "fontsize": 7} if len(levels) > 4 else {}
            ax.set_xticks(list(shown), [str(levels[i]) for i in shown], **slanted)
        ax.set_xlabel(names[0])
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    if len(lines) > 1 and panels:
        axes[0][0].legend(fontsize=6, loc="best")
    done = sum(c.attrs["verdict"] == "converged" for c in checks)
    fig.suptitle(
        f"sweep {sweep}: {len(members)} fits, {done} converged (filled) and {len(members) - done} not (open)",
        fontsize=10,
    )
    return _save(fig, path, rect=(0, 0, 1, 0.93))
