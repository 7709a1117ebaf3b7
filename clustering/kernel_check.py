"""The fused Triton graph kernel's first-use check: on a small block, its edges against the torch tiles' float32 edges.

The kernel (clustering/triton_graph.py) is the CUDA default but runs on no test machine's GPU. Before `graph_kernel`
first picks it for a device, `fused_kernel_checked` runs it on CHECK_ROWS x CHECK_DIM unit vectors around a few
centres (odd sizes: padding rows and columns, several bands and column blocks, blocks on and off the diagonal) and
compares its edges and similarities with the torch tiles' at float32 (clustering.graph). When it fails to compile
or run, or disagrees, the torch tiles are used instead (crop_cluster/fallbacks.py: a warning and a run.json entry).
"""
from __future__ import annotations

from typing import Optional

CHECK_ROWS, CHECK_DIM, CHECK_THRESHOLD = 300, 72, 0.6
TIE = 1e-5          # pairs this close to the threshold may fall either side (float32 summation order)


def check_vectors(n: int = CHECK_ROWS, d: int = CHECK_DIM):
    """float32 (n, d) unit rows around n // 12 seeded centres, each with its own noise: at CHECK_THRESHOLD ~700
    edges, ~70 pairs within the fp16 margin (0.01) of it, the rest below."""
    import numpy as np

    rng = np.random.default_rng(31)
    centres = rng.standard_normal((max(2, n // 12), d))
    x = centres[rng.integers(0, len(centres), n)] + rng.uniform(0.3, 1.5, (n, 1)) * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fused_kernel_disagreement(device: str) -> Optional[str]:
    """None when the fused kernel on `device` finds the float32 edges of the torch tiles on the check block, with
    their similarities within TIE; else what differs. Raises what compiling or running the kernel raises."""
    import numpy as np
    import torch

    from crop_cluster.clustering.graph import MARGIN, GraphPlan, _torch_tile_loop
    from crop_cluster.clustering.triton_graph import CUDA_BLOCKS, INTERPRETER_BLOCKS, interpreting, triton_edge_blocks

    x = check_vectors()
    n = x.shape[0]
    blocks = INTERPRETER_BLOCKS if interpreting() else CUDA_BLOCKS
    fused = {}
    with torch.inference_mode():
        for kind, _, _, block in triton_edge_blocks(torch.from_numpy(x).to(device), n, CHECK_THRESHOLD,
                                                    MARGIN["float16"], {}, band_rows=blocks[0], blocks=blocks):
            if kind == "dense":
                return "found more candidates than its buffer holds on the check block"
            fused.update(zip(zip(block[0].tolist(), block[1].tolist()), block[2].tolist()))
        plan = GraphPlan(device, "float32", 0.0, n, n)
        reference = {}
        for rows, cols, sims in _torch_tile_loop(x, CHECK_THRESHOLD, plan, {"tiles": 0, "tiles_float32": 0,
                                                                           "tiles_dense": 0}):
            reference.update(zip(zip(rows.tolist(), cols.tolist()), sims.tolist()))
    exact = x.astype(np.float64) @ x.astype(np.float64).T
    clear = lambda pair: abs(exact[pair] - CHECK_THRESHOLD) > TIE      # noqa: E731
    missing = [pair for pair in set(reference) - set(fused) if clear(pair)]
    extra = [pair for pair in set(fused) - set(reference) if clear(pair)]
    off = [pair for pair in set(fused) & set(reference) if abs(fused[pair] - reference[pair]) > TIE]
    if missing or extra or off:
        return (f"disagrees with the torch tiles on a {n}x{x.shape[1]} check block: {len(missing)} of "
                f"{len(reference)} edges missing, {len(extra)} extra, {len(off)} with another similarity")
    return None


def fused_kernel_checked(device: str) -> bool:
    """True when the fused kernel may score the graph on `device`: checked on its first use in this process
    (`fused_kernel_disagreement`); False, with a warning and a run.json `fallbacks` entry, when the check failed."""
    from crop_cluster.fallbacks import fast_path_ok

    return fast_path_ok("fused Triton graph kernel", device, lambda: fused_kernel_disagreement(device),
                        "torch tiles (fp16, re-scored in float32)")
