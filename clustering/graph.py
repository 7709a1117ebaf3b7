"""Exact ε-graph over L2-normalised embeddings: every pair i < j whose cosine similarity is >= a threshold.

One tiled builder serves the CPU and the GPU (torch, device chosen by `-d`). Tiles of the upper triangle are
multiplied in the fastest precision the device has (fp16 tensor cores on CUDA, bf16 on CPUs with AVX512-BF16/AMX,
float32 elsewhere); every pair within `margin` of the threshold or above it is then re-scored in float32, so the
edges and their similarities are exactly those of float32 arithmetic whatever the tile precision. The margin is a
proven bound on the low-precision error for unit vectors: inputs rounded with unit roundoff u give a dot product
error <= (2u + u^2) * sum|x_i y_i| <= 2u + u^2, and rounding the output adds <= u (bf16: u = 2^-8 -> 0.0118 <= 0.02;
fp16: u = 2^-11 -> 0.0015 <= 0.01). Memory is bounded by one tile whatever N: never an N x N matrix.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np

Edges = Tuple[np.ndarray, np.ndarray, np.ndarray]  # rows int64, cols int64 (rows < cols), sims float32

MARGIN = {"float32": 0.0, "bfloat16": 0.02, "float16": 0.01}
CPU_TILE = (4096, 8192)            # 32 Mi products per tile: 64-128 MiB of scores and masks
GPU_TILE_ROWS = 16384
DENSE_RESCORE_FRACTION = 0.02      # above this share of candidates a tile is re-scored by one float32 product


@dataclass(frozen=True)
class GraphPlan:
    """How the graph is computed: torch device, tile precision, re-score margin and tile shape (rows x cols)."""

    device: str
    precision: str
    margin: float
    tile_rows: int
    tile_cols: int


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (x86 AVX512-BF16 or AMX; read from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def plan_graph(n: int, d: int, device: str = "cpu", precision: str = "auto") -> GraphPlan:
    """Choose tile precision and shape for n vectors of dimension d on `device` ('cpu' or 'cuda:N').

    precision: 'auto' (fp16 on CUDA, bf16 on CPUs that have it, else float32) or one of MARGIN's keys.
    CUDA tiles are sized to a quarter of the free GPU memory (fp16 scores + masks, ~8 bytes per product).
    """
    if precision == "auto":
        precision = "float16" if device.startswith("cuda") else ("bfloat16" if cpu_has_fast_bf16() else "float32")
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
                    tile_rows: int = 0, tile_cols: int = 0) -> Iterator[Edges]:
    """Yield edge blocks (rows int64, cols int64, sims float32) with rows < cols and float32 cosine >= threshold.

    embeddings: float32 (n, d), rows L2-normalised (the margin argument needs unit rows). Every qualifying pair is
    yielded exactly once; sims are float32 dot products. tile_rows/tile_cols override the planned tile shape.
    """
    import torch

    x32 = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x32.shape
    if n < 2:
        return
    plan = plan_graph(n, d, device, precision)
    rows_per_tile, cols_per_tile = tile_rows or plan.tile_rows, tile_cols or plan.tile_cols
    exact = torch.from_numpy(x32).to(plan.device)
    fast = exact if plan.precision == "float32" else exact.to(getattr(torch, plan.precision))
    candidate_floor = threshold - plan.margin
    with torch.inference_mode(), _exact_float32_matmul():
        for r0 in range(0, n, rows_per_tile):
            r1 = min(r0 + rows_per_tile, n)
            for c0 in range(r0, n, cols_per_tile):
                c1 = min(c0 + cols_per_tile, n)
                scores = fast[r0:r1] @ fast[c0:c1].T
                local_rows, local_cols = torch.nonzero(scores >= candidate_floor, as_tuple=True)
                if c0 < r1:  # the tile touches the diagonal: keep the strict upper triangle only
                    upper = local_rows + r0 < local_cols + c0
                    local_rows, local_cols = local_rows[upper], local_cols[upper]
                if local_rows.numel() == 0:
                    continue
                if plan.precision == "float32":
                    sims = scores[local_rows, local_cols]
                elif local_rows.numel() > DENSE_RESCORE_FRACTION * scores.numel():
                    sims = (exact[r0:r1] @ exact[c0:c1].T)[local_rows, local_cols]
                else:
                    sims = (exact[r0 + local_rows] * exact[c0 + local_cols]).sum(dim=1)
                keep = sims >= threshold
                local_rows, local_cols, sims = local_rows[keep], local_cols[keep], sims[keep]
                if local_rows.numel():
                    yield (local_rows.cpu().numpy().astype(np.int64) + r0,
                           local_cols.cpu().numpy().astype(np.int64) + c0,
                           sims.float().cpu().numpy())

