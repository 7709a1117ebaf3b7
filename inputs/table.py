"""Read a user CSV keyed by filename and align its rows to the run's files.

Used by ``--metadata FILE.csv`` and ``--labels FILE.csv``. A table row belongs to a run file when,
trying each rule in turn for that file:

1. the table's ``filename`` is the same string;
2. both name the same normalised absolute path (``os.path.abspath`` + ``normpath``); a relative table
   entry is taken relative to the CSV's folder first, then relative to the current working directory;
3. both have the same basename, and that basename occurs once in the table and once among the run files.

Rule 3's second condition keeps ``a/img.jpg`` and ``b/img.jpg`` from silently sharing one row. Names are compared
in Unicode NFC on both sides: a table written on macOS (decomposed, NFD) matches files named in NFC, and the other
way round. Cells are read
as the tool writes them (crop_cluster.csv_cells: the apostrophe before a cell that starts like a formula comes off).
"""
from __future__ import annotations

import csv
import os
import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

from crop_cluster.csv_cells import unescape_cell, unescape_frame
from crop_cluster.errors import CropClusterError


FILENAME = "filename"


class TableError(CropClusterError, ValueError):
    """A user CSV table cannot be read, lacks a column, or names a file twice."""


@dataclass(frozen=True, eq=False)
class AlignedTable:
    """A user table aligned to the run's files.

    frame: DataFrame of shape (n_files, n_columns), index 0..n_files-1 in run order, holding the
        table's columns except ``filename``; NaN in rows whose file has no table row.
    n_unmatched_files: run files that no table row matched.
    n_unused_rows: table rows that matched no run file.
    """

    frame: pd.DataFrame
    n_unmatched_files: int
    n_unused_rows: int


def _duplicates_error(table_path: str, first: str, second: str) -> TableError:
    same = f"'{first}'" if first == second else f"'{first}' and '{second}' (the same file)"
    return TableError(
        f"{table_path}: the filename column names {same} twice; "
        "keep one row per file (merge or delete the duplicate rows) and run again."
    )


def _resolve(names: Sequence[str], folder: str) -> List[str]:
    """Normalised absolute path of each name, relative names taken relative to ``folder``."""
    prefix, isabs, norm = os.path.join(folder, ""), os.path.isabs, os.path.normpath
    return [norm(name if isabs(name) else prefix + name) for name in names]


def nfc(names: Sequence[str]) -> List[str]:
    """Each name in Unicode NFC (ASCII names, most of them, as they are)."""
    return [name if name.isascii() else unicodedata.normalize("NFC", name) for name in names]


def _basenames(names: Sequence[str]) -> List[str]:
    return [os.path.basename(name) for name in names]


def _lookup(keys: Sequence[str], queries: Sequence[str]) -> np.ndarray:
    """Position in ``keys`` of each query, -1 when absent; a key present twice matches nothing.

    keys: (m,), queries: (q,). Returns int64 (q,). Hash look-ups (pandas Index), no Python loop.
    """
    index = pd.Index(keys, dtype=object)
    if index.is_unique:
        return index.get_indexer(queries).astype(np.int64)
    single = np.flatnonzero(~index.duplicated(keep=False))
    hit = index[single].get_indexer(queries)
    return np.append(single, -1)[hit].astype(np.int64)      # hit -1 (absent or a repeated key) -> -1


def no_match_hint(table_names: Sequence[str]) -> str:
    """Why rows matched no run file, for error messages: the matching rules, and how many rows share their
    basename with another row (those match by path only)."""
    shared = int(pd.Index(_basenames(table_names), dtype=object).duplicated(keep=False).sum())
    hint = ("a row matches a run file by the same filename, else by the same absolute path (a relative entry is read "
            "relative to the CSV's folder, then to the working folder), else by a basename that occurs once in the "
            "table and once among the run's files")
    if shared:
        hint += f"; {shared} of its rows share their basename with another row, so they can match by path only"
    return hint


def match_filenames(table_names: Sequence[str], filenames: Sequence[str], table_path: str) -> np.ndarray:
    """Find the table row of each run file (rules in the module docstring).

    table_names: (m,) the table's ``filename`` column. filenames: (n,) the run's files, as given.
    table_path: the CSV's path; its folder anchors relative table entries and it names the file in errors.
    Returns int64 array (n,): row index into the table, or -1 where no row matches.
    Raises TableError when the table names the same file twice (the same string in NFC, or, once paths are
    compared, two spellings of one path relative to the CSV's folder).
    Cost: hash look-ups (pandas Index); paths and basenames are computed only while some file is
    unmatched. For 10^6 rows on a slow core: ~0.7 s when all match exactly, ~2.5 s by path, ~6 s by basename.
    """
    names = nfc(table_names)
    files = nfc(filenames)
    exact = pd.Index(names, dtype=object)
    if not exact.is_unique:
        dup = exact[exact.duplicated()][0]
        raise _duplicates_error(table_path, dup, dup)
    idx = exact.get_indexer(files).astype(np.int64)
    todo = np.flatnonzero(idx < 0)
    if todo.size == 0 or not names:
        return idx

    csv_dir, cwd = os.path.dirname(os.path.abspath(table_path)), os.getcwd()
    by_csv = pd.Index(_resolve(names, csv_dir), dtype=object)
    if not by_csv.is_unique:
        first, second = (names[i] for i in np.flatnonzero(by_csv == by_csv[by_csv.duplicated()][0])[:2])
        raise _duplicates_error(table_path, first, second)
    wanted = _resolve([files[k] for k in todo], cwd)
    idx[todo] = by_csv.get_indexer(wanted)
    left = idx[todo] < 0
    if left.any() and cwd != csv_dir:
        idx[todo[left]] = _lookup(_resolve(names, cwd), [w for w, miss in zip(wanted, left) if miss])

    if (idx < 0).any():
        run_bases = _basenames(files)
        todo = np.flatnonzero((idx < 0) & ~pd.Index(run_bases, dtype=object).duplicated(keep=False))
        idx[todo] = _lookup(_basenames(names), [run_bases[k] for k in todo])
    return idx


