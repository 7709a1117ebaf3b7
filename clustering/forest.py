"""Maximum spanning forest of the ε-graph: one graph pass serves every threshold at or above the one it was built at.

The components of {pairs with cosine >= t} equal the components of {forest edges with similarity >= t} for every
t >= the forest's threshold (a maximum spanning forest keeps, for each cut, its strongest crossing edge). So the
graph is computed once, at the lowest threshold any stage needs (near-duplicates, clustering, a threshold sweep),
and each stage filters the forest (at most n - 1 edges) instead of recomputing similarities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

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


BOUND_GROUP = 256         # rows per group of the centroid-radius bound (larger components are split)
BOUND_SLACK = 1e-4        # float32 rounding of the bound's dot products and arccos
BOUND_TILE = 4096         # group rows per product of the bound


def grow_forest(old: Forest, old_nodes: np.ndarray, embeddings: np.ndarray, threshold: float,
                stats: Optional[Dict] = None) -> Forest:
    """The maximum spanning forest over every row of `embeddings` at `threshold`, grown from `old`.

    embeddings: float32 (n, d), unit rows; old: the forest over the rows `old_nodes` (int64 (m,), distinct; node k
    of `old` is row old_nodes[k]) built at old.threshold <= threshold; the other rows are new. Exact: the maximum
    spanning forest of a graph is that of (its forest's edges + every edge that touches a new row), so only the new
    rows' edges are computed: among themselves in tiles (`threshold_edges`), to the old rows with a centroid-radius
    bound between groups (`bounded_edges`): the old rows grouped by the components of `old` at `threshold`, the new
    ones by the components of their own edges, components of more than BOUND_GROUP rows split at their weakest
    links. stats: receives the counts of the work done.
    """
    from crop_cluster.clustering.graph import threshold_edges

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
        among = [block for block in threshold_edges(queries, threshold)]
        new_forest = forest_from_edges(new.size, among, threshold)
        parts.extend((new[rows], new[cols], sims) for rows, cols, sims in among)
        rows, cols, sims = bounded_edges(embeddings[old_nodes], compact_groups(old, threshold), queries,
                                         compact_groups(new_forest, threshold), threshold, counts)
        parts.append((old_nodes[rows], new[cols], sims))
    rows, cols, sims = (np.concatenate(column) for column in zip(*parts))
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    counts["edges"] = int(sims.size) - int(keep.sum())
    rows, cols, sims = _maximum_spanning_forest(n, low, high, sims)
    order = np.lexsort((cols, rows, -sims))
    if stats is not None:
        stats.update(counts)
    return Forest(n, rows[order], cols[order], sims[order], float(threshold))


def compact_groups(forest: Forest, threshold: float) -> np.ndarray:
    """int64 (forest.n,) group 0..G-1 of each node: its component at `threshold`, components of more than
    BOUND_GROUP nodes split at their weakest links (compact groups make a tight bound)."""
    from crop_cluster.clustering.guard import split_oversized

    groups, _ = split_oversized(forest, partition_at(forest, threshold), threshold, BOUND_GROUP)
    return np.unique(groups, return_inverse=True)[1].astype(np.int64)


@dataclass(frozen=True)
class _Groups:
    """Rows grouped for the bound: order (rows sorted by group), starts/ends (G,) per group, centroid (G, d) unit,
    radius (G,) radians (0 for a group of one), lone: bool (G,) groups of one row."""

    order: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    centroid: np.ndarray
    radius: np.ndarray

    @property
    def lone(self) -> np.ndarray:
        return self.ends - self.starts == 1


def _groups(vectors: np.ndarray, groups: np.ndarray) -> _Groups:
    order = np.argsort(groups, kind="stable")
    labels = groups[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if labels.size else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], labels.size].astype(np.int64)
    grouped = vectors[order]
    centroid = np.add.reduceat(grouped, starts, axis=0) if labels.size else np.zeros((0, vectors.shape[1]),
                                                                                      np.float32)
    centroid /= np.maximum(np.linalg.norm(centroid, axis=1, keepdims=True), 1e-12)
    member_cos = np.einsum("ij,ij->i", grouped, np.repeat(centroid, ends - starts, axis=0))
    radius = np.arccos(np.clip(np.minimum.reduceat(member_cos, starts), -1.0, 1.0)) if labels.size else \
        np.zeros(0)
    radius[ends - starts == 1] = 0.0
    return _Groups(order, starts, ends, np.ascontiguousarray(centroid, dtype=np.float32), radius)


def bounded_edges(a: np.ndarray, a_groups: np.ndarray, b: np.ndarray, b_groups: np.ndarray, threshold: float,
                  counts: Optional[Dict] = None) -> Edges:
    """Every pair (row i of a, row j of b) with float32 cosine >= threshold: (i int64, j int64, sims float32).

    a: float32 (m, d), b: float32 (k, d), unit rows; a_groups (m,), b_groups (k,): group ids. On the unit sphere the
    angle between a member of group g (centroid c_g, radius r_g) and one of group h is at least angle(c_g, c_h) -
    r_g - r_h, so a pair of groups is scored only when c_g . c_h >= cos(min(pi, r_g + r_h + arccos threshold))
    (less BOUND_SLACK); their members are then multiplied exactly. Pairs of lone rows are scored in tiles
    (graph.cross_edges), whose candidates are the edges themselves. counts: receives the groups and products.
    """
    from crop_cluster.clustering.graph import cross_edges

    ga, gb = _groups(a, a_groups), _groups(b, b_groups)
    theta = float(np.arccos(np.clip(threshold, -1.0, 1.0)))
    lone_a, lone_b = np.flatnonzero(ga.lone), np.flatnonzero(gb.lone)
    rows_a, rows_b = ga.order[ga.starts[lone_a]], gb.order[gb.starts[lone_b]]
    i, j, sims = cross_edges(a[rows_a], b[rows_b], threshold)             # lone x lone: the edges themselves
    found: List[Edges] = [(rows_a[i], rows_b[j], sims)]
    candidates: List[Tuple[np.ndarray, np.ndarray]] = []
    for part_a, part_b in ((np.flatnonzero(~ga.lone), np.arange(gb.radius.size)), (lone_a, np.flatnonzero(~gb.lone))):
        for begin in range(0, part_a.size, BOUND_TILE):
            block = part_a[begin:begin + BOUND_TILE]
            if not block.size or not part_b.size:
                continue
            scores = ga.centroid[block] @ gb.centroid[part_b].T
            floor = np.cos(np.minimum(np.pi, ga.radius[block][:, None] + gb.radius[part_b][None, :] + theta))
            hit_a, hit_b = np.nonzero(scores >= floor - BOUND_SLACK)
            candidates.append((block[hit_a], part_b[hit_b]))
    pairs_a = np.concatenate([c[0] for c in candidates]) if candidates else np.zeros(0, np.int64)
    pairs_b = np.concatenate([c[1] for c in candidates]) if candidates else np.zeros(0, np.int64)
    by_a = np.argsort(pairs_a, kind="stable")
    pairs_a, pairs_b = pairs_a[by_a], pairs_b[by_a]
    bounds = np.flatnonzero(np.r_[True, np.diff(pairs_a) != 0, True]) if pairs_a.size else np.zeros(1, np.int64)
    scored = 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):                          # one product per group of a
        g = int(pairs_a[lo])
        members_a = ga.order[ga.starts[g]:ga.ends[g]]
        members_b = np.concatenate([gb.order[gb.starts[h]:gb.ends[h]] for h in pairs_b[lo:hi].tolist()])
        products = a[members_a] @ b[members_b].T
        scored += products.size
        hit_a, hit_b = np.nonzero(products >= threshold)
        if hit_a.size:
            found.append((members_a[hit_a], members_b[hit_b], products[hit_a, hit_b]))
    if counts is not None:
        counts.update(groups_old=int(ga.radius.size), groups_new=int(gb.radius.size), lone_old=int(lone_a.size),
                      lone_new=int(lone_b.size), lone_products=int(lone_a.size) * int(lone_b.size),
                      group_pairs_scored=int(pairs_a.size), member_products=int(scored))
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
