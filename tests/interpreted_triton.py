"""Checks of the fused Triton graph kernel under Triton's CPU interpreter. Not collected by itself (the interpreter
must be switched on before triton is first imported, so these run in their own process): tests/test_triton_graph.py
runs `pytest tests/interpreted_triton.py` with TRITON_INTERPRET=1."""
from __future__ import annotations

import os

import numpy as np
import pytest

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_triton_graph.py (needs TRITON_INTERPRET=1)"

from crop_cluster.clustering import triton_graph  # noqa: E402
from crop_cluster.clustering.graph import graph_kernel, threshold_edges, torch_forest_edges  # noqa: E402
from triton_shared import blobs, brute, partition  # noqa: E402


@pytest.mark.parametrize("compaction", ["scan", "atomic"])
@pytest.mark.parametrize("n, d, threshold, band", [(150, 48, 0.8, 64), (97, 20, 0.6, 32)])
def test_interpreted_kernel_edges_equal_brute_force(n, d, threshold, band, compaction, monkeypatch):
    """Odd n and d (padding rows and columns), several bands, blocks on and off the diagonal."""
    monkeypatch.setattr(triton_graph, "COMPACTION", compaction)
    x = blobs(n, d)
    stats = {}
    blocks = list(threshold_edges(x, threshold, "cpu", kernel="triton", tile_rows=band, stats=stats))
    got = [(int(r), int(c)) for rows, cols, _ in blocks for r, c in zip(rows, cols)]
    assert stats["kernel"] == "triton" and stats["tile_counts"]["bands"] == -(-n // band)
    assert len(got) == len(set(got)) and set(got) == brute(x, threshold) and len(got) > n
    sims = np.concatenate([s for _, _, s in blocks])
    rows = np.concatenate([r for r, _, _ in blocks])
    cols = np.concatenate([c for _, c, _ in blocks])
    assert np.allclose(sims, np.sum(x[rows] * x[cols], axis=1), atol=1e-6)


def test_interpreted_forest_same_partition_as_torch_path():
    x = blobs(160, 32, seed=3)
    stats = {}
    rows, cols, _ = torch_forest_edges(x, 0.75, "cpu", kernel="triton", stats=stats)
    reference = torch_forest_edges(x, 0.75, "cpu", precision="float32", kernel="torch")
    assert stats["kernel"] == "triton" and stats["edges"] == len(brute(x, 0.75))
    assert partition(160, rows, cols) == partition(160, reference[0], reference[1])


def test_dense_band_falls_back_to_torch_tiles(monkeypatch):
    """More candidates than the buffer holds: the band is computed by the torch tiles, the edges are the same."""
    monkeypatch.setattr(triton_graph, "CAPACITY", 50)
    x = blobs(90, 16, seed=1, noise=0.2)
    stats = {}
    blocks = list(threshold_edges(x, 0.5, "cpu", kernel="triton", tile_rows=32, stats=stats))
    got = {(int(r), int(c)) for rows, cols, _ in blocks for r, c in zip(rows, cols)}
    assert stats["tile_counts"]["bands_dense"] >= 1 and stats["tile_counts"]["tiles"] >= 1
    assert got == brute(x, 0.5)


def test_interpreter_is_never_chosen_by_itself():
    assert graph_kernel("cpu") == "torch"
    assert graph_kernel("cpu", kernel="triton") == "triton"
    with pytest.raises(ValueError, match="float16 tiles"):
        graph_kernel("cpu", precision="float32", kernel="triton")


def test_first_use_check_passes_for_the_kernel_as_it_is(fresh_checks):
    from crop_cluster.clustering.kernel_check import fused_kernel_checked, fused_kernel_disagreement

    assert fused_kernel_disagreement("cpu") is None
    assert fused_kernel_checked("cpu") and fresh_checks.taken() == []


def test_first_use_check_catches_a_kernel_that_drops_pairs(fresh_checks, monkeypatch):
    """A kernel that loses every other candidate (e.g. a compaction race on some GPU): the torch tiles are used."""
    from crop_cluster.clustering.kernel_check import fused_kernel_checked

    original = triton_graph.band_candidates

    def lossy(*args, **kwargs):
        rows, cols, count = original(*args, **kwargs)
        return (rows[::2], cols[::2], count) if rows is not None else (rows, cols, count)

    monkeypatch.setattr(triton_graph, "band_candidates", lossy)
    assert not fused_kernel_checked("cpu")
    (entry,) = fresh_checks.taken()
    assert entry["path"] == "fused Triton graph kernel on cpu" and entry["used"].startswith("torch tiles")
    assert "disagrees with the torch tiles on a 300x72 check block" in entry["reason"] and "missing" in entry["reason"]
    assert not fused_kernel_checked("cpu") and len(fresh_checks.taken()) == 1     # checked once, reported per run


def test_first_use_check_catches_a_kernel_that_does_not_compile(fresh_checks, monkeypatch):
    from crop_cluster.clustering.kernel_check import fused_kernel_checked

    def broken():
        raise RuntimeError("PTX assembly aborted: unsupported .target sm_90a")

    monkeypatch.setattr(triton_graph, "_kernel", broken)
    assert not fused_kernel_checked("cpu")
    (entry,) = fresh_checks.taken()
    assert entry["reason"] == "failed to compile or run (RuntimeError: PTX assembly aborted: unsupported .target sm_90a)"