def header_names(path: str) -> List[str]:
    """The CSV's header cells as the tool reads them: stripped, the formula escape undone (crop_cluster.csv_cells).
    Read with the csv module: pandas renames a repeated column ('group.1') instead of saying so."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [unescape_cell(cell.strip()) for cell in next(csv.reader(handle), [])]


def refuse_repeated_columns(path: str, names: Sequence[str], fold_case: bool = False) -> None:
    """Raise TableError naming the first column of header `names` that occurs twice (compared case-blind with
    `fold_case`); empty names, which pandas numbers itself, are left alone."""
    seen: Dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        key = name.lower() if fold_case else name
        if key and key in seen:
            raise TableError(f"{path}: the column '{key}' occurs twice (columns {seen[key]} and {position} of the "
                             f"header); keep one of them (rename or delete the other) and run again.")
        seen.setdefault(key, position)


def _read_csv(path: str, required: Sequence[str], text_columns: Sequence[str]) -> pd.DataFrame:
    """Read the CSV with stripped column names; ``filename`` and ``text_columns`` as strings."""
    need = ", ".join(required)
    if not os.path.isfile(path):
        raise TableError(f"{path}: no such file; give the path of a CSV file with a header row ({need}).")
    fix = f"save it as UTF-8 comma-separated text with a header row naming the columns ({need})."
    try:
        refuse_repeated_columns(path, header_names(path))
        raw_columns = list(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
        columns = [unescape_cell(str(c).strip()) for c in raw_columns]
        as_text = {FILENAME, *text_columns}
        dtype = {raw: str for raw, col in zip(raw_columns, columns) if col in as_text}
        table = pd.read_csv(path, dtype=dtype, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise TableError(f"{path}: cannot read this CSV ({e}); {fix}") from e
    table.columns = columns
    table = unescape_frame(table)
    found = ", ".join(columns) or "none"
    missing = [c for c in required if c not in columns]
    if missing:
        raise TableError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {found}); "
            f"the first row must be a header naming the columns ({need})."
        )
    empty = np.flatnonzero(table[FILENAME].isna().to_numpy())
    if empty.size:
        rows = ", ".join(str(i + 1) for i in empty[:5])
        raise TableError(
            f"{path}: empty filename in data row(s) {rows} (1 = first row after the header); "
            "fill in the file name or delete the row."
        )
    return table


def read_table(
    path: str,
    filenames: Sequence[str],
    required: Sequence[str] = (FILENAME,),
    text_columns: Sequence[str] = (),
    flag: str = "",
) -> AlignedTable:
    """Read CSV ``path`` (a ``filename`` column plus any others) and align it to ``filenames``.

    filenames: (n,) the run's files in run order. required: columns that must exist (``filename``
    is always required). text_columns: columns read as strings instead of inferred dtypes
    (``filename`` always is); empty and NA-like cells stay NaN. flag: the option that gave the file (e.g.
    ``--labels``); with it, a table of which no row matches a run file is an error naming the flag and the file.
    Returns AlignedTable whose frame has shape (n, n_columns - 1), rows in run order.
    Raises TableError (path + fix) for a missing or unreadable file, a missing column, a duplicated
    column, an empty filename cell, a file named twice, or (with ``flag``) no row matching a run file.
    """
    required = (FILENAME, *[c for c in required if c != FILENAME])
    table = _read_csv(path, required, text_columns)
    idx = match_filenames(table[FILENAME].tolist(), filenames, path)
    if flag and len(table) and idx.size and (idx < 0).all():
        raise TableError(f"{flag} {path}: none of its {len(table)} rows names a file of this run "
                         f"({no_match_hint(table[FILENAME].tolist())}); write each file's path as clusters.csv lists "
                         f"it (absolute, or relative to the CSV's folder).")
    frame = table.drop(columns=FILENAME).reindex(idx).reset_index(drop=True)
    matched = idx[idx >= 0]
    return AlignedTable(
        frame=frame,
        n_unmatched_files=int(idx.size - matched.size),
        n_unused_rows=int(len(table) - np.unique(matched).size),
    )
