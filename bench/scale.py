#!/usr/bin/env python3
"""Benchmark: the Ray engine against the local engine, and Ray from one worker to two, for the graph and embedding.

    .venv/bin/python bench/scale.py                 # N = 1e5, d = 384, t = 0.9; 300 crops for embedding; 3 repeats

Ray opens sockets, so the script re-runs itself inside a fresh network namespace with only loopback up
(`unshare -n`, then `ip link set lo up`) unless it is already in one; no traffic leaves 127.0.0.1.

Graph (the similarity graph's spanning forest of N saved embeddings, engines.forest), each figure a median over
`--repeats` runs, every run in its own process, the runs of all configurations interleaved:
  local_1       the local engine confined to one core (CPU affinity, OMP/OpenBLAS/numba threads = 1)
  ray_1         --engine ray on a local Ray with num_cpus=1 (one unit task at a time, one thread), the whole Ray
                (driver, GCS, raylet, worker) confined to the same one core
  ray_2         the same with num_cpus=2: two unit tasks at once
  local_2       the local engine on both cores (what `--engine local` does here), for reference
  overhead_ray_1_vs_local_1 = ray_1 / local_1 - 1 (target <= 0.15); speedup_ray_2_vs_ray_1 = ray_1 / ray_2
  (target >= 1.6). Ray's start-up (ray.init) is timed apart (`ray_init_s`): a cluster is started once per run, or
  once for many runs with `ray start`.
Embedding (lite0, bundled, on the CPU; the whole engines.embed call into an empty cache, model loading included):
  local         the local engine as the CLI runs it on this machine
  ray_1 / ray_2 one / two embedding actors (Ray num_cpus 2 / 4: each actor holds a CPU, CPU decode tasks the rest)
Writes bench/results/scale.json (or --output) with the machine, versions and every run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GRAPH_MODES = ("local_1", "ray_1", "ray_2", "local_2")
EMBED_MODES = ("local", "ray_1", "ray_2")
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "NUMBA_NUM_THREADS")}


def loopback_only() -> bool:
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def grouped(n: int, d: int, threshold: float, seed: int = 0) -> np.ndarray:
    """float32 (n, d) unit rows in groups of 1..200 whose members sit near cosine `threshold` of each other."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.zipf(1.6, size=n), 200)
    groups = np.repeat(np.arange(n), sizes)[:n]
    centres = rng.normal(size=(n, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cosine = np.clip(threshold + rng.uniform(-0.04, 0.06, size=n), 0.5, 0.995)
    sigma = np.sqrt((1.0 / cosine - 1.0) / d).astype(np.float32)
    x = centres[groups] + sigma[groups, None] * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[rng.permutation(n)]


def draw_crops(folder: Path, count: int, seed: int = 0) -> list:
    """`count` JPEG crops 60-200 px: ellipses of random colours on white, some noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        width, height = (int(v) for v in rng.integers(60, 200, size=2))
        image = Image.new("RGB", (width, height), (255, 255, 255))
        ImageDraw.Draw(image).ellipse([4, 4, width - 5, height - 5], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        noise = rng.integers(-20, 21, size=(height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = folder / f"crop_{k:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# One measurement per process

def child_graph(mode: str, data: str, threshold: float, work: str) -> dict:
    from crop_cluster.engines import Engine, forest

    x = np.load(data)
    warm = x[:4000]
    result: dict = {}
    if mode.startswith("ray"):
        import ray

        started = time.perf_counter()
        ray.init(address="local", num_cpus=int(mode[-1]), include_dashboard=False, log_to_driver=False)
        result["ray_init_s"] = round(time.perf_counter() - started, 3)
        engine = Engine("ray", None, os.path.join(work, "warm"))
        forest(engine, warm, threshold)
        engine = Engine("ray", None, os.path.join(work, "timed"))
    else:
        engine = Engine("local")
        forest(engine, warm, threshold)
    stats: dict = {}
    started = time.perf_counter()
    found = forest(engine, x, threshold, stats=stats)
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["forest_edges"] = int(found.sims.size)
    result["units"] = stats.get("units")
    from crop_cluster.clustering.forest import partition_at

    labels = partition_at(found, threshold)
    result["clusters"] = int(np.unique(labels).size)
    return result


def child_embed(mode: str, images: str, work: str) -> dict:
    from crop_cluster.embed.cache import EmbeddingCache
    from crop_cluster.engines import Engine, embed
    from crop_cluster.engines.ray_engine import ray_embed

    files = json.loads(Path(images).read_text())
    digests = [f"{k:032x}" for k in range(len(files))]
    result: dict = {}
    if mode.startswith("ray"):
        import ray

        actors = int(mode[-1])
        started = time.perf_counter()
        ray.init(address="local", num_cpus=2 * actors, include_dashboard=False, log_to_driver=False)
        result["ray_init_s"] = round(time.perf_counter() - started, 3)
        engine = Engine("ray", None, os.path.join(work, "shared"))
        run = lambda cache, names, keys: ray_embed(engine, cache, names, keys, "lite0", None, "cpu",  # noqa: E731
                                                   progress=False, actors=actors, shard_images=64)
    else:
        run = lambda cache, names, keys: embed(Engine("local"), cache, names, keys, "lite0", None, "cpu",  # noqa: E731
                                               progress=False)
    run(EmbeddingCache(os.path.join(work, "warm"), "lite0", "bundled"), files[:16], digests[:16])
    started = time.perf_counter()
    cached = run(EmbeddingCache(os.path.join(work, "timed"), "lite0", "bundled"), files, digests)
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["images_per_s"] = round(len(files) / result["seconds"], 1)
    result["computed"] = cached.computed
    result["vectors"] = str(Path(work) / "vectors.npy")
    np.save(result["vectors"], cached.result.embeddings)
    return result


def measure(kind: str, mode: str, args, data: str) -> dict:
    """Run one measurement in a fresh process; the graph's one-worker modes are pinned to core 0 (local_1 with one
    thread everywhere; ray_1's driver, Ray's own processes and its one worker inherit the pinning)."""
    work = tempfile.mkdtemp(prefix=f"scale-{kind}-{mode}-", dir=args.work)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    if mode == "local_1":
        env.update(ONE_THREAD)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, mode, data, work,
               "--threshold", str(args.threshold)]
    pin = ["taskset", "-c", "0"] if mode.endswith("_1") and kind == "graph" and shutil.which("taskset") else []
    load = os.getloadavg()[0]
    done = subprocess.run(pin + command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/scale.py: {kind} {mode} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_average_before": round(load, 2),
            "load_average_after": round(os.getloadavg()[0], 2)}


def summary(runs: dict) -> dict:
    return {mode: {"median_seconds": statistics.median(r["seconds"] for r in found), "runs": found}
            for mode, found in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["graph", "embed"],
                        help="leave out a part (its section of an existing --output is kept)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "scale.json"))
    parser.add_argument("--child", nargs=4, metavar=("KIND", "MODE", "DATA", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, mode, data, work = args.child
        result = child_graph(mode, data, args.threshold, work) if kind == "graph" else child_embed(mode, data, work)
        print(json.dumps(result))
        return 0
    if not loopback_only():
        if shutil.which("unshare") is None or shutil.which("ip") is None:
            raise SystemExit("bench/scale.py runs Ray inside a private network namespace: it needs unshare and ip "
                             "(apt-get install util-linux iproute2) and permission to use them (root)")
        return subprocess.call(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
                                *sys.argv])
    sys.path.insert(0, str(REPO / "bench"))
    from machine import machine, versions

    owned = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="scale-")
    os.environ.setdefault("CROP_CLUSTER_CACHE", os.path.join(args.work, "user-cache"))
    earlier = json.loads(Path(args.output).read_text()) if args.skip and Path(args.output).exists() else {}
    report = {**earlier, "benchmark": "scale", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "versions": versions(["ray", "numpy", "numba", "torch", "onnxruntime"]),
              "network": "inside unshare -n, loopback only"}
    if "graph" not in args.skip:
        data = os.path.join(args.work, "x.npy")
        np.save(data, grouped(args.n, args.dim, args.threshold))
        runs = {mode: [] for mode in GRAPH_MODES}
        for repeat in range(args.repeats):
            for mode in GRAPH_MODES:
                runs[mode].append(measure("graph", mode, args, data))
                print(f"graph {mode} run {repeat + 1}: {runs[mode][-1]['seconds']:.2f} s", flush=True)
        graph = summary(runs)
        seconds = {mode: graph[mode]["median_seconds"] for mode in GRAPH_MODES}
        same = len({(r["forest_edges"], r["clusters"]) for found in runs.values() for r in found}) == 1
        report["graph"] = {"n": args.n, "d": args.dim, "threshold": args.threshold, "repeats": args.repeats,
                           "machine_two_core_speedup_local_1_vs_local_2": round(seconds["local_1"] /
                                                                                seconds["local_2"], 3),
                           "modes": graph, "same_forest_size_and_clusters": same, "ratios": {
                               "overhead_ray_1_vs_local_1": round(seconds["ray_1"] / seconds["local_1"] - 1, 3),
                               "speedup_ray_2_vs_ray_1": round(seconds["ray_1"] / seconds["ray_2"], 3),
                               "local_2_vs_ray_2": round(seconds["local_2"] / seconds["ray_2"], 3)}}
        print(json.dumps(report["graph"]["ratios"]), flush=True)
    if "embed" not in args.skip:
        images = os.path.join(args.work, "images.json")
        Path(images).write_text(json.dumps(draw_crops(Path(args.work) / "crops", args.images)))
        runs = {mode: [] for mode in EMBED_MODES}
        for repeat in range(args.repeats):
            for mode in EMBED_MODES:
                runs[mode].append(measure("embed", mode, args, images))
                print(f"embed {mode} run {repeat + 1}: {runs[mode][-1]['seconds']:.2f} s", flush=True)
        reference = np.load(runs["local"][0]["vectors"])
        cosines = [float(np.min(np.sum(np.load(r["vectors"]) * reference, axis=1)))
                   for found in runs.values() for r in found]
        for found in runs.values():
            for r in found:
                del r["vectors"]
        embed = summary(runs)
        seconds = {mode: embed[mode]["median_seconds"] for mode in EMBED_MODES}
        report["embed"] = {"images": args.images, "model": "lite0 (bundled), CPU", "repeats": args.repeats,
                           "modes": embed, "min_cosine_vs_local": round(min(cosines), 6), "ratios": {
                               "overhead_ray_1_vs_local": round(seconds["ray_1"] / seconds["local"] - 1, 3),
                               "speedup_ray_2_vs_ray_1": round(seconds["ray_1"] / seconds["ray_2"], 3)}}
        print(json.dumps(report["embed"]["ratios"]), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")
    if owned:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
