"""report.html in a real headless Chromium: every review action (move, split, exclude, merge, name, verify, undo and
redo, keyboard shortcuts, box and lasso selection on the map), the crop-keyed export, reload, and --review of the
exported file. Skipped when no Chromium is installed (`bash install.sh --dev` installs it)."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from crop_cluster.cli import main
from browser import Browser, find_chromium
from conftest import PALETTE, draw_crop
from crop_cluster.dedup.exact import file_digest
from test_report import GEOMETRID, classified_table, write_classified_report

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (bash install.sh --dev)")
HEADER = "filename,group,crop,reviewer,time,note"


@pytest.fixture
def browser():
    session = Browser(CHROMIUM)
    yield session
    assert session.exceptions == [], session.exceptions    # the page threw no JavaScript error
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


def mouse_click(browser: Browser, selector: str, shift: bool = False) -> None:
    """A real mouse click (CDP input events) in the middle of the element, Shift held when asked."""
    x, y = browser.evaluate(f"(() => {{ const node = document.querySelector({selector!r}); "
                            f"node.scrollIntoView({{block: 'center'}}); const r = node.getBoundingClientRect(); "
                            f"return [r.left + r.width / 2, r.top + r.height / 2]; }})()")
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=1, clickCount=1,
                     modifiers=8 if shift else 0)


def press(browser: Browser, key: str, code: str, ctrl: bool = False, shift: bool = False) -> None:
    """A real key press; `key` is what the layout types, `code` the physical key (they differ on AZERTY)."""
    modifiers = (2 if ctrl else 0) | (8 if shift else 0)
    text = {} if ctrl or len(key) != 1 else {"text": key}
    browser.call("Input.dispatchKeyEvent", type="keyDown", key=key, code=code, modifiers=modifiers, **text)
    browser.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, modifiers=modifiers)


def drag(browser: Browser, points) -> None:
    """Press at the first point, move through the others, release at the last (viewport pixels)."""
    browser.call("Input.dispatchMouseEvent", type="mousePressed", x=points[0][0], y=points[0][1], button="left",
                 buttons=1, clickCount=1)
    for x, y in points[1:]:
        browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left", buttons=1)
    browser.call("Input.dispatchMouseEvent", type="mouseReleased", x=points[-1][0], y=points[-1][1], button="left",
                 buttons=1, clickCount=1)


def set_value(browser: Browser, selector: str, value: str, event: str = "change") -> None:
    assert browser.evaluate(f"(() => {{ const node = document.querySelector({selector!r}); if (!node) return false; "
                            f"node.value = {json.dumps(value)}; node.dispatchEvent(new Event({event!r})); "
                            f"return true; }})()"), selector


def shown(browser: Browser, cluster_id) -> list:
    """Item indices shown in the section of `cluster_id`, in order."""
    return browser.evaluate(f"[...document.querySelectorAll('section[data-cluster=\"{cluster_id}\"] figure')]"
                            f".map(f => Number(f.dataset.item))")


def open_report(browser: Browser, out: Path, downloads: Path) -> dict:
    browser.browser_call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    browser.call("Page.navigate", url=(out / "report.html").as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === 'true'")
    return browser.evaluate("JSON.parse(document.getElementById('report-data').textContent)")


def test_every_action_export_reload_and_review(tmp_path, fake_backend, browser):
    crops = tmp_path / "crops"
    for colour in range(3):
        for view in range(3):
            draw_crop(crops / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)
    shutil.copy(crops / "c0_v0.png", crops / "c0_v0_copy.png")          # one individual of two crops
    draw_crop(crops / "<img src=x onerror=alert(1)>.png", PALETTE[5], seed=7)
    out, downloads = tmp_path / "out", tmp_path / "downloads"
    downloads.mkdir()
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "-th", "0.95"]) == 0
    data = open_report(browser, out, downloads)
    items = data["items"]
    members = {c["id"]: c["members"] for c in data["clusters"]}
    assert browser.evaluate("[...document.querySelectorAll('section[data-cluster]')].map(s => s.dataset.cluster)") \
        == ["0", "1", "2", "-1"]
    # the crop named like markup is shown as text, never parsed as an element
    assert browser.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert browser.evaluate("[...document.images].some(i => i.alt.includes('<img src=x'))")
    assert browser.evaluate("document.getElementById('progress-text').textContent") == \
        "0 of 3 clusters reviewed \u00b7 0 of 11 crops"
    copied = next(i for i, item in enumerate(items) if item["n"] == 2)    # c0_v0 and its copy
    zero = [copied] + [i for i in members[0] if i != copied]

    # move: select one crop of cluster 0, move it to cluster 1
    mouse_click(browser, f'figure[data-item="{copied}"]')
    set_value(browser, "#target", "1", "input")
    click(browser, "#move")
    assert sorted(shown(browser, 1)) == sorted(members[1] + [copied]) and copied not in shown(browser, 0)
    # undo with Ctrl+Z typed on AZERTY (the Z key sits where QWERTY has W), redo with Ctrl+Shift+Z
    press(browser, "z", "KeyW", ctrl=True)
    assert sorted(shown(browser, 0)) == sorted(zero) and sorted(shown(browser, 1)) == sorted(members[1])
    press(browser, "Z", "KeyW", ctrl=True, shift=True)
    assert copied in shown(browser, 1) and browser.evaluate("document.getElementById('last-action').textContent") \
        == "redid: moved 1 to cluster 1"

    # split: click the first crop of cluster 2, Shift-click the second: a range of two, split into "moth B"
    two = shown(browser, 2)
    mouse_click(browser, f'section[data-cluster="2"] figure[data-item="{two[0]}"]')
    mouse_click(browser, f'section[data-cluster="2"] figure[data-item="{two[1]}"]', shift=True)
    assert browser.evaluate("document.getElementById('selected-count').textContent").startswith("2 selected")
    set_value(browser, "#name", "moth B", "input")
    click(browser, "#split")
    assert sorted(shown(browser, 3)) == sorted(two[:2]) and shown(browser, 2) == [two[2]]
    assert browser.evaluate("document.querySelector('section[data-cluster=\"3\"] h2').textContent") == "moth B"

    # exclude with the shortcut x (typed, whatever the layout)
    mouse_click(browser, f'figure[data-item="{two[2]}"]')
    press(browser, "x", "KeyX")
    assert shown(browser, -3) == [two[2]] and shown(browser, 2) == []
    # the help overlay on ?, closed by Escape
    press(browser, "?", "Slash", shift=True)
    assert not browser.evaluate("document.getElementById('help').hidden")
    assert "undo" in browser.evaluate("document.getElementById('help-table').textContent")
    press(browser, "Escape", "Escape")
    assert browser.evaluate("document.getElementById('help').hidden")

    # lasso on the map around cluster 0's first members (the moved one too), then click the moved one off again
    browser.evaluate("window.scrollTo(0, 0); document.querySelector('input[name=tool][value=lasso]').click()")
    left, top = browser.evaluate("(() => { const r = document.getElementById('map-overlay')"
                                 ".getBoundingClientRect(); return [r.left, r.top]; })()")
    point = [(6 + data["map"]["x"][i] * 308 / 1000, 6 + data["map"]["y"][i] * 308 / 1000) for i in range(len(items))]
    cx, cy = sum(point[i][0] for i in zero) / len(zero), sum(point[i][1] for i in zero) / len(zero)
    radius = max(math.dist(point[i], (cx, cy)) for i in zero) + 3
    assert all(math.dist(point[i], (cx, cy)) > radius + 3 for i in range(len(items)) if i not in zero), \
        "the map should keep cluster 0 apart from the others"
    circle = [(left + min(max(cx - radius * math.cos(a / 24 * 2 * math.pi), 1), 319),
               top + min(max(cy + radius * math.sin(a / 24 * 2 * math.pi), 1), 319)) for a in range(25)]
    drag(browser, circle)
    lassoed = browser.evaluate("[...document.querySelectorAll('section[data-selection] figure')]"
                               ".map(f => Number(f.dataset.item)).sort((a, b) => a - b)")
    assert lassoed == sorted(zero)
    mouse_click(browser, f'section[data-selection] figure[data-item="{copied}"]')
    rest = zero[1:]
    assert browser.evaluate("document.getElementById('selected-count').textContent").startswith(f"{len(rest)} selected")
    # move the lassoed crops into the group "moth B" by its name, Enter in the field
    click(browser, "#target")
    set_value(browser, "#target", "moth B", "input")
    browser.evaluate("document.getElementById('target').focus()")
    press(browser, "Enter", "Enter")
    assert sorted(shown(browser, 3)) == sorted(two[:2] + rest) and shown(browser, 0) == []

    # name cluster 1, verify it with the shortcut v (after clicking in it), the reviewer's name
    set_value(browser, 'section[data-cluster="1"] input.group', "moths, mostly")
    mouse_click(browser, 'section[data-cluster="1"] h2')
    press(browser, "v", "KeyV")
    assert browser.evaluate("document.querySelector('section[data-cluster=\"1\"] button.verify')"
                            ".getAttribute('aria-pressed')") == "true"
    assert browser.evaluate("document.getElementById('progress-text').textContent") == \
        "2 of 2 clusters reviewed \u00b7 10 of 11 crops"
    set_value(browser, "#reviewer", "ana")
    # a box over the whole map selects every individual
    browser.evaluate("window.scrollTo(0, 0); document.querySelector('input[name=tool][value=box]').click()")
    drag(browser, [(left + 2, top + 2), (left + 160, top + 160), (left + 318, top + 318)])
    assert browser.evaluate("document.querySelectorAll('section[data-selection] figure').length") == len(items)
    press(browser, "Escape", "Escape")
    assert browser.evaluate("document.querySelectorAll('section[data-selection]').length") == 0

    # export: one row per crop of the groups reviewed here, and of the excluded crop
    click(browser, "#export")
    assert wait_for_file(downloads / "review.csv").splitlines()[0] == HEADER
    exported = pd.read_csv(downloads / "review.csv", dtype=str, keep_default_na=False)
    expected = {}
    for i in members[1] + [copied]:
        expected[items[i]["f"]] = "moths, mostly"
    for i in two[:2] + rest:
        expected[items[i]["f"]] = "moth B"
    expected[items[two[2]]["f"]] = "-1"
    expected[str(crops / "c0_v0_copy.png")] = "moths, mostly"       # the copy travels with its individual
    assert dict(zip(exported.filename, exported.group)) == expected and len(exported) == len(expected)
    assert list(exported.filename) == sorted(exported.filename)
    assert all(exported.crop == [file_digest(f) for f in exported.filename])
    assert set(exported.reviewer) == {"ana"} and set(exported.note) == {""}
    assert all(pd.to_datetime(exported.time, utc=True).notna())

    # reload: the review is kept in the browser
    browser.evaluate("document.body.dataset.ready = 'reloading'")    # wait for the new page, not the old one
    browser.call("Page.reload")
    browser.wait_for("document.body && document.body.dataset.ready === 'true'")
    assert sorted(shown(browser, 3)) == sorted(two[:2] + rest) and shown(browser, -3) == [two[2]]
    assert browser.evaluate("document.querySelector('section[data-cluster=\"1\"] input.group').value") == \
        "moths, mostly"

    # --review of the exported file
    assert main(["-o", str(out), "--review", str(downloads / "review.csv"), "-q", "--no-report"]) == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False).set_index("filename")
    for name, group in expected.items():
        if group == "-1":
            assert table.loc[name, "cluster"] == -1
        else:
            assert table.loc[name, "group"] == group
    for group in ("moths, mostly", "moth B"):
        assert table.loc[[n for n, g in expected.items() if g == group], "cluster"].nunique() == 1


def test_needs_review_queue_more_like_this_and_orders(tmp_path, browser):
    out = write_classified_report(tmp_path, classified_table(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    data = open_report(browser, out, downloads)
    scored = sorted((i for i, item in enumerate(data["items"]) if item.get("q") is not None),
                    key=lambda i: -data["items"][i]["q"])
    browser.evaluate("(() => { const box = document.getElementById('order'); box.value = 'queue'; "
                     "box.dispatchEvent(new Event('change')); })()")
    assert browser.evaluate("[...document.querySelectorAll('section[data-queue] figure')]"
                            ".map(f => Number(f.dataset.item))") == scored
    # more like this: the nearest crops in other clusters, each labelled with its cluster
    click(browser, f'section[data-queue] figure[data-item="{scored[0]}"] button.like-button')
    like = browser.evaluate("[...document.querySelectorAll('#like figure')].map(f => Number(f.dataset.item))")
    assert like == data["items"][scored[0]]["l"] and like
    assert all(data["items"][i]["c"] != data["items"][scored[0]]["c"] for i in like)
    browser.evaluate("(() => { const box = document.getElementById('order'); box.value = 'cohesion'; "
                     "box.dispatchEvent(new Event('change')); })()")
    cohesion = {c["id"]: c["cohesion"] for c in data["clusters"] if c["id"] >= 0}
    assert browser.evaluate("[...document.querySelectorAll('section[data-cluster]')].map(s => Number(s.dataset.cluster))"
                            )[:2] == sorted(cohesion, key=cohesion.get)


def test_classifier_names_tooltips_identified_section_and_filter(tmp_path, browser):
    out = write_classified_report(tmp_path, classified_table(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    open_report(browser, out, downloads)
    # the name is text, never markup; the taxon and level are shown beside it
    assert browser.evaluate("document.querySelector('section[data-cluster=\"0\"] h2').textContent") == GEOMETRID
    assert browser.evaluate("document.querySelectorAll('#clusters i').length") == 0
    assert browser.evaluate("document.querySelector('section[data-cluster=\"0\"] .taxon').textContent") == \
        "family Geometridae"
    # a thumbnail's tooltip: the file, then the predictions coarsest first, then the metadata
    tip = browser.evaluate("document.querySelector('section[data-cluster=\"0\"] figure figcaption').title").split("\n")
    assert tip[1] == ("order Lepidoptera 0.99 \u00b7 family Geometridae 0.91 \u00b7 genus Idaea 0.42 \u00b7 "
                      "species Idaea aversata 0.30") and tip[2] == "timestamp: 2024-06-01"
    # identified crops: their own section, grouped by taxon; 'Not clustered' keeps the one unclustered crop
    assert browser.evaluate("document.querySelector('section[data-identified] h2').textContent") == \
        "Identified by the classifier (not clustered)"
    assert browser.evaluate("[...document.querySelectorAll('.taxon-group')].map(g => [g.dataset.group, "
                            "g.querySelectorAll('figure').length, g.querySelector('figcaption').firstChild"
                            ".textContent])") == [["Agrotis ipsilon", 2, "p=0.97 "], ["Noctua pronuba", 1, "p=0.96 "]]
    assert browser.evaluate("document.querySelectorAll('section[data-cluster=\"-1\"] figure').length") == 1
    # the filter: words of the name, taxon or level:taxon; 'go to cluster' clears a filter that hides its target
    set_value(browser, "#filter", "family:GEOMETRIDAE", "input")
    assert browser.evaluate("[...document.querySelectorAll('section')].map(s => s.dataset.cluster || 'identified')") \
        == ["0"]
    set_value(browser, "#filter", "agrotis", "input")
    assert browser.evaluate("[...document.querySelectorAll('section')].map(s => s.dataset.cluster || 'identified')") \
        == ["1", "identified"] and browser.evaluate("document.querySelectorAll('.taxon-group').length") == 1
    set_value(browser, "#goto", "-1")
    assert browser.evaluate("document.getElementById('filter').value") == ""
    assert browser.evaluate("document.querySelectorAll('section[data-cluster]').length") == 3
    # a named cluster's crops are exported under the reviewer's name (files absent here: no digest)
    set_value(browser, 'section[data-cluster="1"] input.group', "moths")
    click(browser, "#export")
    lines = wait_for_file(downloads / "review.csv").splitlines()
    assert lines[0] == HEADER and [line.split(",")[:3] for line in lines[1:]] == \
        [[str(tmp_path / "crop3.png"), "moths", ""], [str(tmp_path / "crop4.png"), "moths", ""]]


def test_merge_ticked_clusters_and_undo_with_the_button(tmp_path, browser):
    out = write_classified_report(tmp_path, classified_table(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    data = open_report(browser, out, downloads)
    members = {c["id"]: c["members"] for c in data["clusters"]}
    click(browser, 'section[data-cluster="1"] input.select')
    click(browser, 'section[data-cluster="0"] input.select')
    set_value(browser, "#name", "all moths", "input")
    press(browser, "g", "KeyG")
    assert sorted(shown(browser, 0)) == sorted(members[0] + members[1]) and shown(browser, 1) == []
    assert browser.evaluate("document.querySelector('section[data-cluster=\"0\"] h2').textContent") == "all moths"
    click(browser, "#undo")
    assert sorted(shown(browser, 1)) == sorted(members[1])
    assert browser.evaluate("document.querySelector('section[data-cluster=\"0\"] h2').textContent") == GEOMETRID
    assert browser.evaluate("document.getElementById('redo').disabled") is False


def test_the_export_writes_cells_a_spreadsheet_would_run_as_the_tool_does(browser):
    """The report's csvField (JavaScript) escapes exactly the cells crop_cluster.csv_cells.escape_cell escapes."""
    import re

    from crop_cluster.csv_cells import escape_cell
    from crop_cluster.outputs.report import html

    template = (Path(html.__file__).parent / "template.html").read_text(encoding="utf-8")
    source = re.search(r"function csvField\(value\) \{.*?\n  \}", template, re.S).group(0)
    values = ["=HYPERLINK(1)", "-a.png", "+b", "@c", "\tx", "\rx", "'=x", "''-x", "-1", "-0.25", "+3", "1e-5", "-",
              "moth", "'quoted'", "a=b", "-1 moth", ""]
    browser.call("Page.navigate", url="about:blank")
    got = browser.evaluate(f"(() => {{ {source}; return {json.dumps(values)}.map(csvField); }})()")
    expected = []
    for value in values:
        text = escape_cell(value)
        expected.append('"' + text.replace('"', '""') + '"' if re.search(r'[",\r\n]|^\s|\s$', text) else text)
    assert got == expected
