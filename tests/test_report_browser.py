"""report.html in a real browser: the system's headless Chromium, driven over the DevTools pipe.

Checks from the live DOM that the suspects grid and the heatmap are visible, that the class filter
(select and URL hash) changes which suspects are shown, and that 1,000 thumbnails open quickly.
Screenshots are kept as artefacts in $LABELAUDIT_TEST_ARTIFACTS (default: the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from browser.chromium import CHROMIUM, Chromium
from labelaudit.cli.app import app
from labelaudit.report.parquet import write_parquet
from labelaudit.report.schema import DATA_ISSUE_COLUMNS, SAMPLES_SCHEMA

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed "
                                "(Debian package `chromium`)")
runner = CliRunner()

VISIBLE_CARDS = "[...document.querySelectorAll('#suspect-grid .card')].filter(c => c.getClientRects().length > 0)"


def artefact_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("LABELAUDIT_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def run_dir(scanned_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(scanned_run, copy, ignore=shutil.ignore_patterns("model"))
    return copy


def visible(element_id: str) -> str:
    """JS: whether the element takes up space on the page and is not hidden by CSS."""
    return (f"(() => {{ const e = document.getElementById({json.dumps(element_id)}); if (!e) return false;"
            " const r = e.getBoundingClientRect(), s = getComputedStyle(e);"
            " return r.width > 50 && r.height > 50 && s.visibility === 'visible' && s.display !== 'none'; })()")


def choose(select_id: str, value: str) -> str:
    """JS: pick ``value`` in a <select> the way a user does (the page listens for 'change')."""
    return (f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); s.value = {json.dumps(value)};"
            " s.dispatchEvent(new Event('change')); return s.value; })()")


def test_report_page_in_chromium(run_dir, tmp_path):
    # the default view: the flagged rows (at most 100; the tiny scan flags fewer), in rank order
    assert runner.invoke(app, ["report", "-o", str(run_dir), "-q"]).exit_code == 0
    samples = pd.read_parquet(run_dir / "samples.parquet")
    suspects = samples[samples["is_issue"] == True].sort_values("rank")  # noqa: E712
    given_counts = suspects["given_label"].value_counts()
    assert len(given_counts) >= 2, "the tiny scan should flag rows of at least two classes"
    label = given_counts.index[0]
    n_classes = len(json.loads((run_dir / "run.json").read_text())["classes"])
    url = (run_dir / "report.html").resolve().as_uri()
    artefacts = artefact_dir(tmp_path)

    with Chromium(width=1200, height=900) as browser:
        browser.open(url)
        assert browser.evaluate(visible("suspect-grid")) and browser.evaluate(visible("heatmap"))
        assert browser.evaluate("document.querySelectorAll('#heatmap td.cell').length") == n_classes ** 2
        colours = browser.evaluate("[...document.querySelectorAll('#heatmap td.cell')]"
                                   ".map(c => getComputedStyle(c).backgroundColor)")
        assert len(set(colours)) > 2  # a heatmap, not a plain table
        assert browser.evaluate(f"{VISIBLE_CARDS}.length") == len(suspects)
        screenshot = browser.screenshot(artefacts / "report.png")
        browser.screenshot(artefacts / "report-full.png", full_page=True)

        # The first thumbnail really decodes once it is on screen.
        browser.evaluate("document.getElementById('suspect-grid').scrollIntoView()")
        browser.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 200)))")
        assert browser.evaluate("(() => { const i = document.querySelector('#suspect-grid img');"
                                " return i.complete && i.naturalWidth; })()") == 96

        # Filtering by given label, then by suggested label, then back to all.
        assert browser.evaluate(choose("class-filter", label)) == label
        shown = browser.evaluate(f"{VISIBLE_CARDS}.map(c => c.dataset.given)")
        assert shown == [label] * int(given_counts[label])
        assert browser.evaluate("location.hash") == "#" + browser.evaluate(
            f"new URLSearchParams({{class: {json.dumps(label)}}}).toString()")
        assert browser.evaluate("document.getElementById('shown-count').textContent") == \
            f"{given_counts[label]} of {len(suspects)} shown"
        browser.screenshot(artefacts / "report-filtered.png")
        browser.evaluate(choose("class-by", "suggested"))
        assert browser.evaluate(f"{VISIBLE_CARDS}.length") == int((suspects["suggested_label"] == label).sum())
        browser.evaluate(choose("class-filter", ""))
        assert browser.evaluate(f"{VISIBLE_CARDS}.length") == len(suspects)

        # A link with the filter in its hash opens filtered.
        browser.open("about:blank")
        browser.open(f"{url}#class={label}")
        assert browser.evaluate("document.getElementById('class-filter').value") == label
        assert browser.evaluate(f"{VISIBLE_CARDS}.length") == int(given_counts[label])
    print(f"screenshots: {screenshot} (and report-full.png, report-filtered.png beside it)")


def test_a_thousand_thumbnails_open_quickly(run_dir, tmp_path):
    samples = pd.read_parquet(run_dir / "samples.parquet")
    many = samples.iloc[[i % len(samples) for i in range(1000)]].reset_index(drop=True)
    many["is_issue"] = True
    many["rank"] = range(1, 1001)
    many = many.drop(columns=DATA_ISSUE_COLUMNS)  # null: the repeated rows would fill the duplicates section
    write_parquet(many, run_dir / "samples.parquet", schema=SAMPLES_SCHEMA)

    started = time.perf_counter()
    result = runner.invoke(app, ["report", "-o", str(run_dir), "--top", "1000", "-q"])
    seconds_to_write = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    page = run_dir / "report.html"
    assert page.read_text(encoding="utf-8").count('src="data:image/jpeg;base64,') == 1000
    assert page.stat().st_size < 8_000_000
    assert seconds_to_write < 30

    with Chromium(width=1200, height=900) as browser:
        started = time.perf_counter()
        browser.open(page.resolve().as_uri())
        seconds_to_open = time.perf_counter() - started
        assert browser.evaluate("document.querySelectorAll('#suspect-grid img').length") == 1000
        browser.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        browser.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 300)))")
        assert browser.evaluate("(() => { const i = [...document.querySelectorAll('#suspect-grid img')].pop();"
                                " return i.complete && i.naturalWidth; })()") == 96
        browser.screenshot(artefact_dir(tmp_path) / "report-1000-bottom.png")
    print(f"1000 thumbnails: {page.stat().st_size / 1e6:.1f} MB written in {seconds_to_write:.1f} s, "
          f"opened in {seconds_to_open:.1f} s")
    assert seconds_to_open < 15  # a few seconds on a busy 2-core machine; minutes would mean a regression
