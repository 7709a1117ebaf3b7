"""The fault suite (issue 31): user tables that used to crash or mislead, cells a spreadsheet would run, odd file
names, full disks, missing originals and the GPU paths' self-checks, end to end through the command line with the
fast fake backend. Every case exits 0 with the right result, or 2 with a message naming the file and the fix;
docs/reliability.md lists them (case, before, after)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import PALETTE, draw_crop
from crop_cluster.cli import main


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def read_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "clusters.csv", keep_default_na=False)


def errors(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


@pytest.fixture
def twin_nights(tmp_path) -> Path:
    """Two folders n1/, n2/ holding the same basenames (3 colours x 2 views each): every basename occurs twice."""
    root = tmp_path / "crops"
    for night in (1, 2):
        for colour in range(3):
            for view in range(2):
                draw_crop(root / f"n{night}" / f"c{colour}_v{view}.png", PALETTE[colour],
                          seed=100 * night + 10 * colour + view)
    return root


# --- a. tables whose basenames are all duplicated ----------------------------------------------------------------

def test_labels_whose_basenames_all_occur_twice_exit_2_naming_the_file(twin_nights, tmp_path, fake_backend, caplog):
    """Before: IndexError in inputs/table._lookup (exit 1). The rows name the files under another root, so only the
    basenames could match, and each occurs twice in the table: no row matches, and the message says how to write
    the paths."""
    labels = tmp_path / "labels.csv"
    files = sorted(twin_nights.rglob("*.png"))
    pd.DataFrame({"filename": [f"elsewhere/{p.parent.name}/{p.name}" for p in files],
                  "label": [p.name[:2] for p in files]}).to_csv(labels, index=False)
    out = tmp_path / "out"
    assert run_cli("-i", twin_nights / "n1", "-o", out, "-e", fake_backend, "--labels", labels, "-q") == 2
    message = errors(caplog)
    assert str(labels) in message and "none of its 12 rows" in message and "basename" in message
    assert "unexpected" not in message


def test_a_review_whose_basenames_all_occur_twice_exits_2_naming_the_file(twin_nights, tmp_path, fake_backend,
                                                                          caplog):
    out = tmp_path / "out"
    assert run_cli("-i", twin_nights / "n1", "-o", out, "-e", fake_backend, "-q") == 0
    review = tmp_path / "review.csv"
    pd.DataFrame({"filename": ["x/c0_v0.png", "y/c0_v0.png"], "group": ["moth", "moth"]}).to_csv(review, index=False)
    assert run_cli("-o", out, "--review", review, "-q") == 2
    message = errors(caplog)
    assert str(review) in message and "none of its 2 decisions" in message and "basename" in message


def test_labels_matched_by_a_unique_path_when_basenames_repeat(twin_nights, tmp_path, fake_backend):
    """The same table with paths relative to the CSV's folder: every row matches although no basename is unique."""
    labels = twin_nights / "labels.csv"
    files = sorted(twin_nights.rglob("*.png"))
    pd.DataFrame({"filename": [f"{p.parent.name}/{p.name}" for p in files],
                  "label": [p.name[:2] for p in files]}).to_csv(labels, index=False)
    out = tmp_path / "out"
    assert run_cli("-i", twin_nights / "n1", twin_nights / "n2", "-o", out, "-e", fake_backend, "--labels", labels,
                   "-sl", "-q") == 0
    table = read_table(out)
    assert (table["label"] == table["filename"].map(lambda f: Path(f).name[:2])).all()


# --- b. the spellings of -1 in a review's group column --------------------------------------------------------------

@pytest.fixture
def night(tmp_path) -> Path:
    """One folder: 3 colours x 3 views (c{colour}_v{view}.png)."""
    root = tmp_path / "night"
    for colour in range(3):
        for view in range(3):
            draw_crop(root / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)
    return root


@pytest.mark.parametrize("spelling", ["-1", "-1.0", "\u22121", "- 1", " -1 ", "-1.00", "\uff0d1", "\u20131", "-01"])
def test_every_spelling_of_minus_one_excludes_the_crop(night, tmp_path, fake_backend, spelling):
    """Before: '-1.0', '−1' (U+2212), '- 1' became group names. After: each keeps the crop out of every cluster."""
    out = tmp_path / "out"
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-q") == 0
    review = tmp_path / "review.csv"
    review.write_text(f"filename,group\nc0_v0.png,{spelling}\nc1_v0.png,moth\n", encoding="utf-8")
    assert run_cli("-o", out, "--review", review, "-q") == 0
    table = read_table(out)
    table.index = table["filename"].map(lambda f: Path(f).name)
    assert table.loc["c0_v0.png", "cluster"] == -1 and set(table["group"]) == {"", "moth"}
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["counts"]["named_groups"] == 1 and manifest["counts"]["excluded_crops"] == 1
    from crop_cluster.campaign.store import read_campaign

    assert sorted(read_campaign(str(out)).decisions["group"]) == ["-1", "moth"]


