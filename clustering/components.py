"""Cluster numbering of the outputs: 0..K-1 by decreasing size, -1 for what is not clustered."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def number_clusters(groups: np.ndarray, names: Sequence[str], crops: Optional[np.ndarray] = None) -> np.ndarray:
    """Renumber group ids of items (n,) to 0..K-1 by decreasing number of items, then of crops, ties by first name.

    A group is a cluster when it holds at least 2 crops: 2 or more items, or one item (an individual) seen in
    several crops. Other groups and -1 become -1 (not clustered).
    names: one string per item (the representative's filename), only to break ties deterministically.
    crops: int (n,) crops per item (default 1 each).
    """
    groups = np.asarray(groups, dtype=np.int64)
    crops = np.ones(groups.size, dtype=np.int64) if crops is None else np.asarray(crops, dtype=np.int64)
    labels = np.full(groups.size, -1, dtype=np.int64)
    valid = np.flatnonzero(groups >= 0)
    if valid.size == 0:
        return labels
    ids, inverse, sizes = np.unique(groups[valid], return_inverse=True, return_counts=True)
    crop_totals = np.bincount(inverse, weights=crops[valid]).astype(np.int64)
    name_rank = np.empty(valid.size, dtype=np.int64)
    name_rank[np.argsort(np.asarray(names, dtype=object)[valid], kind="stable")] = np.arange(valid.size)
    first_rank = np.full(ids.size, valid.size, dtype=np.int64)
    np.minimum.at(first_rank, inverse, name_rank)
    order = np.lexsort((first_rank, -crop_totals, -sizes))
    order = order[crop_totals[order] >= 2]
    new_id = np.full(ids.size, -1, dtype=np.int64)
    new_id[order] = np.arange(order.size)
    labels[valid] = new_id[inverse]
    return labels
