"""The report's suggestions in a real headless Chromium: each kind (merge, split, move) accepted and rejected with
one key, unticking with the mouse, undo and redo, reload, the export (rejections in the optional rejected,other
columns), `--review` of it giving the simulated reviewer's partition (bench/review_sim.py applies the same
actions to the same data), and a rejection not proposed again after `--add`. Skipped without Chromium."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageDraw

from browser import Browser, find_chromium
from crop_cluster.cli import main
from test_report_browser import HEADER, mouse_click, open_report, press, set_value, shown, wait_for_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import review_sim  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (bash install.sh --dev)")
# mean colours for the fake backend (its embedding is the mean colour): at -th 0.95 the reds are one cluster with a
# weak link to their darker part (a split), the blues two clusters just below the threshold (a merge), the two
# yellow-greens are not clustered and nearest to the greens (a move)
COLOURS = {"red": [(220, 40, 40), (222, 42, 40), (218, 40, 44)], "dark": [(200, 70, 40), (202, 72, 42)],
           "blue": [(40, 70, 220), (42, 72, 222), (40, 120, 220), (42, 122, 222)],
           "lone": [(120, 200, 60), (125, 200, 65)], "green": [(60, 200, 60), (62, 202, 62), (58, 198, 60)]}


def draw(path: Path, colour) -> None:
    image = Image.new("RGB", (48, 40), (255, 255, 255))
    ImageDraw.Draw(image).ellipse([4, 4, 43, 35], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def browser():
    session = Browser(CHROMIUM)
    yield session
    assert session.exceptions == [], session.exceptions
    session.close()


def current(browser) -> tuple:
    """(index, kind) of the suggestion the panel shows."""
    return browser.evaluate("[Number(document.getElementById('suggestions').dataset.current), "
                            "document.getElementById('suggestions').dataset.kind]")


def counts(browser) -> str:
    return browser.evaluate("document.getElementById('suggestion-count').textContent")


def bring(browser, index: int) -> None:
    """Pass (p) until suggestion `index` is the current one."""
    for _ in range(20):
        if current(browser)[0] == index:
            return
        press(browser, "p", "KeyP")
    raise AssertionError(f"suggestion {index} never became current")


def test_suggestions_accept_reject_undo_export_review_and_add(tmp_path, fake_backend, browser):
    crops, out, downloads = tmp_path / "crops", tmp_path / "out", tmp_path / "downloads"
    downloads.mkdir()
    for kind, colours in COLOURS.items():
        for k, colour in enumerate(colours):
            draw(crops / f"{kind}_{k}.png", colour)
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "-th", "0.95"]) == 0
    data = open_report(browser, out, downloads)
    name = {i: Path(item["f"]).stem for i, item in enumerate(data["items"])}
    found = [(s["k"], tuple(sorted(name[i] for i in s["i"]))) for s in data["suggestions"]]
    index = {entry: k for k, entry in enumerate(found)}
    merge, split, move = index[("merge", ("blue_0", "blue_2"))], index[("split", ("dark_0", "dark_1"))], \
        index[("move", ("lone_0", "lone_1"))]
    # every thumbnail's "open the original" link is the file's URL (derived by the page from its name)
    linked = browser.evaluate("[...document.querySelectorAll('figure a.open')]"
                              ".map(a => [Number(a.closest('figure').dataset.item), a.href])")
    assert linked and all(href == Path(data["items"][i]["f"]).as_uri() for i, href in linked)
    # a card says its cluster once ("Cluster 0"); a named one says its name and then its number
    head = "section[data-cluster=\"0\"] .head"
    assert browser.evaluate(f"document.querySelector('{head} h2').textContent") == "Cluster 0"
    assert browser.evaluate(f"document.querySelectorAll('{head} .number').length") == 0
    set_value(browser, 'section[data-cluster="0"] input.group', "reds")
    assert browser.evaluate(f"document.querySelector('{head} .number').textContent") == "cluster 0"
    press(browser, "z", "KeyZ", ctrl=True)
    assert browser.evaluate(f"document.querySelector('{head} h2').textContent") == "Cluster 0"
    # a campaign's first run: nothing is "changed since the last review"
    assert browser.evaluate("document.querySelectorAll('.state.changed').length") == 0
    assert browser.evaluate("document.getElementById('changed-box').hidden")
    # shown first, above the cards, the best expected gain first
    assert browser.evaluate("document.getElementById('gallery').firstElementChild.id") == "suggestions"
    # none of these is worth an action (the cards merge two clusters, split one or move from one card in one
    # action too): the panel says so, offers none, and shows them all when asked (a mouse click)
    assert not any(s["w"] for s in data["suggestions"]) and all(s["c"] <= 1 for s in data["suggestions"])
    assert browser.evaluate("document.getElementById('suggestions').dataset.current") == ""
    below = browser.evaluate("document.getElementById('suggestion-below').textContent")
    assert below.startswith(f"{len(found)} more suggestions gain less per action than the cards")
    press(browser, "y", "KeyY")                                     # nothing offered: y does nothing
    assert counts(browser).endswith("0 accepted \u00b7 0 rejected")
    mouse_click(browser, "#suggestion-more")
    assert current(browser)[0] == 0 and not browser.evaluate("document.getElementById('suggestion-below')")
    blocks = {c["id"]: c["members"] for c in data["clusters"]}
    by_name = {v: k for k, v in name.items()}
    blue = [c for c, m in blocks.items() if by_name["blue_0"] in m or by_name["blue_2"] in m]
    assert len(blue) == 2

    # merge: reject (r), undo (Ctrl+Z) brings it back, accept (y) joins the two blue clusters, undo, redo
    bring(browser, merge)
    press(browser, "r", "KeyR")
    assert counts(browser).endswith("0 accepted \u00b7 1 rejected") and current(browser)[0] != merge
    press(browser, "z", "KeyZ", ctrl=True)
    assert counts(browser).endswith("0 accepted \u00b7 0 rejected")
    bring(browser, merge)
    press(browser, "y", "KeyY")
    assert browser.evaluate("document.getElementById('last-action').textContent").startswith("merged 2 into")
    assert sorted(shown(browser, blue[0])) == sorted(blocks[blue[0]] + blocks[blue[1]]) and not shown(browser, blue[1])
    press(browser, "z", "KeyZ", ctrl=True)
    assert sorted(shown(browser, blue[1])) == sorted(blocks[blue[1]])
    press(browser, "Z", "KeyZ", ctrl=True, shift=True)
    assert not shown(browser, blue[1])

    # split: accept with the Accept button: the darker reds become a new group
    bring(browser, split)
    mouse_click(browser, "#suggestion-accept")
    new_group = browser.evaluate("Math.max(...[...document.querySelectorAll('section[data-cluster]')]"
                                 ".map(s => Number(s.dataset.cluster)))")
    assert sorted(name[i] for i in shown(browser, new_group)) == ["dark_0", "dark_1"]
    # the other splits (inside the reds, inside a blue half) are rejected with r
    others = [k for k, (kind, _) in enumerate(found) if kind == "split" and k != split]
    assert others
    for k in others:
        if str(k) in browser.evaluate("document.getElementById('suggestions').dataset.open").split(","):
            bring(browser, k)
            press(browser, "r", "KeyR")

    # move: reject (r) and undo; then untick lone_1 with a mouse click, accept with y: only lone_0 joins the
    # greens; lone_1 is remembered
    bring(browser, move)
    press(browser, "r", "KeyR")
    assert str(move) not in browser.evaluate("document.getElementById('suggestions').dataset.open").split(",")
    press(browser, "z", "KeyZ", ctrl=True)
    bring(browser, move)
    mouse_click(browser, f'#suggestions figure[data-suggested="{by_name["lone_1"]}"]')
    assert browser.evaluate(f"document.querySelector('#suggestions figure[data-suggested=\"{by_name['lone_1']}\"]')"
                            ".classList.contains('off')")
    press(browser, "y", "KeyY")
    green = next(c for c, m in blocks.items() if by_name["green_0"] in m)
    assert by_name["lone_0"] in shown(browser, green) and by_name["lone_1"] not in shown(browser, green)

    # reload: the verdicts come back with the undo log
    before = counts(browser)
    browser.evaluate("document.body.dataset.ready = 'reloading'")
    browser.call("Page.reload")
    browser.wait_for("document.body && document.body.dataset.ready === 'true'")
    assert counts(browser) == before

    # export: the groups acted on, then the rejections (rejected, other)
    browser.evaluate("document.getElementById('export').click()")
    text = wait_for_file(downloads / "review.csv")
    assert text.splitlines()[0] == HEADER + ",rejected,other"
    exported = pd.read_csv(downloads / "review.csv", dtype=str, keep_default_na=False)
    rejected = exported[exported.rejected != ""]
    assert set(rejected.rejected) == {"move", "split"}
    move_rows = rejected[rejected.rejected == "move"]
    assert [Path(f).stem for f in move_rows.filename] == ["lone_1"] and (move_rows.group == "").all()

    # the simulated reviewer, the same actions on the same data: the same export and the same partition
    page = review_sim.Page(data)
    page.accept(data["suggestions"][merge], page.pending(data["suggestions"][merge])[0])
    page.accept(data["suggestions"][split], page.pending(data["suggestions"][split])[0])
    for k in others:
        if page.pending(data["suggestions"][k])[0]:
            page.reject(data["suggestions"][k])
    page.accept(data["suggestions"][move], [by_name["lone_0"]])
    simulated = pd.DataFrame([row[:3] + row[6:] for row in page.export_rows()],
                             columns=["filename", "group", "crop", "rejected", "other"])
    assert simulated.sort_values(["filename", "rejected"]).to_numpy().tolist() == \
        exported[simulated.columns].sort_values(["filename", "rejected"]).to_numpy().tolist()
    assert main(["-o", str(out), "--review", str(downloads / "review.csv"), "-q"]) == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    assert review_sim.table_partition(table.filename.tolist(), table.cluster.to_numpy()) == page.partition()

    # the rejections are in the store; after --add of a new crop the rejected move does not come back
    from crop_cluster.campaign.store import CampaignStore

    with CampaignStore(str(out)) as store:
        remembered = store.rejections()
    assert "move" in set(remembered.kind)
    draw(tmp_path / "night2" / "yellow_0.png", (230, 210, 30))
    assert main(["-i", str(tmp_path / "night2"), "-o", str(out), "--add", "-e", fake_backend, "-th", "0.95",
                 "-q"]) == 0
    after = review_sim.read_document(str(out / "report.html"))
    again = [sorted(Path(after["items"][i]["f"]).stem for i in s["i"]) for s in after["suggestions"]
             if s["k"] == "move" and Path(after["items"][s["a"]]["f"]).stem.startswith("green")]
    assert all("lone_1" not in moved for moved in again)
    rejected_splits = {tuple(sorted(name[i] for i in data["suggestions"][k]["i"])) for k in others}
    assert not rejected_splits & {tuple(sorted(Path(after["items"][i]["f"]).stem for i in s["i"]))
                                  for s in after["suggestions"] if s["k"] == "split"}
