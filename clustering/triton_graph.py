"""The ε-graph's candidate pairs from one fused Triton kernel: fp16 product, threshold and compaction in one pass.

Each program multiplies one BLOCK_M x BLOCK_N block of the upper triangle (fp16 inputs, float32 accumulation on
tensor cores) and, only when some of its scores reach `floor` (threshold - the fp16 margin, clustering.graph.MARGIN),
reserves room in the output with one atomic add and writes the (row, col) of those pairs there, compacted by a
prefix sum: no score matrix, no mask and no torch.nonzero ever reach memory. The candidates are then re-scored in
float32 (`rescore`), exactly as clustering.graph's torch path does for its sparse tiles, so the edges are those of
float32 arithmetic (same margin argument).

Rows are processed in bands of `band_rows`; a band's candidates go to a buffer of `capacity` pairs; a band with
more (a low threshold: most pairs are edges) is handed back to the caller, who computes it with the torch tiles.
Needs the `triton` package and CUDA; `TRITON_INTERPRET=1` runs the same kernel on CPU tensors (slowly), which is
how tests/test_triton_graph.py checks it without a GPU.
"""
from __future__ import annotations

import os
from typing import Dict, Iterator, Optional, Tuple

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): a tensor-core shape for CUDA, a small one for the interpreter
CUDA_BLOCKS = (128, 128, 64, 8, 3)
INTERPRETER_BLOCKS = (32, 32, 16, 1, 1)
BAND_ROWS = 16384
CAPACITY = 1 << 26        # candidate pairs per band (2 x int32 each: 512 MiB); more sends the band to torch tiles
RESCORE_CHUNK = 1 << 16   # candidate pairs re-scored per gather (2 x chunk x d float32)
# how a block's candidates are compacted: "scan" (one atomic per block + a prefix sum over the block) or "atomic"
# (one atomic per candidate); untimed on a GPU so far: bench/gpu_all.py times both, CROP_CLUSTER_GRAPH_COMPACTION
# overrides
COMPACTION = os.environ.get("CROP_CLUSTER_GRAPH_COMPACTION", "scan")

_KERNELS: Dict[bool, object] = {}


def interpreting() -> bool:
    """True when TRITON_INTERPRET=1 (Triton's CPU interpreter: kernels run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def triton_usable(device: str) -> bool:
    """True when this kernel can run for `device`: triton is importable and either device is CUDA (and available)
    or the interpreter is on."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if interpreting():
        return True
    if not device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_available()


def _kernel():
    """The jitted kernel, built on first use (so TRITON_INTERPRET is read then, not at import)."""
    mode = interpreting()
    if mode in _KERNELS:
        return _KERNELS[mode]
    import triton
    import triton.language as tl

    @triton.jit
    def candidates_kernel(x_ptr, d, row0, col_block0, n, floor, rows_ptr, cols_ptr, count_ptr, capacity,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          SCAN: tl.constexpr):
        """x: fp16 (padded, d), padded to a multiple of the blocks and d to a multiple of BLOCK_K (zeros).
        SCAN: compact a block's candidates by one atomic add and a prefix sum (good for dense blocks); else by one
        atomic add per candidate (no scan of the whole block: good when blocks hold a few candidates each)."""
        row_start = row0 + tl.program_id(0) * BLOCK_M
        col_start = (col_block0 + tl.program_id(1)) * BLOCK_N
        if col_start + BLOCK_N > row_start + 1:  # else the block lies below the diagonal: no pair i < j in it
            rm = row_start + tl.arange(0, BLOCK_M)
            rn = col_start + tl.arange(0, BLOCK_N)
            rk = tl.arange(0, BLOCK_K)
            a_ptrs = x_ptr + rm[:, None].to(tl.int64) * d + rk[None, :]
            b_ptrs = x_ptr + rn[None, :].to(tl.int64) * d + rk[:, None]
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for _ in range(0, d, BLOCK_K):
                acc = tl.dot(tl.load(a_ptrs), tl.load(b_ptrs), acc)
                a_ptrs += BLOCK_K
                b_ptrs += BLOCK_K
            keep = (acc >= floor) & (rm[:, None] < rn[None, :]) & (rn[None, :] < n)
            flat = tl.reshape(keep.to(tl.int32), (BLOCK_M * BLOCK_N,))
            total = tl.sum(flat, axis=0)
            if total > 0 and not SCAN:
                position = tl.atomic_add(count_ptr + tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32),
                                         tl.full((BLOCK_M, BLOCK_N), 1, dtype=tl.int64), mask=keep)
                store = keep & (position < capacity)
                tl.store(rows_ptr + position, rm[:, None] + rn[None, :] * 0, mask=store)
                tl.store(cols_ptr + position, rm[:, None] * 0 + rn[None, :], mask=store)
            if total > 0 and SCAN:
                base = tl.atomic_add(count_ptr, total.to(tl.int64))
                position = base + tl.cumsum(flat, axis=0).to(tl.int64) - 1
                rows = tl.reshape(rm[:, None] + rn[None, :] * 0, (BLOCK_M * BLOCK_N,))
                cols = tl.reshape(rm[:, None] * 0 + rn[None, :], (BLOCK_M * BLOCK_N,))
                store = (flat > 0) & (position < capacity)
                tl.store(rows_ptr + position, rows, mask=store)
                tl.store(cols_ptr + position, cols, mask=store)

    _KERNELS[mode] = candidates_kernel
    return candidates_kernel


