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
