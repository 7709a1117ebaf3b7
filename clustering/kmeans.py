"""`-c kmeans`: spherical k-means with faiss, trained on a sample and assigned in chunks.

Training reads at most k x 256 rows (faiss' own rule of thumb), and assignment streams through the input in chunks,
so `embeddings` may be a numpy.memmap larger than memory. The centroids start from k-means++ seeds (scikit-learn) drawn
from at most 20 x k of the training rows: faiss' random start alone leaves well-separated groups merged or split in
a good share of seeds. Uses the GPU when the device is CUDA and faiss has GPUs.
"""
from __future__ import annotations

import numpy as np

from crop_cluster.clustering import ClusteringError, ClusterParams, ClusterResult

POINTS_PER_CENTROID = 256
SEEDING_POINTS_PER_CENTROID = 20
ASSIGN_CHUNK = 65536
ITERATIONS = 25


def cluster_kmeans(embeddings: np.ndarray, params: ClusterParams) -> ClusterResult:
    """Group id per row, int64 (n,) in 0..k-1: the nearest of k spherical centroids (largest cosine similarity).

    embeddings: float32 (n, d), L2-normalised (an array or a memmap). k = params.n_clusters.
    """
    n, d = embeddings.shape
    k = params.n_clusters
    if k is None:
        raise ClusteringError("-c kmeans needs the number of clusters: give --n_clusters K (or -x K)")
    if not 1 <= k <= n:
        raise ClusteringError(f"--n_clusters {k}: k-means needs 1 <= k <= the {n} individuals to cluster")
    import faiss

    rng = np.random.default_rng(params.seed)
    sample_size = min(n, k * POINTS_PER_CENTROID)
    sample = np.sort(rng.choice(n, size=sample_size, replace=False)) if sample_size < n else np.arange(n)
    training = np.ascontiguousarray(embeddings[sample], dtype=np.float32)
    use_gpu = params.device.startswith("cuda") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    from sklearn.cluster import kmeans_plusplus

    seeding = training[np.sort(rng.permutation(sample_size)[:SEEDING_POINTS_PER_CENTROID * k])]
    seeds, _ = kmeans_plusplus(seeding, k, random_state=params.seed)
    kmeans = faiss.Kmeans(d, k, niter=ITERATIONS, spherical=True, seed=params.seed, gpu=use_gpu,
                          max_points_per_centroid=POINTS_PER_CENTROID, min_points_per_centroid=1, verbose=False)
    kmeans.train(training, init_centroids=np.ascontiguousarray(seeds / np.linalg.norm(seeds, axis=1, keepdims=True),
                                                                dtype=np.float32))
    index = faiss.IndexFlatIP(d)
    index.add(kmeans.centroids)
    groups = np.empty(n, dtype=np.int64)
    for start in range(0, n, ASSIGN_CHUNK):
        chunk = np.ascontiguousarray(embeddings[start:start + ASSIGN_CHUNK], dtype=np.float32)
        groups[start:start + chunk.shape[0]] = index.search(chunk, 1)[1][:, 0]
    return ClusterResult(groups, {"k": k, "trained_on": int(sample_size), "gpu": bool(use_gpu),
                                  "objective": round(float(kmeans.obj[-1]), 6) if len(kmeans.obj) else None})
