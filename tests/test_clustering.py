"""Exact threshold clustering equals connected components of the brute-force graph; numbering and centroids."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from clustering import ClusteringError, run_algorithm
from clustering.components import number_clusters
from clustering.forest import forest_from_edges, partition_at
from clustering.graph import threshold_edges
from clustering.postprocess import centroid_similarity


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def grouped_vectors(n: int, d: int, groups: int, noise: float, seed: int) -> np.ndarray:
    """n unit vectors around `groups` random centres, members of a group scattered through the input order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, d))
    return unit_rows(centres[rng.integers(0, groups, n)] + rng.normal(scale=noise, size=(n, d)))


def brute_force_components(x: np.ndarray, threshold: float) -> np.ndarray:
    adjacency = (x @ x.T) >= threshold
    np.fill_diagonal(adjacency, False)
    return connected_components(adjacency, directed=False)[1]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b group the items identically (ids may differ)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("n,d,groups,noise,threshold", [
    (400, 16, 40, 0.25, 0.9), (1500, 32, 100, 0.35, 0.8), (800, 8, 5, 0.6, 0.95), (300, 24, 300, 0.1, 0.5)])
def test_partition_equals_brute_force_components(n, d, groups, noise, threshold):
    x = grouped_vectors(n, d, groups, noise, seed=n)
    assert same_partition(run_algorithm("cosine", x, threshold), brute_force_components(x, threshold))


def test_small_blocks_and_edge_compaction_give_the_same_partition():
    x = grouped_vectors(700, 12, 30, 0.4, seed=1)
    expected = brute_force_components(x, 0.85)
    forest = forest_from_edges(700, threshold_edges(x, 0.85, tile_rows=37, tile_cols=53), 0.85, max_pending=20)
    assert same_partition(partition_at(forest, 0.85), expected)


def test_groups_far_apart_in_input_order_are_one_cluster():
    """The BiodivX chunking bug: one individual at both ends of a 10 000-row input must not be split."""
    rng = np.random.default_rng(3)
    x = unit_rows(rng.normal(size=(12_000, 16)))
    x[-1] = x[0]
    x[6_000] = unit_rows(x[0:1] + 0.01)[0]
    groups = run_algorithm("cosine", x, 0.99)
    assert groups[0] == groups[-1] == groups[6_000]


def test_every_pair_is_yielded_once_with_its_similarity():
    x = grouped_vectors(200, 8, 10, 0.3, seed=5)
    rows, cols, sims = (np.concatenate(parts) for parts in zip(*threshold_edges(x, 0.7, tile_rows=16, tile_cols=40)))
    assert (rows < cols).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) == rows.size
    full = x @ x.T
    expected = np.argwhere(np.triu(full >= 0.7, k=1))
    assert rows.size == len(expected)
    np.testing.assert_allclose(sims, full[rows, cols], atol=1e-5)


def test_raising_the_threshold_only_splits_clusters():
    x = grouped_vectors(600, 16, 20, 0.5, seed=7)
    loose, strict = run_algorithm("cosine", x, 0.7), run_algorithm("cosine", x, 0.85)
    for group in np.unique(strict):
        assert len(np.unique(loose[strict == group])) == 1


def test_empty_and_single_inputs():
    assert run_algorithm("cosine", np.zeros((0, 4), np.float32), 0.9).shape == (0,)
    assert run_algorithm("cosine", unit_rows(np.ones((1, 4))), 0.9).tolist() == [0]


def test_number_clusters_orders_by_size_then_first_name_and_drops_singletons():
    groups = np.array([7, 7, 3, 3, 3, 9, 5, 5, -1])
    names = ["e", "a", "x", "y", "z", "s", "b", "c", "n"]
    # group 3 has 3 members -> 0; groups 7 (first name 'a') and 5 (first name 'b') tie at 2 -> 1 and 2; 9 and -1 -> -1
    assert number_clusters(groups, names).tolist() == [1, 1, 0, 0, 0, -1, 2, 2, -1]


def test_centroid_similarity():
    x = unit_rows(np.array([[1, 0], [1, 0.2], [0, 1], [1, 1]], dtype=np.float64))
    labels = np.array([0, 0, -1, 1])
    sims = centroid_similarity(x, labels)
    centroid = unit_rows((x[0] + x[1])[None])[0]
    np.testing.assert_allclose(sims[:2], x[:2] @ centroid, rtol=1e-6)
    assert np.isnan(sims[2]) and sims[3] == pytest.approx(1.0)


def test_unknown_algorithm_and_bad_threshold():
    x = unit_rows(np.ones((2, 3)))
    with pytest.raises(ClusteringError, match="available: cosine"):
        run_algorithm("nope", x, 0.9)
    with pytest.raises(ClusteringError, match=r"\[-1, 1\]"):
        run_algorithm("cosine", x, 1.5)
