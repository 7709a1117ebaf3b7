"""The campaign's columns in report.html: reviewed names, review states and what is new since the last review.

All optional (a campaign store writes them into clusters.csv): `group` (the reviewed group's name, '' or -1 when
none), `cluster_status` (`reviewed`, `unreviewed`, `new`, the same on every row of a cluster) and `first_run` (the
run that first saw the crop; any sortable text or number), `merged_from` (the cluster ids merged into the row's
cluster since the last review, `;`-separated) and `crop` (the content digest; exported, not shown). Without them
the document has none of their keys.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

COLUMNS = ("group", "cluster_status", "first_run", "merged_from", "crop")


def new_rows(table: pd.DataFrame) -> Optional[np.ndarray]:
    """bool (n,): the row's crop first appeared in the latest run; None without a `first_run` column or when every
    crop is from one run (then nothing is new *since* a review)."""
    if "first_run" not in table.columns:
        return None
    runs = table["first_run"].astype(str).str.strip()
    if runs.nunique() < 2:
        return None
    return (runs == runs.max()).to_numpy()


def first_run(table: pd.DataFrame, fresh: Optional[np.ndarray]) -> bool:
    """The table is a campaign's first run: every crop from one run and every cluster new (nothing was reviewed
    before, so nothing has changed since a review)."""
    if fresh is not None or "cluster_status" not in table.columns:
        return False
    status = table["cluster_status"].fillna("").astype(str).str.strip()
    return bool(status.isin(["new", ""]).all())


def annotate_blocks(blocks: List[Dict], table: pd.DataFrame, reps: np.ndarray, fresh: Optional[np.ndarray]) -> None:
    """Add to each cluster block (id >= 0; members index `reps`) in place: `group` (its members' most common
    reviewed name), `status` (cluster_status of its first member), `changed` (new, or holds a new crop; not on
    a campaign's first run, where there was no review to change since) and `merged` (the ids of the clusters new
    crops merged into it since the last review)."""
    groups = table["group"].fillna("").astype(str).str.strip().to_numpy() if "group" in table.columns else None
    status = table["cluster_status"].fillna("").astype(str).str.strip().to_numpy() \
        if "cluster_status" in table.columns else None
    since_review = not first_run(table, fresh)
    merged = table["merged_from"].fillna("").astype(str).str.strip().to_numpy() if "merged_from" in table.columns \
        else None
    for block in blocks:
        if block["id"] < 0:
            continue
        rows = reps[np.asarray(block["members"], dtype=np.int64)]
        if groups is not None:
            named = Counter(g for g in groups[rows].tolist() if g and g != "-1")
            if named:
                block["group"] = named.most_common(1)[0][0]
        if status is not None:
            block["status"] = status[rows[0]] or "unreviewed"
        if merged is not None and merged[rows[0]]:
            block["merged"] = [int(c) for c in merged[rows[0]].split(";") if c.strip().lstrip("-").isdigit()]
        if since_review and (status is not None or fresh is not None):
            block["changed"] = bool((status is not None and block["status"] == "new") or
                                    (fresh is not None and fresh[rows].any()))
