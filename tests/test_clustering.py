"""The cosine engine: exact ε-graph (every tile precision), spanning forest, chaining guard, numbering, centroids."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from crop_cluster.clustering import ClusteringError, ClusterParams, run_algorithm
from crop_cluster.clustering.components import number_clusters
from crop_cluster.clustering.forest import contract, forest_from_edges, partition_at, spanning_forest
from crop_cluster.clustering.graph import (BF16_MIN_ROWS, MARGIN, GraphPlan, _cpu_tiles, _torch_spanning_forest, _torch_tiles,
                              cpu_has_fast_bf16, plan_graph, threshold_edges, torch_forest_edges)
from crop_cluster.clustering.guard import split_oversized
from crop_cluster.clustering.postprocess import centroid_similarity, drop_far_members, drop_small_groups
from crop_cluster.clustering.scan import bf16_floor_key
from crop_cluster.outputs.manifest import size_histogram


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


def cosine(x: np.ndarray, threshold: float, **params) -> np.ndarray:
    return run_algorithm("cosine", x, ClusterParams(threshold=threshold, **params)).groups


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b group the items identically (ids may differ)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("n,d,groups,noise,threshold", [
    (400, 16, 40, 0.25, 0.9), (1500, 32, 100, 0.35, 0.8), (800, 8, 5, 0.6, 0.95), (300, 24, 300, 0.1, 0.5)])
def test_partition_equals_brute_force_components(n, d, groups, noise, threshold):
    x = grouped_vectors(n, d, groups, noise, seed=n)
    assert same_partition(cosine(x, threshold), brute_force_components(x, threshold))


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
    groups = cosine(x, 0.99)
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
    loose, strict = cosine(x, 0.7), cosine(x, 0.85)
    for group in np.unique(strict):
        assert len(np.unique(loose[strict == group])) == 1


def test_empty_and_single_inputs():
    assert cosine(np.zeros((0, 4), np.float32), 0.9).shape == (0,)
    assert cosine(unit_rows(np.ones((1, 4))), 0.9).tolist() == [0]


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


@pytest.mark.parametrize("chunk", [1, 7, 300, 16384])
def test_centroid_similarity_in_chunks_equals_the_direct_sum(chunk, monkeypatch):
    """Clusters smaller and larger than a chunk, in scattered order, and rows left out: the plain float64 formula."""
    import crop_cluster.clustering.postprocess as postprocess

    monkeypatch.setattr(postprocess, "CHUNK_ROWS", chunk)
    rng = np.random.default_rng(5)
    x = unit_rows(rng.normal(size=(3000, 16)))
    labels = np.where(rng.random(3000) < 0.1, -1, np.minimum(rng.zipf(1.5, 3000), 400) - 1)
    labels[labels >= 0] = np.unique(labels[labels >= 0], return_inverse=True)[1]
    expected = np.full(3000, np.nan)
    for label in np.unique(labels[labels >= 0]):
        members = labels == label
        centroid = x[members].astype(np.float64).sum(axis=0)
        expected[members] = x[members] @ (centroid / np.linalg.norm(centroid))
    np.testing.assert_allclose(centroid_similarity(x, labels), expected, atol=1e-6)


def test_unknown_algorithm_and_bad_threshold():
    x = unit_rows(np.ones((2, 3)))
    with pytest.raises(ClusteringError, match="available: cosine, agglomerative, kmeans, hdbscan"):
        run_algorithm("nope", x, ClusterParams())
    with pytest.raises(ClusteringError, match=r"\[-1, 1\]"):
        cosine(x, 1.5)


def edge_set(blocks) -> tuple:
    rows, cols, sims = (np.concatenate(parts) for parts in zip(*blocks))
    assert (rows < cols).all()
    return set(zip(rows.tolist(), cols.tolist())), rows, cols, sims


def assert_exact_graph(blocks, x: np.ndarray, threshold: float) -> None:
    """Edges = brute-force pairs >= threshold (up to pairs within 1e-6 of it), sims = float32 dot products."""
    full = x @ x.T
    got, rows, cols, sims = edge_set(blocks)
    expected = {tuple(pair) for pair in np.argwhere(np.triu(full >= threshold, k=1)).tolist()}
    near_threshold = {tuple(pair) for pair in np.argwhere(np.abs(full - threshold) < 1e-6).tolist()}
    assert got ^ expected <= near_threshold
    assert len(got) == rows.size                                   # every pair once
    np.testing.assert_allclose(sims, full[rows, cols], atol=2e-6)


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
@pytest.mark.parametrize("threshold", [-0.2, 0.5, 0.8, 0.93])
def test_cpu_tiles_give_the_exact_graph(precision, threshold):
    """bf16 tiles re-scored in float32 by the compiled scan, and float32 tiles: the brute-force edges and sims."""
    x = grouped_vectors(900, 24, 12, 0.45, seed=11)
    stats = {}
    blocks = list(threshold_edges(x, threshold, precision=precision, tile_rows=100, tile_cols=160, stats=stats))
    assert_exact_graph(blocks, x, threshold)
    assert stats["precision"] == precision and stats["device"] == "cpu"
    assert stats["tile_counts"]["tiles"] == sum(len(range(r0, 900, 160)) for r0 in range(0, 900, 100))


@pytest.mark.parametrize("precision", ["float16", "bfloat16", "float32"])
def test_torch_tiles_the_gpu_path_give_the_exact_graph(precision):
    """The CUDA code path (torch ops, fp16/bf16 candidates re-scored one by one or by a float32 product), on the CPU."""
    x = grouped_vectors(900, 24, 12, 0.45, seed=11)
    for threshold in (0.5, 0.93):
        counts = {"tiles": 0, "tiles_float32": 0, "tiles_dense": 0}
        plan = GraphPlan("cpu", precision, MARGIN[precision], 100, 160)
        assert_exact_graph(list(_torch_tiles(x, threshold, plan, counts)), x, threshold)


@pytest.mark.parametrize("quantum", [0.0, 0.01])
def test_boruvka_forest_equals_kruskal(quantum):
    """The device fold (Boruvka on torch tensors, here on the CPU): same total weight and same partition at every
    threshold as scipy's minimum spanning tree, also with many tied similarities (quantum 0.01)."""
    import torch

    rng = np.random.default_rng(3)
    n, m = 400, 3000
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    rows, cols = np.minimum(a, b)[a != b], np.maximum(a, b)[a != b]
    pairs = np.unique(rows * n + cols)
    rows, cols = pairs // n, pairs % n
    sims = rng.uniform(0.5, 1.0, rows.size).astype(np.float32)
    if quantum:
        sims = (np.round(sims / quantum) * quantum).astype(np.float32)
    got = [t.numpy() for t in _torch_spanning_forest(n, torch.from_numpy(rows), torch.from_numpy(cols),
                                                     torch.from_numpy(sims))]
    reference = forest_from_edges(n, [(rows, cols, sims)], 0.5)
    assert got[0].size == reference.rows.size
    np.testing.assert_allclose(np.sort(got[2]), np.sort(reference.sims), rtol=0, atol=0)
    for t in (0.5, 0.7, 0.9, 0.97):
        keep = got[2] >= t
        from crop_cluster.clustering.forest import component_ids

        assert same_partition(component_ids(n, got[0][keep], got[1][keep]), partition_at(reference, t))


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_forest_folded_on_the_device_equals_the_cpu_forest(precision, monkeypatch):
    """torch_forest_edges (the CUDA path: tiles and fold on the device), run on the CPU with small tiles and folds:
    the forest of the CPU path, edge weights and partitions alike."""
    import crop_cluster.clustering.graph as graph

    monkeypatch.setattr(graph, "CPU_TILE", (100, 160))
    x = grouped_vectors(900, 24, 12, 0.45, seed=11)
    for threshold in (-0.1, 0.5, 0.93):
        stats = {}
        rows, cols, sims = torch_forest_edges(x, threshold, "cpu", precision, max_pending=500, stats=stats)
        cpu = spanning_forest(x, threshold, "cpu", "float32")
        assert (rows < cols).all() and rows.size == cpu.rows.size
        np.testing.assert_allclose(np.sort(sims), np.sort(cpu.sims), atol=1e-6)
        np.testing.assert_allclose(sims, np.einsum("ij,ij->i", x[rows], x[cols]), atol=2e-6)
        from crop_cluster.clustering.forest import component_ids

        assert same_partition(component_ids(900, rows, cols), partition_at(cpu, threshold))
        full = x @ x.T
        assert stats["edges"] == int(np.triu(full >= threshold, 1).sum())


