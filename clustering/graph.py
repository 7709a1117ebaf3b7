"""Exact ε-graph over L2-normalised embeddings: every pair i < j whose cosine similarity is >= a threshold.

One tiled builder serves the CPU and the GPU (torch, device chosen by `-d`). Tiles of the upper triangle are
multiplied in float32 on the CPU (the BLAS on every core) and in fp16 on tensor cores on CUDA; with fp16 (or bf16,
on request) every pair within `margin` of the threshold or above it is re-scored in float32, so the edges and their
similarities are those of float32 arithmetic whatever the tile precision (up to float32 rounding, ~1e-7, of pairs
lying exactly at the threshold, which depends on the summation order in any implementation). The margin is a
proven bound on the low-precision error for unit vectors: inputs rounded with unit roundoff u give a dot product
error <= (2u + u^2) * sum|x_i y_i| <= 2u + u^2, and rounding the output adds <= u (bf16: u = 2^-8 -> 0.0118 <= 0.02;
fp16: u = 2^-11 -> 0.0015 <= 0.01). Memory is bounded by one tile whatever N: never an N x N matrix.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

Edges = Tuple[np.ndarray, np.ndarray, np.ndarray]  # rows int64, cols int64 (rows < cols), sims float32

MARGIN = {"float32": 0.0, "bfloat16": 0.02, "float16": 0.01}
CPU_TILE = (4096, 8192)            # 32 Mi products per tile: 64-128 MiB of scores and masks
GPU_TILE_ROWS = 16384
# Above this share of a tile's products, re-scoring candidates one by one (a gather of 2 x d floats each) costs more
# than one float32 product of the whole tile (measured: ~2 us per candidate on a 2-core CPU; HBM gathers are cheap).
RESCORE_GATHER_SHARE = {"cpu": 0.003, "cuda": 0.015}
SWITCH_AFTER_TILES = 4             # then drop the fast pass when most tiles needed a float32 product anyway


@dataclass(frozen=True)
class GraphPlan:
    """How the graph is computed: torch device, tile precision, re-score margin and tile shape (rows x cols)."""

    device: str
    precision: str
    margin: float
    tile_rows: int
    tile_cols: int


def plan_graph(n: int, d: int, device: str = "cpu", precision: str = "auto") -> GraphPlan:
    """Choose tile precision and shape for n vectors of dimension d on `device` ('cpu' or 'cuda:N').

    precision: 'auto' (fp16 on CUDA, float32 on the CPU) or one of MARGIN's keys. On a CPU, bf16 tiles (AVX512-BF16)
    multiply 2-3x faster, but re-scoring their candidates costs more than it saves unless the graph is very sparse,
    so float32 is the CPU default (bench/clustering.py measures both).
    CUDA tiles are sized to a quarter of the free GPU memory (fp16 scores + masks, ~8 bytes per product).
    """
    if precision == "auto":
        precision = "float16" if device.startswith("cuda") else "float32"
    if precision not in MARGIN:
        raise ValueError(f"unknown graph precision '{precision}'; use auto, {', '.join(MARGIN)}")
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        rows = min(GPU_TILE_ROWS, max(n, 1))
        cols = int(max(1024, min(max(n, 1), (free // 4) // (8 * rows))))
        return GraphPlan(device, precision, MARGIN[precision], rows, cols)
    return GraphPlan(device, precision, MARGIN[precision], *CPU_TILE)


@contextlib.contextmanager
def _exact_float32_matmul():
    """Disable TF32 inside the block so that float32 re-scoring on CUDA is true float32."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def threshold_edges(embeddings: np.ndarray, threshold: float, device: str = "cpu", precision: str = "auto",
                    tile_rows: int = 0, tile_cols: int = 0, stats: Optional[Dict] = None) -> Iterator[Edges]:
    """Yield edge blocks (rows int64, cols int64, sims float32) with rows < cols and float32 cosine >= threshold.

    embeddings: float32 (n, d), rows L2-normalised (the margin argument needs unit rows). Every qualifying pair is
    yielded exactly once; sims are float32 dot products. tile_rows/tile_cols override the planned tile shape.
    With a low-precision plan, candidates are re-scored one by one while they are few; a tile with more than
    RESCORE_GATHER_SHARE of its products as candidates is re-scored by one float32 product instead, and once most
    tiles need that, the remaining tiles are computed in float32 directly (dense graphs gain nothing from the fast
    pass). `stats`, when given, receives the plan and how the tiles were scored (for run.json).
    """
    import torch

    x32 = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x32.shape
    plan = plan_graph(n, d, device, precision)
    rows_per_tile, cols_per_tile = tile_rows or plan.tile_rows, tile_cols or plan.tile_cols
    gather_share = RESCORE_GATHER_SHARE["cuda" if plan.device.startswith("cuda") else "cpu"]
    exact = torch.from_numpy(x32).to(plan.device)
    fast = exact if plan.precision == "float32" else exact.to(getattr(torch, plan.precision))
    counts = {"tiles": 0, "tiles_float32": 0, "tiles_rescored_by_product": 0}
    if stats is not None:
        stats.update(device=plan.device, precision=plan.precision, rescore_margin=plan.margin,
                     tile=[rows_per_tile, cols_per_tile], tile_counts=counts)
    low_precision = plan.precision != "float32"
    with torch.inference_mode(), _exact_float32_matmul():
        for r0 in range(0, n, rows_per_tile):
            r1 = min(r0 + rows_per_tile, n)
            for c0 in range(r0, n, cols_per_tile):
                c1 = min(c0 + cols_per_tile, n)
                counts["tiles"] += 1
                if low_precision and counts["tiles"] > SWITCH_AFTER_TILES \
                        and counts["tiles_rescored_by_product"] > 0.5 * (counts["tiles"] - 1):
                    low_precision = False
                source = fast if low_precision else exact
                scores = source[r0:r1] @ source[c0:c1].T
                floor = threshold - plan.margin if low_precision else threshold
                local_rows, local_cols = torch.nonzero(scores >= floor, as_tuple=True)
                if c0 < r1:  # the tile touches the diagonal: keep the strict upper triangle only
                    upper = local_rows + r0 < local_cols + c0
                    local_rows, local_cols = local_rows[upper], local_cols[upper]
                if not low_precision:
                    counts["tiles_float32"] += 1
                    sims = scores[local_rows, local_cols]
                elif local_rows.numel() > gather_share * scores.numel():
                    counts["tiles_rescored_by_product"] += 1
                    sims = (exact[r0:r1] @ exact[c0:c1].T)[local_rows, local_cols]
                else:
                    sims = (exact[r0 + local_rows] * exact[c0 + local_cols]).sum(dim=1)
                keep = sims >= threshold
                local_rows, local_cols, sims = local_rows[keep], local_cols[keep], sims[keep]
                if local_rows.numel():
                    yield (local_rows.cpu().numpy().astype(np.int64) + r0,
                           local_cols.cpu().numpy().astype(np.int64) + c0,
                           sims.float().cpu().numpy())
