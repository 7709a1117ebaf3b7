"""Per-file metadata columns for clusters.csv: timestamp (--time_format), frame and box (-mf), a user table (--metadata).

Each reader lives in its own module (timestamps.py, sidecars.py, table.py); this one assembles their columns in a
fixed order and summarises what did not match, without printing anything itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from crop_cluster.errors import CropClusterError


BOX_COLUMNS = ("box_x1", "box_y1", "box_x2", "box_y2")


class MetadataError(CropClusterError, ValueError):
    """Metadata that cannot be merged (e.g. a --metadata column that clashes with a column the tool writes)."""


@dataclass
class MetadataColumns:
    """frame: DataFrame (n, k) in run order; counts: numbers for run.json; warnings: one line each, for the log.

    For linking individuals: seconds float64 (n,) POSIX seconds (NaN unknown or no --time_format); sources: the
    source-image id of each crop named crop_<image>_CROPNUMBER_<n>_... (None otherwise), with or without -mf;
    boxes float64 (n, 4) x1, y1, x2, y2 in source pixels (NaN rows unknown or no -mf).
    """

    frame: pd.DataFrame
    seconds: np.ndarray
    sources: List[Optional[str]]
    boxes: np.ndarray
    counts: Dict[str, int] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def metadata_columns(filenames: Sequence[str], time_format: Optional[str] = None, meta_folder: Optional[str] = None,
                     table: Optional[str] = None, reserved: Sequence[str] = ()) -> MetadataColumns:
    """Columns `timestamp`, `frame`, `box_x1..box_y2` and the table's columns for each of `filenames`.

    reserved: column names the caller writes itself; a table column with such a name raises MetadataError.
    """
    from crop_cluster.inputs.sidecars import parse_crop_name

    n = len(filenames)
    result = MetadataColumns(pd.DataFrame(index=range(n)), seconds=np.full(n, np.nan),
                             sources=[(parse_crop_name(name) or (None,))[0] for name in filenames],
                             boxes=np.full((n, 4), np.nan))
    if time_format:
        from crop_cluster.inputs.timestamps import parse_timestamps

        stamps = parse_timestamps(filenames, time_format)
        result.seconds = stamps.seconds
        text = pd.to_datetime(stamps.seconds, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%S")
        result.frame["timestamp"] = pd.Series(text).where(~pd.isna(stamps.seconds), "")
        result.counts["timestamps_unmatched"] = stamps.n_unmatched
        if stamps.n_unmatched:
            result.warnings.append(f"{stamps.n_unmatched} of {len(filenames)} file names have no timestamp matching "
                                   f"--time_format {time_format} (e.g. {', '.join(stamps.examples_unmatched)})")
    if meta_folder:
        from crop_cluster.inputs.sidecars import read_boxes

        boxes = read_boxes(filenames, meta_folder)
        result.boxes = boxes.boxes
        result.frame["frame"] = [frame or "" for frame in boxes.frame]
        for k, name in enumerate(BOX_COLUMNS):
            result.frame[name] = boxes.boxes[:, k]
        result.counts["sidecar_problems"] = len(boxes.problems)
        if boxes.problems:
            path, reason = boxes.problems[0]
            result.warnings.append(f"{len(boxes.problems)} sidecar problems (boxes left empty for those crops), "
                                   f"e.g. {path}: {reason}")
    if table:
        from crop_cluster.inputs.table import read_table

        aligned = read_table(table, filenames)
        clashes = sorted(set(aligned.frame.columns) & (set(result.frame.columns) | set(reserved)))
        if clashes:
            raise MetadataError(f"--metadata {table}: column(s) {', '.join(clashes)} clash with columns the tool "
                                f"writes; rename them in the CSV")
        result.frame = pd.concat([result.frame, aligned.frame.reset_index(drop=True)], axis=1)
        result.counts["metadata_unmatched_files"] = aligned.n_unmatched_files
        if aligned.n_unmatched_files:
            result.warnings.append(f"{aligned.n_unmatched_files} of {len(filenames)} images have no row in "
                                   f"--metadata {table}")
    return result
