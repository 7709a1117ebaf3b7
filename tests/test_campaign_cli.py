"""Campaigns end to end through the command line, with the fast fake backend: a night, a crop-keyed review, a
second night with --add, SIGKILL at random points of an --add run, and -o inside -i."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import PALETTE, REPO, draw_crop
from crop_cluster.campaign.store import read_campaign
from crop_cluster.cli import main

TIME_FORMAT = "%Y%m%d-%H%M%S"
START = datetime(2026, 6, 1, 22, 0, 0)
NIGHT1 = [(c, v) for v in range(5) for c in (3, 2, 1, 0)]   # colour, view; the last crop of the night is colour 0
LAUNCHER = """import sys
sys.path.insert(0, {tests!r})
from crop_cluster import embed
embed.BACKENDS["fake"] = embed.BackendInfo("fake_backend", "MeanColourBackend", "mean-colour", 0.9, "test backend")
import torch, pandas, fake_backend, crop_cluster.pipeline   # imported before "ready": the kills land in the run
from crop_cluster.cli import main
print("ready", flush=True)
sys.exit(main(sys.argv[1:]))
"""


def stamp(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime(TIME_FORMAT)


def draw_night1(trap: Path) -> None:
    """20 crops of colours 0-3 (5 views each) in one camera folder, one frame a minute (no tracks inside)."""
    for k, (colour, view) in enumerate(NIGHT1):
        draw_crop(trap / f"c{colour}_v{view}_{stamp(60 * k)}.png", PALETTE[colour], seed=10 * colour + view)


def draw_night2(trap: Path, night2: Path) -> None:
    """11 new crops: two colour-0 crops in the camera folder right after night 1 (the first 10 s after its last
    crop: one insect across the batch boundary), then in night2/ colour 1 (2), colour 2 (3) and colour 4 (4)."""
    last = 60 * (len(NIGHT1) - 1)
    draw_crop(trap / f"c0_v5_{stamp(last + 10)}.png", PALETTE[0], seed=5)
    draw_crop(trap / f"c0_v6_{stamp(last + 200)}.png", PALETTE[0], seed=6)
    for k, (colour, view) in enumerate([(1, 5), (1, 6), (2, 5), (2, 6), (2, 7), (4, 0), (4, 1), (4, 2), (4, 3)]):
        draw_crop(night2 / f"c{colour}_v{view}_{stamp(86400 + 60 * k)}.png", PALETTE[colour],
                  seed=10 * colour + view)


def colour_of(filenames) -> np.ndarray:
    return np.asarray([int(os.path.basename(f)[1]) for f in filenames])


def table(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    frame["path"] = [os.path.abspath(f) for f in frame["filename"]]
    return frame.set_index("path")


def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def reviewed(tmp_path, fake_backend):
    """Night 1 clustered in OUT, then a crop-keyed review merging the colour-0 and colour-3 clusters as 'moth A'
    and excluding one colour-2 crop, applied. Returns (crops root, OUT, night-1 table, reviewed table)."""
    trap, out = tmp_path / "crops" / "trap", tmp_path / "out"
    draw_night1(trap)
    assert run_cli("-i", trap, "-o", out, "-e", fake_backend, "-th", "0.95", "--time_format", TIME_FORMAT, "-q") == 0
    night1 = table(out)
    assert night1["cluster"].nunique() == 4 and (night1["cluster"] >= 0).all()
    assert (night1["cluster_status"] == "new").all() and (night1["first_run"] == 0).all()
    colour = colour_of(night1.index)
    rows = [(os.path.basename(p), "moth A") for p in night1.index[np.isin(colour, [0, 3])]]
    rows.append((os.path.basename(night1.index[colour == 2][0]), "-1"))
    review = tmp_path / "review.csv"
    pd.DataFrame(rows, columns=["filename", "group"]).assign(reviewer="ana", time="2026-06-02T09:00:00Z") \
        .to_csv(review, index=False)
    assert run_cli("-o", out, "--review", review, "-q") == 0     # the folder's own run: nothing embedded again
    after = table(out)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["counts"]["embedded"] == 0 and manifest["counts"]["named_groups"] == 1
    return tmp_path / "crops", out, night1, after


def test_a_review_merges_two_clusters_under_one_name_and_excludes_a_crop(reviewed):
    _, out, night1, after = reviewed
    colour = colour_of(after.index)
    group = after[np.isin(colour, [0, 3])]
    assert (group["group"] == "moth A").all() and group["cluster"].nunique() == 1
    assert group["cluster"].iloc[0] in set(night1.loc[group.index, "cluster"])      # one of the two old ids
    assert (group["cluster_status"] == "reviewed").all() and (group["cluster_size"] == 10).all()
    excluded = night1.index[colour_of(night1.index) == 2][0]
    assert after.loc[excluded, "cluster"] == -1 and after.loc[excluded, "group"] == ""
    others = after.index[np.isin(colour, [1, 2]) & (after.index != excluded)]
    assert (after.loc[others, "cluster"] == night1.loc[others, "cluster"]).all()
    assert (after.loc[others, "cluster_status"] == "unreviewed").all()
    view = read_campaign(str(out))
    assert view.decisions["reviewer"].eq("ana").all() and len(view.decisions) == 11
    assert view.clusters.set_index("id").loc[group["cluster"].iloc[0], "name"] == "moth A"


def test_a_second_night_joins_the_reviewed_campaign(reviewed, fake_backend):
    root, out, night1, after = reviewed
    draw_night2(root / "trap", root / "night2")
    assert run_cli("-i", root / "trap", root / "night2", "-o", out, "--add", "-e", fake_backend, "-th", "0.95",
                   "--time_format", TIME_FORMAT, "-q") == 0
    added = table(out)
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert len(added) == 31 and counts["new_crops"] == 11
    assert counts["embeddings_computed"] == 11                          # only the new crops were embedded
    assert counts["new_clusters"] == 1 and counts["joined"] >= 3 and counts["conflicts"] == 0
    group_id = after.loc[after["group"] == "moth A", "cluster"].iloc[0]
    moth = added[added["group"] == "moth A"]
    assert moth["cluster"].eq(group_id).all() and len(moth) == 12      # the two new colour-0 crops joined it
    excluded = after.index[(after["cluster"] == -1)][0]
    assert added.loc[excluded, "cluster"] == -1
    others = after.index[(after["group"] == "") & (after["cluster"] >= 0)]
    assert (added.loc[others, "cluster"] == after.loc[others, "cluster"]).mean() >= 0.9
    colour = colour_of(added.index)
    purple = added[colour == 4]
    assert purple["cluster"].nunique() == 1 and purple["cluster"].iloc[0] > night1["cluster"].max()
    assert (purple["cluster_status"] == "new").all() and (purple["first_run"] == 2).all()
    assert (added.loc[night1.index, "first_run"] == 0).all()
    # the insect across the batch boundary: one individual, linked by its track
    boundary = [p for p in added.index if os.path.basename(p).startswith("c0_v5_")][0]
    last_of_night1 = [p for p in night1.index if os.path.basename(p).startswith("c0_v4_")][0]   # 22:19:00
    assert added.loc[boundary, "individual"] == added.loc[last_of_night1, "individual"]
    assert {added.loc[boundary, "linked_by"], added.loc[last_of_night1, "linked_by"]} == {"", "track"}
    later = [p for p in added.index if os.path.basename(p).startswith("c0_v6_")][0]
    assert added.loc[later, "individual"] != added.loc[last_of_night1, "individual"]


def test_the_output_folder_inside_the_input_is_never_read(tmp_path, fake_backend, caplog):
    crops = tmp_path / "crops"
    for colour in range(3):
        for view in range(4):
            draw_crop(crops / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)
    out = crops / "results"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-gs") == 0
    first = pd.read_csv(out / "clusters.csv")
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-gs") == 0
    second = pd.read_csv(out / "clusters.csv")
    assert len(first) == len(second) == 12 and sorted(first.filename) == sorted(second.filename)
    # the cluster copies and report thumbnails of the first run, and no non-image file of the output folder
    assert "passed over 24 images inside crop-cluster output folders" in caplog.text
    assert "files without an image extension" not in caplog.text


def test_add_into_an_empty_folder_starts_the_campaign(tmp_path, fake_backend):
    trap = tmp_path / "trap"
    draw_night1(trap)
    out = tmp_path / "out"
    assert run_cli("-i", trap, "-o", out, "--add", "-e", fake_backend, "-th", "0.95", "-q") == 0
    first = table(out)
    assert first["cluster"].nunique() == 4 and (first["cluster_status"] == "new").all()
    assert json.loads((out / "run.json").read_text())["counts"]["new_crops"] == 20


def test_a_damaged_or_newer_store_stops_the_run_with_exit_2(tmp_path, fake_backend, caplog):
    crops = tmp_path / "crops"
    draw_crop(crops / "a.png", PALETTE[0], seed=1)
    draw_crop(crops / "b.png", PALETTE[0], seed=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "campaign.sqlite").write_bytes(b"garbage" * 1000)
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q") == 2
    assert "campaign.sqlite: not a readable campaign store" in caplog.text and "Traceback" not in caplog.text


def test_a_second_concurrent_run_stops_with_a_clear_message(tmp_path, fake_backend, caplog, monkeypatch):
    from crop_cluster.campaign import lock

    crops = tmp_path / "crops"
    draw_crop(crops / "a.png", PALETTE[0], seed=1)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(lock, "WAIT_SECONDS", 0.3)
    with lock.RunLock(str(out)):
        assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q") == 2
    assert "another crop-cluster run is writing to this output folder" in caplog.text
    assert not (out / "clusters.csv").exists()


@pytest.mark.slow
def test_sigkill_at_random_points_of_an_add_run_leaves_a_store_the_next_run_completes(reviewed, tmp_path):
    root, base, _, _ = reviewed
    draw_night2(root / "trap", root / "night2")
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(tests=str(REPO / "tests")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def add_command(out: Path):
        return [sys.executable, str(launcher), "-i", str(root / "trap"), str(root / "night2"), "-o", str(out),
                "--add", "-e", "fake", "-th", "0.95", "--time_format", TIME_FORMAT, "-q"]

    def copy_of_base(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(base, target)
        return target

    def start(out: Path) -> subprocess.Popen:
        process = subprocess.Popen(add_command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True)
        assert process.stdout.readline().strip() == "ready"
        return process

    columns = ["cluster", "group", "individual"]
    reference = copy_of_base("reference")
    process = start(reference)
    started = time.monotonic()
    assert process.wait() == 0
    duration = time.monotonic() - started                   # the run itself, after the imports
    expected = table(reference)[columns].sort_index()
    rng = np.random.default_rng(13)
    killed = 0
    for trial, fraction in enumerate(sorted(rng.uniform(0.05, 1.0, size=4))):
        out = copy_of_base(f"trial{trial}")
        process = start(out)
        time.sleep(fraction * duration)
        process.send_signal(signal.SIGKILL)
        killed += process.wait() == -signal.SIGKILL
        result = subprocess.run(add_command(out), env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert table(out)[columns].sort_index().equals(expected), f"kill at {fraction:.2f} of the run"
        runs = read_campaign(str(out)).runs
        assert runs["mode"].tolist()[-1] == "add" and len(runs) in (3, 4)     # the killed run: all or nothing
    assert killed >= 1


def test_a_rerun_at_another_threshold_keeps_the_pinned_group_and_matches_the_rest(reviewed, fake_backend):
    _, out, _, after = reviewed
    embeddings = out.parent / "night1-embeddings.pkl"
    shutil.copyfile(out / "embeddings.pkl", embeddings)
    assert run_cli("--embeddings", embeddings, "-o", out, "-th", "0.999", "-q") == 0     # splits everything
    rerun = table(out)
    moth = after.index[after["group"] == "moth A"]
    assert (rerun.loc[moth, "group"] == "moth A").all() and rerun.loc[moth, "cluster"].nunique() == 1
    assert rerun.loc[moth, "cluster"].iloc[0] == after.loc[moth, "cluster"].iloc[0]          # pinned, same id
    assert rerun.loc[after.index[after["cluster"] == -1], "cluster"].eq(-1).all()             # still excluded
    old_ids = set(after["cluster"]) - {-1}
    fresh = set(rerun["cluster"]) - {-1} - old_ids
    assert all(i > max(old_ids) for i in fresh)                                               # never reused
