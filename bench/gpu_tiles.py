"""One tile of the CUDA graph (clustering/graph.py) timed on the GPU: the fp16 product at an odd width (131 071, the
old plan) and at a multiple of 256 (130 816, the plan now), the threshold compare and torch.nonzero; 16 384 rows,
d = 768, CUDA events, mean of 10 after a warm-up. Prints the figures and writes tile_profile.json to $OUT (or here);
the H100 figures are in bench/results/clustering_gpu.json under "tile_profile_round2".

    python3 bench/gpu_tiles.py
"""
from __future__ import annotations

import json
import os

import torch

DEVICE = "cuda:0"
ROWS, DIM = 16384, 768


def timed_ms(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> int:
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_tiles.py times CUDA tiles: run it on a machine with a CUDA GPU")
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(300000, DIM, device=DEVICE), dim=1).half()
    a = x[:ROWS]
    found = {}
    for cols in (131071, 130816):
        b = x[20000:20000 + cols]
        ms = timed_ms(lambda: a @ b.T)
        found[f"matmul_fp16_{ROWS}x{cols}_ms"] = round(ms, 3)
        found[f"matmul_fp16_{ROWS}x{cols}_tflops"] = round(2 * ROWS * cols * DIM / ms / 1e9, 1)
    scores = a @ x[20000:20000 + 130816].T
    found["compare_ms"] = round(timed_ms(lambda: scores >= 0.89), 3)
    mask = scores >= 0.89
    found["nonzero_ms"] = round(timed_ms(lambda: torch.nonzero(mask, as_tuple=True)), 3)
    found["tiles_for_1e6"] = sum(len(range(r0, 1000192, 130816)) for r0 in range(0, 1000192, ROWS))
    print(json.dumps(found))
    with open(os.path.join(os.environ.get("OUT", "."), "tile_profile.json"), "w", encoding="utf-8") as handle:
        json.dump(found, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
