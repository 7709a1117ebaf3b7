"""report.html and names from references: the suggestion beside each named cluster, its evidence crop, Accept and
Reject in a real headless Chromium, the export and --review of an accepted name. The browser test is skipped when
no Chromium is installed (`bash install.sh --dev` installs it)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from browser import Browser, find_chromium
from conftest import PALETTE, draw_crop
from crop_cluster.cli import main
from test_report_browser import HEADER, click, open_report, wait_for_file

CHROMIUM = find_chromium()


def draw_run(tmp_path: Path, fake_backend: str) -> Path:
    """Colours 0, 1, 2 (3 views each) clustered with a gallery of colours 0 ('red moth') and 1 ('green moth')."""
    for colour in (0, 1, 2):
        for view in range(3):
            draw_crop(tmp_path / "crops" / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)
    for colour, name in ((0, "red moth"), (1, "green moth")):
        for view in range(3):
            draw_crop(tmp_path / "gallery" / name / f"r{view}.png", PALETTE[colour], seed=500 + 10 * colour + view)
    out = tmp_path / "out"
    assert main(["-i", str(tmp_path / "crops"), "-o", str(out), "-e", fake_backend, "--reference",
                 str(tmp_path / "gallery"), "-q"]) == 0
    return out


def page_data(out: Path) -> dict:
    text = (out / "report.html").read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="report-data">') + len(
        '<script type="application/json" id="report-data">')
    return json.loads(text[start:text.index("</script>", start)])


def colour_of_block(data: dict, block: dict) -> int:
    return int(os.path.basename(data["items"][block["members"][0]]["f"])[1])


def test_named_clusters_carry_the_suggestion_and_its_evidence_thumbnail(tmp_path, fake_backend):
    out = draw_run(tmp_path, fake_backend)
    data = page_data(out)
    by_colour = {colour_of_block(data, b): b for b in data["clusters"] if b["id"] >= 0}
    for colour, name in ((0, "red moth"), (1, "green moth")):
        ref = by_colour[colour]["ref"]
        assert (ref["name"], ref["status"]) == (name, "named") and ref["score"] > 0.9 and ref["second"]
        assert ref["evidence"].startswith("report/evidence/") and (out / ref["evidence"]).is_file()
        assert Path(ref["file"]).parent.name == name
    assert "ref" not in by_colour[2]                                   # unknown: no suggestion
    assert not any(c.startswith("ref_") for c in data["columns"])      # not repeated as tooltips
    evidence = sorted((out / "report" / "evidence").glob("*.jpg"))
    assert main(["--embeddings", str(out / "embeddings.pkl"), "-o", str(out), "-q"]) == 0   # no --reference typed:
    again = {colour_of_block(page_data(out), b): b for b in page_data(out)["clusters"] if b["id"] >= 0}
    assert again[0]["ref"]["name"] == "red moth"                   # the campaign's remembered references name
    assert sorted((out / "report" / "evidence").glob("*.jpg")) == evidence


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (bash install.sh --dev)")
def test_accept_and_reject_in_the_browser_then_export_and_review(tmp_path, fake_backend):
    out = draw_run(tmp_path, fake_backend)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser = Browser(CHROMIUM)
    try:
        data = open_report(browser, out, downloads)
        by_colour = {colour_of_block(data, b): b["id"] for b in data["clusters"] if b["id"] >= 0}
        red, green, blue = by_colour[0], by_colour[1], by_colour[2]
        section = 'section[data-cluster="{}"]'.format
        assert browser.evaluate(f"document.querySelectorAll('.ref-suggestion').length") == 2
        assert browser.evaluate(f"!document.querySelector('{section(blue)} .ref-suggestion')")
        assert browser.wait_for(f"(() => {{ const img = document.querySelector('{section(red)} .ref-suggestion img');"
                                f" return img && img.complete && img.naturalWidth > 0; }})()")   # the evidence loads
        assert browser.evaluate(f"document.querySelector('{section(red)} .ref-name').textContent") == "red moth"
        click(browser, f"{section(red)} .ref-accept")
        assert browser.evaluate(f"document.querySelector('{section(red)} input.group').value") == "red moth"
        assert browser.evaluate(f"!document.querySelector('{section(red)} .ref-suggestion')")
        assert browser.evaluate(f"document.querySelector('{section(red)} h2').textContent") == "red moth"
        click(browser, f"{section(green)} .ref-reject")
        assert browser.evaluate(f"!document.querySelector('{section(green)} .ref-suggestion')")
        click(browser, "#undo")                                                  # Reject is undoable
        assert browser.evaluate(f"!!document.querySelector('{section(green)} .ref-suggestion')")
        click(browser, "#redo")
        assert browser.evaluate("document.getElementById('last-action').textContent").startswith("redid: rejected")
        browser.call("Page.reload")                                              # kept across a reload
        browser.wait_for("document.body && document.body.dataset.ready === 'true'")
        assert browser.evaluate("document.querySelectorAll('.ref-suggestion').length") == 0
        click(browser, "#export")
        lines = wait_for_file(downloads / "review.csv").splitlines()
        assert browser.exceptions == [], browser.exceptions
    finally:
        browser.close()
    assert lines[0] == HEADER
    exported = pd.read_csv(downloads / "review.csv", dtype=str, keep_default_na=False)
    assert set(exported["group"]) == {"red moth"} and len(exported) == 3   # the rejected cluster is not exported
    assert main(["-o", str(out), "--review", str(downloads / "review.csv"), "--reference", str(tmp_path / "gallery"),
                 "-q", "--no-report"]) == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    red_rows = table["filename"].map(lambda f: os.path.basename(f)[1] == "0")
    assert (table.loc[red_rows, "group"] == "red moth").all()
    assert (table.loc[red_rows, "ref_status"] == "reviewed").all()
    assert (table.loc[~red_rows & (table["ref_name"] == "green moth"), "ref_status"] == "named").all()
