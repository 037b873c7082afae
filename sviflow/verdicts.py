"""Each fit's verdict as HTML: the landing page's table (one row per fit) and the paragraph each
figure's caption includes. From the check files alone (numpy and the standard library).

The report's landing page (workflow/report/workflow.rst) embeds the table with docutils'
``.. raw:: html`` and ``:file:``; a figure's caption embeds its fit's paragraph the same way.
Both are plain HTML with inline styles: the report's stylesheet resets tables to nothing.
"""

from __future__ import annotations

import html
import math
from urllib.parse import quote

import numpy as np

# the hex values of matplotlib's tab:green, tab:red, tab:orange: the figures' title colours
VERDICT_COLOURS = {
    "converged": "#2ca02c",
    "not converged": "#d62728",
    "converged, poor approximation": "#ff7f0e",
}
TABLE_ID = "sviflow-verdicts"


def _number(value, digits: int = 3) -> str:
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "&infin;" if value > 0 else "-&infin;"
    return f"{value:.{digits}g}"


def _worst(values) -> float:
    """The largest of the seeds' values, an infinite one included (a seed whose k-hat is
    infinite is the worst); NaN (not computed) only when no seed has a number."""
    values = np.asarray(values, dtype=np.float64).ravel()
    known = values[~np.isnan(values)]
    return float(np.max(known)) if known.size else math.nan


def verdict_numbers(check) -> dict:
    """The numbers of a fit's verdict, as the landing page shows them: k-hat (worst seed) and its
    limit, KL(q || p) (worst seed) where the exact log evidence is known, and the worst distances
    to the reference (|mean error| in reference sds, sd ratio farthest from 1, energy
    distance), the stopping rule's reason and the steps run."""
    quality = check.get("quality", {})
    stop = check.attrs.get("stop") or {}
    sites = quality.get("sites") or {}
    errors = [
        abs(float(v))
        for row in sites.values()
        for v in np.ravel(row.get("mean_error_sd_per_seed", row.get("mean_error_sd", np.nan)))
    ]
    ratios = [
        float(v)
        for row in sites.values()
        for v in np.ravel(row.get("sd_ratio_per_seed", row.get("sd_ratio", np.nan)))
    ]
    ratios = [r for r in ratios if np.isfinite(r) and r > 0]
    mass_outside = quality.get("mass_outside") or {}
    return {
        "khat": _worst(quality["khat"]) if "khat" in quality else math.nan,
        "khat_limit": float(check.attrs.get("khat_limit", math.nan)),
        "kl": _worst(quality["kl"]) if "kl" in quality else math.nan,
        # the guide's support is wider than the model's: KL is infinite, whatever the estimate
        "kl_infinite": any(np.any(np.asarray(m) > 0) for m in mass_outside.values()),
        "mean_error_sd": max(errors) if errors else math.nan,
        "sd_ratio": max(ratios, key=lambda r: abs(math.log(r))) if ratios else math.nan,
        "energy_distance": float(quality.get("energy_distance", math.nan)),
        "stop": str(stop.get("reason", "")),
        "steps_run": stop.get("steps_run"),
    }


def _verdict_text(check) -> str:
    return "DIVERGED: not a result" if check.attrs.get("diverged") else check.attrs["verdict"]


def _badge(check) -> str:
    colour = VERDICT_COLOURS.get(check.attrs["verdict"], "#555555")
    return (
        f'<span class="sviflow-verdict" style="background:{colour};color:white;'
        f'padding:1px 6px;border-radius:3px;white-space:nowrap">'
        f"{html.escape(_verdict_text(check))}</span>"
    )


