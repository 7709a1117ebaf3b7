"""The 2-D map of report.html: UMAP when the `umap` package is importable, else PCA (scikit-learn)."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def project_2d(embeddings: np.ndarray, seed: int = 0) -> Tuple[np.ndarray, str]:
    """Coordinates for a scatter plot of `embeddings` float32 (n, d).

    Returns (int32 (n, 2) scaled to 0..1000 on both axes, method name 'umap' | 'pca'). Fewer than 3 rows or a
    rank-0 input gives points on a line / at the centre rather than an error.
    """
    n = embeddings.shape[0]
    points = np.zeros((n, 2), dtype=np.float64)
    method = "pca"
    if n >= 3:
        try:
            import umap  # optional; only used when the user installed it

            points = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, n - 1)).fit_transform(embeddings)
            method = "umap"
        except ImportError:
            from sklearn.decomposition import PCA

            k = min(2, embeddings.shape[1])
            points[:, :k] = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit_transform(
                embeddings.astype(np.float64))
    if n == 0:
        return np.zeros((0, 2), dtype=np.int32), method
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high - low > 1e-12, high - low, 1.0)
    scaled = np.where(high - low > 1e-12, (points - low) / span, 0.5)
    return np.rint(scaled * 1000).astype(np.int32), method
