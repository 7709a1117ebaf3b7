"""Near-duplicates: crops whose embeddings have cosine similarity >= a high threshold (`--dedup_threshold`).

Resized, recompressed, re-exported or slightly shifted copies of one crop sit far above the similarity of two
different specimens of one species; the per-backend defaults below were calibrated for that margin
(bench/calibrate_individuals.py, README "Individuals").

The pairs come from the clustering engine's maximum spanning forest (`clustering.forest.spanning_forest`): at most
n - 1 edges, no N x N matrix, exact components for every threshold >= the one it was built at.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def near_duplicate_edges(embeddings: np.ndarray, threshold: float,
                         device: str = "cpu") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spanning-forest edges of the graph "cosine >= threshold".

    embeddings: float32 (m, d), L2-normalised (one row per distinct file). Returns (rows int64 (k,), cols int64
    (k,), sims float32 (k,)) with k <= m - 1, sorted by decreasing similarity, so linking them in order with a
    union-find joins the most similar crops first.
    """
    from crop_cluster.clustering.forest import spanning_forest

    if embeddings.shape[0] < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    forest = spanning_forest(np.ascontiguousarray(embeddings, dtype=np.float32), threshold, device=device)
    return forest.rows, forest.cols, forest.sims
