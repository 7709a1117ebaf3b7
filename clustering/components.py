"""Connected components of a graph given as a stream of edge blocks, and the cluster numbering of the outputs."""
from __future__ import annotations

from typing import Iterable, List, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from clustering.graph import Edges


def _component_ids(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _spanning_star(labels: np.ndarray):
    """Edges (node -> first node of its component) that connect exactly like the graph that produced `labels`."""
    n = labels.size
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n, dtype=np.int64))
    roots = first[labels]
    keep = roots != np.arange(n)
    return roots[keep], np.flatnonzero(keep)


def components_from_edges(n: int, edge_blocks: Iterable[Edges], max_pending: int = 0) -> np.ndarray:
    """Component id per node, int64 (n,), for the undirected graph whose edges arrive in `edge_blocks`.

    Pending edges are folded into a spanning star (at most n - 1 edges) whenever more than `max_pending`
    (default max(4n, 2^22)) accumulate, so memory stays O(n + block) even when clusters are dense.
    """
    limit = max_pending or max(4 * n, 1 << 22)
    pending_rows: List[np.ndarray] = []
    pending_cols: List[np.ndarray] = []
    count = 0
    for rows, cols, _ in edge_blocks:
        pending_rows.append(rows)
        pending_cols.append(cols)
        count += rows.size
        if count > limit:
            labels = _component_ids(n, np.concatenate(pending_rows), np.concatenate(pending_cols))
            star_rows, star_cols = _spanning_star(labels)
            pending_rows, pending_cols, count = [star_rows], [star_cols], star_rows.size
    if not pending_rows:
        return np.arange(n, dtype=np.int64)
    return _component_ids(n, np.concatenate(pending_rows), np.concatenate(pending_cols))


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
