"""Maximum spanning forest of the ε-graph: one graph pass serves every threshold at or above the one it was built at.

The components of {pairs with cosine >= t} equal the components of {forest edges with similarity >= t} for every
t >= the forest's threshold (a maximum spanning forest keeps, for each cut, its strongest crossing edge). So the
graph is computed once, at the lowest threshold any stage needs (near-duplicates, clustering, a threshold sweep),
and each stage filters the forest (at most n - 1 edges) instead of recomputing similarities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from crop_cluster.clustering.graph import Edges, threshold_edges


@dataclass(frozen=True)
class Forest:
    """A maximum spanning forest over n nodes: edges (rows[k], cols[k]) with float32 cosine sims[k], sorted by
    decreasing similarity; exact for every threshold >= `threshold`."""

    n: int
    rows: np.ndarray
    cols: np.ndarray
    sims: np.ndarray
    threshold: float


def _maximum_spanning_forest(n: int, rows: np.ndarray, cols: np.ndarray, sims: np.ndarray) -> Edges:
    """The strongest acyclic subset of the given unique undirected edges (Kruskal on weights 2 - sim > 0)."""
    weights = 2.0 - sims.astype(np.float64)
    tree = minimum_spanning_tree(coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()).tocoo()
    return tree.row.astype(np.int64), tree.col.astype(np.int64), (2.0 - tree.data).astype(np.float32)


def forest_from_edges(n: int, edge_blocks: Iterable[Edges], threshold: float, max_pending: int = 0) -> Forest:
    """Fold a stream of unique edge blocks into a maximum spanning forest.

    Pending edges are folded into the forest whenever more than `max_pending` (default max(4n, 2^22)) accumulate,
    so memory stays O(n + one block) even when clusters are dense.
    """
    limit = max_pending or max(4 * n, 1 << 22)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    parts: List[Edges] = [empty]
    pending = 0
    for block in edge_blocks:
        parts.append(block)
        pending += block[0].size
        if pending > limit:
            parts = [_maximum_spanning_forest(n, *(np.concatenate(column) for column in zip(*parts)))]
            pending = 0
    rows, cols, sims = _maximum_spanning_forest(n, *(np.concatenate(column) for column in zip(*parts)))
    order = np.lexsort((cols, rows, -sims))
    return Forest(n, rows[order], cols[order], sims[order], float(threshold))


def spanning_forest(embeddings: np.ndarray, threshold: float, device: str = "cpu", precision: str = "auto",
                    max_pending: int = 0, stats: Optional[Dict] = None) -> Forest:
    """Maximum spanning forest of the pairs with cosine >= `threshold`; embeddings float32 (n, d), L2-normalised.
    On the CPU the edge blocks are folded here (scipy); on a torch device ('cuda:N') on that device.

    stats: filled with how the graph was computed (see `threshold_edges`) and the number of edges found.
    """
    n = embeddings.shape[0]
    if device != "cpu":  # CUDA: the edges stay on the GPU and are folded there; only the forest comes back
        from crop_cluster.clustering.graph import torch_forest_edges

        rows, cols, sims = torch_forest_edges(embeddings, threshold, device, precision, max_pending, stats)
        order = np.lexsort((cols, rows, -sims))
        return Forest(n, rows[order], cols[order], sims[order], float(threshold))
    blocks = threshold_edges(embeddings, threshold, device, precision, stats=stats)
    if stats is not None:
        blocks = _counted(blocks, stats)
    return forest_from_edges(n, blocks, threshold, max_pending)


BOUND_GROUP = 256         # old rows per group of the centroid-radius bound (larger components are split)
BOUND_SLACK = 1e-4        # float32 rounding of the bound's dot products and arccos


def grow_forest(old: Forest, old_nodes: np.ndarray, embeddings: np.ndarray, threshold: float,
                stats: Optional[Dict] = None) -> Forest:
    """The maximum spanning forest over every row of `embeddings` at `threshold`, grown from `old`.

    embeddings: float32 (n, d), unit rows; old: the forest over the rows `old_nodes` (int64 (m,), distinct; node k
    of `old` is row old_nodes[k]) built at old.threshold <= threshold; the other rows are new. Exact: the maximum
    spanning forest of a graph is that of (its forest's edges + every edge that touches a new row), so only the new
    rows' edges are computed. Those to old rows are found with a centroid-radius bound over groups of old rows (the
    components of `old` at `threshold`, components of more than BOUND_GROUP rows split at their weakest links): on
    the unit sphere angle(x, m) >= angle(x, c) - radius for every member m of a group with unit centroid c, so a
    group whose bound misses the threshold is skipped without touching its members; lone old rows are scored in
    tiles (`cross_edges`, one fused scan per tile). Grouping the new rows too (a bound between groups on both sides)
    was measured slower: a night's new crops form small groups, so the products barely shrink while the score
    matrices and their masks must be materialised. stats: receives the counts of the work done.
    """
    from crop_cluster.clustering.graph import cross_edges
    from crop_cluster.clustering.guard import split_oversized

    if threshold < old.threshold:
        raise ValueError(f"the forest was built at {old.threshold}; it cannot grow at the lower threshold {threshold}")
    n = embeddings.shape[0]
    old_nodes = np.asarray(old_nodes, dtype=np.int64)
    is_old = np.zeros(n, dtype=bool)
    is_old[old_nodes] = True
    new = np.flatnonzero(~is_old)
    keep = old.sims >= threshold
    parts: List[Edges] = [(old_nodes[old.rows[keep]], old_nodes[old.cols[keep]], old.sims[keep])]
    counts = {"new_rows": int(new.size), "old_rows": int(old_nodes.size)}
    if new.size:
        queries = np.ascontiguousarray(embeddings[new], dtype=np.float32)
        groups = partition_at(old, threshold)
        groups, _ = split_oversized(old, groups, threshold, BOUND_GROUP)
        _, groups, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        lone = np.flatnonzero(sizes[groups] == 1)
        q, b, sims = cross_edges(queries, embeddings[old_nodes[lone]], threshold)
        parts.append((new[q], old_nodes[lone[b]], sims))
        grouped = _grouped_edges(queries, embeddings, old_nodes, groups, sizes, threshold, counts)
        parts.append((new[grouped[0]], old_nodes[grouped[1]], grouped[2]))
        from crop_cluster.clustering.graph import threshold_edges

        for rows, cols, block_sims in threshold_edges(queries, threshold):
            parts.append((new[rows], new[cols], block_sims))
        counts.update(lone_old=int(lone.size), groups_old=int((sizes > 1).sum()),
                      lone_products=int(lone.size) * int(new.size))
    rows, cols, sims = (np.concatenate(column) for column in zip(*parts))
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    counts["edges"] = int(sims.size) - int(keep.sum())
    rows, cols, sims = _maximum_spanning_forest(n, low, high, sims)
    order = np.lexsort((cols, rows, -sims))
    if stats is not None:
        stats.update(counts)
    return Forest(n, rows[order], cols[order], sims[order], float(threshold))


def _grouped_edges(queries: np.ndarray, embeddings: np.ndarray, old_nodes: np.ndarray, groups: np.ndarray,
                   sizes: np.ndarray, threshold: float, counts: Dict) -> Edges:
    """(query index, old node index, sim) of every pair >= threshold between the queries and the old rows of groups
    of two or more (grow_forest's bound); groups: int64 (m,) group 0..G-1 of each old node, sizes (G,)."""
    members = np.flatnonzero(sizes[groups] > 1)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if not members.size:
        return empty
    order = members[np.argsort(groups[members], kind="stable")]
    labels = groups[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    vectors = np.ascontiguousarray(embeddings[old_nodes[order]], dtype=np.float32)    # grouped old rows
    centroids = np.add.reduceat(vectors, starts, axis=0)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    member_cos = np.einsum("ij,ij->i", vectors, np.repeat(centroids, ends - starts, axis=0))
    radius = np.arccos(np.clip(np.minimum.reduceat(member_cos, starts), -1.0, 1.0))
    floor = (np.cos(np.minimum(np.pi, radius + np.arccos(np.clip(threshold, -1.0, 1.0)))) - BOUND_SLACK)
    found = [empty]
    scored = 0
    for begin in range(0, queries.shape[0], 4096):
        block = queries[begin:begin + 4096]
        reach = block @ centroids.T >= floor[None, :].astype(np.float32)
        query_rows, group_ids = np.nonzero(reach)
        by_group = np.argsort(group_ids, kind="stable")
        query_rows, group_ids = query_rows[by_group], group_ids[by_group]
        bounds = np.flatnonzero(np.r_[True, np.diff(group_ids) != 0, True]) if group_ids.size else np.zeros(1, int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            k = int(group_ids[lo])
            sims = block[query_rows[lo:hi]] @ vectors[starts[k]:ends[k]].T
            scored += sims.size
            qi, mi = np.nonzero(sims >= threshold)
            if qi.size:
                found.append((begin + query_rows[lo:hi][qi], order[starts[k] + mi], sims[qi, mi]))
    counts["member_products"] = int(scored)
    return tuple(np.concatenate(column) for column in zip(*found))


def _counted(blocks: Iterable[Edges], stats: Dict) -> Iterator[Edges]:
    """Pass edge blocks through, counting the edges into stats['edges']."""
    stats["edges"] = 0
    for block in blocks:
        stats["edges"] += int(block[0].size)
        yield block


def contract(forest: Forest, item_of_node: np.ndarray, n_items: int) -> Forest:
    """The forest over items when the nodes of each item are merged (e.g. crops into individuals).

    item_of_node: int64 (forest.n,) item id 0..n_items-1. At every threshold t >= forest.threshold, the partition
    of the result equals the partition of {node pairs >= t} plus "same item" links, read per item: connectivity only
    depends on the node forest's components, and the strongest link between two items is kept.
    """
    a, b = item_of_node[forest.rows], item_of_node[forest.cols]
    between = a != b
    low, high, sims = np.minimum(a, b)[between], np.maximum(a, b)[between], forest.sims[between]
    _, strongest = np.unique(low * np.int64(n_items) + high, return_index=True)   # sims are sorted decreasing
    rows, cols, sims = _maximum_spanning_forest(n_items, low[strongest], high[strongest], sims[strongest])
    order = np.lexsort((cols, rows, -sims))
    return Forest(n_items, rows[order], cols[order], sims[order], forest.threshold)


def component_ids(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected component id per node, int64 (n,), of the undirected graph with the given edges."""
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def partition_at(forest: Forest, threshold: float) -> np.ndarray:
    """Component id per node, int64 (n,), of the graph of pairs with cosine >= `threshold` (>= forest.threshold)."""
    if threshold < forest.threshold:
        raise ValueError(f"the forest was built at {forest.threshold}; it cannot answer the lower threshold "
                         f"{threshold}")
    keep = forest.sims >= threshold
    return component_ids(forest.n, forest.rows[keep], forest.cols[keep])


def renumbered(forest: Optional[Forest], old_item: np.ndarray, new_item: np.ndarray) -> Optional[Forest]:
    """The forest over items after they were renumbered or split (e.g. crops kept out by a review become
    individuals of their own): old_item, new_item int64 (m,) per row, the item before and after. Each old node
    becomes the smallest new item among its rows (a split-off crop gets a larger one, appended), so the kept part
    keeps the node's links; None stays None."""
    if forest is None:
        return None
    old_item, new_item = np.asarray(old_item, dtype=np.int64), np.asarray(new_item, dtype=np.int64)
    n_new = int(new_item.max(initial=-1)) + 1
    item_of_node = np.full(forest.n, n_new, dtype=np.int64)
    np.minimum.at(item_of_node, old_item, new_item)
    if (item_of_node == n_new).any():             # a node without rows: its links are dropped with it
        keep = (item_of_node[forest.rows] < n_new) & (item_of_node[forest.cols] < n_new)
        forest = Forest(forest.n, forest.rows[keep], forest.cols[keep], forest.sims[keep], forest.threshold)
        item_of_node = np.minimum(item_of_node, max(n_new - 1, 0))
    return contract(forest, item_of_node, max(n_new, 1))
