"""`-c hdbscan`: scikit-learn HDBSCAN after PCA to at most 50 dimensions (density clustering, -1 = noise)."""
from __future__ import annotations

import numpy as np

from crop_cluster.clustering import ClusteringError, ClusterParams, ClusterResult
from crop_cluster.clustering.features import reduce_features

MAX_DIMENSIONS = 50


def cluster_hdbscan(embeddings: np.ndarray, params: ClusterParams) -> ClusterResult:
    """Group id per row, int64 (n,), -1 for noise; clusters have at least params.min_cluster_size members.

    Euclidean distances between PCA scores of unit vectors (a monotone stand-in for cosine distance).
    """
    n = embeddings.shape[0]
    if params.min_cluster_size < 2:
        raise ClusteringError(f"--min_cluster_size {params.min_cluster_size}: HDBSCAN needs at least 2")
    if params.min_samples is not None and params.min_samples < 1:
        raise ClusteringError(f"--min_samples {params.min_samples}: must be at least 1")
    if n < params.min_cluster_size:
        return ClusterResult(np.full(n, -1, dtype=np.int64), {"features_dim": 0})
    from sklearn.cluster import HDBSCAN

    features = reduce_features(embeddings, MAX_DIMENSIONS, seed=params.seed)
    model = HDBSCAN(min_cluster_size=params.min_cluster_size, min_samples=params.min_samples, copy=True)
    groups = model.fit_predict(features).astype(np.int64)
    return ClusterResult(groups, {"features_dim": int(features.shape[1]), "noise": int((groups < 0).sum())})
