"""The HTML report of the tiny run, opened in a real headless browser (Debian's chromium).

Snakemake's report is a single-page React app: the figures of a fit appear only after a click on
the fit's folder, and no URL reaches that view, so ``chromium --dump-dom`` shows the landing page
only. The browser is therefore driven like a user, through the Chrome DevTools Protocol over
``--remote-debugging-pipe`` (JSON messages ended by NUL on file descriptors 3 and 4; standard
library only): click each folder, list its results, click each result's eye (the figure is shown)
and its info button (its caption is shown), read the DOM, take screenshots.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_snakemake

from sviflow.h5io import read_artifact
from sviflow.verdicts import VERDICT_COLOURS

pytestmark = [pytest.mark.workflow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# what plot.smk's report() declarations give each fit of the tiny config: figure labels
FIGURES = {
    "beta": {"loss", "trajectories", "posterior", "mock observations"},
    "beta_4_particles": {"loss", "trajectories", "posterior", "mock observations"},
    "normal": {"loss", "trajectories", "posterior", "mock observations"},
    "multimodal": {"loss", "trajectories", "posterior"},
    "autoguide": {"loss", "trajectories", "posterior", "covariance"},
}
# a phrase of each caption (workflow/report/*.rst), to tell that the right caption is shown
CAPTIONS = {
    "loss": "Loss (negative ELBO) at every step",
    "trajectories": "mean +- sd (band) of every latent component",
    "posterior": "posterior samples",
    "mock observations": "Mock observations",
    "covariance": "auto_scale_tril",
}
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)


class Browser:
    """Headless chromium driven through the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, profile: Path):
        to_chromium, self._write = os.pipe()
        self._read, from_chromium = os.pipe()

        def as_fds_3_and_4():  # in the child: its ends of the pipes become fds 3 and 4
            reader = fcntl.fcntl(to_chromium, fcntl.F_DUPFD_CLOEXEC, 10)
            writer = fcntl.fcntl(from_chromium, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(reader, 3)
            os.dup2(writer, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=as_fds_3_and_4,
        )
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer, self._id, self.events, self.session = b"", 0, [], None

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer")
            if select.select([self._read], [], [], left)[0]:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe (exit {self.process.poll()})")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def js(self, expression: str):
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"never true in the page: {expression}")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
            self.process.wait(timeout=20)
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


def _not_blank(png: bytes, min_colours: int = 50):
    """(grey-level standard deviation, number of colours): a blank page has ~0 and ~1."""
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("RGB")
    spread = ImageStat.Stat(image.convert("L")).stddev[0]
    colours = len(image.getcolors(maxcolors=1 << 20) or [])
    assert image.width >= 800 and image.height >= 500, image.size
    assert spread > 20 and colours >= min_colours, (spread, colours)
    return spread, colours


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> Path:
    """``snakemake --report`` of the tiny run, written outside the run's directory."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    run_snakemake(tiny_run, "--report", str(path), *TINY)
    return path


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    """The report open in headless chromium, its app rendered."""
    if CHROMIUM is None:
        pytest.skip(
            "chromium is not installed (apt-get install -y chromium); the report "
            "cannot be opened in a browser"
        )
    browser = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        browser.open(report.as_uri())
        browser.wait_for(
            "document.readyState === 'complete' && typeof app !== 'undefined' "
            "&& document.querySelectorAll('nav a').length > 0"
        )
        yield browser
    finally:
        browser.close()


HOME = "document.querySelector('nav ol a').click()"  # the house, first in the breadcrumb
CLICK_FOLDER = """(name => {{
  const a = [...document.querySelectorAll('nav a')].find(a => a.innerText.trim() === name);
  if (!a) return false; a.click(); return true; }})({name})"""
ROWS = "[...document.querySelectorAll('nav tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim()))"
BREADCRUMB = "document.querySelector('nav ol').innerText"
SHOWN_IMAGE = "document.querySelector('#app > div > div:last-child img')"  # the content pane's


def _open_folder(page: Browser, name: str) -> list[list[str]]:
    """Home, then the folder ``name`` of the Results menu: the rows of its table of results."""
    page.js(HOME)
    page.wait_for("[...document.querySelectorAll('nav span')].some(s => s.innerText === 'Workflow')")
    assert page.js(CLICK_FOLDER.format(name=json.dumps(name))), f"no folder {name} in the menu"
    page.wait_for(
        f"{BREADCRUMB}.includes({json.dumps(name)}) && document.querySelectorAll('nav tbody tr').length > 0"
    )
    return page.js(ROWS)


def _click_row(page: Browser, row: int, button: int) -> None:
    """Click the eye (0) or the info button (1) of a row of the open folder's table."""
    page.js(
        f"document.querySelectorAll('nav tbody tr')[{row}]"
        f".querySelectorAll('td:last-child a')[{button}].click()"
    )


def _info(page: Browser, path: str) -> str:
    """The info panel's text, once it shows ``path``."""
    page.wait_for(f"{BREADCRUMB}.includes({json.dumps(path)})")
    return page.js("document.querySelector('nav').innerText")


