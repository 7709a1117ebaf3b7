"""Stable cluster and individual ids across the runs of a campaign.

A new partition's groups get the ids of the stored ones by maximum overlap (shared crops): the bipartite graph of
(new group, old id) pairs that share crops is cut into connected components, and each component is solved exactly
by `scipy.optimize.linear_sum_assignment`, maximising the total overlap. Components are small (a group overlaps the
few old clusters its crops came from), so this is exact at the cost of a greedy pass: a dense K x K Hungarian
matrix over all clusters (10^4 clusters: 800 MB, O(K^3)) is never built. A component larger than MAX_COMPONENT
on either side (which only a giant chained cluster makes) is matched greedily, largest overlap first. Groups left
unmatched get fresh ids, above every id ever issued, so an id is never given to other material.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

MAX_COMPONENT = 2000


def _greedy(pairs_new: np.ndarray, pairs_old: np.ndarray, weight: np.ndarray) -> Dict[int, int]:
    chosen: Dict[int, int] = {}
    used = set()
    for k in np.argsort(-weight, kind="stable"):
        a, b = int(pairs_new[k]), int(pairs_old[k])
        if a not in chosen and b not in used:
            chosen[a] = b
            used.add(b)
    return chosen


def max_overlap(new: np.ndarray, old: np.ndarray) -> Dict[int, int]:
    """One-to-one matching new label -> old id maximising the crops in common.

    new, old: int64 (n,) per crop: its label in the new partition and its stored id (-1: none on either side).
    Returns {new label: old id} for the matched labels (every pair shares at least one crop).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    both = (new >= 0) & (old >= 0)
    if not both.any():
        return {}
    span = np.int64(old.max()) + 1                      # (new, old) pairs as one int64 each: a 1-d unique
    codes, weight = np.unique(new[both].astype(np.int64) * span + old[both], return_counts=True)
    pairs = np.stack([codes // span, codes % span], axis=1)
    new_ids, new_index = np.unique(pairs[:, 0], return_inverse=True)
    old_ids, old_index = np.unique(pairs[:, 1], return_inverse=True)
    a, b = new_ids.size, old_ids.size
    graph = coo_matrix((np.ones(len(pairs)), (new_index, a + old_index)), shape=(a + b, a + b))
    _, component = connected_components(graph, directed=False)
    result: Dict[int, int] = {}
    pair_component = component[new_index]
    news_in = np.bincount(component[:a], minlength=component.max() + 1)
    olds_in = np.bincount(component[a:], minlength=component.max() + 1)
    simple = (news_in[pair_component] == 1) & (olds_in[pair_component] == 1)    # one new, one old: they match
    result.update(zip(new_ids[new_index[simple]].tolist(), old_ids[old_index[simple]].tolist()))
    order = np.flatnonzero(~simple)
    order = order[np.argsort(pair_component[order], kind="stable")]
    bounds = np.flatnonzero(np.r_[True, np.diff(pair_component[order]) != 0, True])
    for begin, end in zip(bounds[:-1], bounds[1:]):
        k = order[begin:end]
        rows, row_index = np.unique(new_index[k], return_inverse=True)
        cols, col_index = np.unique(old_index[k], return_inverse=True)
        if rows.size > MAX_COMPONENT or cols.size > MAX_COMPONENT:
            result.update(_greedy(new_ids[new_index[k]], old_ids[old_index[k]], weight[k]))
            continue
        matrix = np.zeros((rows.size, cols.size))
        matrix[row_index, col_index] = weight[k]
        r, s = linear_sum_assignment(matrix, maximize=True)
        for i, j in zip(r, s):
            if matrix[i, j] > 0:
                result[int(new_ids[rows[i]])] = int(old_ids[cols[j]])
    return result


def stable_ids(new: np.ndarray, old: np.ndarray, next_id: int, fixed: Optional[Dict[int, int]] = None
               ) -> Dict[int, int]:
    """Stable id of every label of `new` (int64 (n,) per crop, -1 none) given the stored ids `old` (per crop).

    fixed: labels whose id is already decided (a named group keeps the id stored with its name); those ids are
    taken out of the matching. The rest are matched by max_overlap; unmatched labels get next_id, next_id + 1, ...
    in order of label. Returns {label: id}.
    """
    fixed = dict(fixed or {})
    taken = set(fixed.values())
    free = ~np.isin(new, list(fixed)) & (new >= 0)
    old_free = np.where(np.isin(old, list(taken)), -1, old)
    result = {**fixed, **max_overlap(np.where(free, new, -1), old_free)}
    for label in np.unique(new[new >= 0]).tolist():
        if label not in result:
            result[label] = next_id
            next_id += 1
    return result