@pytest.mark.parametrize("path", ["cpu", "torch"])
def test_dense_graphs_drop_the_fast_pass(path):
    x = unit_rows(np.ones((600, 8)) + np.random.default_rng(0).normal(scale=0.01, size=(600, 8)))
    counts = {"tiles": 0, "tiles_float32": 0, "tiles_dense": 0}
    plan = GraphPlan("cpu", "bfloat16", MARGIN["bfloat16"], 100, 100)
    tiles = _cpu_tiles if path == "cpu" else _torch_tiles
    assert sum(block[0].size for block in tiles(x, 0.9, plan, counts)) == 600 * 599 // 2
    assert counts["tiles_dense"] >= 4 and counts["tiles_float32"] > 0


def test_bf16_candidate_floor_is_conservative():
    import torch

    for value in (-0.75, -0.0101, 0.0, 0.3, 0.88, 0.8999, 0.98):
        key = bf16_floor_key(value)
        grid = torch.arange(-1.0, 1.0, 1e-4, dtype=torch.float32).to(torch.bfloat16)
        bits = grid.view(torch.int16).numpy().astype(np.int64) & 0xFFFF
        keys = np.where(bits < 0x8000, bits ^ 0x8000, (~bits) & 0xFFFF)
        values = grid.float().numpy()
        assert (keys[values >= value] >= key).all()                  # nothing at or above the value is missed
        assert (values[keys >= key] >= value - 0.01).all()           # and the floor is tight


