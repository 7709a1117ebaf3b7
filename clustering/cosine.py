"""`-c cosine`: single-link clustering at a cosine threshold = connected components of the exact ε-graph."""
from __future__ import annotations

import numpy as np

from clustering.components import components_from_edges
from clustering.graph import threshold_edges


def cluster_cosine(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Group id per row, int64 (n,): rows joined by any chain of pairs with cosine similarity >= `threshold`.

    embeddings: float32 (n, d), L2-normalised. Exact over the whole input (no chunking), memory bounded by blocks.
    """
    return components_from_edges(embeddings.shape[0], threshold_edges(embeddings, threshold))
