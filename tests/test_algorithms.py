"""The other algorithms behind -c: agglomerative, kmeans, hdbscan; their validation and the memory guard."""
from __future__ import annotations

import numpy as np
import pytest

from crop_cluster.clustering import ClusteringError, ClusterParams, run_algorithm
from crop_cluster.clustering.agglomerative import check_fits, memory_needed_bytes


def blobs(per_blob: int, blobs_count: int, d: int = 32, spread: float = 0.05, seed: int = 0):
    """(unit vectors float32 (per_blob * blobs_count, d), true blob id), blobs far apart, rows shuffled."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(blobs_count, d))
    truth = rng.permutation(np.repeat(np.arange(blobs_count), per_blob))
    x = centres[truth] / np.linalg.norm(centres[truth], axis=1, keepdims=True) + rng.normal(scale=spread,
                                                                                           size=(truth.size, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def same_partition(a, b) -> bool:
    return len(set(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("linkage", ["ward", "average", "complete"])
def test_agglomerative_recovers_blobs_with_a_cluster_count(linkage):
    x, truth = blobs(15, 6)
    result = run_algorithm("agglomerative", x, ClusterParams(linkage=linkage, n_clusters=6))
    assert same_partition(result.groups, truth)


def test_agglomerative_with_standardise_pca_and_a_distance_threshold():
    x, truth = blobs(20, 5, d=64)
    result = run_algorithm("agglomerative", x, ClusterParams(linkage="average", distance_threshold=0.5, pca=8,
                                                             standardize=True))
    assert same_partition(result.groups, truth)
    assert result.info["features_dim"] == 8
    ward = run_algorithm("agglomerative", x, ClusterParams(distance_threshold=2.0, pca=16))
    assert same_partition(ward.groups, truth)


def test_agglomerative_needs_exactly_one_stopping_rule():
    x, _ = blobs(5, 2)
    with pytest.raises(ClusteringError, match="--distance_threshold D .* or --n_clusters K"):
        run_algorithm("agglomerative", x, ClusterParams())
    with pytest.raises(ClusteringError, match="exactly one"):
        run_algorithm("agglomerative", x, ClusterParams(n_clusters=2, distance_threshold=0.5))
    with pytest.raises(ClusteringError, match="--linkage single"):
        run_algorithm("agglomerative", x, ClusterParams(n_clusters=2, linkage="single"))


def test_agglomerative_refuses_inputs_that_would_not_fit_in_memory():
    assert memory_needed_bytes(55_000) > 20 * 2**30
    check_fits(10_000, 24 * 2**30)
    with pytest.raises(ClusteringError, match=r"74.5 GiB.*up to about 47485 individuals.*-c cosine .*O\(N\) memory"):
        check_fits(100_000, 24 * 2**30)


def test_kmeans_recovers_blobs_and_streams_from_a_memmap(tmp_path):
    x, truth = blobs(30, 4)
    params = ClusterParams(n_clusters=4, seed=1)
    in_memory = run_algorithm("kmeans", x, params)
    assert same_partition(in_memory.groups, truth)
    path = tmp_path / "vectors.f32"
    stored = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    stored[:] = x
    stored.flush()
    mapped = run_algorithm("kmeans", np.memmap(path, dtype=np.float32, mode="r", shape=x.shape), params)
    assert np.array_equal(mapped.groups, in_memory.groups)
    assert in_memory.info["k"] == 4 and in_memory.info["trained_on"] == 120


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_is_robust_to_the_seed(seed):
    x, truth = blobs(30, 6, seed=seed)
    assert same_partition(run_algorithm("kmeans", x, ClusterParams(n_clusters=6, seed=seed)).groups, truth)


def test_kmeans_trains_on_a_sample_when_n_is_large():
    x, truth = blobs(400, 2, d=8)
    result = run_algorithm("kmeans", x, ClusterParams(n_clusters=2))
    assert result.info["trained_on"] == 2 * 256
    assert same_partition(result.groups, truth)


def test_kmeans_validates_k():
    x, _ = blobs(3, 2)
    with pytest.raises(ClusteringError, match="--n_clusters K .*-x K"):
        run_algorithm("kmeans", x, ClusterParams())
    with pytest.raises(ClusteringError, match="1 <= k <= the 6"):
        run_algorithm("kmeans", x, ClusterParams(n_clusters=7))


def test_hdbscan_finds_blobs_and_marks_noise():
    x, truth = blobs(25, 3, d=80)
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(4, 80))
    x = np.concatenate([x, (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)])
    result = run_algorithm("hdbscan", x, ClusterParams(min_cluster_size=5))
    blob_labels = result.groups[:75]
    assert (blob_labels >= 0).all() and same_partition(blob_labels, truth)
    # isolated points are noise; HDBSCAN may attach one that falls out of the tree after a split
    assert (result.groups[75:] == -1).sum() >= 3
    assert result.info["features_dim"] == 50


def test_hdbscan_validation_and_tiny_inputs():
    x, _ = blobs(2, 1)
    with pytest.raises(ClusteringError, match="at least 2"):
        run_algorithm("hdbscan", x, ClusterParams(min_cluster_size=1))
    assert run_algorithm("hdbscan", x, ClusterParams(min_cluster_size=5)).groups.tolist() == [-1, -1]
