"""`--add`: new individuals join the campaign's clusters, the rest are clustered among themselves.

Exact single linkage against the members, at a cost of similarity work against the campaign, not a re-run:

1. join: a new individual joins the existing cluster whose members it is most similar to, when that similarity
   (the best over its crops and the cluster's crops) reaches `match_threshold`. Clusters that cannot reach it are
   skipped without touching their members: on the unit sphere, angle(x, m) >= angle(x, c) - radius(C) for every
   member m of a cluster C with unit centroid c and radius(C) = max angle(m, c), so
   max_m x.m <= cos(max(0, angle(x, c) - radius(C))); only clusters whose bound reaches the threshold are scored.
2. conflict: a new individual that reaches two or more *reviewed* clusters (named groups) would chain them; it
   joins the closer one and is reported, never merging them.
3. the rest: new individuals that joined nothing, together with the campaign's unclustered individuals that one of
   them reaches at `threshold`, are clustered by `-c cosine` at `threshold` (clustering/cosine.py); those groups
   are new clusters. Existing clusters are never merged or renumbered here.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Dict, List, Set

import numpy as np

BOUND_SLACK = 1e-4        # float32 rounding of the bound's dot products and arccos
ROW_CHUNK = 2048          # new crops per block of the centroid and singleton products
REACH_TILE_PRODUCTS = 1 << 23   # scores per tile of `_reached` (16 MiB in bf16)


@dataclass(frozen=True)
class AddResult:
    """label: int64 (I_old + J,) per individual (old ones first, then the new ones): an existing cluster id, a new
    group label >= `first_new_label`, or -1; joined: new individuals that joined an existing cluster; conflicts:
    {individual (index among the new), clusters (reviewed ids reached), similarities, chosen}; counts for run.json."""

    label: np.ndarray
    first_new_label: int
    joined: int
    conflicts: List[Dict] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)


def _best_per_cluster(new_vectors: np.ndarray, old_vectors: np.ndarray, member_rows: np.ndarray,
                      member_label: np.ndarray, match_threshold: float) -> Dict[int, Dict[int, float]]:
    """{new crop row: {cluster id: best similarity >= match_threshold}} with the centroid-radius bound.

    old_vectors: float32 (m, d); member_rows: int64 (k,) its rows in clusters, member_label: int64 (k,) their ids.
    The bound cos(max(0, angle(x, c) - radius)) >= t holds exactly when x.c >= cos(min(pi, radius + arccos t)), so
    the candidates come from one product with the centroids and a per-cluster floor, without an arccos per pair.
    """
    from scipy.sparse import csr_matrix

    order = np.argsort(member_label, kind="stable")
    labels = member_label[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    ids = labels[starts]
    ordered = member_rows[order]             # rows of old_vectors grouped by cluster (never copied as a whole)
    segment = np.repeat(np.arange(ids.size), ends - starts)
    summing = csr_matrix((np.ones(labels.size, dtype=np.float32), (segment, ordered)),
                         shape=(ids.size, old_vectors.shape[0]))
    centroids = np.asarray(summing @ old_vectors, dtype=np.float32)   # float32 sums: only their direction is used
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    member_cos = np.empty(labels.size, dtype=np.float32)
    for begin in range(0, labels.size, 4 * ROW_CHUNK):              # in blocks: no (k, d) copies
        part = slice(begin, begin + 4 * ROW_CHUNK)
        member_cos[part] = np.einsum("ij,ij->i", old_vectors[ordered[part]], centroids[segment[part]])
    radius = np.arccos(np.clip(np.minimum.reduceat(member_cos, starts), -1.0, 1.0))
    floor = (np.cos(np.minimum(np.pi, radius + np.arccos(np.clip(match_threshold, -1.0, 1.0)))) -
             BOUND_SLACK).astype(np.float32)               # float32 rounding (~1e-7) is well inside the slack
    rows_found, clusters_found = [], []
    product = np.empty((min(ROW_CHUNK, new_vectors.shape[0]), ids.size), dtype=np.float32)
    above = np.empty(product.shape, dtype=bool)
    for begin in range(0, new_vectors.shape[0], ROW_CHUNK):
        block = new_vectors[begin:begin + ROW_CHUNK]
        np.matmul(block, centroids.T, out=product[:block.shape[0]])
        np.greater_equal(product[:block.shape[0]], floor[None, :], out=above[:block.shape[0]])
        rows, clusters = np.divmod(np.flatnonzero(above[:block.shape[0]]), ids.size)    # few: 1-d search
        rows_found.append(rows + begin)
        clusters_found.append(clusters)
    rows, clusters = np.concatenate(rows_found), np.concatenate(clusters_found)
    by_cluster = np.argsort(clusters, kind="stable")
    rows, clusters = rows[by_cluster], clusters[by_cluster]
    bounds = np.flatnonzero(np.r_[True, np.diff(clusters) != 0, True]) if clusters.size else np.zeros(1, np.int64)
    found: Dict[int, Dict[int, float]] = {}
    for begin, end in zip(bounds[:-1], bounds[1:]):
        k = int(clusters[begin])
        candidates = rows[begin:end]
        sims = (new_vectors[candidates] @ old_vectors[ordered[starts[k]:ends[k]]].T).max(axis=1)
        hit = sims >= match_threshold
        for row, sim in zip(candidates[hit].tolist(), sims[hit].tolist()):
            found.setdefault(row, {})[int(ids[k])] = sim
    return found


def _fast_product(n_rows: int, n_cols: int) -> bool:
    """True when an (n_rows x n_cols) similarity product should run in bf16 (clustering.graph's rule: the CPU
    multiplies bf16 natively, and torch is loaded already (it is, once new crops were embedded) or the product is as
    large as the graph's at BF16_MIN_ROWS rows, where the saving outweighs importing it)."""
    from crop_cluster.clustering.graph import BF16_MIN_ROWS, cpu_has_fast_bf16

    large = n_rows * n_cols >= BF16_MIN_ROWS * BF16_MIN_ROWS // 2
    return cpu_has_fast_bf16() and ("torch" in sys.modules or large)


def _reached_float32(tile: np.ndarray, new_vectors: np.ndarray, threshold: float) -> np.ndarray:
    """bool (len(tile),): rows of tile with float32 cosine >= threshold to some row of new_vectors."""
    hit = np.zeros(tile.shape[0], dtype=bool)
    for begin in range(0, new_vectors.shape[0], ROW_CHUNK):
        hit |= (tile @ new_vectors[begin:begin + ROW_CHUNK].T).max(axis=1) >= threshold
    return hit


def _reached(new_vectors: np.ndarray, old_vectors: np.ndarray, rows: np.ndarray, threshold: float) -> np.ndarray:
    """bool (len(rows),): which rows of old_vectors have float32 cosine >= threshold to some row of new_vectors.

    Tiled over the old rows (each tile gathered once). With `_fast_product`, a tile's best score per row comes from
    one bf16 product, and only rows whose bf16 best reaches threshold - MARGIN["bfloat16"] (the proven bf16 error
    bound for unit vectors, clustering.graph) are scored again in float32: the answer is float32's.
    """
    from crop_cluster.clustering.graph import MARGIN

    hit = np.zeros(rows.size, dtype=bool)
    if not rows.size or not new_vectors.shape[0]:
        return hit
    tile_rows = max(256, REACH_TILE_PRODUCTS // new_vectors.shape[0])
    fast = _fast_product(rows.size, new_vectors.shape[0])
    if fast:
        import torch

        queries = torch.from_numpy(np.ascontiguousarray(new_vectors)).to(torch.bfloat16)
    for start in range(0, rows.size, tile_rows):
        tile = old_vectors[rows[start:start + tile_rows]]
        if not fast:
            hit[start:start + tile.shape[0]] = _reached_float32(tile, new_vectors, threshold)
            continue
        with torch.inference_mode():
            best = (torch.from_numpy(tile).to(torch.bfloat16) @ queries.T).amax(dim=1).float().numpy()
        maybe = np.flatnonzero(best >= threshold - MARGIN["bfloat16"])
        if maybe.size:
            hit[start + maybe] = _reached_float32(tile[maybe], new_vectors, threshold)
    return hit


def add_to_campaign(old_vectors: np.ndarray, old_item: np.ndarray, old_label: np.ndarray, new_vectors: np.ndarray,
                    new_item: np.ndarray, threshold: float, match_threshold: float, reviewed: Set[int],
                    device: str = "cpu") -> AddResult:
    """Place the new individuals (module docstring).

    old_vectors: float32 (m, d) L2-normalised, the campaign's distinct crops; old_item: int64 (m,) their individual
    0..I_old-1; old_label: int64 (I_old,) stable cluster id per old individual, -1 not clustered. new_vectors:
    float32 (k, d), the new distinct crops; new_item: int64 (k,) 0..J-1. reviewed: ids of the named clusters.
    """
    from crop_cluster.clustering import ClusterParams
    from crop_cluster.clustering.cosine import cluster_cosine

    n_old, n_new = int(old_label.size), int(new_item.max(initial=-1)) + 1
    label = np.concatenate([old_label.astype(np.int64), np.full(n_new, -1, dtype=np.int64)])
    member_rows = np.flatnonzero(old_label[old_item] >= 0)
    best: Dict[int, Dict[int, float]] = {}
    if member_rows.size and new_vectors.shape[0]:
        by_crop = _best_per_cluster(new_vectors, old_vectors, member_rows, old_label[old_item[member_rows]],
                                    match_threshold)
        for row, sims in by_crop.items():
            target = best.setdefault(int(new_item[row]), {})
            for cluster, sim in sims.items():
                target[cluster] = max(sim, target.get(cluster, -2.0))
    conflicts: List[Dict] = []
    for individual, sims in best.items():
        chosen = max(sims, key=lambda c: (sims[c], -c))
        label[n_old + individual] = chosen
        named = sorted(c for c in sims if c in reviewed)
        if len(named) > 1:
            conflicts.append({"individual": individual, "clusters": named,
                              "similarities": [round(sims[c], 4) for c in named], "chosen": chosen})
    first_new = int(max(old_label.max(initial=-1), -1)) + 1
    rest = np.flatnonzero(label[n_old + new_item] < 0)                 # new crops that joined nothing
    lone = np.flatnonzero(old_label[old_item] < 0)                     # crops of unclustered campaign individuals
    if rest.size:
        pulled = lone[_reached(new_vectors[rest], old_vectors, lone, threshold)] if lone.size else lone
        vectors = np.concatenate([new_vectors[rest], old_vectors[pulled]])
        items = np.concatenate([n_old + new_item[rest], old_item[pulled]])
        unique_items, item_of_row = np.unique(items, return_inverse=True)
        groups = cluster_cosine(vectors, ClusterParams(threshold=threshold, device=device),
                                item_of_row=item_of_row.astype(np.int64)).groups
        sizes = np.bincount(groups[item_of_row])                       # crops per group
        grouped = sizes[groups] >= 2
        label[unique_items[grouped]] = first_new + groups[grouped]
    joined = len(best)
    new_labels = np.unique(label[label >= first_new])
    counts = {"joined": joined, "new_clusters": int(new_labels.size), "conflicts": len(conflicts),
              "ambiguous": sum(1 for sims in best.values() if len(sims) > 1)}
    return AddResult(label, first_new, joined, conflicts, counts)