def test_report_is_one_self_contained_file(report):
    text = report.read_text()
    # every figure is embedded, once: those of the fits and the comparison
    embedded = Counter(re.findall(r"data:image/png;charset=utf8;filename=(\w+)\.png;base64,", text))
    expected = Counter(f.replace(" ", "_") for figures in FIGURES.values() for f in figures)
    assert embedded == expected + Counter(["particles"])
    assert 'src="http' not in text and "src='http" not in text  # nothing to fetch: opens offline


def _check(run: Path, fit: str):
    return read_artifact(run / "results" / "checks" / f"{fit}.h5", "check")


def _rgb(hex_colour: str) -> str:
    """'#2ca02c' as the browser's computed style gives it: 'rgb(44, 160, 44)'."""
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def _landing(page: Browser) -> None:
    """The report as it opens: the landing page, nothing clicked."""
    mark = len(page.events)
    page.send("Page.reload")
    deadline = time.monotonic() + 30
    while not any(e.get("method") == "Page.loadEventFired" for e in page.events[mark:]):
        if time.monotonic() > deadline:
            raise TimeoutError("the report did not load again")
        page.js("0")  # reads chromium's messages, the load event among them
        time.sleep(0.05)
    page.wait_for(
        "document.readyState === 'complete' && typeof app !== 'undefined' "
        "&& document.querySelectorAll('nav a').length > 0"
    )


VERDICT_ROWS = """[...document.querySelectorAll('#sviflow-verdicts tbody tr')].map(r => {
  const badge = r.querySelector('.sviflow-verdict'), box = badge.getBoundingClientRect();
  return {fit: r.dataset.fit, verdict: badge.innerText.trim(),
          colour: getComputedStyle(badge).backgroundColor, shown: box.width > 0 && box.height > 0,
          cells: [...r.cells].map(c => c.innerText.trim())}; })"""


def test_landing_page_shows_every_fits_verdict(page, tiny_run, tmp_path):
    """Issue 18.1: the first page a user sees has a table, a row per fit, with the verdict as the
    check file has it (coloured), its reasons, k-hat, KL or the distances, and the stop."""
    _landing(page)
    rows = page.wait_for(f"document.querySelector('#sviflow-verdicts') && {VERDICT_ROWS}")
    assert [row["fit"] for row in rows] == list(FIGURES)  # every fit, in the config's order
    for row in rows:
        check = _check(tiny_run, row["fit"])
        fit, verdict, reasons, khat, against, stopped = row["cells"]
        assert row["shown"] and row["verdict"] == verdict == check.attrs["verdict"], row
        assert row["colour"] == _rgb(VERDICT_COLOURS[check.attrs["verdict"]]), row
        assert fit.startswith(row["fit"]) and fit.endswith("figures")
        assert all(problem in reasons for problem in check.attrs["problems"]), (
            reasons,
            check.attrs["problems"],
        )
        worst = float(np.max(check["quality"]["khat"]))
        assert (f"{worst:.2g}" if np.isfinite(worst) else "∞") in khat, khat
        assert f"limit {check.attrs['khat_limit']:.2g}" in khat, khat
        assert f"KL {float(np.max(check['quality']['kl'])):.3g}" in against or "KL ∞" in against, against
        assert check.attrs["stop"]["reason"] in stopped, stopped
    # the reasons in full, one click away: every reason of the check in the row's details
    page.js("document.querySelectorAll('#sviflow-verdicts details').forEach(d => d.open = true)")
    rows = page.js(VERDICT_ROWS)
    for row in rows:
        assert all(reason in row["cells"][2] for reason in _check(tiny_run, row["fit"]).attrs["reasons"])
    # the table sits in the description's column, clear of the workflow graph beside it
    table_right = page.js("document.querySelector('#sviflow-verdicts').getBoundingClientRect().right")
    graph_left = page.js("document.querySelector('#rulegraph').getBoundingClientRect().left")
    assert table_right <= graph_left, (table_right, graph_left)
    png = page.screenshot()
    (tmp_path / "verdicts.png").write_bytes(png)
    _not_blank(png)


@pytest.mark.parametrize("fit", sorted(FIGURES))
def test_verdict_table_links_to_each_fits_figures(page, fit):
    _landing(page)
    page.wait_for("document.querySelector('#sviflow-verdicts') !== null")
    page.js(
        f"document.querySelector('#sviflow-verdicts tr[data-fit={json.dumps(fit)}] "
        "a.sviflow-figures').click()"
    )
    page.wait_for(
        f"{BREADCRUMB}.includes({json.dumps(fit)}) && document.querySelectorAll('nav tbody tr').length > 0"
    )
    assert sorted(row[0] for row in page.js(ROWS)) == sorted(FIGURES[fit])