def _distance_cell(numbers: dict) -> str:
    parts = []
    if np.isfinite(numbers["kl"]) or numbers["kl_infinite"]:
        if numbers["kl_infinite"]:
            parts.append(f"KL &infin; (support wider; estimate {_number(numbers['kl'])} nats)")
        else:
            parts.append(f"KL {_number(numbers['kl'])} nats")
    if np.isfinite(numbers["mean_error_sd"]):
        parts.append(f"mean off &le; {_number(numbers['mean_error_sd'], 2)} sd")
    if np.isfinite(numbers["sd_ratio"]):
        parts.append(f"sd &times;{_number(numbers['sd_ratio'], 3)}")
    if np.isfinite(numbers["energy_distance"]):
        parts.append(f"energy {_number(numbers['energy_distance'], 2)}")
    return "<br>".join(parts) or "no reference"


CELL = "border:1px solid #ccc;padding:3px 4px;vertical-align:top;text-align:left"


def _reasons_cell(check) -> str:
    """The failing checks in a few words, and every reason in full behind a click: the landing
    page's column is narrow (Snakemake gives the description 32 rem beside the rule graph)."""
    problems = check.attrs.get("problems") or []
    short = "; ".join(problems) if problems else "every check passed"
    reasons = check.attrs.get("reasons") or []
    full = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons)
    return (
        (
            f'{html.escape(short)}<details><summary style="cursor:pointer;color:#555">'
            f'the reasons in full</summary><ul style="margin:0;padding-left:1.1em">{full}</ul>'
            "</details>"
        )
        if full
        else html.escape(short)
    )


def verdict_table(fits: list[str], checks: list, linked: list[str] | None = None) -> str:
    """One HTML table, a row per fit: the fit with a link to its figures (the report's folder of
    that name, through Snakemake's ``app.showCategory``), the verdict (coloured), its reasons in
    words, k-hat, KL or the distances to the reference, and why the fit stopped. ``linked``:
    the fits whose figures are in the report (default: all; a batched fit's are not)."""
    header = ["fit", "verdict", "reasons", "PSIS k-hat", "against the reference", "stopped"]
    rows = []
    for fit, check in zip(fits, checks):
        numbers = verdict_numbers(check)
        khat = (
            f"{_number(numbers['khat'], 2)} (limit {_number(numbers['khat_limit'], 2)})"
            if not np.isnan(numbers["khat"])  # an infinite k-hat is a verdict's number too
            else "n/a"
        )
        stop = html.escape(numbers["stop"] or "")
        if numbers["steps_run"] is not None and str(numbers["steps_run"]) not in stop:
            stop += f", {int(numbers['steps_run'])} steps"
        # percent-encoded, as Snakemake's own links to a category: the browser decodes it
        link = (
            f'<a class="sviflow-figures" href="javascript:app.showCategory(&quot;{quote(fit)}&quot;)" '
            f'style="color:#1f77b4;text-decoration:underline">figures</a>'
            if linked is None or fit in linked
            else "(no figures in the report)"
        )
        cells = [
            f"<b>{html.escape(fit)}</b><br>{link}",
            _badge(check),
            _reasons_cell(check),
            khat,
            _distance_cell(numbers),
            stop,
        ]
        rows.append(
            f'<tr data-fit="{html.escape(fit)}">'
            + "".join(f'<td style="{CELL}">{cell}</td>' for cell in cells)
            + "</tr>"
        )
    head = "".join(f'<th style="{CELL};background:#eee">{html.escape(h)}</th>' for h in header)
    return (
        f'<table id="{TABLE_ID}" style="border-collapse:collapse;font-size:0.8em;'
        f'line-height:1.35;margin:0.5em 0 1em 0"><thead><tr>{head}</tr></thead><tbody>'
        + "\n".join(rows)
        + "</tbody></table>\n"
    )


def verdict_paragraph(fit: str, check) -> str:
    """The verdict of one fit and its reasons in full, for the captions of its figures (whose
    titles carry only the verdict and its reasons in a few words)."""
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in check.attrs.get("reasons") or [])
    return (
        f'<div class="sviflow-reasons"><p>Verdict of fit <b>{html.escape(fit)}</b>: '
        f"{_badge(check)}</p><ul>{reasons}</ul></div>\n"
    )
