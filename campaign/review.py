"""Review files: the human decisions `--review FILE` records in the campaign.

Crop-keyed (what the report exports; one row per crop):
    filename,group[,crop,reviewer,time,note]
`filename` is matched to the run's files as `--labels` matches (inputs/table.py: the same string, the same
absolute path relative to the CSV's folder or the working directory, or a basename unique on both sides); when the
optional `crop` column holds the file's content digest (BLAKE2b-128 hex, as in the campaign store) it is matched by
content first, so a review survives moved or renamed files. `group` is a name (the crop belongs to that named
group) or -1 (the crop is kept out of every cluster; -1.0, −1, - 1 and the other spellings of campaign/groups.py
too); an empty group (a note only) records nothing. `time` is ISO
8601 (default: the file's modification time); a later decision on the same crop wins.

Rejected suggestions (optional columns `rejected,other`, on rows whose group is empty, so that an older reader
records nothing from them): `rejected` is the kind of the suggestion the reviewer rejected (merge, move or split)
and `other` the content digest of the second crop of the pair it was about; the row's own crop is the first.
A later run proposes no suggestion that a remembered pair contradicts (outputs/report/suggestions.py).

Cluster-keyed (the older export, `cluster,group,note`): accepted for the run that wrote it; each reviewed cluster's
crops, read from that run's clusters.csv, get the cluster's decision (group -1, "not a group", excludes them).
"""
from __future__ import annotations

import csv
import datetime
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from crop_cluster.campaign import CampaignError
from crop_cluster.campaign.groups import group_value
from crop_cluster.csv_cells import unescape_frame
from crop_cluster.campaign.store import DECISION_COLUMNS, REJECTION_COLUMNS

FIX = ("export it again from report.html, or write a CSV with the columns filename,group (group = a name, or -1 to "
       "keep the crop out of every cluster; optional crop, reviewer, time, note)")


@dataclass(frozen=True)
class ReviewFile:
    """decisions: DataFrame with DECISION_COLUMNS except run, one row per decided run file (digest and filename of
    the run's file); rows: decision rows in the file; matched: those that matched a run file; kind: 'crop' or
    'cluster'; rejections: DataFrame with REJECTION_COLUMNS except run, the rejected suggestions whose first crop
    is a run file."""

    decisions: pd.DataFrame
    rows: int
    matched: int
    kind: str
    rejections: pd.DataFrame = None


def _read(path: str) -> pd.DataFrame:
    from crop_cluster.inputs.table import TableError, header_names, refuse_repeated_columns

    try:
        refuse_repeated_columns(path, header_names(path), fold_case=True)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise CampaignError(f"--review {path}: no such file; {FIX}") from None
    except TableError as error:
        raise CampaignError(f"--review {error}") from None
    except (OSError, ValueError, csv.Error, pd.errors.ParserError) as error:
        raise CampaignError(f"--review {path}: not a readable CSV ({error}); {FIX}") from None
    frame = unescape_frame(frame)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    return frame


def _file_time(path: str) -> str:
    stamp = datetime.datetime.fromtimestamp(os.path.getmtime(path), tz=datetime.timezone.utc)
    return stamp.isoformat(timespec="seconds")


def _checked_times(path: str, times: pd.Series) -> pd.Series:
    """ISO 8601 times as given, normalised to UTC; a cell that is not a time is an error naming its line."""
    parsed = pd.to_datetime(times, errors="coerce", utc=True, format="ISO8601")
    bad = np.flatnonzero(parsed.isna().to_numpy() & (times != "").to_numpy())
    if bad.size:
        raise CampaignError(f"--review {path}, line {bad[0] + 2}: time '{times.iloc[bad[0]]}' is not an ISO 8601 "
                            f"time such as 2026-06-01T22:15:00; fix it or leave the cell empty")
    return parsed.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").where(~parsed.isna(), "")


