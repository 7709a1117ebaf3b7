"""One campaign, one answer: the individuals and clusters of a campaign fed in batches with --add, in any order,
equal those of one full run over the same crops with the same settings (with review decisions between batches
applied identically), and a re-run pays only for what changed. Crops made in the test (fast fake backend): a
colour chain that bridges two clusters, near-duplicate copies split across batches, an insect tracked across a
batch boundary, byte-identical files in different batches."""
from __future__ import annotations

import json
import os
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from browser import find_chromium
from conftest import PALETTE, draw_crop
from crop_cluster.cli import main

TIME_FORMAT = "%Y%m%d-%H%M%S"
START = datetime(2026, 6, 1, 22, 0, 0)
SETTINGS = ["-th", "0.97", "--dedup_threshold", "0.9999", "--track_min_similarity", "0.96", "--time_format", TIME_FORMAT]


def stamp(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime(TIME_FORMAT)


def make_crops(root: Path) -> list:
    """~55 crops: four colour kinds (5 views each, one camera frame a minute), a red-to-yellow chain whose middle
    links red and yellow, a tracked insect (6 crops 10 s apart), near-copies (other bytes, the same picture: one
    background pixel changed) and byte-identical copies."""
    files = []
    for colour in range(4):
        for view in range(5):
            files.append(draw_crop(root / "cam1" / f"k{colour}_v{view}_{stamp(600 * colour + 60 * view)}.png",
                                   PALETTE[colour], seed=10 * colour + view))
    red, yellow = np.array(PALETTE[0]), np.array(PALETTE[3])
    for step in range(1, 20):
        colour = tuple(int(c) for c in red + (yellow - red) * step / 20)
        files.append(draw_crop(root / "cam2" / f"chain{step:02d}_{stamp(5000 + 60 * step)}.png", colour,
                               seed=100 + step))
    for k in range(6):                                         # one insect, 10 s apart
        files.append(draw_crop(root / "cam3" / f"track{k}_{stamp(9000 + 10 * k)}.png", PALETTE[4], seed=200 + k))
    for source in files[:3] + files[25:27]:                    # near-copies: the picture with one pixel changed
        image = Image.open(source).convert("RGB")
        image.putpixel((0, 0), (250, 251, 252))
        target = root / "near" / f"{source.stem}_copy.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
        files.append(target)
    for source in files[5:7]:                                  # byte-identical copies under other names
        target = root / "copies" / f"dup_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files.append(target)
    return files


def run(*args) -> int:
    return main([str(a) for a in args] + ["-q", "--no_report"])


def listed(path: Path, files) -> Path:
    path.write_text("\n".join(str(f) for f in files))
    return path


def partition(out: Path, column: str):
    """The partition of clusters.csv's rows by `column` (absolute paths; -1 clusters are singletons)."""
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    groups = {}
    for name, value in zip(table["filename"], table[column]):
        key = os.path.abspath(name)
        groups.setdefault(("solo", key) if column == "cluster" and value == -1 else value, set()).add(key)
    return sorted(sorted(group) for group in groups.values())


def groups(out: Path):
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    return {os.path.abspath(f): str(g) for f, g in zip(table["filename"], table["group"])}


@pytest.fixture
def crops(tmp_path, fake_backend):
    files = make_crops(tmp_path / "crops")
    full = tmp_path / "full"
    assert run("-i", listed(tmp_path / "all.txt", files), "-o", full, "-e", fake_backend, *SETTINGS) == 0
    counts = json.loads((full / "run.json").read_text())["individuals"]
    assert counts["linked_exact"] >= 2 and counts["linked_near"] >= 3 and counts["linked_track"] >= 3
    return tmp_path, files, full


def batches(files, rng):
    order = list(files)
    rng.shuffle(order)
    k = rng.randint(2, 6)
    cuts = sorted(rng.sample(range(1, len(order)), k - 1))
    return [order[a:b] for a, b in zip([0] + cuts, cuts + [len(order)])]


@pytest.mark.parametrize("seed", range(6))
def test_batches_in_any_order_give_the_full_runs_individuals_and_clusters(crops, seed):
    tmp_path, files, full = crops
    chain = tmp_path / f"chain{seed}"
    for k, batch in enumerate(batches(files, random.Random(seed))):
        extra = ["--add"] if k else []
        settings = SETTINGS if k == 0 else []         # later batches: the campaign's settings
        assert run("-i", listed(tmp_path / f"b{seed}_{k}.txt", batch), "-o", chain, "-e", "fake", *settings,
                   *extra) == 0
    for column in ("cluster", "individual"):
        assert partition(chain, column) == partition(full, column), column


def bridged(tmp_path: Path, files, chain: Path, *report) -> pd.DataFrame:
    """A campaign of every crop but the middle of the red-to-yellow chain, then the middle added with --add (it
    bridges the red and the yellow clusters). Returns clusters.csv before the --add."""
    middle = [f for f in files if f.name.startswith("chain") and 8 <= int(f.name[5:7]) <= 12]
    first = [f for f in files if f not in middle]
    assert run("-i", listed(tmp_path / "first.txt", first), "-o", chain, "-e", "fake", *SETTINGS) == 0
    before = pd.read_csv(chain / "clusters.csv", keep_default_na=False).set_index("filename")
    assert main([str(a) for a in ("-i", listed(tmp_path / "middle.txt", middle), "-o", chain, "--add", "-q",
                                  *report)]) == 0
    return before


def test_a_bridge_merges_two_unreviewed_clusters_and_the_larger_keeps_its_id(crops):
    tmp_path, files, full = crops
    chain = tmp_path / "bridge"
    before = bridged(tmp_path, files, chain, "--no_report")
    manifest = json.loads((chain / "run.json").read_text())
    assert manifest["counts"]["merged"] >= 1 and manifest["campaign"]["merges"]
    merge = manifest["campaign"]["merges"][0]
    sizes = before["cluster"].value_counts()
    assert sizes[merge["into"]] >= sizes[merge["cluster"]]                 # the larger kept its id
    after = pd.read_csv(chain / "clusters.csv", keep_default_na=False)
    merged = after[after["cluster"] == merge["into"]]
    assert str(merge["cluster"]) in merged["merged_from"].iloc[0].split(";")
    assert partition(chain, "cluster") == partition(full, "cluster")


def test_decisions_between_batches_apply_as_in_the_full_run(crops):
    tmp_path, files, full = crops
    rng = random.Random(7)
    parts = batches(files, rng)
    while len(parts) < 3:
        parts = batches(files, rng)
    chain, whole = tmp_path / "reviewed-chain", tmp_path / "reviewed-full"
    review = tmp_path / "review.csv"
    named = [f for f in parts[0]][:3]
    pd.DataFrame({"filename": [str(f) for f in named] + [str(parts[0][3])],
                  "group": ["moth A", "moth A", "moth B", "-1"],
                  "time": "2026-06-02T09:00:00Z"}).to_csv(review, index=False)
    for k, batch in enumerate(parts):
        assert run("-i", listed(tmp_path / f"r{k}.txt", batch), "-o", chain, "-e", "fake",
                   *(SETTINGS if k == 0 else ["--add"])) == 0
        if k == 0:
            assert run("-o", chain, "--review", review) == 0
    assert run("-i", listed(tmp_path / "all2.txt", files), "-o", whole, "-e", "fake", *SETTINGS,
               "--review", review) == 0
    for column in ("cluster", "individual"):
        assert partition(chain, column) == partition(whole, column), column
    assert groups(chain) == groups(whole)


def test_the_same_command_again_searches_and_links_nothing_and_a_new_threshold_only_clusters(crops):
    tmp_path, files, full = crops
    assert run("-i", tmp_path / "all.txt", "-o", full) == 0
    manifest = json.loads((full / "run.json").read_text())
    assert manifest["graph"]["kept"] and manifest["individuals"]["kept"]
    assert manifest["counts"]["embeddings_computed"] == 0
    assert {name: entry["source"] for name, entry in manifest["settings"].items()
            if entry["source"] != "default"} == {"embed": "campaign", "threshold": "campaign",
                                                 "dedup_threshold": "campaign", "time_format": "campaign",
                                                 "track_min_similarity": "campaign"}
    before = partition(full, "individual")
    assert run("-i", tmp_path / "all.txt", "-o", full, "-th", "0.99") == 0
    manifest = json.loads((full / "run.json").read_text())
    assert manifest["graph"]["kept"] and manifest["individuals"]["kept"]
    assert manifest["settings"]["threshold"] == {"value": 0.99, "source": "flag"}
    assert partition(full, "individual") == before


def test_a_model_change_is_refused_with_the_way_out(crops, caplog):
    tmp_path, files, full = crops
    assert run("-i", files[0], "-o", full, "--add", "-e", "lite0") == 2
    assert "--re_embed" in caplog.text and "another -o" in caplog.text


def test_a_non_incremental_algorithm_is_run_again_over_the_whole_campaign(crops):
    tmp_path, files, full = crops
    settings = ["-c", "agglomerative", "--n_clusters", "4", "--linkage", "average"]
    whole, chain = tmp_path / "agglomerative-full", tmp_path / "agglomerative-chain"
    assert run("-i", tmp_path / "all.txt", "-o", whole, "-e", "fake", *SETTINGS, *settings) == 0
    parts = batches(files, random.Random(3))
    for k, batch in enumerate(parts):
        assert run("-i", listed(tmp_path / f"a{k}.txt", batch), "-o", chain, "-e", "fake",
                   *(SETTINGS + settings if k == 0 else ["--add"])) == 0
    assert json.loads((chain / "run.json").read_text())["clustering"]["incremental"] is False
    assert partition(chain, "cluster") == partition(whole, "cluster")


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (bash install.sh --dev)")
def test_the_report_shows_what_was_merged_since_the_last_review(crops):
    from browser import Browser
    from test_report_browser import open_report

    tmp_path, files, full = crops
    chain = tmp_path / "bridge-report"
    bridged(tmp_path, files, chain)
    merge = json.loads((chain / "run.json").read_text())["campaign"]["merges"][0]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser = Browser(find_chromium())
    try:
        open_report(browser, chain, downloads)
        badge = browser.evaluate(f"document.querySelector('section[data-cluster=\"{merge['into']}\"] .merged')"
                                 f".textContent")
        assert badge.startswith("merged since the last review:") and f"cluster {merge['cluster']}" in badge
        assert browser.exceptions == [], browser.exceptions
    finally:
        browser.close()
