"""Chaining guard for `-c cosine`: split clusters above a size cap at their weakest links.

Single linkage chains: A-B-C join when A-B and B-C are similar, even if A and C are not, and at 10^5 crops a low
threshold can grow one giant cluster. With a cap M, each component larger than M is split as if the threshold were
raised inside it until every part has at most M members: the links of its spanning forest are replayed strongest
first, and a link that would make a part larger than M is cut, freezing both sides (they are the maximal subtrees of
the single-linkage dendrogram with at most M members). Components of at most M members are never touched, so the
result equals plain `cosine` whenever no component exceeds M.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from crop_cluster.clustering.forest import Forest


def split_oversized(forest: Forest, groups: np.ndarray, threshold: float, max_size: int) -> Tuple[np.ndarray, Dict]:
    """Return (group id per node int64 (n,), summary) with every group of more than `max_size` nodes split.

    groups: component ids (n,) of the forest's edges with similarity >= threshold (from `partition_at`).
    summary: components_split, parts (groups with >= 2 members made from them), cut_similarity_min/max (the
    similarities of the links that were cut; a part's members are linked at least that strongly).
    """
    sizes = np.bincount(groups, minlength=1)
    oversized = sizes > max_size
    summary: Dict = {"components_split": int(oversized.sum()), "parts": 0}
    if not oversized.any():
        return groups, summary
    edges = np.flatnonzero((forest.sims >= threshold) & oversized[groups[forest.rows]])  # strongest first
    parent = list(range(forest.n))
    size = [1] * forest.n
    frozen = [False] * forest.n
    cut = []

    def find(node: int) -> int:
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    for row, col, sim in zip(forest.rows[edges].tolist(), forest.cols[edges].tolist(), forest.sims[edges].tolist()):
        a, b = find(row), find(col)
        if frozen[a] or frozen[b] or size[a] + size[b] > max_size:
            frozen[a] = frozen[b] = True
            cut.append(sim)
            continue
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
    members = np.flatnonzero(oversized[groups])
    roots = np.fromiter((find(node) for node in members.tolist()), dtype=np.int64, count=members.size)
    split = groups.copy()
    split[members] = groups.max() + 1 + roots
    part_sizes = np.unique(roots, return_counts=True)[1]
    summary.update(parts=int((part_sizes >= 2).sum()), cut_similarity_min=round(min(cut), 6),
                   cut_similarity_max=round(max(cut), 6))
    return split, summary
