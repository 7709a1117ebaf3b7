"""CSV cells that spreadsheets will not run as formulas, and the same cells read back.

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and Google
Sheets (CSV injection: `=HYPERLINK(...)` in a file name, a metadata cell or a group name). Every CSV the tool writes
(outputs/table.write_csv: clusters.csv, skipped.csv, sweep.csv; the report's review export does the same in
JavaScript) puts an apostrophe before such a text cell, as OWASP advises: a spreadsheet shows the text as typed and
drops the apostrophe when it saves. Plain numbers (the cluster -1, -0.25) are never changed, nor are numeric
columns. So that the tool's own files read back unchanged, a cell of apostrophes followed by one of those
characters gets one apostrophe more, and every reader of a CSV (inputs/table.py, campaign/review.py, ...) takes one
off again: `unescape_cell(escape_cell(x)) == x` for every text x.
"""
from __future__ import annotations

import re

FORMULA_START = "=+-@\t\r"
_ESCAPE = re.compile(r"'*[=+\-@\t\r]")           # cells that get one apostrophe more (unless a plain number)
_UNESCAPE = re.compile(r"'+[=+\-@\t\r]")         # cells written so: one apostrophe comes off
_FIRST = list("'" + FORMULA_START)                  # the first characters of the cells either pattern matches
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def escape_cell(text: str) -> str:
    """`text` as written in a CSV: with a leading apostrophe when a spreadsheet would run it."""
    if _ESCAPE.match(text) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    """A CSV cell as the tool meant it: `escape_cell` undone (a cell a person typed without the apostrophe stays)."""
    return text[1:] if _UNESCAPE.match(text) else text


def escape_frame(frame):
    """A copy of DataFrame `frame` with every text cell and column name through `escape_cell` (numbers, booleans,
    missing values and the index untouched). Cost: a vectorised look at each text cell's first character, then a
    regex on the few that start like a formula (~0.05 s for a 300 000-row clusters.csv)."""
    return _map_text(_renamed(frame, escape_cell), _ESCAPE, escape_cell)


def unescape_frame(frame):
    """DataFrame `frame` (as read from a CSV) with every text cell and column name through `unescape_cell`."""
    return _map_text(_renamed(frame, unescape_cell), _UNESCAPE, unescape_cell)


def _renamed(frame, function):
    """`frame` with `function` applied to its text column names (a copy only when one changes)."""
    names = [function(name) if isinstance(name, str) else name for name in frame.columns]
    if names == list(frame.columns):
        return frame
    out = frame.copy(deep=False)
    out.columns = names
    return out


def _map_text(frame, pattern: re.Pattern, function):
    """`function` applied to the text cells of `frame` that `pattern` matches at their start; the columns with
    such a cell are replaced in a copy, `frame` itself is returned when none has one."""
    import numpy as np
    import pandas as pd

    changed = {}
    for position, (_, column) in enumerate(frame.items()):
        if not (column.dtype == object or pd.api.types.is_string_dtype(column.dtype)):
            continue
        values = column.to_numpy(object)
        maybe = np.flatnonzero(np.isin(values.astype("U1"), _FIRST))      # first characters, vectorised
        hits = [k for k in maybe if isinstance(values[k], str) and pattern.match(values[k])]
        if hits:
            values = values.copy()
            values[hits] = [function(values[k]) for k in hits]
            changed[position] = pd.Series(values, index=column.index, dtype=column.dtype)
    if not changed:
        return frame
    out = frame.copy()
    for position, values in changed.items():
        out.isetitem(position, values)
    return out