def read_review(path: str, filenames: Sequence[str], digests: Sequence[str],
                reviewed_table: Optional[str] = None) -> ReviewFile:
    """Decisions of review file `path` for the run's files.

    filenames, digests: (n,) the run's files and their content digests. reviewed_table: the clusters.csv of the run
    whose report was reviewed (needed for a cluster-keyed file only). Raises CampaignError (file + fix) for an
    unreadable file, missing columns, bad times, and when no decision matches a run file.
    """
    frame = _read(path)
    if "filename" in frame.columns and "group" in frame.columns:
        return _crop_keyed(path, frame, list(filenames), list(digests))
    if "cluster" in frame.columns and "group" in frame.columns:
        return _cluster_keyed(path, frame, list(filenames), list(digests), reviewed_table)
    raise CampaignError(f"--review {path}: needs the columns filename,group (or the older cluster,group); found "
                        f"{', '.join(frame.columns) or 'none'}; {FIX}")


def _decisions(path: str, frame: pd.DataFrame, rows: np.ndarray, filenames, digests) -> pd.DataFrame:
    """DECISION_COLUMNS (but run) for run files `rows` (int64 (m,)) decided by `frame`'s rows (same order)."""
    def column(name: str, default: str = "") -> pd.Series:
        return frame[name].reset_index(drop=True) if name in frame.columns else pd.Series([default] * len(frame))

    times = _checked_times(path, column("time")).replace("", _file_time(path))
    return pd.DataFrame({"digest": [digests[k] for k in rows], "filename": [filenames[k] for k in rows],
                         "group": column("group").map(group_value).tolist(), "reviewer": column("reviewer").tolist(),
                         "time": times.tolist(), "note": column("note").tolist(),
                         "source": os.path.abspath(path)})[DECISION_COLUMNS[:-1]]


REJECTED_KINDS = ("merge", "move", "split")


def _rows_of(path: str, frame: pd.DataFrame, filenames, digests) -> np.ndarray:
    """int64 (len(frame),): the run file of each row (by the `crop` digest first, then by filename), -1 none."""
    from crop_cluster.inputs.table import TableError, match_filenames

    row_of_table = np.full(len(frame), -1, dtype=np.int64)
    if "crop" in frame.columns:                   # by content first
        position = {digest: k for k, digest in enumerate(digests) if digest}
        row_of_table = np.asarray([position.get(d, -1) for d in frame["crop"]], dtype=np.int64)
    try:
        table_of_file = match_filenames(frame["filename"].tolist(), filenames, path)
    except TableError as error:
        raise CampaignError(f"--review {error}") from None
    by_name = np.full(len(frame), -1, dtype=np.int64)
    files = np.flatnonzero(table_of_file >= 0)
    by_name[table_of_file[files]] = files
    return np.where(row_of_table >= 0, row_of_table, by_name)


def _rejections(path: str, frame: pd.DataFrame, filenames, digests) -> pd.DataFrame:
    """The file's rejected suggestions (rows with an empty group and a `rejected` kind) whose crop is a run file."""
    empty = pd.DataFrame(columns=REJECTION_COLUMNS[:-1])
    if "rejected" not in frame.columns:
        return empty
    rows = frame[(frame["group"] == "") & (frame["rejected"] != "")]
    for line, (kind, other) in zip(rows.index, zip(rows["rejected"], rows.get("other", pd.Series("", rows.index)))):
        if kind not in REJECTED_KINDS:
            raise CampaignError(f"--review {path}, line {line + 2}: rejected '{kind}' is not a suggestion kind "
                                f"({', '.join(REJECTED_KINDS)}); fix it or leave the cell empty")
        if not other:
            raise CampaignError(f"--review {path}, line {line + 2}: a rejected {kind} needs the other crop's digest "
                                f"in the `other` column; export the review again from report.html")
    rows = rows.reset_index(drop=True)
    if rows.empty:
        return empty
    unique = rows.drop_duplicates(["filename", "crop"] if "crop" in rows.columns else ["filename"])
    row_of = dict(zip(map(tuple, unique[[c for c in ("filename", "crop") if c in rows.columns]].to_numpy().tolist()),
                      _rows_of(path, unique.reset_index(drop=True), filenames, digests).tolist()))
    found = np.asarray([row_of[tuple(key)] for key in
                        rows[[c for c in ("filename", "crop") if c in rows.columns]].to_numpy().tolist()],
                       dtype=np.int64)
    keep = found >= 0
    times = _checked_times(path, rows["time"] if "time" in rows.columns else pd.Series([""] * len(rows)))
    return pd.DataFrame({"digest": [digests[k] for k in found[keep]], "other": rows["other"][keep].tolist(),
                         "kind": rows["rejected"][keep].tolist(),
                         "reviewer": (rows["reviewer"] if "reviewer" in rows.columns else
                                      pd.Series([""] * len(rows)))[keep].tolist(),
                         "time": times.replace("", _file_time(path))[keep].tolist(),
                         "source": os.path.abspath(path)})[REJECTION_COLUMNS[:-1]]


