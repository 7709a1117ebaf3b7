"""Exact ε-graph over L2-normalised embeddings: every pair i < j whose cosine similarity is >= a threshold.

Tiles of the upper triangle only are multiplied with torch (device chosen by `-d`) in the fastest precision the
device has: fp16 on CUDA tensor cores, bf16 on CPUs with AVX512-BF16 or AMX, float32 elsewhere. With fp16/bf16,
every pair within `margin` of the threshold or above it is re-scored in float32, so the edges and their similarities
are those of float32 arithmetic whatever the tile precision (up to float32 rounding, ~1e-7, of pairs lying exactly
at the threshold, which depends on the summation order in any implementation). The margin is a proven bound on the
low-precision error for unit vectors: inputs rounded with unit roundoff u give a dot product error
<= (2u + u^2) * sum|x_i y_i| <= 2u + u^2, and rounding the output adds <= u (bf16: u = 2^-8 -> 0.0118 <= 0.02;
fp16: u = 2^-11 -> 0.0015 <= 0.01). On the CPU the tiles are scanned by compiled kernels (clustering.scan); on CUDA
by torch ops, and `torch_forest_edges` keeps the edges on the GPU and folds them there into a maximum spanning forest
(Boruvka), so only the forest (at most N - 1 edges) reaches the host. On CUDA with the `triton` package the fp16
candidates come from one fused kernel instead (product, threshold and compaction, clustering.triton_graph), then are
re-scored in float32 as above; without triton (or CUDA), or when the kernel fails its first-use check against the
torch tiles (clustering/kernel_check.py), the torch ops do it. Memory is bounded by one tile whatever N:
never an N x N matrix.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

Edges = Tuple[np.ndarray, np.ndarray, np.ndarray]  # rows int64, cols int64 (rows < cols), sims float32

MARGIN = {"float32": 0.0, "bfloat16": 0.02, "float16": 0.01}
CPU_TILE = (4096, 8192)            # 32 Mi products per tile: 64-128 MiB of scores and masks
GPU_TILE_ROWS = 16384
GPU_TILE_ALIGN = 256               # tile widths (and the padded row count) on CUDA: aligned fp16 rows for cuBLAS
MAX_TILE_PRODUCTS = 2**31 - 1      # torch.nonzero on CUDA indexes with 32-bit integers
# torch path: above this share of a tile's products, re-scoring candidates one by one (a gather of 2 x d floats each)
# costs more than one float32 product of the whole tile (~2 us per candidate on a 2-core CPU; HBM gathers are cheap).
RESCORE_GATHER_SHARE = {"cpu": 0.003, "cuda": 0.015}
# CPU path: the compiled scan re-scores a candidate in ~30 ns against ~3 ns per bf16 product, so bf16 tiles pay off
# while fewer than ~10 % of the products are candidates.
CPU_DENSE_SHARE = 0.1
SWITCH_AFTER_TILES = 4             # then drop the fast pass when most tiles were dense
# bf16 tiles save ~2.5 ns per product on a 2-core CPU; below ~5e8 products (n ~ 32k) that is less than the ~1.5 s
# it costs to import torch, and float32 tiles need only numpy.
BF16_MIN_ROWS = 32768


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
                    return bool(set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def bf16_pays(products: int) -> bool:
    """True when a CPU similarity product of `products` scores should run in bf16: the CPU multiplies bf16 natively,
    and torch is loaded already or the product is as large as the graph's at BF16_MIN_ROWS rows (where the saving
    outweighs importing torch)."""
    return cpu_has_fast_bf16() and ("torch" in sys.modules or products >= BF16_MIN_ROWS * BF16_MIN_ROWS // 2)


def cross_edges(queries: np.ndarray, base: np.ndarray, threshold: float) -> Edges:
    """Every pair (query i, base row j) with float32 cosine >= threshold, on the CPU: (i int64, j int64, sims
    float32). queries: float32 (q, d), base: float32 (b, d), unit rows. Tiles of CPU_TILE scores, bf16 first with
    the proven margin when `bf16_pays` (candidates re-scored in float32, as `threshold_edges` does)."""
    from crop_cluster.clustering.scan import bf16_floor_key, scan_bf16_tile, scan_float32_tile

    q32 = np.ascontiguousarray(queries, dtype=np.float32)
    b32 = np.ascontiguousarray(base, dtype=np.float32)
    low_precision = q32.shape[0] and b32.shape[0] and bf16_pays(q32.shape[0] * b32.shape[0])
    if low_precision:
        import torch

        fast_q, fast_b = (torch.from_numpy(x).to(torch.bfloat16) for x in (q32, b32))
        floor_key = bf16_floor_key(threshold - MARGIN["bfloat16"])
    found = []
    rows_per_tile, cols_per_tile = CPU_TILE
    for q0 in range(0, q32.shape[0], rows_per_tile):
        q1 = min(q0 + rows_per_tile, q32.shape[0])
        for b0 in range(0, b32.shape[0], cols_per_tile):
            b1 = min(b0 + cols_per_tile, b32.shape[0])
            if low_precision:       # c0 = q1: every column lies "above the diagonal", so all pairs are scanned
                with torch.inference_mode():
                    bits = (fast_q[q0:q1] @ fast_b[b0:b1].T).view(torch.int16).numpy()
                rows, cols, sims, _ = scan_bf16_tile(bits, q32[q0:q1], b32[b0:b1], floor_key, threshold, q0, q1)
            else:
                rows, cols, sims = scan_float32_tile(q32[q0:q1] @ b32[b0:b1].T, threshold, q0, q1)
            if rows.size:
                found.append((rows, cols - q1 + b0, sims))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(column) for column in zip(*found))


def plan_graph(n: int, d: int, device: str = "cpu", precision: str = "auto") -> GraphPlan:
    """Choose tile precision and shape for n vectors of dimension d on `device` ('cpu' or 'cuda:N').

    precision: 'auto' (fp16 on CUDA; on the CPU bf16 when it multiplies bf16 natively, 2-3x faster than float32
    there, and n >= BF16_MIN_ROWS so that the saving outweighs importing torch; else float32, with numpy) or one of
    MARGIN's keys (the CPU path has no float16: CPUs multiply it slowly).
    CUDA tiles are sized to a quarter of the free GPU memory (fp16 scores + masks, ~8 bytes per product) and at most
    2^31 - 1 products, GPU_TILE_ALIGN columns wide (the rows are padded to that multiple on the GPU).
    """
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "float16"
        else:
            precision = "bfloat16" if n >= BF16_MIN_ROWS and cpu_has_fast_bf16() else "float32"
    if precision not in MARGIN or (device == "cpu" and precision == "float16"):
        choices = ", ".join(p for p in MARGIN if device != "cpu" or p != "float16")
        raise ValueError(f"unknown graph precision '{precision}' on {device}; use auto, {choices}")
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        rows = min(GPU_TILE_ROWS, max(n, 1))
        cols = min(_padded(n), (free // 4) // (8 * rows), MAX_TILE_PRODUCTS // rows)
        return GraphPlan(device, precision, MARGIN[precision], rows,
                         int(max(GPU_TILE_ALIGN, cols // GPU_TILE_ALIGN * GPU_TILE_ALIGN)))
    return GraphPlan(device, precision, MARGIN[precision], *CPU_TILE)


def _plan(n: int, d: int, device: str, precision: str, use_triton: bool) -> GraphPlan:
    """plan_graph, with float16 tiles for the Triton kernel (also on the CPU under TRITON_INTERPRET=1)."""
    if use_triton and device == "cpu":
        return GraphPlan(device, "float16", MARGIN["float16"], *CPU_TILE)
    return plan_graph(n, d, device, "float16" if use_triton else precision)


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


KERNELS = ("auto", "torch", "triton")


def graph_kernel(device: str, precision: str = "auto", kernel: str = "auto") -> str:
    """'triton' or 'torch': what scores the tiles of a torch-device graph. auto: triton on CUDA when the package is
    installed, the precision is fp16 (auto or float16) and the kernel passed its first-use check on that device
    (clustering/kernel_check.py), else torch. 'triton' (asked for by name) when it cannot run: ValueError."""
    from crop_cluster.clustering.triton_graph import interpreting, triton_usable

    if kernel not in KERNELS:
        raise ValueError(f"unknown graph kernel '{kernel}'; available: {', '.join(KERNELS)}")
    fp16 = precision in ("auto", "float16")
    if kernel == "triton":
        if not fp16 or not triton_usable(device):
            raise ValueError(f"graph kernel 'triton' needs the triton package, CUDA (or TRITON_INTERPRET=1) and "
                             f"float16 tiles; got device {device}, precision {precision}")
        return "triton"
    if kernel == "auto" and fp16 and device.startswith("cuda") and not interpreting() and triton_usable(device):
        from crop_cluster.clustering.kernel_check import fused_kernel_checked

        return "triton" if fused_kernel_checked(device) else "torch"      # checked on first use, else torch tiles
    return "torch"


def threshold_edges(embeddings: np.ndarray, threshold: float, device: str = "cpu", precision: str = "auto",
                    tile_rows: int = 0, tile_cols: int = 0, stats: Optional[Dict] = None,
                    block: Optional[Tuple[int, int, int, int]] = None, kernel: str = "auto") -> Iterator[Edges]:
    """Yield edge blocks (rows int64, cols int64, sims float32) with rows < cols and float32 cosine >= threshold.

    embeddings: float32 (n, d), rows L2-normalised (the margin argument needs unit rows). Every qualifying pair is
    yielded exactly once; sims are float32 dot products. tile_rows/tile_cols override the planned tile shape.
    `stats`, when given, receives the plan and how the tiles were scored (for run.json).
    block: (r0, r1, c0, c1): only the tiles of the whole graph's grid whose first row lies in [r0, r1) and first
    column in [c0, c1), computed whole (a worker's share of the upper triangle, engines/): blocks that partition
    the tile starts yield together exactly the edges of one whole-graph pass (always on the tile path, never the
    fused kernel, whose bands are another grid). kernel: for a torch device (not the CPU path), see `graph_kernel`.
    """
    x32 = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x32.shape
    use_triton = block is None and (device != "cpu" or kernel == "triton") \
        and graph_kernel(device, precision, kernel) == "triton"
    tiles = _triton_tiles if use_triton else _cpu_tiles if device == "cpu" else _torch_tiles
    plan = _plan(n, d, device, precision, use_triton)
    plan = GraphPlan(plan.device, plan.precision, plan.margin, tile_rows or plan.tile_rows,
                     tile_cols or plan.tile_cols)
    counts = {"tiles": 0, "tiles_float32": 0, "tiles_dense": 0}
    if stats is not None:
        stats.update(device=plan.device, precision=plan.precision, rescore_margin=plan.margin,
                     tile=[plan.tile_rows, plan.tile_cols], tile_counts=counts,
                     kernel="triton" if tiles is _triton_tiles else "torch")
    yield from tiles(x32, threshold, plan, counts, block) if block is not None else tiles(x32, threshold, plan, counts)


def _tile_starts(n: int, plan: GraphPlan, block: Optional[Tuple[int, int, int, int]] = None,
                 rows: Optional[Tuple[int, int]] = None) -> Iterator[Tuple[int, int, int, int]]:
    """(r0, r1, c0, c1) of every tile of the upper triangle, row blocks of plan.tile_rows x plan.tile_cols; with
    `block` (r0, r1, c0, c1), only the tiles of that grid whose start (r0, c0) lies inside it (whole tiles);
    rows=(start, stop): only the row blocks of those rows (start a multiple of plan.tile_rows, or its only block)."""
    start, stop = rows or (0, n)
    for r0 in range(start, stop, plan.tile_rows):
        for c0 in range(r0, n, plan.tile_cols):
            if block is None or (block[0] <= r0 < block[1] and block[2] <= c0 < block[3]):
                yield r0, min(r0 + plan.tile_rows, stop), c0, min(c0 + plan.tile_cols, n)


def _use_fast_pass(counts: Dict) -> bool:
    """False once most of the first tiles were dense (the fast pass then only adds work)."""
    return not (counts["tiles"] > SWITCH_AFTER_TILES and counts["tiles_dense"] > 0.5 * (counts["tiles"] - 1))


def _cpu_tiles(x32: np.ndarray, threshold: float, plan: GraphPlan, counts: Dict,
               block: Optional[Tuple[int, int, int, int]] = None) -> Iterator[Edges]:
    """CPU: matrix products on every core (bf16 in torch/oneDNN, float32 in numpy's BLAS), scanned by the
    compiled kernels of clustering.scan."""
    from crop_cluster.clustering.scan import bf16_floor_key, scan_bf16_tile, scan_float32_tile

    low_precision = plan.precision == "bfloat16"
    if low_precision:
        import torch

        fast = torch.from_numpy(x32).to(torch.bfloat16)
        floor_key = bf16_floor_key(threshold - plan.margin)
    for r0, r1, c0, c1 in _tile_starts(x32.shape[0], plan, block):
        counts["tiles"] += 1
        low_precision = low_precision and _use_fast_pass(counts)
        if low_precision:
            with torch.inference_mode():
                bits = (fast[r0:r1] @ fast[c0:c1].T).view(torch.int16).numpy()
            rows, cols, sims, candidates = scan_bf16_tile(bits, x32[r0:r1], x32[c0:c1], floor_key, threshold, r0, c0)
            counts["tiles_dense"] += candidates > CPU_DENSE_SHARE * bits.size
        else:
            counts["tiles_float32"] += 1
            rows, cols, sims = scan_float32_tile(x32[r0:r1] @ x32[c0:c1].T, threshold, r0, c0)
        if rows.size:
            yield rows, cols, sims


def _padded(n: int) -> int:
    """n rounded up to a multiple of GPU_TILE_ALIGN (at least one)."""
    return max(1, -(-n // GPU_TILE_ALIGN)) * GPU_TILE_ALIGN


def _torch_tiles(x32: np.ndarray, threshold: float, plan: GraphPlan, counts: Dict,
                 block: Optional[Tuple[int, int, int, int]] = None) -> Iterator[Edges]:
    """CUDA (and any torch device): the edges of `_torch_tile_loop`, block by block on the host."""
    for rows, cols, sims in _torch_tile_loop(x32, threshold, plan, counts, block):
        yield rows.cpu().numpy(), cols.cpu().numpy(), sims.float().cpu().numpy()


def _triton_tiles(x32: np.ndarray, threshold: float, plan: GraphPlan, counts: Dict) -> Iterator[Edges]:
    """The edges of `_triton_tile_loop`, block by block on the host."""
    for rows, cols, sims in _triton_tile_loop(x32, threshold, plan, counts):
        yield rows.cpu().numpy(), cols.cpu().numpy(), sims.float().cpu().numpy()


def _triton_tile_loop(x32: np.ndarray, threshold: float, plan: GraphPlan, counts: Dict):
    """Edge blocks (torch tensors on plan.device) from the fused Triton kernel (clustering.triton_graph), band by
    band; a band with too many candidates for the kernel's buffer is computed by `_torch_tile_loop` instead."""
    import torch

    from crop_cluster.clustering.triton_graph import triton_edge_blocks

    exact = torch.from_numpy(x32).to(plan.device)
    band_rows = max(plan.tile_rows, 1)
    with torch.inference_mode():
        for kind, r0, r1, block in triton_edge_blocks(exact, x32.shape[0], threshold, plan.margin, counts,
                                                      band_rows=band_rows):
            if kind == "dense":
                band_plan = GraphPlan(plan.device, plan.precision, plan.margin, r1 - r0, plan.tile_cols)
                yield from _torch_tile_loop(x32, threshold, band_plan, counts, rows=(r0, r1))
            elif block[0].numel():
                yield block


def _torch_tile_loop(x32: np.ndarray, threshold: float, plan: GraphPlan, counts: Dict,
                     block: Optional[Tuple[int, int, int, int]] = None, rows: Optional[Tuple[int, int]] = None):
    """Edge blocks (rows int64, cols int64, sims float32: torch tensors on plan.device, global row numbers).

    Tiles are scored with torch ops; low-precision candidates are re-scored one by one while they are few, by one
    float32 product of the tile when they are many (RESCORE_GATHER_SHARE). The vectors are padded on the device
    with zero rows to a multiple of GPU_TILE_ALIGN so that every tile is an aligned width; pairs with a padding row
    are dropped (they can only pass a threshold <= 0). rows=(start, stop): only those rows' tiles (see _tile_starts).
    """
    import torch

    n, d = x32.shape
    gather_share = RESCORE_GATHER_SHARE["cuda" if plan.device.startswith("cuda") else "cpu"]
    padded = _padded(n) if plan.device.startswith("cuda") else n
    exact = torch.zeros((padded, d), dtype=torch.float32, device=plan.device)
    exact[:n].copy_(torch.from_numpy(x32))
    low_precision = plan.precision != "float32"
    fast = exact.to(getattr(torch, plan.precision)) if low_precision else exact
    with torch.inference_mode(), _exact_float32_matmul():
        for r0, r1, c0, c1 in _tile_starts(padded, plan, block and tuple(padded if end >= n else end
                                                                          for end in block), rows):
            counts["tiles"] += 1
            low_precision = low_precision and _use_fast_pass(counts)
            source = fast if low_precision else exact
            scores = source[r0:r1] @ source[c0:c1].T
            floor = threshold - plan.margin if low_precision else threshold
            local_rows, local_cols = torch.nonzero(scores >= floor, as_tuple=True)
            keep = None
            if c0 < r1:  # the tile touches the diagonal: keep the strict upper triangle only
                keep = local_rows + r0 < local_cols + c0
            if floor <= 0 and c1 > n:  # padding rows score 0: drop their pairs
                outside = local_cols + c0 < n
                keep = outside if keep is None else keep & outside
            if keep is not None:
                local_rows, local_cols = local_rows[keep], local_cols[keep]
            if not low_precision:
                counts["tiles_float32"] += 1
                sims = scores[local_rows, local_cols]
            elif local_rows.numel() > gather_share * scores.numel():
                counts["tiles_dense"] += 1
                sims = (exact[r0:r1] @ exact[c0:c1].T)[local_rows, local_cols]
            else:
                sims = (exact[r0 + local_rows] * exact[c0 + local_cols]).sum(dim=1)
            del scores
            keep = sims >= threshold
            if keep.any():
                yield local_rows[keep] + r0, local_cols[keep] + c0, sims[keep].float()


def torch_forest_edges(embeddings: np.ndarray, threshold: float, device: str, precision: str = "auto",
                       max_pending: int = 0, stats: Optional[Dict] = None, kernel: str = "auto") -> Edges:
    """The edges (rows int64, cols int64 with rows < cols, sims float32) of a maximum spanning forest of the pairs
    with cosine >= threshold, computed on a torch device (CUDA): the tiles of `threshold_edges`, their edges kept on
    the device and folded there into a forest (`_torch_spanning_forest`) whenever more than `max_pending` (default
    max(4n, 2^24)) accumulate. Only the forest (at most n - 1 edges) is copied to the host, and the CPU does no
    per-edge work. stats: as for `threshold_edges`, plus 'edges' (pairs found). kernel: see `graph_kernel`.
    """
    import torch

    x32 = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x32.shape
    use_triton = graph_kernel(device, precision, kernel) == "triton"
    plan = _plan(n, d, device, precision, use_triton)
    counts = {"tiles": 0, "tiles_float32": 0, "tiles_dense": 0}
    if stats is not None:
        stats.update(device=plan.device, precision=plan.precision, rescore_margin=plan.margin,
                     tile=[plan.tile_rows, plan.tile_cols], tile_counts=counts, forest_on="device",
                     kernel="triton" if use_triton else "torch")
    loop = _triton_tile_loop if use_triton else _torch_tile_loop
    limit = max_pending or max(4 * n, 1 << 24)
    parts: List = []
    pending = found = 0
    for block in loop(x32, threshold, plan, counts):
        parts.append(block)
        pending += block[0].numel()
        found += block[0].numel()
        if pending > limit:
            parts = [_torch_spanning_forest(n, *(torch.cat(column) for column in zip(*parts)))]
            pending = 0
    if stats is not None:
        stats["edges"] = found
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows, cols, sims = _torch_spanning_forest(n, *(torch.cat(column) for column in zip(*parts)))
    return rows.cpu().numpy(), cols.cpu().numpy(), sims.cpu().numpy()


def _torch_spanning_forest(n: int, rows, cols, sims):
    """Maximum spanning forest of the given unique undirected edges (torch tensors on one device), by Boruvka:
    every component picks its strongest edge, the picks are merged by pointer jumping, until no edge joins two
    components. Ties are broken by edge position, so the order is total and no cycle can form. Returns the subset
    (rows, cols, sims) of the input edges that forms the forest.
    """
    import torch

    count = rows.numel()
    if count == 0:
        return rows, cols, sims
    device = rows.device
    bits = sims.float().contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)            # monotone in the float value
    position = torch.arange(count, device=device)
    key = ordered * (1 << 32) + ((1 << 32) - 1 - position)                # unique; larger = stronger
    nodes = torch.arange(n, device=device)
    component = nodes.clone()
    chosen = torch.zeros(count, dtype=torch.bool, device=device)
    a, b, k, at = rows, cols, key, position
    lowest = torch.iinfo(torch.int64).min
    while True:
        ca, cb = component[a], component[b]
        live = ca != cb
        a, b, k, at, ca, cb = a[live], b[live], k[live], at[live], ca[live], cb[live]
        if a.numel() == 0:
            break
        best = torch.full((n,), lowest, dtype=torch.int64, device=device)
        best.scatter_reduce_(0, ca, k, reduce="amax")
        best.scatter_reduce_(0, cb, k, reduce="amax")
        wins_a, wins_b = k == best[ca], k == best[cb]        # the strongest edge of component ca / cb
        chosen[at[wins_a | wins_b]] = True
        parent = nodes.clone()
        parent[ca[wins_a]] = cb[wins_a]
        parent[cb[wins_b]] = ca[wins_b]
        mutual = (parent[parent] == nodes) & (nodes < parent)  # two components that picked the same edge
        parent[mutual] = nodes[mutual]
        while True:
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand
        component = parent[component]
    return rows[chosen], cols[chosen], sims[chosen]