# --- c. cells a spreadsheet would run as formulas ---------------------------------------------------------------

NUMBER = r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"


def unsafe_cells(path: Path) -> list:
    """Cells of a CSV that a spreadsheet would run: starting with = + - @ tab or CR and not a plain number."""
    import csv
    import re

    with open(path, encoding="utf-8", newline="") as handle:
        return [cell for row in csv.reader(handle) for cell in row
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not re.fullmatch(NUMBER, cell)]


def test_cells_a_spreadsheet_would_run_are_written_safely_and_read_back(tmp_path, fake_backend, monkeypatch):
    """Before: '=HYPERLINK(...)' (a file name, a --metadata cell, a group name) reached clusters.csv as is. After:
    such cells start with an apostrophe (numbers such as the cluster -1 stay numbers), and every reader of the
    tool's own files takes it off again: the names round-trip through --review, --embeddings and --labels."""
    crops = tmp_path / "crops"
    names = {"=HYPERLINK(1).png": 0, "-a.png": 0, "+b.png": 1, "@c.png": 1, "plain.png": 5}
    for k, (name, colour) in enumerate(names.items()):
        draw_crop(crops / name, PALETTE[colour], seed=k)
    metadata = tmp_path / "meta.csv"
    pd.DataFrame({"filename": list(names), "note": ["=cmd|' /C calc'!A0", "@SUM(1)", "\tx", "ok", "-"],
                  "depth": [-1.5, 2.0, -3.0, 4.0, -0.25]}).to_csv(metadata, index=False)
    out = tmp_path / "out"
    monkeypatch.chdir(crops)                 # the glob gives the names as they are: '=HYPERLINK(1).png', ...
    assert run_cli("-i", "*.png", "-o", out, "-e", fake_backend, "--metadata", metadata, "--sweep", "0.5:0.9:0.2",
                   "-q") == 0
    for written in ("clusters.csv", "skipped.csv", "sweep.csv"):
        assert unsafe_cells(out / written) == [], written
    raw = pd.read_csv(out / "clusters.csv", dtype=str, keep_default_na=False)
    assert "-1" in set(raw["cluster"]) and set(raw["depth"]) == {"-1.5", "2", "-3", "4", "-0.25"}
    assert sorted(raw["filename"]) == sorted(["'" + n if n[0] in "=-+@" else n for n in names])
    assert "'=cmd|' /C calc'!A0" in set(raw["note"])

    review = tmp_path / "review.csv"         # written from clusters.csv's own cells, apostrophes and all
    pd.DataFrame({"filename": raw["filename"], "group": ["=SUM(A1)"] * len(raw)}).to_csv(review, index=False)
    assert run_cli("-o", out, "--review", review, "-q") == 0
    assert unsafe_cells(out / "clusters.csv") == []
    from crop_cluster.campaign.store import read_campaign

    decisions = read_campaign(str(out)).decisions
    assert set(decisions["group"]) == {"=SUM(A1)"} and len(decisions) == len(names)
    assert sorted(Path(f).name for f in decisions["filename"]) == sorted(names)

    again = tmp_path / "again"
    labels = tmp_path / "labels.csv"         # one name as the tool writes it, one as a person types it
    labels.write_text("filename,label\n'-a.png,minus\n+b.png,plus\n", encoding="utf-8")
    assert run_cli("--embeddings", out / "embeddings.pkl", "-o", again, "--labels", labels, "-sl", "-q") == 0
    table = read_table(again)
    table.index = table["filename"].map(lambda f: Path(f).name.lstrip("'"))
    assert table.loc["-a.png", "label"] == "minus" and table.loc["+b.png", "label"] == "plus"
    assert len(table) == len(names)


# --- d. a column given twice -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, header, column", [
    ("--review", "filename,group,Group", "group"),
    ("--labels", "filename,label,label", "label"),
    ("--labels", "filename,label,filename", "filename"),
    ("--metadata", "filename,trap, trap", "trap"),
    ("--metadata", "filename,filename,trap", "filename")])
