"""The report's needs-review order: how likely each individual is misplaced, and its nearest crops in other clusters.

Both come from cluster centres (normalised mean of the members' embeddings), so the cost is bounded:
- misplaced score: similarity to the nearest other cluster's centre minus similarity to its own centre
  (> 0: closer to another cluster than to its own), I x K x d multiply-adds in row chunks;
- "more like this": for each individual, the members of its `candidates` nearest other clusters (at most
  `member_cap` of each, the most central first) are compared with it and the `k` most similar kept:
  at most I x candidates x member_cap x d multiply-adds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_ROWS = 2048


@dataclass(frozen=True)
class ReviewOrder:
    """misplaced: float32 (I,), NaN for individuals not in a cluster; nearest_other: int64 (I,), the closest cluster
    other than its own (-1 when there is none); like: int64 (I, k) indices of the most similar individuals in other
    clusters, most similar first, -1 padding; like_similarity: float32 (I, k), NaN padding; nearest_similarity:
    float32 (I,), the similarity to nearest_other's centre (NaN when there is none); centre: float32 (K, d), the
    clusters' centres."""

    misplaced: np.ndarray
    nearest_other: np.ndarray
    like: np.ndarray
    like_similarity: np.ndarray
    nearest_similarity: np.ndarray = None
    centre: np.ndarray = None


def centres(embedding: np.ndarray, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
    """float32 (K, d): the L2-normalised mean embedding of each cluster 0..K-1 (rows of `cluster` < 0 ignored)."""
    sums = np.zeros((n_clusters, embedding.shape[1]), dtype=np.float32)
    inside = np.flatnonzero(cluster >= 0)
    rows = inside[np.argsort(cluster[inside], kind="stable")]
    if rows.size:
        labels = cluster[rows]
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        sums[labels[starts]] = np.add.reduceat(embedding[rows], starts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return sums / np.where(norms > 0, norms, 1.0)


def review_order(embedding: np.ndarray, cluster: np.ndarray, k: int = 6, candidates: int = 2,
                 member_cap: int = 128) -> ReviewOrder:
    """embedding: float32 (I, d) L2-normalised, one row per individual; cluster: int64 (I,), -1 = not clustered."""
    n = embedding.shape[0]
    n_clusters = int(cluster.max(initial=-1)) + 1
    misplaced = np.full(n, np.nan, dtype=np.float32)
    nearest = np.full((n, candidates), -1, dtype=np.int64)
    like = np.full((n, k), -1, dtype=np.int64)
    like_sim = np.full((n, k), np.nan, dtype=np.float32)
    nearest_sim = np.full(n, np.nan, dtype=np.float32)
    if n_clusters == 0 or n == 0:
        return ReviewOrder(misplaced, nearest[:, 0], like, like_sim, nearest_sim,
                           np.zeros((0, embedding.shape[1]), dtype=np.float32))
    centre = centres(embedding, cluster, n_clusters)
    take = min(candidates, n_clusters)
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        sims = embedding[rows] @ centre.T                                    # (chunk, K)
        own = cluster[rows]
        inside = own >= 0
        own_sim = np.where(inside, sims[np.arange(sims.shape[0]), np.maximum(own, 0)], np.nan)
        sims[inside, own[inside]] = -np.inf                                  # other clusters only
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take] if take < n_clusters else \
            np.tile(np.arange(n_clusters), (sims.shape[0], 1))
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
        top = np.where(np.isfinite(top_sims), top, -1)
        nearest[rows, :take] = top
        nearest_sim[rows] = np.where(top[:, 0] >= 0, top_sims[:, 0], np.nan)
        misplaced[rows] = np.where(inside & (top[:, 0] >= 0), top_sims[:, 0] - own_sim, np.nan)
    _nearest_members(embedding, cluster, centre, nearest, member_cap, like, like_sim)
    return ReviewOrder(misplaced, nearest[:, 0], like, like_sim, nearest_sim, centre)


def _nearest_members(embedding: np.ndarray, cluster: np.ndarray, centre: np.ndarray, nearest: np.ndarray,
                     member_cap: int, like: np.ndarray, like_sim: np.ndarray) -> None:
    """Fill like/like_sim (I, k) in place from the members of each individual's candidate clusters."""
    k = like.shape[1]
    n, candidates = nearest.shape
    found = np.full((n, candidates * k), -1, dtype=np.int64)
    found_sim = np.full((n, candidates * k), -np.inf, dtype=np.float32)
    by_cluster = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[by_cluster], np.arange(int(cluster.max()) + 2))
    for slot in range(candidates):
        targets = nearest[:, slot]
        queries_by_target = np.argsort(targets, kind="stable")
        qbounds = np.searchsorted(targets[queries_by_target], np.arange(int(cluster.max()) + 2))
        for c in np.unique(targets[targets >= 0]):
            queries = queries_by_target[qbounds[c]:qbounds[c + 1]]
            members = by_cluster[bounds[c]:bounds[c + 1]]
            if members.size > member_cap:   # the most central members stand for a large cluster
                central = embedding[members] @ centre[c]
                members = members[np.argsort(-central, kind="stable")[:member_cap]]
            sims = embedding[queries] @ embedding[members].T                 # (q, m)
            keep = min(k, members.size)
            top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep] if keep < members.size else \
                np.tile(np.arange(members.size), (queries.size, 1))
            found[queries, slot * k:slot * k + keep] = members[top]
            found_sim[queries, slot * k:slot * k + keep] = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-found_sim, axis=1, kind="stable")[:, :k]
    best, best_sim = np.take_along_axis(found, order, axis=1), np.take_along_axis(found_sim, order, axis=1)
    valid = best >= 0
    like[:] = np.where(valid, best, -1)
    like_sim[:] = np.where(valid, best_sim, np.nan)
