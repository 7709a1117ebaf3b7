"""Exact ε-graph over L2-normalised embeddings: every pair i < j with cosine similarity >= threshold.

Computed with blocked float32 matrix products over the upper triangle (the BLAS uses every core), thresholded per
block, so memory stays bounded whatever N (never an N x N matrix).
"""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np

BLOCK_ROWS = 2048
BLOCK_COLS = 8192  # a block of products is BLOCK_ROWS x BLOCK_COLS float32 = 64 MiB

Edges = Tuple[np.ndarray, np.ndarray, np.ndarray]


def threshold_edges(embeddings: np.ndarray, threshold: float, block_rows: int = BLOCK_ROWS,
                    block_cols: int = BLOCK_COLS) -> Iterator[Edges]:
    """Yield edge blocks (rows int64, cols int64, similarity float32), each with rows < cols and sim >= threshold.

    embeddings: float32 (n, d), rows L2-normalised. Every qualifying pair is yielded exactly once.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    for r0 in range(0, n, block_rows):
        r1 = min(r0 + block_rows, n)
        for c0 in range(r0, n, block_cols):
            c1 = min(c0 + block_cols, n)
            sims = x[r0:r1] @ x[c0:c1].T
            hit = sims >= threshold
            if c0 < r1:  # block touches the diagonal: keep the strict upper triangle only
                hit &= np.arange(r0, r1)[:, None] < np.arange(c0, c1)[None, :]
            rows, cols = np.nonzero(hit)
            if rows.size:
                yield rows.astype(np.int64) + r0, cols.astype(np.int64) + c0, sims[rows, cols]