def _crop_keyed(path: str, frame: pd.DataFrame, filenames, digests) -> ReviewFile:
    rejections = _rejections(path, frame, filenames, digests)
    frame = frame[frame["group"] != ""].reset_index(drop=True)
    if frame["filename"].eq("").any():
        line = int(np.flatnonzero(frame["filename"].eq(""))[0]) + 2
        raise CampaignError(f"--review {path}: a row with a group has an empty filename (data row {line - 1}); "
                            f"fill it in or delete the row")
    review = _matched(path, frame, _rows_of(path, frame, filenames, digests), filenames, digests, "crop")
    return ReviewFile(review.decisions, review.rows, review.matched, review.kind, rejections)


def _matched(path, frame, row_of_table, filenames, digests, kind) -> ReviewFile:
    from crop_cluster.inputs.table import no_match_hint

    found = row_of_table >= 0
    if len(frame) and not found.any():
        raise CampaignError(f"--review {path}: none of its {len(frame)} decisions names a crop of this run (matched "
                            f"0 of {len(frame)}); {no_match_hint(frame['filename'].tolist())}; give the -i folders "
                            f"or the output folder the review was made on")
    decisions = _decisions(path, frame[found], row_of_table[found], filenames, digests)
    return ReviewFile(decisions, int(len(frame)), int(found.sum()), kind)


def _cluster_keyed(path: str, frame: pd.DataFrame, filenames, digests, reviewed_table: Optional[str]) -> ReviewFile:
    if not reviewed_table or not os.path.isfile(reviewed_table):
        raise CampaignError(f"--review {path} is keyed by cluster number, which only the run that wrote it knows, "
                            f"and its clusters.csv is not there ({reviewed_table}); export the review again as a "
                            f"crop-keyed file (filename,group)")
    table = unescape_frame(pd.read_csv(reviewed_table, usecols=["filename", "cluster"], dtype={"filename": str}))
    frame = frame[frame["group"] != ""].reset_index(drop=True)
    known = set(table["cluster"].astype(int).tolist()) - {-1}
    pieces, seen = [], set()
    for line, (raw, group) in enumerate(zip(frame["cluster"], frame["group"]), start=2):
        if not raw.lstrip("-").isdigit():
            raise CampaignError(f"--review {path}, line {line}: cluster '{raw}' is not a cluster number; {FIX}")
        cluster = int(raw)
        if cluster not in known:
            raise CampaignError(f"--review {path}, line {line}: cluster {cluster} does not exist in "
                                f"{reviewed_table}; was the review made on a report of another run? Export a "
                                f"crop-keyed review (filename,group) from the report of this folder's last run")
        if cluster in seen:
            raise CampaignError(f"--review {path}, line {line}: cluster {cluster} is listed twice; keep one row")
        seen.add(cluster)
        members = table.loc[table["cluster"] == cluster, "filename"]
        pieces.append(pd.DataFrame({"filename": members.tolist(), "group": group,
                                    "note": frame["note"].iloc[line - 2] if "note" in frame.columns else ""}))
    crops = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=["filename", "group", "note"])
    from crop_cluster.inputs.table import nfc

    position = {os.path.normpath(name): k for k, name in enumerate(nfc(filenames))}
    row_of_table = np.asarray([position.get(os.path.normpath(name), -1) for name in nfc(crops["filename"])],
                              dtype=np.int64)
    review = _matched(path, crops, row_of_table, filenames, digests, "cluster")
    return ReviewFile(review.decisions, int(len(frame)), review.matched, "cluster")

