"""The fault round's campaign cases (issue 31), each reproduced end to end through the command line with the fast
fake backend: a review run from another working folder, an empty or copied store, a file whose content changed, a
model change, campaign crops whose files and cache are gone, a byte-identical copy under a new name, a store that
lost a table, a full disk while the outputs are written, and the real light-trap crops reviewed with --review
alone. Every case ends with exit 0 and the right result, or exit 2 and a message naming the file and the fix;
none loses a decision or an id it should keep."""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from conftest import PALETTE, draw_crop
from crop_cluster.campaign.store import read_campaign
from crop_cluster.cli import main


def run(*args) -> int:
    return main([str(a) for a in args] + ["-q", "--no_report"])


def table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "clusters.csv", keep_default_na=False)


@pytest.fixture
def campaign(tmp_path, fake_backend):
    """12 crops of three colours in CROPS/, clustered into OUT, then a crop-keyed review naming colour 0's crops
    'moth A' (by basename) applied with --review alone."""
    crops, out = tmp_path / "crops", tmp_path / "out"
    for colour in range(3):
        for view in range(4):
            draw_crop(crops / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)
    assert run("-i", crops, "-o", out, "-e", fake_backend, "-th", "0.95") == 0
    review = tmp_path / "review.csv"
    pd.DataFrame({"filename": [f"c0_v{v}.png" for v in range(4)], "group": "moth A"}).to_csv(review, index=False)
    return crops, out, review


def named(out: Path) -> pd.DataFrame:
    frame = table(out)
    return frame[frame["group"] == "moth A"]


def test_a_review_from_another_working_folder_keys_the_real_crops(campaign, tmp_path, monkeypatch):
    crops, out, review = campaign
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run("-o", out.resolve(), "--review", review.resolve()) == 0
    decisions = read_campaign(str(out)).decisions
    assert len(decisions) == 4 and not decisions["digest"].str.startswith("path:").any()
    first_ids = set(named(out)["cluster"])
    assert run("-i", crops.resolve(), "-o", out.resolve(), "--add") == 0           # a later run keeps the group
    assert len(named(out)) == 4 and set(named(out)["cluster"]) == first_ids


def test_an_empty_store_beside_an_earlier_campaign_stops_with_the_way_out(campaign, caplog):
    crops, out, review = campaign
    assert run("-o", out, "--review", review) == 0
    (out / "campaign.sqlite").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (out / f"campaign.sqlite{suffix}").unlink(missing_ok=True)
    before = (out / "clusters.csv").read_bytes()
    assert run("-i", crops, "-o", out, "--add") == 2
    assert "campaign.sqlite is empty" in caplog.text and "backup" in caplog.text
    assert (out / "clusters.csv").read_bytes() == before


def test_a_store_copied_in_from_another_folder_is_refused(campaign, tmp_path, fake_backend, caplog):
    crops, out, review = campaign
    other = tmp_path / "other"
    assert run("-i", crops, "-o", other, "-e", fake_backend, "-th", "0.95") == 0
    shutil.copyfile(out / "campaign.sqlite", other / "campaign.sqlite")
    assert run("-i", crops, "-o", other, "--add") == 2
    assert "copied in from another folder" in caplog.text


def test_a_file_whose_content_changed_is_a_new_crop_version(campaign, caplog):
    crops, out, review = campaign
    draw_crop(crops / "c1_v0.png", PALETTE[2], seed=99)                     # another picture, same name
    assert run("-i", crops, "-o", out, "--add") == 0
    frame = table(out)
    assert frame["filename"].map(os.path.basename).tolist().count("c1_v0.png") == 1 and len(frame) == 12
    assert "changed content" in caplog.text
    assert run("-o", out, "--review", out.parent / "review.csv") == 0       # the folder's own outputs still work


