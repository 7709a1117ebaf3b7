#!/usr/bin/env python3
"""Benchmark: exact cosine-threshold clustering against the baselines, side by side in one run.

    .venv/bin/python bench/clustering.py                       # N = 2e4 and 1e5, d = 384, t = 0.9, 3 repeats
    PYTHONPATH=. python3 bench/clustering.py --sizes 1000000 --dim 768 --methods ours_engine ours_cli \
        torch_bruteforce --device cuda:0 --baseline_repeats 1 --output bench/results/clustering_gpu.json
                                                     # on a GPU machine: about 6 minutes on one H100

Synthetic unit vectors in groups of known membership (group sizes 1..200, each group's spread drawn so that some
groups stay whole at the threshold and some fall apart) are clustered by:
  ours_cli          the whole `cluster.py --embeddings FILE -th T --no_report` run (process start, imports, load,
                    cluster, write clusters.csv/embeddings.pkl/run.json); the HTML report is off by default above
                    20 000 rows anyway, and it is not part of clustering
  ours_engine       spanning_forest + partition_at in-process (tile precision chosen automatically: bf16 on CPUs
                    with AVX512-BF16/AMX, float32 elsewhere, fp16 on CUDA, where the forest is folded on the GPU)
  ours_engine_fp32  the same with float32 tiles, what a CPU without native bf16 gets
  faiss             faiss IndexFlatIP.range_search at the same threshold (the bare search is the time compared),
                    then scipy connected_components: the reference partition (faiss-cpu; on a GPU machine without
                    faiss-gpu, it runs on the CPU cores beside the GPU)
  torch_bruteforce  what faiss-gpu's range search does, in plain torch on the GPU: float32 similarities of a block of
                    rows against all N (never more than 2^31 - 1 at once), threshold, nonzero, pairs to the host,
                    then scipy connected_components; the reference partition when faiss does not run
  sklearn_single    AgglomerativeClustering(linkage="single", metric="cosine", distance_threshold=1-t) (N <= 30 000)
  biodivx           the BiodivX approach re-implemented: dense cosine matrix per 10 000-row chunk, transitive closure
                    by repeated boolean matrix squaring, chunks clustered independently (N <= 20 000 by default)
Each method runs in its own process (peak RSS is its own; on CUDA also the peak GPU memory: torch's allocator peak
in-process, the device's used memory polled through NVML for the CLI), repeats are interleaved so that machine noise
hits every method alike, and the medians, ratios and partition agreement go to bench/results/clustering.json.
`--baseline_repeats` runs the slow baselines fewer times than ours where a full set is not affordable.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import machine as bench_machine  # noqa: E402

METHODS = ["ours_cli", "ours_engine", "ours_engine_fp32", "faiss", "torch_bruteforce", "sklearn_single",
           "biodivx"]
SKLEARN_MAX_N = 30_000
BIODIVX_MAX_N = 20_000
BIODIVX_CHUNK = 10_000


def synthetic_groups(n: int, d: int, threshold: float, seed: int):
    """(vectors float32 (n, d) L2-normalised, group id int64 (n,)) in shuffled order.

    Group sizes are drawn from a Zipf-like law (1..200). Members are centre + Gaussian noise whose scale gives an
    expected within-group cosine of threshold + U(-0.04, 0.06), so groups straddle the threshold.
    """
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < n:
        sizes.append(int(min(200, rng.zipf(1.6))))
        total += sizes[-1]
    sizes[-1] -= total - n
    groups = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(groups)
    centres = rng.normal(size=(len(sizes), d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pair_cosine = np.clip(threshold + rng.uniform(-0.04, 0.06, size=len(sizes)), 0.5, 0.995)
    sigma = np.sqrt((1.0 / pair_cosine - 1.0) / d).astype(np.float32)   # E[cos] between members = 1/(1 + d sigma^2)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 65536):
        block = groups[start:start + 65536]
        x[start:start + 65536] = centres[block] + sigma[block, None] * rng.standard_normal((block.size, d),
                                                                                           dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, groups.astype(np.int64)


def biodivx_chunked(x: np.ndarray, threshold: float, chunk: int = BIODIVX_CHUNK) -> np.ndarray:
    """The BiodivX clustering: per chunk, adjacency = (cosine >= t), closure by squaring until it stops changing;
    a row's cluster is the first row it reaches. Chunks are clustered independently."""
    labels = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk]
        reach = (block @ block.T >= threshold).astype(np.float32)
        while True:
            squared = ((reach @ reach) > 0).astype(np.float32)
            if np.array_equal(squared, reach):
                break
            reach = squared
        labels[start:start + chunk] = start + reach.argmax(axis=1)
    return labels


