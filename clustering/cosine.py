"""`-c cosine`: single-link clustering at a cosine threshold = connected components of the exact ε-graph."""
from __future__ import annotations

import numpy as np

from clustering.forest import partition_at, spanning_forest


def cluster_cosine(embeddings: np.ndarray, threshold: float, device: str = "cpu") -> np.ndarray:
    """Group id per row, int64 (n,): rows joined by any chain of pairs with cosine similarity >= `threshold`.

    embeddings: float32 (n, d), L2-normalised. Exact over the whole input (no chunking), memory bounded by tiles.
    """
    return partition_at(spanning_forest(embeddings, threshold, device), threshold)