def test_cpu_plans_and_rejects_unknown_precision():
    assert plan_graph(10, 4, "cpu").precision == "float32"
    assert plan_graph(BF16_MIN_ROWS, 4, "cpu").precision == ("bfloat16" if cpu_has_fast_bf16() else "float32")
    with pytest.raises(ValueError, match="unknown graph precision 'int8'"):
        plan_graph(10, 4, "cpu", "int8")
    with pytest.raises(ValueError, match="'float16' on cpu; use auto, float32, bfloat16"):
        plan_graph(10, 4, "cpu", "float16")


def test_partition_is_invariant_to_input_order():
    x = grouped_vectors(800, 16, 40, 0.45, seed=13)
    order = np.random.default_rng(2).permutation(800)
    shuffled = cosine(x[order], 0.8)
    restored = np.empty_like(shuffled)
    restored[order] = shuffled
    assert same_partition(restored, cosine(x, 0.8))


def test_one_forest_answers_every_higher_threshold_exactly():
    x = grouped_vectors(700, 16, 25, 0.5, seed=17)
    forest = spanning_forest(x, 0.6)
    assert forest.sims.size <= 699 and np.all(np.diff(forest.sims) <= 0)
    for threshold in (0.6, 0.7, 0.75, 0.85, 0.95):
        assert same_partition(partition_at(forest, threshold), brute_force_components(x, threshold))
    with pytest.raises(ValueError, match="cannot answer the lower threshold"):
        partition_at(forest, 0.5)


def chain(n: int, step: float) -> np.ndarray:
    """n unit vectors on an arc, neighbours `step` radians apart; the link strengths vary along the chain."""
    angles = np.cumsum(np.r_[0, step * (1 + 0.3 * np.sin(np.arange(n - 1)))])
    return unit_rows(np.stack([np.cos(angles), np.sin(angles), np.zeros(n)], axis=1))


def split_chain_top_down(links: np.ndarray, start: int, stop: int, cap: int) -> list:
    """Reference: nodes start..stop-1 of a chain (links[k] joins k and k+1); cut the weakest link while > cap."""
    if stop - start <= cap:
        return [(start, stop)]
    weakest = start + int(np.argmin(links[start:stop - 1]))
    return split_chain_top_down(links, start, weakest + 1, cap) + split_chain_top_down(links, weakest + 1, stop, cap)


def test_chaining_guard_splits_only_oversized_clusters_at_their_weakest_links():
    x = np.concatenate([chain(40, 0.05), unit_rows(np.array([[0, 0, 1.0], [0, 0.05, 1.0], [0.05, 0, 1.0]]))])
    threshold = float(np.cos(0.08))
    plain = cosine(x, threshold)
    assert np.unique(plain[:40]).size == 1                       # one 40-member chain
    capped = cosine(x, threshold, max_cluster_size=10)
    assert np.bincount(capped).max() <= 10
    assert np.unique(capped[40:]).size == 1                      # the small cluster is untouched
    links = np.einsum("ij,ij->i", x[:39], x[1:40])
    expected = np.zeros(40, dtype=np.int64)
    for part, (start, stop) in enumerate(split_chain_top_down(links, 0, 40, 10)):
        expected[start:stop] = part
    assert same_partition(capped[:40], expected)


def test_chaining_guard_equals_a_stricter_threshold_when_that_splits_evenly():
    x = grouped_vectors(300, 16, 6, 0.2, seed=3)
    loose = 0.0
    strict = cosine(x, 0.5)
    forest = spanning_forest(x, loose)
    groups, summary = split_oversized(forest, partition_at(forest, loose), loose, int(np.bincount(strict).max()))
    assert same_partition(groups, strict)
    assert summary["components_split"] == 1 and summary["parts"] == np.unique(strict).size


