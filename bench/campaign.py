"""Cost of `--add`: adding a night of 10^4 crops to a campaign of 10^5 against a full re-run of 1.1 * 10^5.

    .venv/bin/python bench/campaign.py [--old 100000] [--new 10000] [--dim 384] [--repeats 3]

Synthetic saved embeddings (no images: the embedding itself is the same work in both, and `--add` embeds only the
new crops): species clusters of unit vectors (members at cosine ~0.85 to each other) plus lone crops, d = --dim.
The new night draws 70 % of its crops from the campaign's species, 5 % from new ones, 25 % lone crops.

Both sides run the library stages the pipeline runs, on the same machine in one process, alternating:
- full:  embedding-cache lookup of 1.1e5 contents, the spanning forest and `-c cosine` clustering of all of them,
         then the campaign step (decisions, stable ids by maximum overlap) and the store commit;
- add:   the store read, the cache lookup of the campaign's 1e5 contents, campaign/add.py (new crops against the
         campaign's clusters with the centroid bound, the rest clustered among themselves), the campaign step and
         the store commit.
Linking into individuals is left out of both (the synthetic crops carry no timestamps). Writes
bench/results/campaign.json: the machine, versions, N, d, medians of the repeats, the ratio add / full (target <=
0.10), and the store's size per 10^5 crops.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Tuple

REPO = Path(__file__).resolve().parents[1]
for folder in (str(REPO), str(REPO / "bench")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402

import machine as bench_machine  # noqa: E402

THRESHOLD = 0.8
SPREAD = 0.037          # member noise per dimension x sqrt(128 / d): member-member cosine ~0.85 at any d


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n_old: int, n_new: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(old (n_old, d), new (n_new, d)) float32 unit rows."""
    rng = np.random.default_rng(seed)
    spread = SPREAD * np.sqrt(128 / dim)
    species = unit(rng.normal(size=(n_old // 25 + n_new // 20, dim)))
    known = int(0.7 * n_old) // 25                   # clusters of 25 crops on average in the campaign

    def crops(count: int, centres: np.ndarray) -> np.ndarray:
        return unit(centres[rng.integers(0, len(centres), count)] + spread * rng.normal(size=(count, dim)))

    old = np.concatenate([crops(int(0.7 * n_old), species[:known]), unit(rng.normal(size=(n_old - int(0.7 * n_old),
                                                                                              dim)))])
    new = np.concatenate([crops(int(0.7 * n_new), species[:known]), crops(int(0.05 * n_new), species[known:]),
                          unit(rng.normal(size=(n_new - int(0.75 * n_new), dim)))])
    return old, new


def digests(prefix: str, n: int):
    return [f"{prefix}{k:030d}" for k in range(n)]


def write_cache(folder: str, keys, vectors) -> None:
    from crop_cluster.embed.cache import EmbeddingCache

    EmbeddingCache(folder, "lite0", "synthetic-bench-model").write(keys, vectors, [])


def cluster_all(vectors: np.ndarray) -> np.ndarray:
    """The full run's clustering: the forest and `-c cosine`, numbered by size (int64 labels per crop)."""
    from crop_cluster.clustering import ClusterParams
    from crop_cluster.clustering.components import number_clusters
    from crop_cluster.clustering.cosine import cluster_cosine
    from crop_cluster.clustering.forest import spanning_forest

    forest = spanning_forest(vectors, THRESHOLD)
    groups = cluster_cosine(vectors, ClusterParams(threshold=THRESHOLD), forest=forest).groups
    return number_clusters(groups, [""] * len(groups))


def settle_and_commit(session, keys, vectors: np.ndarray, label: np.ndarray, mode: str, seen=None) -> None:
    n = len(keys)
    settled = session.settle([f"/night/{k}.png" for k in keys], keys, np.arange(n), np.ones(n, dtype=bool), label,
                             vectors, np.full(n, np.nan), seen=seen)
    session.commit(settled, mode, {"threshold": THRESHOLD}, {}, {"rows": n})


def lookup(folder: str, keys) -> np.ndarray:
    from crop_cluster.embed.cache import EmbeddingCache

    found = EmbeddingCache(folder, "lite0", "synthetic-bench-model").lookup(keys)
    assert found.found.all()
    return found.vectors


def full_run(base: str, work: str, keys) -> Dict[str, float]:
    """Seconds of each step of a full re-run (and `total`)."""
    from crop_cluster.campaign.run import CampaignSession

    shutil.copytree(base, work)
    steps: Dict[str, float] = {}
    start = time.perf_counter()
    with CampaignSession(work) as session:
        mark = time.perf_counter()
        steps["store_read"] = mark - start
        vectors = lookup(os.path.join(work, "cache"), keys)
        steps["cache_lookup"], mark = time.perf_counter() - mark, time.perf_counter()
        label = cluster_all(vectors)
        steps["similarity_and_clustering"], mark = time.perf_counter() - mark, time.perf_counter()
        settle_and_commit(session, keys, vectors, label, "full")
        steps["decisions_ids_commit"] = time.perf_counter() - mark
    steps["total"] = time.perf_counter() - start
    return steps


def add_run(base: str, work: str, new_keys, new: np.ndarray) -> Tuple[Dict[str, float], Dict]:
    """As the pipeline's --add: the session reads the stored crops, their vectors come from the cache. Returns the
    seconds of each step (and `total`) and campaign/add.py's counts."""
    from crop_cluster.campaign.add import add_to_campaign
    from crop_cluster.campaign.run import CampaignSession

    shutil.copytree(base, work)
    steps: Dict[str, float] = {}
    start = time.perf_counter()
    with CampaignSession(work) as session:
        mark = time.perf_counter()
        steps["store_read"] = mark - start
        stored = session.stored_crops
        old = lookup(os.path.join(work, "cache"), stored["digest"].tolist())
        steps["cache_lookup"], mark = time.perf_counter() - mark, time.perf_counter()
        result = add_to_campaign(old, np.arange(len(stored)), stored["cluster"].to_numpy(np.int64), new,
                                 np.arange(len(new)), THRESHOLD, THRESHOLD, set())
        steps["similarity_and_clustering"], mark = time.perf_counter() - mark, time.perf_counter()
        keys = stored["digest"].tolist() + list(new_keys)
        seen = np.arange(len(keys)) >= len(stored)
        settle_and_commit(session, keys, np.concatenate([old, new]), result.label, "add", seen)
        steps["decisions_ids_commit"] = time.perf_counter() - mark
    steps["total"] = time.perf_counter() - start
    return steps, result.counts


def medians(runs) -> Dict[str, float]:
    return {step: round(statistics.median(run[step] for run in runs), 3) for step in runs[0]}


def store_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
               if name.startswith("campaign.sqlite"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "campaign.json"))
    args = parser.parse_args(argv)
    old, new = synthetic(args.old, args.new, args.dim)
    old_keys, new_keys = digests("a", args.old), digests("b", args.new)
    cluster_all(old[:2000])                                           # compile the graph kernels once
    root = tempfile.mkdtemp(prefix="bench-campaign-")
    try:
        base = os.path.join(root, "base")                             # the campaign after its first 10^5 crops
        os.makedirs(base)
        write_cache(os.path.join(base, "cache"), old_keys + new_keys, np.concatenate([old, new]))
        from crop_cluster.campaign.run import CampaignSession

        started = time.perf_counter()
        with CampaignSession(base) as session:
            settle_and_commit(session, old_keys, old, cluster_all(old), "full")
        first_run = time.perf_counter() - started
        size = store_bytes(base)
        full, add, counts = [], [], {}
        for repeat in range(args.repeats):                            # alternating, side by side
            full.append(full_run(base, os.path.join(root, f"full{repeat}"), old_keys + new_keys))
            steps, counts = add_run(base, os.path.join(root, f"add{repeat}"), new_keys, new)
            add.append(steps)
            print(f"repeat {repeat}: full {full[-1]['total']:.2f} s, add {add[-1]['total']:.2f} s", flush=True)
        size_after = store_bytes(os.path.join(root, "add0"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    full_steps, add_steps = medians(full), medians(add)
    document = {
        "benchmark": "campaign --add vs full re-run",
        "machine": bench_machine.machine(),
        "versions": bench_machine.versions(["numpy", "scipy", "pandas", "torch", "numba"]),
        "N_old": args.old, "N_new": args.new, "dim": args.dim, "threshold": THRESHOLD, "repeats": args.repeats,
        "full_rerun_s": {"median": full_steps["total"], "steps_median": full_steps,
                         "runs": [round(run["total"], 3) for run in full]},
        "add_s": {"median": add_steps["total"], "steps_median": add_steps,
                  "runs": [round(run["total"], 3) for run in add]},
        "ratio_add_over_full": round(add_steps["total"] / full_steps["total"], 4),
        "ratio_similarity_work": round(add_steps["similarity_and_clustering"] /
                                       full_steps["similarity_and_clustering"], 4),
        "target_ratio": 0.10,
        "first_run_of_the_campaign_s": round(first_run, 3),
        "add_counts": counts,
        "store_bytes_after_1e5_crops": size, "store_mb_per_1e5_crops": round(size / args.old * 1e5 / 2**20, 2),
        "store_bytes_after_add": size_after,
        "notes": "saved (synthetic) embeddings on both sides; embedding, hashing and writing clusters.csv are left "
                 "out of both; individuals linking left out of both",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    print(f"full re-run {full_steps['total']:.2f} s, add {add_steps['total']:.2f} s: "
          f"ratio {document['ratio_add_over_full']:.3f} (target <= 0.10; similarity work alone "
          f"{document['ratio_similarity_work']:.3f}); store "
          f"{document['store_mb_per_1e5_crops']} MB per 1e5 crops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