def test_a_column_given_twice_exits_2_naming_the_file_and_the_column(night, tmp_path, fake_backend, caplog, flag,
                                                                      header, column):
    """Before: pandas renamed the second column 'group.1' and it was ignored (or used as metadata)."""
    table = tmp_path / "table.csv"
    row = ",".join(["c0_v0.png"] + ["moth" if k % 2 else "c0_v0.png" for k in range(1, header.count(",") + 1)])
    table.write_text(f"{header}\n{row}\n", encoding="utf-8")
    out = tmp_path / "out"
    if flag == "--review":
        assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-q") == 0
        assert run_cli("-o", out, "--review", table, "-q") == 2
    else:
        assert run_cli("-i", night, "-o", out, "-e", fake_backend, flag, table, "-q") == 2
    message = errors(caplog)
    assert str(table) in message and f"column '{column}' occurs twice" in message and "keep one" in message


# --- e. names in another Unicode normal form ----------------------------------------------------------------------

NFC, NFD = "caf\u00e9", "cafe\u0301"          # 'café' precomposed (Linux, Windows) and decomposed (macOS)


@pytest.fixture
def accented(tmp_path) -> Path:
    """Two crops on disk, one named in NFC, one in NFD."""
    root = tmp_path / "accented"
    draw_crop(root / f"{NFC}_1.png", PALETTE[0], seed=1)
    draw_crop(root / f"{NFD}_2.png", PALETTE[1], seed=2)
    return root


def test_labels_and_metadata_in_the_other_normal_form_match(accented, tmp_path, fake_backend):
    """Before: a table written on macOS (NFD) matched none of the files named in NFC, and the other way round."""
    labels = tmp_path / "labels.csv"
    labels.write_text(f"filename,label\n{NFD}_1.png,one\n{NFC}_2.png,two\n", encoding="utf-8")
    metadata = tmp_path / "meta.csv"
    metadata.write_text(f"filename,trap\n{NFD}_1.png,A\n{NFC}_2.png,B\n", encoding="utf-8")
    out = tmp_path / "out"
    assert run_cli("-i", accented, "-o", out, "-e", fake_backend, "--labels", labels, "-sl", "--metadata", metadata,
                   "-q") == 0
    table = read_table(out).sort_values("filename", key=lambda s: s.str.normalize("NFC"))
    assert table["label"].tolist() == ["one", "two"] and table["trap"].tolist() == ["A", "B"]


def test_a_review_in_the_other_normal_form_applies(accented, tmp_path, fake_backend):
    out = tmp_path / "out"
    assert run_cli("-i", accented, "-o", out, "-e", fake_backend, "-q") == 0
    review = tmp_path / "review.csv"
    review.write_text(f"filename,group\n{NFD}_1.png,moth\n{NFC}_2.png,moth\n", encoding="utf-8")
    assert run_cli("-o", out, "--review", review, "-q") == 0
    assert set(read_table(out)["group"]) == {"moth"}


# --- f. cluster folders (-gs): long names, missing originals -------------------------------------------------------

def test_two_255_byte_basenames_in_one_cluster_folder_get_short_unique_names(tmp_path, fake_backend):
    """Before: the second copy's 'name__2.png' was 258 bytes: 'File name too long', exit 2, nothing committed."""
    crops = tmp_path / "crops"
    long_ascii = "x" * 251 + ".png"                            # 255 bytes
    long_accents = "\u00e9" * 125 + ".png"                     # 254 bytes in UTF-8
    for folder in ("a", "b", "c"):
        draw_crop(crops / folder / long_ascii, PALETTE[0], seed=ord(folder))
        draw_crop(crops / folder / long_accents, PALETTE[1], seed=ord(folder) + 10)
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-gs", "-q") == 0
    copies = sorted(p.name for p in (out / "clusters").rglob("*.png"))
    assert len(copies) == len(set(copies)) == 6
    assert all(len(name.encode("utf-8")) <= 255 and name.endswith(".png") for name in copies)
    assert sum(name == long_ascii for name in copies) == 1 and sum(name == long_accents for name in copies) == 1
    assert sum(name.startswith("x" * 200) for name in copies) == 3                  # recognisable
    assert sum(name.startswith("\u00e9" * 100) for name in copies) == 3
    from crop_cluster.campaign.store import read_campaign

    assert len(read_campaign(str(out)).runs) == 1                                    # the run was committed