def test_post_filters():
    groups = np.array([0, 0, 0, 1, 1, -1, 2])
    assert drop_small_groups(groups, 3).tolist() == [0, 0, 0, -1, -1, -1, -1]
    x = unit_rows(np.array([[1, 0], [1, 0.05], [1, -0.05], [0.2, 1], [0, 1], [1, 1], [5, 5]], dtype=np.float64))
    far = drop_far_members(x, np.array([0, 0, 0, 0, 1, -1, 1]), 0.9)
    assert far.tolist() == [0, 0, 0, -1, 1, -1, 1]


def test_size_histogram_bands():
    sizes = np.array([2, 2, 3, 4, 5, 9, 10, 19, 20, 49, 50, 99, 100, 1000, 4000])
    assert size_histogram(sizes) == {"2": 2, "3-4": 2, "5-9": 2, "10-19": 2, "20-49": 2, "50-99": 2, "100-199": 1,
                                     "1000-1999": 1, "2000-4999": 1}
    assert size_histogram(np.zeros(0, dtype=np.int64)) == {}


@pytest.mark.gpu
def test_gpu_tiles_are_aligned_and_padding_never_pairs():
    """On CUDA the rows are padded to a multiple of 256 and every tile is a multiple of 256 wide; a threshold <= 0
    links every real pair and never a padding row."""
    x = grouped_vectors(1000, 16, 10, 0.5, seed=2)
    plan = plan_graph(1000, 16, "cuda:0")
    assert plan.tile_cols % 256 == 0
    rows, cols, sims = torch_forest_edges(x, -1.0, "cuda:0")
    assert rows.size == 999 and cols.max() < 1000
    blocks = list(threshold_edges(x, -1.0, "cuda:0"))
    assert sum(block[0].size for block in blocks) == 1000 * 999 // 2


@pytest.mark.gpu
def test_cpu_and_gpu_builders_agree():
    x = grouped_vectors(5000, 64, 200, 0.4, seed=23)
    for threshold in (0.6, 0.85):
        cpu = spanning_forest(x, threshold, "cpu")
        gpu = spanning_forest(x, threshold, "cuda:0")
        assert same_partition(partition_at(cpu, threshold), partition_at(gpu, threshold))
        np.testing.assert_allclose(np.sort(cpu.sims), np.sort(gpu.sims), atol=1e-5)


def test_contracted_forest_equals_the_node_graph_plus_item_links():
    x = grouped_vectors(500, 12, 30, 0.5, seed=29)
    item = np.random.default_rng(4).integers(0, 180, 500)
    item = np.unique(item, return_inverse=True)[1]                     # every item 0..n-1 present
    n_items = int(item.max()) + 1
    forest = contract(spanning_forest(x, 0.6), item, n_items)
    assert forest.n == n_items and forest.sims.size <= n_items - 1
    for threshold in (0.6, 0.75, 0.9):
        adjacency = np.triu((x @ x.T) >= threshold, k=1)
        rows, cols = np.nonzero(adjacency)
        item_graph = np.zeros((n_items, n_items), dtype=bool)
        item_graph[item[rows], item[cols]] = True
        expected = connected_components(item_graph, directed=False)[1]
        assert same_partition(partition_at(forest, threshold), expected)


def test_cosine_links_items_through_any_of_their_rows():
    angles = np.radians([0.0, 10.0, -20.0, 60.0])                      # a1, a2 (one item), b, c
    x = unit_rows(np.stack([np.cos(angles), np.sin(angles)], axis=1))
    threshold = float(np.cos(np.radians(25)))                          # a1-b linked (20 deg), a2-b not (30 deg)
    by_item = run_algorithm("cosine", x, ClusterParams(threshold=threshold), item_of_row=np.array([0, 0, 1, 2]))
    assert by_item.groups.shape == (3,) and by_item.groups[0] == by_item.groups[1] != by_item.groups[2]
    representatives_only = cosine(x[[1, 2, 3]], threshold)              # a2 stands for item 0: no bridge
    assert np.unique(representatives_only).size == 3
    with pytest.raises(ValueError, match="takes no item_of_row"):
        run_algorithm("kmeans", x, ClusterParams(n_clusters=2), item_of_row=np.array([0, 0, 1, 2]))


def test_one_individual_seen_in_several_crops_is_a_cluster():
    groups = np.array([0, 1, 1, 2, 3])
    names = ["a", "b", "c", "d", "e"]
    crops = np.array([5, 1, 1, 1, 2])        # item 0: one insect in 5 crops; item 4 in 2; item 3 in one crop alone
    assert number_clusters(groups, names, crops).tolist() == [1, 0, 0, -1, 2]
