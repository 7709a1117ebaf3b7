"""Filename-keyed CSV tables: matching rules, alignment and errors (inputs/table.py)."""
import os
import time

import numpy as np
import pandas as pd
import pytest

from crop_cluster.inputs.table import AlignedTable, TableError, match_filenames, read_table


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_exact_match_and_unmatched():
    idx = match_filenames(["b.jpg", "a.jpg"], ["a.jpg", "b.jpg", "c.jpg"], "/x/t.csv")
    assert idx.dtype == np.int64
    assert idx.tolist() == [1, 0, -1]


def test_relative_entry_resolved_against_csv_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = str(tmp_path / "meta" / "t.csv")
    run = [str(tmp_path / "meta" / "imgs" / "a.jpg"), "meta/imgs/./b.jpg"]
    idx = match_filenames(["imgs/a.jpg", "imgs/b.jpg"], run, csv)
    assert idx.tolist() == [0, 1]


def test_relative_entry_resolved_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = str(tmp_path / "meta" / "t.csv")
    run = [str(tmp_path / "data" / "a.jpg"), str(tmp_path / "data" / "x" / "a.jpg")]
    idx = match_filenames(["data/a.jpg", "data/x/../x/a.jpg"], run, csv)
    assert idx.tolist() == [0, 1]


def test_absolute_entry_matches_relative_run_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    idx = match_filenames([str(tmp_path / "d" / "a.jpg")], ["d/a.jpg"], str(tmp_path / "t.csv"))
    assert idx.tolist() == [0]


def test_basename_only_when_unique_in_table_and_run():
    table = ["x/a.jpg", "y/b.jpg", "z/b.jpg", "c.jpg"]
    run = ["/data/a.jpg", "/data/b.jpg", "/data/1/c.jpg", "/data/2/c.jpg"]
    idx = match_filenames(table, run, "/elsewhere/t.csv")
    # a: unique -> row 0; b: twice in table; c: twice among run files
    assert idx.tolist() == [0, -1, -1, -1]


def test_exact_beats_basename():
    idx = match_filenames(["q/a.jpg", "a.jpg"], ["a.jpg"], "/x/t.csv")
    assert idx.tolist() == [1]


def test_duplicate_filename_raises():
    with pytest.raises(TableError, match=r"t\.csv.*'a\.jpg' twice.*one row per file"):
        match_filenames(["a.jpg", "b.jpg", "a.jpg"], ["a.jpg"], "/x/t.csv")


def test_same_file_spelled_twice_raises_when_paths_compared(tmp_path):
    csv = str(tmp_path / "t.csv")
    with pytest.raises(TableError, match="the same file"):
        match_filenames(["a.jpg", "./a.jpg"], [str(tmp_path / "a.jpg")], csv)


def test_empty_inputs():
    assert match_filenames([], ["a.jpg"], "t.csv").tolist() == [-1]
    assert match_filenames(["a.jpg"], [], "t.csv").shape == (0,)


def test_read_table_aligns_columns_and_counts(tmp_path):
    csv = write(tmp_path / "meta.csv", "filename,site,count\n002.jpg,A,3\nb.jpg,B,4\nunused.jpg,C,5\n")
    run = [str(tmp_path / "b.jpg"), "002.jpg", "zzz.jpg"]
    aligned = read_table(csv, run)
    assert isinstance(aligned, AlignedTable)
    frame = aligned.frame
    assert list(frame.columns) == ["site", "count"]
    assert list(frame.index) == [0, 1, 2]
    assert frame["site"].tolist()[:2] == ["B", "A"]
    assert frame["count"].tolist()[:2] == [4, 3]
    assert frame.iloc[2].isna().all()
    assert (aligned.n_unmatched_files, aligned.n_unused_rows) == (1, 1)


def test_filename_read_as_text_and_other_dtypes_inferred(tmp_path):
    csv = write(tmp_path / "t.csv", "filename,x\n001,1.5\n002,2.5\n")
    frame = read_table(csv, ["001", "002"]).frame
    assert frame["x"].tolist() == [1.5, 2.5]
    assert frame["x"].dtype == np.float64


def test_text_columns_and_stripped_header(tmp_path):
    csv = write(tmp_path / "t.csv", "\ufefffilename , label\na.jpg,1\nb.jpg,\n")
    frame = read_table(csv, ["a.jpg", "b.jpg"], required=("label",), text_columns=("label",)).frame
    assert frame["label"].iloc[0] == "1"
    assert pd.isna(frame["label"].iloc[1])


def test_missing_file(tmp_path):
    with pytest.raises(TableError, match=r"nope\.csv: no such file"):
        read_table(str(tmp_path / "nope.csv"), ["a.jpg"])