def torch_bruteforce(x: np.ndarray, threshold: float, device: str) -> np.ndarray:
    """faiss-gpu's range search in plain torch: float32 (no TF32) similarities of row blocks against all N rows,
    pairs >= threshold to the host, then scipy connected_components."""
    import torch
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = x.shape[0]
    block = max(1, min(n, (2**31 - 1) // max(n, 1)))          # torch.nonzero on CUDA: < 2^31 elements
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    rows, cols = [], []
    try:
        with torch.inference_mode():
            xg = torch.from_numpy(x).to(device)
            for r0 in range(0, n, block):
                i, j = torch.nonzero(xg[r0:r0 + block] @ xg.T >= threshold, as_tuple=True)
                keep = i + r0 < j                                # each pair once (the graph is symmetric)
                rows.append((i[keep] + r0).cpu().numpy())
                cols.append(j[keep].cpu().numpy())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1]


class GpuMemoryPoller:
    """Peak used memory of GPU 0 (the whole device, as nvidia-smi shows it) while the block runs, polled through
    NVML every 20 ms; `peak_mb` stays None when NVML is not there."""

    def __init__(self, index: int = 0):
        self.index, self.peak_mb, self.before_mb = index, None, None

    def __enter__(self):
        import threading

        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception:
            self.thread = None
            return self
        used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20  # noqa: E731
        self.before_mb = self.peak_mb = used()
        self.stop = threading.Event()

        def poll():
            while not self.stop.wait(0.02):
                self.peak_mb = max(self.peak_mb, used())

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
        return False


def run_method(method: str, data: Path, threshold: float, out: Path, device: str = "cpu") -> dict:
    """Run one method on the vectors in `data` (.npy; the .pkl beside it for the CLI); labels saved to `out`.
    device: where `ours_*` build the graph ('cpu' or 'cuda:N')."""
    x = np.load(data)
    timings = {}
    on_cuda = device.startswith("cuda")
    if method == "ours_cli":
        del x
        with GpuMemoryPoller() if on_cuda else contextlib.nullcontext() as poller:
            start = time.perf_counter()
            subprocess.run([sys.executable, str(REPO / "cluster.py"), "--embeddings", str(data.with_suffix(".pkl")),
                            "-o", str(out.parent / "cli_out"), "-th", str(threshold), "-d", device, "--no_report",
                            "-q"], check=True)
            timings["seconds"] = time.perf_counter() - start
        if poller is not None and poller.peak_mb is not None:
            timings["peak_gpu_used_mb_nvml"] = round(poller.peak_mb, 1)
            timings["gpu_used_before_mb_nvml"] = round(poller.before_mb, 1)
        import pandas as pd

        labels = pd.read_csv(out.parent / "cli_out" / "clusters.csv", usecols=["cluster"])["cluster"].to_numpy()
        manifest = json.loads((out.parent / "cli_out" / "run.json").read_text())
        timings["stages_s"] = manifest.get("timings_s")
        timings["graph"] = {k: v for k, v in manifest.get("graph", {}).items() if k != "tile_counts"}
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    else:
        # imports and one-off warm-ups (numba's cached kernels, CUDA context and cuBLAS) happen before the clock
        # starts, for every method
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components
        from sklearn.cluster import AgglomerativeClustering

        from crop_cluster.clustering.forest import partition_at, spanning_forest

        precision = "float32" if method.endswith("fp32") else "auto"
        if method == "faiss":
            import faiss
        if method.startswith("ours_engine"):
            from crop_cluster.clustering.graph import plan_graph

            spanning_forest(x[:256], threshold, device, "float32")
            spanning_forest(x[:256], threshold, device, "bfloat16" if device == "cpu" else "float16")
            timings["precision"] = plan_graph(*x.shape, device, precision).precision
        if method == "torch_bruteforce":
            torch_bruteforce(x[:256], threshold, device)
        if on_cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        if method.startswith("ours_engine"):
            stats = {}
            forest = spanning_forest(x, threshold, device, precision, stats=stats)
            timings["forest_seconds"] = time.perf_counter() - start
            labels = partition_at(forest, threshold)
            timings.update(tile=stats.get("tile"), tile_counts=stats.get("tile_counts"), edges=stats.get("edges"),
                           forest_edges=int(forest.sims.size), forest_on=stats.get("forest_on", "host"))
        elif method == "torch_bruteforce":
            labels = torch_bruteforce(x, threshold, device)
        elif method == "faiss":
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
            lims, _, ids = index.range_search(x, threshold)
            timings["range_search_seconds"] = time.perf_counter() - start
            graph = csr_matrix((np.ones(ids.size, np.int8), ids, lims), shape=(x.shape[0], x.shape[0]))
            labels = connected_components(graph, directed=False)[1]
        elif method == "sklearn_single":
            labels = AgglomerativeClustering(n_clusters=None, linkage="single", metric="cosine",
                                             distance_threshold=1.0 - threshold).fit_predict(x)
        elif method == "biodivx":
            labels = biodivx_chunked(x, threshold)
        else:
            raise SystemExit(f"unknown method {method}")
        timings["seconds"] = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if on_cuda:
            import torch

            timings["peak_gpu_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    np.save(out, np.asarray(labels, dtype=np.int64))
    return {**timings, "peak_rss_mb": round(peak / 1024, 1)}


def singletons_apart(labels: np.ndarray) -> np.ndarray:
    """Labels with every -1 turned into its own group, so partitions compare fairly."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=0) + 1 + np.arange(noise.sum())
    return labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist()))) == len(np.unique(a)) == len(np.unique(b))


def rounding_evidence(x: np.ndarray, reference: np.ndarray, labels: np.ndarray, threshold: float,
                      limit: int = 50) -> dict:
    """Where two partitions differ: for each group of one that the other splits (up to `limit`, at most 5 000
    members), the strongest float64 similarity between its parts. Values within ~1e-6 of the threshold mean the
    difference is float32 rounding of pairs lying at the threshold (summation order differs between cuBLAS and
    the re-scoring), not a missed or invented link."""
    gaps = []
    for a, b in ((reference, labels), (labels, reference)):
        order = np.argsort(a, kind="stable")
        for members in np.split(order, np.flatnonzero(np.diff(a[order])) + 1):
            if len(gaps) >= limit:
                break
            if 2 <= members.size <= 5000 and np.unique(b[members]).size > 1:
                block = x[members].astype(np.float64)
                sims = block @ block.T
                parts = b[members]
                gaps.append(float(sims[parts[:, None] != parts[None, :]].max()) - threshold)
    return {"groups_checked": len(gaps), "float64_gap_to_threshold": [float(f"{g:.3g}") for g in gaps],
            "max_abs_gap": float(f"{max(abs(g) for g in gaps):.3g}") if gaps else None}


def clusters_split(reference: np.ndarray, labels: np.ndarray) -> int:
    """Reference clusters (>= 2 members) whose members are spread over more than one group of `labels`."""
    split = 0
    for members in np.split(np.argsort(reference, kind="stable"),
                            np.flatnonzero(np.diff(np.sort(reference))) + 1):
        if members.size >= 2 and np.unique(labels[members]).size > 1:
            split += 1
    return split


def machine() -> dict:
    """The machine (bench/machine.py), whether the CPU multiplies bf16 natively, and the GPU when one is visible."""
    import torch

    from crop_cluster.clustering.graph import cpu_has_fast_bf16

    return {**bench_machine.machine("cuda:0" if torch.cuda.is_available() else None),
            "cpu_native_bf16": cpu_has_fast_bf16()}


BASELINES = ("faiss", "torch_bruteforce", "sklearn_single", "biodivx")
PER_RUN_KEYS = ("peak_gpu_allocated_mb", "peak_gpu_used_mb_nvml", "gpu_used_before_mb_nvml", "forest_seconds",
                "tile", "tile_counts", "edges", "forest_edges", "forest_on", "stages_s", "graph")


def bench_size(n: int, d: int, threshold: float, repeats: int, methods, work: Path, device: str = "cpu",
               baseline_repeats: int = 0) -> dict:
    from crop_cluster.outputs.embeddings import write_embeddings

    started = time.perf_counter()
    x, truth = synthetic_groups(n, d, threshold, seed=n)
    data = work / f"vectors_{n}.npy"
    np.save(data, x)
    write_embeddings(str(data.with_suffix(".pkl")), [f"synthetic/{i:07d}.png" for i in range(n)], x, "bench:synthetic")
    del x
    print(f"  data ready in {time.perf_counter() - started:.1f} s", flush=True)
    runnable = [m for m in methods if not (m == "sklearn_single" and n > SKLEARN_MAX_N)
                and not (m == "biodivx" and n > BIODIVX_MAX_N)]
    wanted = {m: (baseline_repeats or repeats) if m in BASELINES else repeats for m in runnable}
    runs = {m: [] for m in runnable}
    failed = {}
    for repeat in range(max(wanted.values(), default=0)):
        for method in runnable:
            if repeat >= wanted[method] or method in failed:
                continue
            out = work / f"labels_{method}_{n}.npy"
            result = subprocess.run([sys.executable, __file__, "--worker", method, "--data", str(data),
                                     "--threshold", str(threshold), "--out", str(out), "--device", device],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                failed[method] = result.stderr.strip().splitlines()[-12:]
                print(f"  N={n} {method} FAILED:\n    " + "\n    ".join(failed[method]), flush=True)
                continue
            runs[method].append(json.loads(result.stdout.strip().splitlines()[-1]))
            last = runs[method][-1]
            gpu = last.get("peak_gpu_allocated_mb", last.get("peak_gpu_used_mb_nvml"))
            print(f"  N={n} repeat {repeat + 1}/{wanted[method]} {method:18s} {last['seconds']:8.2f} s "
                  f"peak RSS {last['peak_rss_mb']:8.0f} MB" + (f", GPU {gpu:8.0f} MB" if gpu is not None else ""),
                  flush=True)
    runnable = [m for m in runnable if runs[m]]
    labels = {m: singletons_apart(np.load(work / f"labels_{m}_{n}.npy")) for m in runnable}
    reference_method = next((m for m in ("faiss", "torch_bruteforce", "ours_engine") if m in labels), runnable[0])
    reference = labels[reference_method]
    summary = {}
    from sklearn.metrics import adjusted_rand_score

    for method in runnable:
        median = statistics.median(r["seconds"] for r in runs[method])
        entry = {"median_seconds": round(median, 3), "runs_seconds": [round(r["seconds"], 3) for r in runs[method]],
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[method])}
        if "precision" in runs[method][0]:
            entry["tile_precision"] = runs[method][0]["precision"]
        if method == "faiss":
            entry["range_search_median_seconds"] = round(statistics.median(
                r["range_search_seconds"] for r in runs[method]), 3)
        middle = sorted(runs[method], key=lambda r: r["seconds"])[(len(runs[method]) - 1) // 2]
        for key in PER_RUN_KEYS:
            if key in middle:
                value = middle[key]
                entry[key] = round(value, 3) if isinstance(value, float) else value
        for key in ("peak_gpu_allocated_mb", "peak_gpu_used_mb_nvml"):
            if key in middle:
                entry[key] = max(r[key] for r in runs[method])
        entry["identical_to_reference"] = same_partition(labels[method], reference)
        if not entry["identical_to_reference"]:
            entry["difference"] = rounding_evidence(np.load(data, mmap_mode="r"), reference, labels[method],
                                                    threshold)
        entry["ari_vs_reference"] = round(float(adjusted_rand_score(reference, labels[method])), 6)
        entry["reference_clusters_split"] = clusters_split(reference, labels[method])
        summary[method] = entry
    ratios = {}
    if "faiss" in summary:
        bare = summary["faiss"]["range_search_median_seconds"]
        for method in runnable:
            if method.startswith("ours"):
                ratios[f"{method}_vs_faiss_range_search"] = round(summary[method]["median_seconds"] / bare, 4)
    if "torch_bruteforce" in summary:
        for method in runnable:
            if method.startswith("ours"):
                ratios[f"{method}_vs_torch_bruteforce"] = round(
                    summary[method]["median_seconds"] / summary["torch_bruteforce"]["median_seconds"], 4)
    if "sklearn_single" in summary:
        for method in ("ours_cli", "ours_engine"):
            if method in summary:
                ratios[f"sklearn_single_vs_{method}_speedup"] = round(
                    summary["sklearn_single"]["median_seconds"] / summary[method]["median_seconds"], 2)
    if "biodivx" in summary and "ours_cli" in summary:
        ratios["biodivx_vs_ours_cli_speedup"] = round(summary["biodivx"]["median_seconds"]
                                                      / summary["ours_cli"]["median_seconds"], 2)
    ref_sizes = np.bincount(reference)
    result = {"n": n, "d": d, "threshold": threshold, "device": device, "repeats": repeats,
              "baseline_repeats": baseline_repeats or repeats, "true_groups": int(truth.max() + 1),
              "reference_method": reference_method, "reference_clusters": int((ref_sizes >= 2).sum()),
              "methods": summary, "ratios": ratios}
    if failed:
        result["failed"] = failed
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline_repeats", type=int, default=0,
                        help="repeats of faiss, torch_bruteforce, sklearn_single, biodivx (default: --repeats)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--device", default="cpu", help="where ours_* build the graph: cpu (default) or cuda:N")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "clustering.json"))
    parser.add_argument("--note", help="free text recorded in the results (e.g. which baselines could not run)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_method(args.worker, Path(args.data), args.threshold, Path(args.out), args.device)))
        return 0
    results = {"benchmark": "clustering", "date": time.strftime("%Y-%m-%d"), "machine": None,
               "versions": bench_machine.versions(
                   ("torch", "numpy", "scipy", "scikit-learn", "numba", "faiss-cpu", "faiss-gpu-cu12")), "sizes": []}
    if args.note:
        results["note"] = args.note
    with tempfile.TemporaryDirectory(prefix="bench-clustering-") as work:
        for n in args.sizes:
            print(f"N={n}, d={args.dim}, threshold {args.threshold}", flush=True)
            results["sizes"].append(bench_size(n, args.dim, args.threshold, args.repeats, args.methods, Path(work),
                                              args.device, args.baseline_repeats))
            print(json.dumps(results["sizes"][-1]["ratios"], indent=1), flush=True)
    results["machine"] = machine()   # after the runs: on a GPU machine it opens a CUDA context
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
