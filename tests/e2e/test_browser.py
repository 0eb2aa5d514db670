"""The pages in a real browser: headless Chromium renders every table and chart, and a screenshot shows them.

Skipped, saying so, where no Chromium can be started (CI installs Debian's `chromium` where it can).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from harness.records.store import load_records
from tests.helpers import invoke

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH = 1280
TIMEOUT = 180
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Chromium:
    def __init__(self, executable: str, profile: Path):
        self.executable, self.profile = executable, profile

    def run(self, url: str, *flags: str) -> subprocess.CompletedProcess:
        command = [
            self.executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={self.profile}",
            *flags,
            url,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)

    def dom(self, page: Path) -> str:
        done = self.run(page.as_uri(), "--dump-dom")
        assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
        return done.stdout

    def screenshot(self, page: Path, png: Path, height: int) -> None:
        done = self.run(page.as_uri(), f"--screenshot={png}", f"--window-size={WIDTH},{height}")
        assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]


def start_chromium(folder: Path) -> Chromium:
    """A Chromium that has shown it can render a page, or a skip saying why there is none."""
    executable = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if executable is None:
        pytest.skip(
            f"no browser to test the pages in: none of {', '.join(BROWSERS)} is on PATH "
            "(on Debian: apt-get install chromium)"
        )
    probe = folder / "probe.html"
    probe.write_text("<!DOCTYPE html><html><body><p>probe</p></body></html>")
    browser = Chromium(executable, folder / "profile")
    try:
        done = browser.run(probe.as_uri(), "--dump-dom")
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"{executable} could not be started: {err}")
    if done.returncode != 0 or "probe" not in done.stdout:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"{executable} could not be started (exit {done.returncode}): {last}")
    return browser


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Chromium:
    return start_chromium(tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the screenshots stay after the run, to be looked at."""
    return tmp_path_factory.mktemp("screenshots")


class Elements(HTMLParser):
    """The ids of the rendered tables and figures, and which figures hold an <svg>."""

    def __init__(self):
        super().__init__()
        self.tables, self.figures, self.charts, self.open_figure = set(), set(), set(), None

    def handle_starttag(self, tag, attrs):
        ident = dict(attrs).get("id")
        if tag == "table":
            self.tables.add(ident)
        elif tag == "figure":
            self.figures.add(ident)
            self.open_figure = ident
        elif tag == "svg" and self.open_figure:
            self.charts.add(self.open_figure)

    def handle_endtag(self, tag):
        if tag == "figure":
            self.open_figure = None


def rendered(dom: str) -> Elements:
    parser = Elements()
    parser.feed(dom)
    return parser


def check_png(png: Path, height: int) -> None:
    """A valid PNG of the window's size that is not blank: a good part of it inked, in many colours."""
    head = png.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", "not a PNG"
    assert struct.unpack(">II", head[16:24]) == (WIDTH, height)
    with Image.open(png) as image:
        image.load()
        grey = image.convert("L").histogram()
        inked = sum(grey[:200]) / (WIDTH * height)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert inked > 0.02, f"the screenshot is almost blank ({inked:.1%} inked)"
    assert colours is None or len(colours) > 50, "the screenshot has too few colours to hold tables and charts"


def test_the_leaderboard_renders_every_table_and_chart(chromium, screenshots, scored_results, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(scored_results, results)
    result = invoke("leaderboard", "--results", results, "--json")
    assert result.exit_code == 0, result.output
    page = results / "leaderboard.html"
    dom = chromium.dom(page)
    seen = rendered(dom)
    assert {"s1-accepted", "s1-systems", "s1-rejected"} <= seen.tables
    assert {"s1-speedups", "s1-losses"} <= seen.charts
    for text in (
        "torch-float32",
        "lr-change",
        "human reference 4x",
        "about 52x (April 2026)",
        "published, different harness",
    ):
        assert text in dom
    png, height = screenshots / "leaderboard.png", 2600
    chromium.screenshot(page, png, height)
    check_png(png, height)


def test_a_run_page_renders_every_table_and_chart(chromium, screenshots, scored_results, tmp_path):
    path = next(p for p, rec in load_records(scored_results) if rec.verdict == "rejected")
    page = tmp_path / "run.html"
    result = invoke("report", path, "--out", page)
    assert result.exit_code == 0, result.output
    seen = rendered(chromium.dom(page))
    assert {"facts", "trials", "audit-trial-1", "audit-trial-2"} <= seen.tables
    assert {"audit", "loss", "usage"} <= seen.charts
    png, height = screenshots / "run.png", 2400
    chromium.screenshot(page, png, height)
    check_png(png, height)


def test_an_attempts_timeline_renders_its_chart_and_tables(chromium, screenshots, graded_attempt):
    page = Path(graded_attempt["grade"]["timeline"])
    dom = chromium.dom(page)
    seen = rendered(dom)
    assert {"states", "workloads", "ladder"} <= seen.tables
    assert {"timeline"} <= seen.charts
    for text in ("human reference 4x (published, different harness)", "best so far", "rejected state", "working tree"):
        assert text in dom
    png, height = screenshots / "timeline.png", 1400
    chromium.screenshot(page, png, height)
    check_png(png, height)


def test_no_browser_means_a_skip_that_says_so(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("PATH", os.fspath(tmp_path_factory.mktemp("empty-path")))
    with pytest.raises(pytest.skip.Exception, match="no browser"):
        start_chromium(tmp_path_factory.mktemp("unused"))