def test_a_campaign_crop_deleted_from_disk_does_not_block_add_with_folders(night, tmp_path, fake_backend, caplog):
    """Before: every later `--add -gs` stopped with exit 2 on the missing original. After: it is left out of the
    cluster folders, named in the log and in run.json, and the run commits."""
    out = tmp_path / "out"
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-q") == 0
    gone = night / "c1_v2.png"
    gone.unlink()
    night2 = tmp_path / "night2"
    draw_crop(night2 / "c0_v9.png", PALETTE[0], seed=99)
    caplog.set_level(logging.WARNING)
    assert run_cli("-i", night2, "-o", out, "-e", fake_backend, "--add", "-gs") == 0
    copies = sorted(p.name for p in (out / "clusters").rglob("*.png"))
    assert "c1_v2.png" not in copies and "c0_v9.png" in copies and len(copies) == 9
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["cluster_folders"]["missing"] == 1
    assert manifest["cluster_folders"]["missing_examples"] == [str(gone)]
    assert str(gone) in " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    from crop_cluster.campaign.store import read_campaign

    assert len(read_campaign(str(out)).runs) == 2


# --- g. a full disk and other OS errors while writing outputs -----------------------------------------------------

def test_a_full_disk_while_writing_clusters_csv_names_the_file_and_keeps_the_previous_one(night, tmp_path,
                                                                                          fake_backend, caplog,
                                                                                          monkeypatch):
    """Before: 'unexpected error: OSError: [Errno 28] No space left on device' (exit 1), no file named. After:
    exit 2 naming OUT/clusters.csv and the fix; the previous clusters.csv is whole and no temporary is left."""
    import errno

    out = tmp_path / "out"
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-q") == 0
    before = (out / "clusters.csv").read_bytes()
    to_csv = pd.DataFrame.to_csv

    def disk_fills_up(frame, handle=None, **kwargs):
        if "cluster_size" in frame.columns:                  # clusters.csv: half written, then the disk is full
            handle.write(to_csv(frame, None, **kwargs)[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return to_csv(frame, handle, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_fills_up)
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-th", "0.5", "-q") == 2
    message = errors(caplog)
    assert f"cannot write {out / 'clusters.csv'}: no space left on the device" in message
    assert "MB free on the disk holding" in message and "free some space" in message and "unchanged" in message
    assert (out / "clusters.csv").read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_outside_an_atomic_write_names_the_output_folder(night, tmp_path, fake_backend, caplog,
                                                                    monkeypatch):
    """An ENOSPC without a file name (e.g. from a library's own write) still exits 2 with the folder and the fix."""
    import errno

    from crop_cluster.outputs import embeddings

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(embeddings, "write_embeddings", full)
    out = tmp_path / "out"
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-q") == 2
    assert f"cannot write {out}: no space left on the device" in errors(caplog)


def test_a_thumbnail_or_a_cluster_folder_copy_that_cannot_be_written_names_it(night, tmp_path, fake_backend, caplog,
                                                                              monkeypatch):
    """Before: a thumbnail that could not be written was taken for an unreadable crop (left out silently)."""
    import errno
    import shutil as shell

    from PIL import Image

    save = Image.Image.save

    def read_only(image, target, *args, **kwargs):
        if str(target).endswith(".tmp"):
            raise OSError(errno.EROFS, "Read-only file system", str(target))
        return save(image, target, *args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(Image.Image, "save", read_only)
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-q") == 2
    assert f"cannot write {out / 'report'}" in errors(caplog) and "Read-only file system" in errors(caplog)
    monkeypatch.setattr(Image.Image, "save", save)

    def full(source, target, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shell, "copy2", full)
    caplog.clear()
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "-gs", "-q") == 2
    assert f"cannot write {out / 'clusters'}" in errors(caplog) and "no space left" in errors(caplog)


FULL_DISK_SCRIPT = """import json, os, sys
sys.path.insert(0, {tests!r})
from crop_cluster import embed
embed.BACKENDS["fake"] = embed.BackendInfo("fake_backend", "MeanColourBackend", "mean-colour", 0.9, "test backend")
from crop_cluster.cli import main
out, crops, cache, metadata, left = sys.argv[1:6]
first = main(["-i", crops, "-o", out, "-e", "fake", "--cache_dir", cache, "--no_report", "-q"])
before = open(os.path.join(out, "clusters.csv"), "rb").read()
with open(os.path.join(out, "filler"), "wb") as filler:      # leave `left` bytes
    free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
    filler.write(bytes(max(0, free - int(left))))
second = main(["-i", crops, "-o", out, "-e", "fake", "--cache_dir", cache, "--no_report", "--metadata", metadata,
               "-th", "0.5", "-q"])
after = open(os.path.join(out, "clusters.csv"), "rb").read()
print(json.dumps({{"first": first, "second": second, "unchanged": before == after,
                  "temporaries": [n for n in os.listdir(out) if n.endswith(".tmp")]}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("left", [163840, 0])
def test_a_real_full_disk_exits_2_and_keeps_the_outputs(night, tmp_path, left):
    """The real thing: OUT on a 1 MiB tmpfs in a private mount namespace (root and `unshare -m` needed, else
    skipped), filled up between two runs: with 160 KiB left the store's own writes fit but the second run's
    clusters.csv (a 40 KiB note per row) does not; with nothing left even the store cannot open its journal, which
    is a full disk, not a damaged store."""
    import os
    import subprocess
    import sys

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    out = tmp_path / "out"
    out.mkdir()
    metadata = tmp_path / "meta.csv"
    pd.DataFrame({"filename": [str(p) for p in sorted(night.iterdir())],
                  "note": ["n" * 40_000] * 9}).to_csv(metadata, index=False)
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT.format(tests=str(Path(__file__).parent)))
    mount = (f"mount -t tmpfs -o size=1m tmpfs {out} || exit 77; exec {sys.executable} {script} {out} {night} "
             f"{tmp_path / 'cache'} {metadata} {left}")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", mount], capture_output=True,
                          text=True, timeout=300)
    if done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"first": 0, "second": 2, "unchanged": True, "temporaries": []}, done.stderr
    if left:
        assert f"cannot write {out / 'clusters.csv'}: no space left on the device" in done.stderr
    else:
        assert "cannot open the campaign store: the disk is full" in done.stderr and "left as it was" in done.stderr
        assert "damaged" not in done.stderr and "not a readable" not in done.stderr


# --- h. the GPU paths check themselves on first use ---------------------------------------------------------------

def embeddings_of(out: Path) -> np.ndarray:
    import pickle

    with open(out / "embeddings.pkl", "rb") as handle:
        return pickle.load(handle)["embedding"]


@pytest.mark.parametrize("failure", ["disagrees", "fails"])
def test_device_resize_that_disagrees_or_fails_falls_back_to_pil(night, tmp_path, fake_backend, fresh_checks, caplog,
                                                                monkeypatch, failure):
    """`--resize device` (the CUDA default, never run on a GPU) checks itself against PIL on first use: here it is
    broken on purpose (no antialiasing, or an error like a missing CUDA kernel); the run embeds with PIL instead,
    warns, and says so in run.json."""
    import torch.nn.functional as F

    from crop_cluster.embed import resize

    reference = tmp_path / "pil"
    assert run_cli("-i", night, "-o", reference, "-e", fake_backend, "--resize", "pil", "-q") == 0
    if failure == "disagrees":
        monkeypatch.setattr(resize, "_interpolate", lambda pixels, height, width, mode, kernel: F.interpolate(
            pixels.float(), size=(height, width), mode="nearest").to(pixels.dtype))
    else:
        def no_kernel(*args, **kwargs):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

        monkeypatch.setattr(resize, "fit_batch", no_kernel)
    out = tmp_path / "out"
    caplog.set_level(logging.WARNING)
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "--resize", "device", "--cache_dir",
                   tmp_path / "cache") == 0
    (entry,) = json.loads((out / "run.json").read_text())["fallbacks"]
    assert entry["path"] == "--resize device (pad 48 px) on cpu" and entry["used"] == "PIL (--resize pil)"
    assert ("differs from PIL" if failure == "disagrees" else "failed to compile or run (RuntimeError") \
        in entry["reason"]
    assert "--resize device (pad 48 px) on cpu" in caplog.text and "recorded in run.json fallbacks" in caplog.text
    np.testing.assert_array_equal(embeddings_of(out), embeddings_of(reference))   # PIL's pixels, PIL's vectors
    again = tmp_path / "again"                                   # checked once per process: the next run too
    assert run_cli("-i", night, "-o", again, "-e", fake_backend, "--resize", "device", "--cache_dir",
                   tmp_path / "cache2", "-q") == 0
    assert json.loads((again / "run.json").read_text())["fallbacks"] == [entry]


def test_device_resize_that_agrees_runs_and_records_no_fallback(night, tmp_path, fake_backend, fresh_checks):
    out = tmp_path / "out"
    assert run_cli("-i", night, "-o", out, "-e", fake_backend, "--resize", "device", "-q") == 0
    assert json.loads((out / "run.json").read_text())["fallbacks"] == []
    assert fresh_checks._verdicts == {("--resize device (pad 48 px)", "cpu"): None}
