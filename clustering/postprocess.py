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
