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
VERDICT_COLOURS = {"converged": "#2ca02c", "not converged": "#d62728",
                   "converged, poor approximation": "#ff7f0e"}
TABLE_ID = "sviflow-verdicts"


def _number(value, digits: int = 3) -> str:
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "&infin;" if value > 0 else "-&infin;"
    return f"{value:.{digits}g}"


def _worst(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)] if values.size else values
    if not values.size:
        return math.nan
    return float(np.max(finite)) if finite.size else float(np.max(values))


def verdict_numbers(check) -> dict:
    """The numbers of a fit's verdict, as the landing page shows them: k-hat (worst seed) and its
    limit, KL(q || p) (worst seed) where the exact log evidence is known, and the worst distances
    to the reference (|mean error| in reference sds, sd ratio farthest from 1, energy
    distance), the stopping rule's reason and the steps run."""
    quality = check.get("quality", {})
    stop = check.attrs.get("stop") or {}
    sites = quality.get("sites") or {}
    errors = [abs(float(v)) for row in sites.values()
              for v in np.ravel(row.get("mean_error_sd_per_seed", row.get("mean_error_sd", np.nan)))]
    ratios = [float(v) for row in sites.values()
              for v in np.ravel(row.get("sd_ratio_per_seed", row.get("sd_ratio", np.nan)))]
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
    return (f'<span class="sviflow-verdict" style="background:{colour};color:white;'
            f'padding:1px 6px;border-radius:3px;white-space:nowrap">'
            f"{html.escape(_verdict_text(check))}</span>")


def _distance_cell(numbers: dict) -> str:
    parts = []
    if np.isfinite(numbers["kl"]) or numbers["kl_infinite"]:
        if numbers["kl_infinite"]:
            parts.append(f"KL(q&#8214;p) &infin; (the guide's support is wider; estimate "
                         f"{_number(numbers['kl'])} nats)")
        else:
            parts.append(f"KL(q&#8214;p) {_number(numbers['kl'])} nats")
    if np.isfinite(numbers["mean_error_sd"]):
        parts.append(f"mean off by &le; {_number(numbers['mean_error_sd'], 2)} ref. sd")
    if np.isfinite(numbers["sd_ratio"]):
        parts.append(f"sd &times;{_number(numbers['sd_ratio'], 3)} of the ref.")
    if np.isfinite(numbers["energy_distance"]):
        parts.append(f"energy distance {_number(numbers['energy_distance'], 2)}")
    return "<br>".join(parts) or "no reference"


CELL = "border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left"


def verdict_table(fits: list[str], checks: list) -> str:
    """One HTML table, a row per fit: the verdict (coloured), its reasons in words, k-hat, KL or
    the distances to the reference, why the fit stopped, and a link to the fit's figures (the
    report's folder of that name: Snakemake's ``app.showCategory``)."""
    header = ["fit", "verdict", "reasons", "PSIS k-hat", "against the reference", "stopped",
              "figures"]
    rows = []
    for fit, check in zip(fits, checks):
        numbers = verdict_numbers(check)
        khat = (f"{_number(numbers['khat'], 2)} (limit {_number(numbers['khat_limit'], 2)})"
                if np.isfinite(numbers["khat"]) else "n/a")
        stop = html.escape(numbers["stop"] or "")
        if numbers["steps_run"] is not None and str(numbers["steps_run"]) not in stop:
            stop += f" ({int(numbers['steps_run'])} steps)"
        # percent-encoded, as Snakemake's own links to a category: the browser decodes it
        link = (f'<a href="javascript:app.showCategory(&quot;{quote(fit)}&quot;)" '
                f'style="color:#1f77b4;text-decoration:underline">figures of {html.escape(fit)}</a>')
        cells = [f"<code>{html.escape(fit)}</code>", _badge(check),
                 html.escape(check.attrs.get("sentence") or ""), khat, _distance_cell(numbers),
                 stop, link]
        rows.append(f'<tr data-fit="{html.escape(fit)}">'
                    + "".join(f'<td style="{CELL}">{cell}</td>' for cell in cells) + "</tr>")
    head = "".join(f'<th style="{CELL};background:#eee">{html.escape(h)}</th>' for h in header)
    return (f'<table id="{TABLE_ID}" style="border-collapse:collapse;font-size:0.85em;'
            f'margin:0.5em 0 1em 0"><thead><tr>{head}</tr></thead><tbody>'
            + "\n".join(rows) + "</tbody></table>\n")


def verdict_paragraph(fit: str, check) -> str:
    """The verdict of one fit and its reasons in full, for the captions of its figures (whose
    titles carry only the verdict and its reasons in a few words)."""
    return (f'<p class="sviflow-reasons">Verdict of fit <code>{html.escape(fit)}</code>: '
            f"{_badge(check)} {html.escape(check.attrs.get('sentence') or '')}</p>\n")