def test_campaign_crops_whose_files_and_cache_are_gone_are_reported_not_fatal(campaign):
    crops, out, review = campaign
    shutil.rmtree(out / "embed_cache")
    for name in ("c2_v0.png", "c2_v1.png"):
        (crops / name).unlink()
    (out / "embeddings.pkl").unlink()
    new = crops.parent / "night2"
    draw_crop(new / "c0_v9.png", PALETTE[0], seed=9)
    assert run("-i", new, "-o", out, "--add") == 0
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(skipped["filename"].map(os.path.basename)) == ["c2_v0.png", "c2_v1.png"]
    assert skipped["reason"].str.contains("kept in").all()
    assert len(table(out)) == 11


def test_every_campaign_crop_gone_is_a_clear_error(campaign, caplog):
    crops, out, review = campaign
    shutil.rmtree(out / "embed_cache")
    shutil.rmtree(crops)
    (out / "embeddings.pkl").unlink()
    assert run("-o", out, "--review", review) == 2
    assert "none of the campaign's crops could be used" in caplog.text


def test_a_byte_identical_copy_under_a_new_name_joins_its_original(campaign):
    crops, out, review = campaign
    night2 = crops.parent / "night2"
    night2.mkdir()
    shutil.copyfile(crops / "c1_v1.png", night2 / "same_as_c1_v1.png")
    assert run("-i", night2, "-o", out, "--add") == 0
    frame = table(out).set_index(table(out)["filename"].map(os.path.basename))
    assert frame.loc["same_as_c1_v1.png", "individual"] == frame.loc["c1_v1.png", "individual"]
    assert frame.loc["same_as_c1_v1.png", "linked_by"] in ("exact", "")
    assert len(frame) == 13


def test_a_store_that_lost_a_table_names_it(campaign, caplog):
    crops, out, review = campaign
    with sqlite3.connect(out / "campaign.sqlite") as connection:
        connection.execute("DROP TABLE decisions")
    assert run("-i", crops, "-o", out) == 2
    assert "lost its table(s) decisions" in caplog.text


def test_a_full_disk_while_writing_leaves_outputs_and_store_as_they_were(campaign, monkeypatch, caplog):
    crops, out, review = campaign
    import crop_cluster.outputs.manifest as manifest

    before = {name: (out / name).read_bytes() for name in ("clusters.csv", "run.json")}
    runs = len(read_campaign(str(out)).runs)

    def full(path, content):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    with monkeypatch.context() as patch:
        patch.setattr(manifest, "write_manifest", full)
        assert run("-o", out, "--review", review) == 2
    assert "run.json" in caplog.text and "no space left" in caplog.text
    assert {name: (out / name).read_bytes() for name in before} == before
    assert len(read_campaign(str(out)).runs) == runs and len(read_campaign(str(out)).decisions) == 0
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    assert run("-o", out, "--review", review) == 0 and len(named(out)) == 4


def test_disk_full_inside_sqlite_is_not_called_damage():
    from crop_cluster.campaign.store import system_error

    error = system_error("OUT/campaign.sqlite", sqlite3.OperationalError("database or disk is full"), "open it")
    assert error is not None and "the disk is full" in str(error) and "left as it was" in str(error)
    assert system_error("x", sqlite3.DatabaseError("file is not a database"), "open it") is None


@pytest.mark.slow
def test_a_review_alone_keeps_the_campaigns_settings_on_the_real_crops(shared_crops, tmp_path):
    out = tmp_path / "out"
    assert run("-i", shared_crops, "-o", out, "-e", "lite0", "--time_format", "%Y%m%d%H%M%S") == 0
    first = table(out)
    assert first["individual"].nunique() == 9
    review = tmp_path / "review.csv"
    pd.DataFrame({"filename": [os.path.basename(first["filename"][0])], "group": ["moth"]}).to_csv(review,
                                                                                                  index=False)
    assert run("-o", out, "--review", review) == 0
    after = table(out)
    manifest = json.loads((out / "run.json").read_text())
    assert after["individual"].nunique() == 9
    assert manifest["settings"]["time_format"] == {"value": "%Y%m%d%H%M%S", "source": "campaign"}
    assert manifest["individuals"]["kept"]
