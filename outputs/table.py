"""clusters.csv (one row per image that was read) and skipped.csv (every input that could not be used)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import pandas as pd

from crop_cluster.csv_cells import escape_frame
from crop_cluster.outputs.atomic import atomic_open

CONTRACT_COLUMNS = ["filename", "cluster", "cluster_size", "sim_to_centroid", "individual", "representative"]


def write_csv(frame: pd.DataFrame, path: str) -> None:
    """Write `frame` as UTF-8 CSV without the index, atomically; floats with 6 significant decimals; text cells a
    spreadsheet would run as formulas with a leading apostrophe (crop_cluster.csv_cells)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        escape_frame(frame).to_csv(handle, index=False, float_format="%.6g")


def write_skipped(skipped: Sequence[Tuple[str, str]], path: str) -> None:
    """skipped.csv with columns filename,reason (header only when nothing was skipped)."""
    write_csv(pd.DataFrame(list(skipped), columns=["filename", "reason"]), path)


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first, in contract order, then any metadata/label columns in their given order."""
    extra: List[str] = [c for c in frame.columns if c not in CONTRACT_COLUMNS]
    return frame[CONTRACT_COLUMNS + extra]
