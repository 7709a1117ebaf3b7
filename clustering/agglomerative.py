"""`-c agglomerative`: scikit-learn agglomerative clustering (ward, average or complete linkage).

The workflow of Antenna-style pipelines: optional StandardScaler -> PCA n components -> ward with a distance
threshold. Ward works on Euclidean distances of the features; average and complete use cosine distances. It needs
the condensed N x N distance matrix (N(N-1)/2 float64) plus a working copy, so it refuses inputs that would not fit
in memory and points to `cosine`, which is exact single linkage in O(N) memory.
"""
from __future__ import annotations

import os

import numpy as np

from crop_cluster.clustering import LINKAGES, ClusteringError, ClusterParams, ClusterResult
from crop_cluster.clustering.features import reduce_features

MEMORY_SHARE = 0.7  # refuse when the distance matrices would need more than this share of the available memory


def available_memory_bytes() -> int:
    """Memory the process can still use: MemAvailable from /proc/meminfo, else total physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_needed_bytes(n: int) -> int:
    """Peak bytes of agglomerative clustering on n rows: condensed float64 distances and one working copy."""
    return 2 * 8 * n * (n - 1) // 2


def check_fits(n: int, available: int) -> None:
    """ClusteringError naming the sizes and the alternatives when n rows would not fit in `available` bytes."""
    needed = memory_needed_bytes(n)
    if needed > MEMORY_SHARE * available:
        largest = int(np.sqrt(MEMORY_SHARE * available / 8))
        raise ClusteringError(
            f"-c agglomerative on {n} individuals needs about {needed / 2**30:.1f} GiB for its N x N distances, but "
            f"only {available / 2**30:.1f} GiB are available (it fits up to about {largest} individuals here); use "
            f"-c cosine (exact single linkage in O(N) memory, with --max_cluster_size against chaining) or "
            f"-c kmeans --n_clusters K")


def cluster_agglomerative(embeddings: np.ndarray, params: ClusterParams) -> ClusterResult:
    """Group id per row, int64 (n,), from agglomerative clustering with params.linkage.

    Stops merging at params.distance_threshold (ward: Euclidean in the feature space; average/complete: cosine
    distance 1 - similarity), or at params.n_clusters clusters.
    """
    if params.linkage not in LINKAGES:
        raise ClusteringError(f"--linkage {params.linkage}: choose one of {', '.join(LINKAGES)}")
    if (params.distance_threshold is None) == (params.n_clusters is None):
        raise ClusteringError("-c agglomerative needs exactly one of --distance_threshold D (stop merging at that "
                              "linkage distance) or --n_clusters K (or -x K)")
    n = embeddings.shape[0]
    if params.n_clusters is not None and params.n_clusters > n:
        raise ClusteringError(f"--n_clusters {params.n_clusters} is more than the {n} individuals to cluster")
    check_fits(n, available_memory_bytes())
    if n < 2:
        return ClusterResult(np.arange(n, dtype=np.int64))
    from sklearn.cluster import AgglomerativeClustering

    features = reduce_features(embeddings, params.pca, params.standardize, params.seed)
    model = AgglomerativeClustering(n_clusters=params.n_clusters, distance_threshold=params.distance_threshold,
                                    linkage=params.linkage,
                                    metric="euclidean" if params.linkage == "ward" else "cosine")
    groups = model.fit_predict(features).astype(np.int64)
    return ClusterResult(groups, {"features_dim": int(features.shape[1]), "clusters_found": int(model.n_clusters_)})
