"""Test data for the graph-kernel tests (tests/test_triton_graph.py, tests/interpreted_triton.py)."""
from __future__ import annotations

import numpy as np


def blobs(n: int, d: int, seed: int = 0, noise: float = 0.35) -> np.ndarray:
    """float32 (n, d) unit rows around n // 10 random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, n // 10), d))
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(x: np.ndarray, threshold: float) -> set:
    """{(i, j)}, i < j, with float32 cosine >= threshold."""
    upper = np.triu_indices(len(x), 1)
    keep = (x @ x.T)[upper] >= threshold
    return set(zip(upper[0][keep].tolist(), upper[1][keep].tolist()))


def partition(n: int, rows, cols) -> list:
    """Connected components of the edges, as sorted lists of members."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
    return sorted(sorted(np.flatnonzero(labels == label).tolist()) for label in np.unique(labels))
