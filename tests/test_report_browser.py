"""report.html in a real headless Chromium: merge two clusters into a named group, export review.csv, reload, and
apply the exported file with --review. Skipped when no Chromium is installed (`bash install.sh --dev` installs it)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

import cluster
from browser import Browser, find_chromium
from conftest import PALETTE, draw_crop

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
    assert cluster.main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "-th", "0.95"]) == 0
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

    assert cluster.main(["-o", str(out), "--review", str(downloads / "review.csv"), "-q", "--no-report"]) == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    assert sorted(table.cluster.unique()) == [-1, 0]
    assert sorted(table.group.unique()) == ["", "moths, mostly"] and (table.cluster == 0).sum() == 6
