"""Where the whole CLI's time goes at large N from saved embeddings, beside the graph: loading, individuals,
clustering, silhouette, writing. `cluster.py --embeddings X.pkl -o OUT -th T --no_report` runs in this process
under cProfile.

    flock /tmp/bench.lock .venv/bin/python bench/cli_stages.py [--n 200000 1000000] [--d 768] [--graph oracle]

--graph oracle (the default on a CPU): the synthetic groups of bench/clustering.py lie far apart (cosine between
different centres ~ N(0, 1/d), < 0.3 at d = 768 for every pair of 10^12), so every edge at T = 0.9 joins two members
of one group, and the exact spanning forest is computed group by group (sum of size^2 * d products instead of
N^2 * d); the stages after the graph then see the very forest the full graph gives, and a 2-core CPU profiles them
at 10^6 in minutes. --graph exact: the real graph on --device (what bench/gpu_all.py runs on a GPU).
Writes bench/results/cli_stages.json: per N the stage seconds from run.json (median of --repeats runs), the wall
time, the peak RSS, the top functions by cumulative time, and a digest of clusters.csv (outputs compared across code
versions).
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib.util
import io
import json
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]


def _bench_clustering():
    """bench/clustering.py as a module (its name clashes with the clustering package)."""
    spec = importlib.util.spec_from_file_location("bench_clustering", REPO / "bench" / "clustering.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def oracle_forest(groups: np.ndarray):
    """A drop-in for clustering.forest.spanning_forest that builds the exact forest group by group (see above)."""
    from crop_cluster.clustering.forest import forest_from_edges

    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    members_of = np.split(order, bounds)

    def spanning_forest(embeddings, threshold, device="cpu", precision="auto", max_pending=0, stats=None):
        if embeddings.shape[0] != groups.size:
            raise SystemExit("oracle graph: the run dropped rows; use --graph exact")

        def blocks():
            for members in members_of:
                if members.size < 2:
                    continue
                members = np.sort(members)
                sims = embeddings[members] @ embeddings[members].T
                i, j = np.nonzero(np.triu(sims >= threshold, 1))
                if i.size:
                    yield members[i].astype(np.int64), members[j].astype(np.int64), sims[i, j].astype(np.float32)

        if stats is not None:
            stats.update(device="oracle (group by group)", precision="float32")
        return forest_from_edges(embeddings.shape[0], blocks(), threshold, max_pending)

    return spanning_forest


def _forest_modules() -> list:
    """The modules whose `spanning_forest` the CLI calls (engines.forest looks it up there at each call)."""
    import crop_cluster.clustering.forest as forest

    return [forest]


def run_cli(pkl: Path, out: Path, threshold: float, device: str, profile: bool) -> Dict:
    """One in-process CLI run; returns wall seconds, run.json's stage timings and (with profile) the top functions."""
    from crop_cluster.cli import main as cli_main

    shutil.rmtree(out, ignore_errors=True)
    argv = ["--embeddings", str(pkl), "-o", str(out), "-th", str(threshold), "-d", device, "--no_report", "-q"]
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    code = cli_main(argv)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - started
    if code not in (0, None):
        raise SystemExit(f"cluster.py exited {code}")
    manifest = json.loads((out / "run.json").read_text())
    result = {"wall_s": round(wall, 2), "stages_s": manifest["timings_s"],
              "clusters_csv_blake2b": hashlib.blake2b((out / "clusters.csv").read_bytes(), digest_size=16).hexdigest(),
              "clusters": manifest["counts"]["clusters"]}
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        result["profile_top"] = [line for line in text.getvalue().splitlines() if line.strip()][:45]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--graph", choices=["oracle", "exact"], default="oracle")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the last run of each N")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cli_stages.json")
    args = parser.parse_args(argv)

    import machine
    from crop_cluster.outputs.embeddings import write_embeddings

    synthetic_groups = _bench_clustering().synthetic_groups
    modules = _forest_modules()
    originals = [module.spanning_forest for module in modules]
    results = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-cli-stages-"))
    try:
        for n in args.n:
            started = time.perf_counter()
            x, groups = synthetic_groups(n, args.d, args.threshold, seed=n)
            pkl = scratch / f"embeddings_{n}.pkl"
            write_embeddings(str(pkl), [f"synthetic/{i:07d}.png" for i in range(n)], x, "bench:synthetic")
            del x
            made = round(time.perf_counter() - started, 1)
            if args.graph == "oracle":
                for module in modules:
                    module.spanning_forest = oracle_forest(groups)
            runs = [run_cli(pkl, scratch / "out", args.threshold, args.device,
                            args.profile and repeat == args.repeats - 1) for repeat in range(args.repeats)]
            for module, original in zip(modules, originals):
                module.spanning_forest = original
            stages = {name: statistics.median(run["stages_s"].get(name, 0.0) for run in runs)
                      for name in runs[0]["stages_s"]}
            results[str(n)] = {"n": n, "d": args.d, "data_made_s": made,
                               "wall_s_median": statistics.median(run["wall_s"] for run in runs),
                               "wall_s_all": [run["wall_s"] for run in runs], "stages_s_median": stages,
                               "clusters": runs[0]["clusters"],
                               "clusters_csv_blake2b": sorted({run["clusters_csv_blake2b"] for run in runs}),
                               "profile_top": runs[-1].get("profile_top")}
            pkl.unlink()
            print(f"n={n}: wall {results[str(n)]['wall_s_median']} s; stages {stages}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    document = {"machine": machine.machine(args.device), "versions": machine.versions(["numpy", "pandas", "torch"]),
                "graph": args.graph, "threshold": args.threshold, "repeats": args.repeats,
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
