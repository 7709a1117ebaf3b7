"""report.html in a real headless Chromium: merge two clusters into a named group, export review.csv, reload, and
apply the exported file with --review. Skipped when no Chromium is installed (`bash install.sh --dev` installs it)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from crop_cluster.cli import main
from browser import Browser, find_chromium
from conftest import PALETTE, draw_crop
from crop_cluster.outputs.review import read_review
from test_report import GEOMETRID, classified_table, write_classified_report

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (bash install.sh --dev)")


@pytest.fixture
def browser():
    session = Browser(CHROMIUM)
    yield session
    session.close()


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    """The file's text once it exists and has stopped growing (Chromium may still be writing it)."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if text and text == previous:
            return text
        previous = text
        time.sleep(0.1)
    raise TimeoutError(f"{path} was not downloaded")


def click(browser: Browser, selector: str) -> None:
    assert browser.evaluate(f"(() => {{ const node = document.querySelector({selector!r}); "
                            f"if (!node) return false; node.click(); return true; }})()"), selector


def test_merge_export_reload_and_apply(tmp_path, fake_backend, browser):
    crops = tmp_path / "crops"
    for colour in range(3):
        for view in range(3):
            draw_crop(crops / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)
    draw_crop(crops / "<img src=x onerror=alert(1)>.png", PALETTE[5], seed=7)
    out = tmp_path / "out"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "-th", "0.95"]) == 0
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.browser_call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))

    browser.call("Page.navigate", url=(out / "report.html").as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === 'true'")
    assert browser.evaluate("[...document.querySelectorAll('section[data-cluster]')].map(s => s.dataset.cluster)") \
        == ["0", "1", "2", "-1"]
    # the crop named like markup is shown as text, never parsed as an element
    assert browser.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert browser.evaluate("[...document.images].some(i => i.alt.includes('<img src=x'))")
    assert browser.evaluate("document.getElementById('filter-box').hidden")    # no classifier names: no filter

    click(browser, 'section[data-cluster="0"] input.select')
    click(browser, 'section[data-cluster="1"] input.select')
    browser.evaluate("document.getElementById('merge-name').value = 'moths, mostly'")
    click(browser, "#merge")
    click(browser, 'section[data-cluster="2"] input.notgroup')
    click(browser, "#export")
    exported = wait_for_file(downloads / "review.csv")
    assert exported == 'cluster,group,note\n0,"moths, mostly",\n1,"moths, mostly",\n2,-1,\n'

    browser.evaluate("document.body.dataset.ready = 'reloading'")    # wait for the new page, not the old one
    browser.call("Page.reload")
    browser.wait_for("document.body && document.body.dataset.ready === 'true'")
    assert browser.evaluate("document.querySelector('section[data-cluster=\"1\"] input.group').value") == \
        "moths, mostly"
    assert browser.evaluate("document.querySelector('section[data-cluster=\"2\"] input.notgroup').checked")

    assert main(["-o", str(out), "--review", str(downloads / "review.csv"), "-q", "--no-report"]) == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    assert sorted(table.cluster.unique()) == [-1, 0]
    assert sorted(table.group.unique()) == ["", "moths, mostly"] and (table.cluster == 0).sum() == 6


def test_classifier_names_tooltips_identified_section_and_filter(tmp_path, browser):
    out = write_classified_report(tmp_path, classified_table(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.browser_call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    browser.call("Page.navigate", url=(out / "report.html").as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === 'true'")
    # the name is text, never markup; the taxon and level are shown beside it
    assert browser.evaluate("document.querySelector('section[data-cluster=\"0\"] h2').textContent") == GEOMETRID
    assert browser.evaluate("document.querySelectorAll('#clusters i').length") == 0
    assert browser.evaluate("document.querySelector('section[data-cluster=\"0\"] .taxon').textContent") == \
        "family Geometridae"
    # a thumbnail's tooltip: the file, then the predictions coarsest first, then the metadata
    tip = browser.evaluate("document.querySelector('section[data-cluster=\"0\"] figure a').title").split("\n")
    assert tip[1] == ("order Lepidoptera 0.99 \u00b7 family Geometridae 0.91 \u00b7 genus Idaea 0.42 \u00b7 "
                      "species Idaea aversata 0.30") and tip[2] == "timestamp: 2024-06-01"
    # identified crops: their own section, grouped by taxon; 'Not clustered' keeps the one unclustered crop
    assert browser.evaluate("document.querySelector('section[data-identified] h2').textContent") == \
        "Identified by the classifier (not clustered)"
    assert browser.evaluate("[...document.querySelectorAll('.taxon-group')].map(g => [g.dataset.group, "
                            "g.querySelectorAll('figure').length, g.querySelector('figcaption').textContent])") == \
        [["Agrotis ipsilon", 2, "p=0.97 "], ["Noctua pronuba", 1, "p=0.96 "]]
    assert browser.evaluate("document.querySelectorAll('section[data-cluster=\"-1\"] figure').length") == 1
    # the filter: words of the name, taxon or level:taxon; 'go to cluster' clears a filter that hides its target
    browser.evaluate("(() => { const box = document.getElementById('filter'); box.value = 'family:GEOMETRIDAE'; "
                     "box.dispatchEvent(new Event('input')); })()")
    assert browser.evaluate("[...document.querySelectorAll('section')].map(s => s.dataset.cluster || 'identified')") \
        == ["0"]
    browser.evaluate("(() => { const box = document.getElementById('filter'); box.value = 'agrotis'; "
                     "box.dispatchEvent(new Event('input')); })()")
    assert browser.evaluate("[...document.querySelectorAll('section')].map(s => s.dataset.cluster || 'identified')") \
        == ["1", "identified"] and browser.evaluate("document.querySelectorAll('.taxon-group').length") == 1
    browser.evaluate("(() => { const box = document.getElementById('goto'); box.value = '-1'; "
                     "box.dispatchEvent(new Event('change')); })()")
    assert browser.evaluate("document.getElementById('filter').value") == ""
    assert browser.evaluate("document.querySelectorAll('section[data-cluster]').length") == 3
    # Export review: the format --review reads, plus the cluster's name for the reader
    browser.evaluate("(() => { const box = document.querySelector('section[data-cluster=\"1\"] input.group'); "
                     "box.value = 'moths'; box.dispatchEvent(new Event('input')); })()")
    click(browser, "#export")
    exported = wait_for_file(downloads / "review.csv")
    assert exported == "cluster,group,note,cluster_name\n1,moths,,Agrotis ipsilon (cluster 1)\n"
    assert read_review(str(downloads / "review.csv"), 2).groups == {1: "moths"}
