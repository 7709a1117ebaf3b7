#!/usr/bin/env python3
"""Benchmark: exact cosine-threshold clustering against the baselines, side by side in one run.

    .venv/bin/python bench/clustering.py                       # N = 2e4 and 1e5, d = 384, t = 0.9, 3 repeats
    .venv/bin/python bench/clustering.py --sizes 1000000 --dim 768 --methods ours_engine ours_cli --device cuda:0 \
        --output bench/results/clustering_gpu.json                                         # on a GPU machine

Synthetic unit vectors in groups of known membership (group sizes 1..200, each group's spread drawn so that some
groups stay whole at the threshold and some fall apart) are clustered by:
  ours_cli          the whole `cluster.py --embeddings FILE -th T --no_report` run (process start, imports, load,
                    cluster, write clusters.csv/embeddings.pkl/run.json); the HTML report is off by default above
                    20 000 rows anyway, and it is not part of clustering
  ours_engine       spanning_forest + partition_at in-process (tile precision chosen automatically: bf16 on CPUs
                    with AVX512-BF16/AMX, float32 elsewhere)
  ours_engine_fp32  the same with float32 tiles, what a CPU without native bf16 gets
  faiss             faiss IndexFlatIP.range_search at the same threshold (the bare search is the time compared),
                    then scipy connected_components: the reference partition
  sklearn_single    AgglomerativeClustering(linkage="single", metric="cosine", distance_threshold=1-t) (N <= 30 000)
  biodivx           the BiodivX approach re-implemented: dense cosine matrix per 10 000-row chunk, transitive closure
                    by repeated boolean matrix squaring, chunks clustered independently (N <= 20 000 by default)
Each method runs in its own process (peak RSS is its own), repeats are interleaved so that machine noise hits every
method alike, and the medians, ratios and partition agreement go to bench/results/clustering.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ["ours_cli", "ours_engine", "ours_engine_fp32", "faiss", "sklearn_single", "biodivx"]
SKLEARN_MAX_N = 30_000
BIODIVX_MAX_N = 20_000
BIODIVX_CHUNK = 10_000


def synthetic_groups(n: int, d: int, threshold: float, seed: int):
    """(vectors float32 (n, d) L2-normalised, group id int64 (n,)) in shuffled order.

    Group sizes are drawn from a Zipf-like law (1..200). Members are centre + Gaussian noise whose scale gives an
    expected within-group cosine of threshold + U(-0.04, 0.06), so groups straddle the threshold.
    """
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(200, rng.zipf(1.6))))
    sizes[-1] -= sum(sizes) - n
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


def run_method(method: str, data: Path, threshold: float, out: Path, device: str = "cpu") -> dict:
    """Run one method on the vectors in `data` (.npy; the .pkl beside it for the CLI); labels saved to `out`.
    device: where `ours_*` build the graph ('cpu' or 'cuda:N')."""
    x = np.load(data)
    timings = {}
    if method == "ours_cli":
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "cluster.py"), "--embeddings", str(data.with_suffix(".pkl")),
                        "-o", str(out.parent / "cli_out"), "-th", str(threshold), "-d", device, "--no_report", "-q"],
                       check=True)
        timings["seconds"] = time.perf_counter() - start
        import pandas as pd

        labels = pd.read_csv(out.parent / "cli_out" / "clusters.csv", usecols=["cluster"])["cluster"].to_numpy()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    else:
        # imports and one-off warm-ups (numba's cached kernels) happen before the clock starts, for every method
        import faiss
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components
        from sklearn.cluster import AgglomerativeClustering

        from clustering.forest import partition_at, spanning_forest

        precision = "float32" if method.endswith("fp32") else "auto"
        if method.startswith("ours_engine"):
            from clustering.graph import plan_graph

            spanning_forest(x[:256], threshold, device, "float32")
            spanning_forest(x[:256], threshold, device, "bfloat16" if device == "cpu" else "float16")
            timings["precision"] = plan_graph(*x.shape, device, precision).precision
        start = time.perf_counter()
        if method.startswith("ours_engine"):
            labels = partition_at(spanning_forest(x, threshold, device, precision), threshold)
            if device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
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


def clusters_split(reference: np.ndarray, labels: np.ndarray) -> int:
    """Reference clusters (>= 2 members) whose members are spread over more than one group of `labels`."""
    split = 0
    for members in np.split(np.argsort(reference, kind="stable"),
                            np.flatnonzero(np.diff(np.sort(reference))) + 1):
        if members.size >= 2 and np.unique(labels[members]).size > 1:
            split += 1
    return split


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    import torch

    from clustering.graph import cpu_has_fast_bf16

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": len(os.sched_getaffinity(0)), "cpu": cpu, "cpu_native_bf16": cpu_has_fast_bf16(), "gpu": gpu,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def versions() -> dict:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("torch", "numpy", "scipy", "scikit-learn", "numba", "faiss-cpu", "faiss-gpu-cu12"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def bench_size(n: int, d: int, threshold: float, repeats: int, methods, work: Path, device: str = "cpu") -> dict:
    from outputs.embeddings import write_embeddings

    x, truth = synthetic_groups(n, d, threshold, seed=n)
    data = work / f"vectors_{n}.npy"
    np.save(data, x)
    write_embeddings(str(data.with_suffix(".pkl")), [f"synthetic/{i:07d}.png" for i in range(n)], x, "bench:synthetic")
    del x
    runnable = [m for m in methods if not (m == "sklearn_single" and n > SKLEARN_MAX_N)
                and not (m == "biodivx" and n > BIODIVX_MAX_N)]
    runs = {m: [] for m in runnable}
    for repeat in range(repeats):
        for method in runnable:
            out = work / f"labels_{method}_{n}.npy"
            result = subprocess.run([sys.executable, __file__, "--worker", method, "--data", str(data),
                                     "--threshold", str(threshold), "--out", str(out), "--device", device],
                                    check=True, capture_output=True, text=True)
            runs[method].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  N={n} repeat {repeat + 1}/{repeats} {method:18s} {runs[method][-1]['seconds']:8.2f} s "
                  f"peak {runs[method][-1]['peak_rss_mb']:8.0f} MB", flush=True)
    labels = {m: singletons_apart(np.load(work / f"labels_{m}_{n}.npy")) for m in runnable}
    reference = labels.get("faiss", labels.get("ours_engine"))
    summary = {}
    for method in runnable:
        median = statistics.median(r["seconds"] for r in runs[method])
        entry = {"median_seconds": round(median, 3), "runs_seconds": [round(r["seconds"], 3) for r in runs[method]],
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[method])}
        if "precision" in runs[method][0]:
            entry["tile_precision"] = runs[method][0]["precision"]
        if method == "faiss":
            entry["range_search_median_seconds"] = round(statistics.median(
                r["range_search_seconds"] for r in runs[method]), 3)
        from sklearn.metrics import adjusted_rand_score

        entry["identical_to_reference"] = same_partition(labels[method], reference)
        entry["ari_vs_reference"] = round(float(adjusted_rand_score(reference, labels[method])), 6)
        entry["reference_clusters_split"] = clusters_split(reference, labels[method])
        summary[method] = entry
    ratios = {}
    if "faiss" in summary:
        bare = summary["faiss"]["range_search_median_seconds"]
        for method in runnable:
            if method.startswith("ours"):
                ratios[f"{method}_vs_faiss_range_search"] = round(summary[method]["median_seconds"] / bare, 4)
    if "sklearn_single" in summary:
        for method in ("ours_cli", "ours_engine"):
            if method in summary:
                ratios[f"sklearn_single_vs_{method}_speedup"] = round(
                    summary["sklearn_single"]["median_seconds"] / summary[method]["median_seconds"], 2)
    if "biodivx" in summary and "ours_cli" in summary:
        ratios["biodivx_vs_ours_cli_speedup"] = round(summary["biodivx"]["median_seconds"]
                                                      / summary["ours_cli"]["median_seconds"], 2)
    ref_sizes = np.bincount(reference)
    return {"n": n, "d": d, "threshold": threshold, "device": device, "repeats": repeats,
            "true_groups": int(truth.max() + 1),
            "reference_clusters": int((ref_sizes >= 2).sum()), "methods": summary, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--device", default="cpu", help="where ours_* build the graph: cpu (default) or cuda:N")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "clustering.json"))
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_method(args.worker, Path(args.data), args.threshold, Path(args.out), args.device)))
        return 0
    results = {"benchmark": "clustering", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
               "versions": versions(), "sizes": []}
    with tempfile.TemporaryDirectory(prefix="bench-clustering-") as work:
        for n in args.sizes:
            print(f"N={n}, d={args.dim}, threshold {args.threshold}", flush=True)
            results["sizes"].append(bench_size(n, args.dim, args.threshold, args.repeats, args.methods, Path(work),
                                              args.device))
            print(json.dumps(results["sizes"][-1]["ratios"], indent=1), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
