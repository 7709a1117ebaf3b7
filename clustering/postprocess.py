"""Per-row statistics derived from a finished clustering."""
from __future__ import annotations

import numpy as np


def centroid_similarity(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row to its cluster's centroid, float32 (n,); NaN for rows with label -1.

    embeddings: float32 (n, d), L2-normalised; labels: int64 (n,), 0..K-1 or -1. The centroid is the mean of the
    cluster's rows, re-normalised to unit length.
    """
    similarity = np.full(labels.size, np.nan, dtype=np.float32)
    clustered = np.flatnonzero(labels >= 0)
    if clustered.size == 0:
        return similarity
    k = int(labels.max()) + 1
    sums = np.zeros((k, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[clustered], embeddings[clustered])
    centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    similarity[clustered] = np.einsum("ij,ij->i", embeddings[clustered], centroids[labels[clustered]])
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