def test_missing_filename_column(tmp_path):
    csv = write(tmp_path / "t.csv", "file,label\na.jpg,x\n")
    with pytest.raises(TableError, match=r"t\.csv: missing column\(s\) filename \(found: file, label\).*header"):
        read_table(csv, ["a.jpg"])


def test_missing_required_column(tmp_path):
    csv = write(tmp_path / "t.csv", "filename,species\na.jpg,x\n")
    with pytest.raises(TableError, match=r"missing column\(s\) label"):
        read_table(csv, ["a.jpg"], required=("filename", "label"))


def test_unreadable_csv(tmp_path):
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(TableError, match=r"empty\.csv: cannot read this CSV"):
        read_table(empty, ["a.jpg"])
    ragged = write(tmp_path / "ragged.csv", "filename,x\na.jpg,1\nb.jpg,2,3,4\n")
    with pytest.raises(TableError, match=r"ragged\.csv: cannot read"):
        read_table(ragged, ["a.jpg"])
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"filename,x\n\xff\xfe\xfa,1\n")
    with pytest.raises(TableError, match=r"bin\.csv: cannot read"):
        read_table(str(binary), ["a.jpg"])


def test_empty_filename_cell(tmp_path):
    csv = write(tmp_path / "t.csv", "filename,x\na.jpg,1\n,2\n")
    with pytest.raises(TableError, match=r"empty filename in data row\(s\) 2 "):
        read_table(csv, ["a.jpg"])


def test_duplicate_rows_in_csv(tmp_path):
    csv = write(tmp_path / "t.csv", "filename,x\na.jpg,1\na.jpg,2\n")
    with pytest.raises(TableError, match=r"t\.csv.*'a\.jpg' twice"):
        read_table(csv, ["a.jpg"])


def test_million_rows_is_fast(tmp_path):
    """Hash look-ups, not pairwise comparison: 10^6 rows take about a second (bound is loose for busy CI)."""
    n = 10**6
    table = [f"d{i % 1000}/img_{i}.jpg" for i in range(n)]
    run = table[::-1]
    start = time.perf_counter()
    idx = match_filenames(table, run, str(tmp_path / "t.csv"))
    assert time.perf_counter() - start < 10.0
    assert idx[0] == n - 1 and idx[-1] == 0
    # every file needs the path rule: still a few seconds
    run_abs = [os.path.join(str(tmp_path), name) for name in table[:200_000]]
    start = time.perf_counter()
    idx = match_filenames(table[:200_000], run_abs, str(tmp_path / "t.csv"))
    assert time.perf_counter() - start < 10.0
    assert (idx == np.arange(200_000)).all()


def test_basenames_all_repeated_in_the_table_match_nothing():
    """Every basename of the table occurs twice: rule 3 matches nothing (it used to raise IndexError)."""
    idx = match_filenames(["x/a.jpg", "y/a.jpg", "x/b.jpg", "y/b.jpg"], ["/d/a.jpg", "/d/b.jpg"], "/e/t.csv")
    assert idx.tolist() == [-1, -1]


def test_a_table_matching_no_run_file_is_an_error_with_the_flag(tmp_path):
    csv = write(tmp_path / "t.csv", "filename,label\nx/a.jpg,A\ny/a.jpg,B\n")
    with pytest.raises(TableError, match=r"--labels .*t\.csv: none of its 2 rows.*2 of its rows share their basename"):
        read_table(csv, ["/d/a.jpg"], flag="--labels")
    assert read_table(csv, ["/d/a.jpg"]).n_unmatched_files == 1      # without a flag: reported, not an error


def test_a_repeated_column_is_named(tmp_path):
    csv = write(tmp_path / "t.csv", "filename,label,label\na.jpg,x,y\n")
    with pytest.raises(TableError, match=r"t\.csv: the column 'label' occurs twice \(columns 2 and 3"):
        read_table(csv, ["a.jpg"])
    csv = write(tmp_path / "u.csv", "filename,,\na.jpg,,\n")            # empty names: pandas numbers them
    assert read_table(csv, ["a.jpg"]).n_unmatched_files == 0


def test_names_match_in_unicode_nfc_both_ways():
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    idx = match_filenames([f"/d/{nfd}.jpg", f"{nfc}2.jpg"], [f"/d/{nfc}.jpg", f"/e/{nfd}2.jpg"], "/x/t.csv")
    assert idx.tolist() == [0, 1]
    with pytest.raises(TableError, match="twice"):                  # one name in two normal forms is one name
        match_filenames([f"{nfc}.jpg", f"{nfd}.jpg"], ["a.jpg"], "/x/t.csv")
