"""Cluster numbering of the outputs: 0..K-1 by decreasing size, -1 for singletons."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def number_clusters(groups: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Renumber arbitrary group ids (n,) to 0..K-1 by decreasing size, ties by first name; size-1 groups and -1 -> -1.

    names: one string per node (the representative's filename), used only to break ties deterministically.
    """
    groups = np.asarray(groups, dtype=np.int64)
    labels = np.full(groups.size, -1, dtype=np.int64)
    valid = np.flatnonzero(groups >= 0)
    if valid.size == 0:
        return labels
    ids, inverse, sizes = np.unique(groups[valid], return_inverse=True, return_counts=True)
    name_rank = np.empty(valid.size, dtype=np.int64)
    name_rank[np.argsort(np.asarray(names, dtype=object)[valid], kind="stable")] = np.arange(valid.size)
    first_rank = np.full(ids.size, valid.size, dtype=np.int64)
    np.minimum.at(first_rank, inverse, name_rank)
    order = np.lexsort((first_rank, -sizes))
    order = order[sizes[order] >= 2]
    new_id = np.full(ids.size, -1, dtype=np.int64)
    new_id[order] = np.arange(order.size)
    labels[valid] = new_id[inverse]
    return labels
