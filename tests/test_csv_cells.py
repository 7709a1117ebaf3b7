"""Cells that spreadsheets would run as formulas (crop_cluster/csv_cells.py): escaped on write, read back unchanged."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd

from crop_cluster.csv_cells import escape_cell, escape_frame, unescape_cell, unescape_frame
from crop_cluster.outputs.table import write_csv

NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def test_escape_then_unescape_is_the_identity_for_every_short_text():
    alphabet = ["'", "=", "+", "-", "@", "\t", "\r", "1", ".", "a", " "]
    for length in range(4):
        for letters in itertools.product(alphabet, repeat=length):
            text = "".join(letters)
            written = escape_cell(text)
            assert unescape_cell(written) == text, repr(text)
            assert written[:1] not in ("=", "+", "-", "@", "\t", "\r") or NUMBER.fullmatch(written), repr(text)


def test_numbers_stay_numbers_and_names_typed_plainly_read_as_typed():
    for number in ("-1", "-0.25", "+3", "-1e-05", ".5", "-2."):
        assert escape_cell(number) == number
    for text in ("=SUM(A1)", "-a.png", "@x", "\tx"):
        assert escape_cell(text) == "'" + text and unescape_cell(text) == text
    assert unescape_cell("'quoted'") == "'quoted'" and escape_cell("a=b") == "a=b"


def test_frames_keep_numeric_columns_and_round_trip_through_a_csv(tmp_path):
    frame = pd.DataFrame({"filename": ["-a.png", "b.png", "=c.png"], "cluster": [-1, 0, 0],
                          "sim": [np.nan, -0.5, 1.0], "=odd": ["@x", None, "-1"], "flag": [True, False, True]})
    path = tmp_path / "t.csv"
    write_csv(frame, str(path))
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "filename,cluster,sim,'=odd,flag"
    assert text.splitlines()[1] == "'-a.png,-1,,'@x,True"
    back = unescape_frame(pd.read_csv(path))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    plain = frame.iloc[[1]][["filename", "cluster"]]
    assert escape_frame(plain) is plain                     # nothing to escape: no copy