def test_workflow_graph_draws_each_rule_once(report):
    """Issue 18.5: Snakemake's report keeps one node per rule per level of the DAG; fits with
    and without data at different levels drew fit, reference, predict and check twice."""
    text = report.read_text()
    start = text.index("rulegraph_spec = ") + len("rulegraph_spec = ")
    spec, _ = json.JSONDecoder().raw_decode(text[start:])
    (nodes,) = [data["values"] for data in spec["data"] if data["name"] == "node-data"]
    drawn = Counter(node["rule"] for node in nodes)
    assert drawn == Counter(
        {
            rule: 1
            for rule in (
                "model",
                "simulate",
                "fit",
                "reference",
                "predict",
                "check",
                "compare",
                "plot",
                "plot_with_mock",
                "plot_with_covariance",
                "summarize",
                "all",
            )
        }
    ), drawn


def test_landing_page_lists_every_fit_and_renders(page, tmp_path):
    _landing(page)
    text = page.js("document.querySelector('#app').innerText")
    menu = text.split("RESULTS", 1)[1].split("\n\n", 1)[0].split()
    assert menu == sorted([*FIGURES, "comparisons", "summary"])
    assert "Stochastic Variational Inference" in text  # workflow.rst, rendered
    for fit in FIGURES:  # workflow.rst lists the fits from the config
        assert f"{fit}: model" in text
    png = page.screenshot()
    (tmp_path / "landing.png").write_bytes(png)
    _not_blank(png)
    errors = [e for e in page.events if e.get("method") == "Runtime.exceptionThrown"]
    assert errors == [], errors


@pytest.mark.parametrize("fit", sorted(FIGURES))
def test_each_fit_folder_shows_its_figures_with_captions(page, tiny_run, fit):
    rows = _open_folder(page, fit)
    header = page.js("[...document.querySelectorAll('nav thead th')].map(c => c.innerText.trim())")
    assert [h.lower() for h in header if h] == ["figure", "fit"]
    assert sorted(row[0] for row in rows) == sorted(FIGURES[fit])
    assert {row[1] for row in rows} == {fit}
    for index, (figure, *_) in enumerate(rows):
        name = figure.replace(" ", "_")
        # the eye shows the figure: the very PNG the plot job wrote, decoded by the browser
        _click_row(page, index, 0)
        source = page.wait_for(
            f"(() => {{ const i = {SHOWN_IMAGE}; return i && i.complete && "
            "i.naturalWidth > 0 && i.src.includes('filename=" + name + ".png') "
            "? i.src : null; })()"
        )
        width, height = page.js(f"[{SHOWN_IMAGE}.naturalWidth, {SHOWN_IMAGE}.naturalHeight]")
        assert width >= 300 and height >= 200, (figure, width, height)
        embedded = base64.b64decode(source.split("base64,", 1)[1])
        assert embedded == (tiny_run / "results" / "figures" / fit / f"{name}.png").read_bytes()
        # the info button shows the caption, rendered for this fit
        _click_row(page, index, 1)
        info = _info(page, f"results/figures/{fit}/{name}.png")
        description = info.split("DESCRIPTION", 1)[1].split("SIZE", 1)[0]
        assert CAPTIONS[figure] in description, info
        assert re.search(rf"\bfit {re.escape(fit)}\b", description), description  # this fit's
        assert "{{" not in description  # the Jinja of the caption was rendered
        # the verdict in full (the figure's title has it in a few words)
        check = _check(tiny_run, fit)
        assert f"Verdict of fit {fit}: {check.attrs['verdict']}" in description, description
        assert all(reason in description for reason in check.attrs["reasons"]), description
        _open_folder(page, fit)


def test_a_figure_view_is_a_real_picture(page, tiny_run, tmp_path):
    rows = _open_folder(page, "beta")
    _click_row(page, [row[0] for row in rows].index("loss"), 0)
    expected = base64.b64encode((tiny_run / "results" / "figures" / "beta" / "loss.png").read_bytes())
    page.wait_for(
        f"(() => {{ const i = {SHOWN_IMAGE}; return i && i.complete && i.naturalWidth > 0 "
        f"&& i.src.endsWith({json.dumps(expected.decode())}); }})()"
    )
    png = page.screenshot()
    (tmp_path / "beta-loss.png").write_bytes(png)
    _not_blank(png, min_colours=200)


def test_summary_and_comparison_are_listed_with_captions(page, tiny_run):
    rows = _open_folder(page, "summary")
    assert rows == [["results/summary.csv", ""], ["results/verdicts.html", ""]]
    # the eye is a download of the table itself
    href = page.js("document.querySelector('nav tbody tr td:last-child a').getAttribute('href')")
    assert href.startswith("data:text/csv")
    table = base64.b64decode(href.split("base64,", 1)[1])
    assert table == (tiny_run / "results" / "summary.csv").read_bytes()
    _click_row(page, 0, 1)
    info = _info(page, "results/summary.csv")
    assert "az.summary" in info and ", ".join(FIGURES) in info, info

    rows = _open_folder(page, "comparisons")
    assert [row[0] for row in rows] == ["particles"]
    _click_row(page, 0, 1)
    info = _info(page, "results/figures/comparisons/particles.png")
    assert "Loss curves of the fits beta, beta_4_particles" in info, info
