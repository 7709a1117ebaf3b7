"""Compiled (numba) scans of one tile of similarity scores: the pairs at or above a threshold, in one fused pass.

torch's compare + nonzero + gather over a 4096 x 8192 tile costs a third of the matrix product itself on a CPU; these
kernels read each score once, keep the strict upper triangle of diagonal tiles, and (for bf16 tiles) re-score each
candidate with a float32 dot product on the spot. Rows are processed in parallel on every core. Compiled once and
cached next to this file (`cache=True`), so only the very first run pays the compilation (a few seconds). The cache
records the module's import name (crop_cluster.clustering.scan) and this file's time stamp, so a changed file is
compiled again.

Tile coordinates: scores[i, j] is the similarity of global rows r0 + i and c0 + j; pairs are kept when
r0 + i < c0 + j. Outputs are global indices (int64) and float32 similarities.
"""
from __future__ import annotations

from typing import Tuple

import numba as nb
import numpy as np

Pairs = Tuple[np.ndarray, np.ndarray, np.ndarray]  # global rows int64, global cols int64, sims float32


def bf16_floor_key(value: float) -> int:
    """Order key (see `_bf16_key`) of the largest bfloat16 number <= `value`: a conservative candidate floor."""
    bits = int(np.array([value], dtype=np.float32).view(np.uint32)[0]) >> 16     # truncate the mantissa
    key = _bf16_key(bits)
    truncated = np.array([bits << 16], dtype=np.uint32).view(np.float32)[0]
    return key - 1 if truncated > value else key


@nb.njit(cache=True, inline="always")
def _bf16_key(bits: int) -> int:
    """Map bfloat16 bits (0..65535) to an integer that orders like the numbers: negatives below positives."""
    return bits ^ 0x8000 if bits < 0x8000 else (~bits) & 0xFFFF


@nb.njit(cache=True, inline="always")
def _dot(a, b) -> float:
    total = np.float32(0.0)
    for k in range(a.shape[0]):
        total += a[k] * b[k]
    return total


@nb.njit(cache=True)
def _allocate(counts):
    """Row offsets (R + 1,) from the per-row pair counts (R,), and empty outputs for all the pairs."""
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    return (offsets, np.empty(offsets[-1], dtype=np.int64), np.empty(offsets[-1], dtype=np.int64),
            np.empty(offsets[-1], dtype=np.float32))


@nb.njit(cache=True, inline="always")
def _is_candidate(bits: int, floor_key: int, floor_bits: int) -> bool:
    """bf16 score (int16 bits) >= the floor; a plain signed compare when the floor is positive (bf16 bits of
    positive numbers order like int16 and negatives are negative int16), the order key otherwise."""
    if floor_bits >= 0:
        return bits >= floor_bits
    return _bf16_key(np.int32(bits) & 0xFFFF) >= floor_key


@nb.njit(parallel=True, cache=True, fastmath=True)
def scan_bf16_tile(bits, rows32, cols32, floor_key: int, threshold: float, r0: int, c0: int):
    """Pairs with float32 similarity >= threshold among the candidates of a bf16 tile, and the candidate count.

    bits: int16 (R, C), the bf16 scores' bit patterns; rows32: float32 (R, d) and cols32: float32 (C, d), the
    tile's unit vectors, used to re-score every candidate (bf16 key >= floor_key) exactly. The first pass only
    counts (a vectorised compare when the floor is positive), the second fills the outputs.
    """
    n_rows, n_cols = bits.shape
    floor_bits = floor_key - 0x8000 if floor_key >= 0x8000 else -1   # int16 bits of the floor when positive
    counts = np.zeros(n_rows, dtype=np.int64)
    for i in nb.prange(n_rows):
        row = bits[i]
        found = 0
        if floor_bits >= 0:
            for j in range(max(0, i + r0 - c0 + 1), n_cols):
                found += row[j] >= floor_bits
        else:
            for j in range(max(0, i + r0 - c0 + 1), n_cols):
                found += _bf16_key(np.int32(row[j]) & 0xFFFF) >= floor_key
        counts[i] = found
    offsets, out_rows, out_cols, out_sims = _allocate(counts)
    keep = np.zeros(offsets[-1], dtype=np.bool_)
    for i in nb.prange(n_rows):
        row = bits[i]
        k = offsets[i]
        j = max(0, i + r0 - c0 + 1)
        while k < offsets[i + 1]:                     # stop at the row's last candidate
            if _is_candidate(row[j], floor_key, floor_bits):
                similarity = _dot(rows32[i], cols32[j])
                out_rows[k], out_cols[k], out_sims[k] = r0 + i, c0 + j, similarity
                keep[k] = similarity >= threshold
                k += 1
            j += 1
    return out_rows[keep], out_cols[keep], out_sims[keep], offsets[-1]


@nb.njit(parallel=True, cache=True)
def scan_float32_tile(scores, threshold: float, r0: int, c0: int) -> Pairs:
    """Pairs with score >= threshold in a float32 tile (R, C) of exact similarities (count, then fill)."""
    n_rows, n_cols = scores.shape
    counts = np.zeros(n_rows, dtype=np.int64)
    for i in nb.prange(n_rows):
        row = scores[i]
        found = 0
        for j in range(max(0, i + r0 - c0 + 1), n_cols):
            found += row[j] >= threshold
        counts[i] = found
    offsets, out_rows, out_cols, out_sims = _allocate(counts)
    for i in nb.prange(n_rows):
        row = scores[i]
        k = offsets[i]
        j = max(0, i + r0 - c0 + 1)
        while k < offsets[i + 1]:
            if row[j] >= threshold:
                out_rows[k], out_cols[k], out_sims[k] = r0 + i, c0 + j, row[j]
                k += 1
            j += 1
    return out_rows, out_cols, out_sims