def padded_half(x32, blocks: Tuple[int, int, int, int, int]):
    """float32 (n, d) torch tensor -> fp16 (n', d') with zero rows/columns up to multiples of the block shape."""
    import torch

    block_m, block_n, block_k = blocks[:3]
    n, d = x32.shape
    step = max(block_m, block_n)
    out = torch.zeros((-(-n // step) * step, -(-d // block_k) * block_k), dtype=torch.float16, device=x32.device)
    out[:n, :d] = x32
    return out


def band_candidates(half, n: int, floor: float, r0: int, r1: int, capacity: int,
                    blocks: Tuple[int, int, int, int, int], buffers=None, compaction: str = ""):
    """Candidate pairs (rows int32, cols int32; global, rows < cols < n) of rows r0..r1 (r0 a multiple of
    BLOCK_M) against every later column, with fp16 score >= floor; (None, None, count) when more than `capacity`.
    buffers: (rows, cols, counter) device tensors to reuse (capacity int32 each, one int64). compaction: 'scan' or
    'atomic' (see the kernel's SCAN); '' = COMPACTION."""
    import torch
    import triton

    block_m, block_n, block_k, warps, stages = blocks
    device = half.device
    rows, cols, counter = buffers or (torch.empty(capacity, dtype=torch.int32, device=device),
                                      torch.empty(capacity, dtype=torch.int32, device=device),
                                      torch.zeros(1, dtype=torch.int64, device=device))
    counter.zero_()
    col_block0 = r0 // block_n
    grid = (triton.cdiv(r1 - r0, block_m), triton.cdiv(half.shape[0], block_n) - col_block0)
    options = {} if interpreting() else {"num_warps": warps, "num_stages": stages}
    _kernel()[grid](half, half.shape[1], r0, col_block0, n, float(floor), rows, cols, counter, capacity,
                    BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                    SCAN=(compaction or COMPACTION) == "scan", **options)
    count = int(counter.item())
    if count > capacity:
        return None, None, count
    return rows[:count], cols[:count], count


def rescore(exact, rows, cols, threshold: float, chunk: int = RESCORE_CHUNK):
    """Float32 similarities of candidate pairs, kept when >= threshold: (rows int64, cols int64, sims float32)."""
    import torch

    keep_rows, keep_cols, keep_sims = [], [], []
    for start in range(0, rows.numel(), chunk):
        r = rows[start:start + chunk].long()
        c = cols[start:start + chunk].long()
        sims = (exact[r] * exact[c]).sum(dim=1)
        keep = sims >= threshold
        keep_rows.append(r[keep])
        keep_cols.append(c[keep])
        keep_sims.append(sims[keep])
    if not keep_rows:
        empty = torch.zeros(0, dtype=torch.int64, device=exact.device)
        return empty, empty, torch.zeros(0, dtype=torch.float32, device=exact.device)
    return torch.cat(keep_rows), torch.cat(keep_cols), torch.cat(keep_sims)


def triton_edge_blocks(exact, n: int, threshold: float, margin: float, counts: Dict, band_rows: int = BAND_ROWS,
                       capacity: int = 0, blocks: Optional[Tuple[int, int, int, int, int]] = None,
                       compaction: str = "") -> Iterator[Tuple[str, int, int, object]]:
    """For each band of rows: ("edges", r0, r1, (rows, cols, sims) on the device) with float32 cosine >= threshold,
    or ("dense", r0, r1, None) when the band has more than `capacity` candidates (the caller computes it otherwise).

    exact: float32 (n, d) torch tensor of unit rows on the kernel's device. counts: 'bands', 'bands_dense' and
    'candidates' are added up in it. capacity 0: CAPACITY, at most the pairs of one band.
    """
    import torch

    blocks = blocks or (INTERPRETER_BLOCKS if interpreting() else CUDA_BLOCKS)
    band_rows = max(blocks[0], band_rows // blocks[0] * blocks[0])
    half = padded_half(exact, blocks)
    capacity = capacity or min(CAPACITY, band_rows * half.shape[0])
    buffers = (torch.empty(capacity, dtype=torch.int32, device=exact.device),
               torch.empty(capacity, dtype=torch.int32, device=exact.device),
               torch.zeros(1, dtype=torch.int64, device=exact.device))
    for key in ("bands", "bands_dense", "candidates"):
        counts.setdefault(key, 0)
    for r0 in range(0, n, band_rows):
        r1 = min(r0 + band_rows, n)
        counts["bands"] += 1
        rows, cols, count = band_candidates(half, n, threshold - margin, r0, r1, capacity, blocks, buffers,
                                            compaction)
        counts["candidates"] += count
        if rows is None:
            counts["bands_dense"] += 1
            yield "dense", r0, r1, None
            continue
        yield "edges", r0, r1, rescore(exact, rows, cols, threshold)
