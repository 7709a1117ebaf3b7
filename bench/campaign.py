"""One campaign, one answer, and its cost: `--add` against a full re-run, and re-runs from what the campaign kept.

    .venv/bin/python bench/campaign.py [--old 100000] [--new 10000] [--dims 384 768] [--repeats 3]
                                       [--images 5000] [--parts add rerun]

Part `add` (saved synthetic embeddings, through the command line's `main` in this process, imports warm; both sides
side by side, alternating, medians of the repeats): a campaign of --old crops gets --new more with `--add`, against
a full re-run of all of them in a new folder that finds every embedding in the cache (a copy of the embedding
namespace, without the results the campaign kept). The crops are tiny distinct files (so both sides hash what a real
run hashes: the full re-run all of them, `--add` its inputs) whose embeddings were put into the cache beforehand
under the model `-e dino -fp synthetic-bench-d<dim>` (no weights are ever loaded): species clusters of unit vectors
(members at cosine ~0.85) plus lone crops; the new night draws 70 % from the campaign's species, 5 % from new ones,
25 % lone crops, plus 2 crops on the great circle between members of two clusters for 1 % of the clusters, which
bridge them (single linkage must merge them). Exactness: the `cluster` and `individual` partitions of both sides
are compared. Besides the ratio of the whole runs, `ratio_without_collect_hash_write` leaves out of both sides what
each pays per file it lists, hashes or writes (collect, hash, write: clusters.csv and embeddings.pkl of all the rows),
to compare the computation alone, as this bench did before `--add` became exact.

Part `rerun` (real images, lite0, the command line as a user runs it, one process per run): --images Fashion-MNIST
pictures (Debian's dataset-fashion-mnist, x3 on a black margin as PNG); the first run into a new folder (embedding
included), the same command again, and the same folder at another -th; medians of the repeats; ratio of each re-run
to the first run (targets: <= 0.05 both).

Writes bench/results/campaign.json: the machine, versions, N, d, the medians, the ratios against their targets.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

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
    """(old (n_old, d), new (n_new + bridges, d)) float32 unit rows; the new rows end with the bridging pairs."""
    rng = np.random.default_rng(seed)
    spread = SPREAD * np.sqrt(128 / dim)
    species = unit(rng.normal(size=(n_old // 25 + n_new // 20, dim)))
    known = int(0.7 * n_old) // 25                   # clusters of 25 crops on average in the campaign
    old_species = rng.integers(0, known, int(0.7 * n_old))

    def crops(which: np.ndarray, centres: np.ndarray) -> np.ndarray:
        return unit(centres[which] + spread * rng.normal(size=(len(which), dim)))

    old = np.concatenate([crops(old_species, species), unit(rng.normal(size=(n_old - int(0.7 * n_old), dim)))])
    new = [crops(rng.integers(0, known, int(0.7 * n_new)), species),
           crops(rng.integers(0, len(species) - known, int(0.05 * n_new)), species[known:]),
           unit(rng.normal(size=(n_new - int(0.75 * n_new), dim)))]
    bridges = []
    for _ in range(max(1, known // 100)):            # 1 % of the clusters: bridged to another one
        a, b = rng.choice(known, 2, replace=False)
        x, y = old[rng.choice(np.flatnonzero(old_species == a))], old[rng.choice(np.flatnonzero(old_species == b))]
        angle = np.arccos(np.clip(x @ y, -1, 1))
        for t in (1 / 3, 2 / 3):                     # on the great circle from x to y: 30 degrees apart
            bridges.append((np.sin((1 - t) * angle) * x + np.sin(t * angle) * y) / np.sin(angle))
    return old, np.concatenate(new + [unit(np.asarray(bridges))])


def write_files(folder: Path, count: int, prefix: str) -> List[str]:
    """`count` tiny files of distinct content (the campaign never decodes them: their embeddings are cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        path = folder / f"{prefix}{k:07d}.png"
        path.write_bytes(f"{prefix}{k}".encode())
        names.append(str(path))
    return names


def seed_cache(cache: str, model: str, files: List[str], vectors: np.ndarray) -> None:
    from crop_cluster.dedup.exact import file_digest
    from crop_cluster.embed.cache import EmbeddingCache

    EmbeddingCache(cache, "dino", model).write([file_digest(f) for f in files], vectors, [])


def listed(path: Path, files: List[str]) -> str:
    path.write_text("\n".join(files))
    return str(path)


def timed_main(args: List[str]) -> float:
    """Seconds of one run of the command line in this process; the disk's write-back of what earlier steps wrote
    is flushed first, so that no run pays for another's (both sides fsync their outputs)."""
    from crop_cluster.cli import main

    os.sync()
    started = time.perf_counter()
    code = main(args + ["-q", "--no_report"])
    if code:
        raise SystemExit(f"crop-cluster {' '.join(args)} exited {code}")
    return time.perf_counter() - started


def partitions(out: str) -> Dict[str, list]:
    import pandas as pd

    table = pd.read_csv(os.path.join(out, "clusters.csv"), usecols=["filename", "cluster", "individual"],
                        keep_default_na=False)
    result = {}
    for column in ("cluster", "individual"):
        groups: Dict = {}
        for name, value in zip(table["filename"], table[column]):
            groups.setdefault(("solo", name) if column == "cluster" and value == -1 else value, []).append(name)
        result[column] = sorted(sorted(group) for group in groups.values())
    return result


def add_part(root: Path, n_old: int, n_new: int, dim: int, repeats: int) -> Dict:
    model = f"synthetic-bench-d{dim}"
    old, new = synthetic(n_old, n_new, dim)
    old_files = write_files(root / "night1", n_old, "a")
    new_files = write_files(root / "night2", len(new), "b")
    base = root / "base"
    cache = str(base / "embed_cache")   # the campaign's own (OUT/embed_cache): each copy of base has its own
    seed_cache(cache, model, old_files + new_files, np.concatenate([old, new]))
    common = ["-e", "dino", "-fp", model, "-th", str(THRESHOLD)]
    old_list, new_list = listed(root / "old.txt", old_files), listed(root / "new.txt", new_files)
    all_list = listed(root / "all.txt", old_files + new_files)
    timed_main(["-i", listed(root / "warm.txt", old_files[:3000]), "-o", str(root / "warm"), "--cache_dir",
                cache, *common])                                    # compile the kernels, import everything
    shutil.rmtree(os.path.join(cache, "results"), ignore_errors=True)
    first = timed_main(["-i", old_list, "-o", str(base), *common])
    namespace = next(p for p in os.listdir(cache) if p.startswith("dino-"))
    full, add, counts, exact, full_stages, add_stages = [], [], {}, [], [], []
    for repeat in range(repeats):
        fresh = root / f"full-cache{repeat}"
        shutil.copytree(os.path.join(cache, namespace), fresh / namespace)     # embeddings only, no kept results
        out_full = root / f"full{repeat}"
        full.append(timed_main(["-i", all_list, "-o", str(out_full), "--cache_dir", str(fresh), *common]))
        full_stages.append(json.loads((out_full / "run.json").read_text())["timings_s"])
        out_add = root / f"add{repeat}"
        shutil.copytree(base, out_add)          # the campaign as it was, with its cache: nothing of an earlier add
        add.append(timed_main(["-i", new_list, "-o", str(out_add), "--add"]))
        manifest = json.loads((out_add / "run.json").read_text())
        assert manifest["graph"].get("grown") and not manifest["individuals"].get("kept"), manifest["graph"]
        add_stages.append(manifest["timings_s"])
        counts = {key: manifest["counts"][key] for key in ("new_crops", "joined", "new_clusters", "merged",
                                                           "conflicts", "embeddings_computed", "clusters")}
        counts["graph"] = {k: v for k, v in manifest["graph"].items() if not isinstance(v, dict)}
        exact.append(partitions(str(out_full)) == partitions(str(out_add)))
        print(f"d={dim} repeat {repeat}: full {full[-1]:.2f} s, add {add[-1]:.2f} s, identical {exact[-1]}",
              flush=True)
        shutil.rmtree(out_full)
        shutil.rmtree(fresh)
        if repeat:
            shutil.rmtree(out_add)
        else:
            shutil.rmtree(out_add / "embed_cache")
    def computing(stages: Dict) -> float:       # the run without what both sides do alike per row read or written
        return stages["total"] - sum(stages.get(name, 0.0) for name in ("collect", "hash", "write"))

    median_stages = lambda runs: {name: round(statistics.median(run.get(name, 0.0) for run in runs), 3)
                                  for name in runs[0]}
    return {"dim": dim, "N_old": n_old, "N_new": len(new), "bridging_crops": len(new) - n_new,
            "first_run_s": round(first, 3),
            "full_rerun_s": {"median": round(statistics.median(full), 3), "runs": [round(t, 3) for t in full],
                             "stages_median": median_stages(full_stages)},
            "add_s": {"median": round(statistics.median(add), 3), "runs": [round(t, 3) for t in add],
                      "stages_median": median_stages(add_stages)},
            "ratio_add_over_full": round(statistics.median(add) / statistics.median(full), 4), "target_ratio": 0.10,
            "ratio_without_collect_hash_write": round(statistics.median(map(computing, add_stages)) /
                                                      statistics.median(map(computing, full_stages)), 4),
            "identical_partitions": all(exact), "add_counts": counts}


def fmnist_files(folder: Path, count: int) -> List[str]:
    from PIL import Image

    from individual_sets import fmnist_images

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, pixels in enumerate(fmnist_images(count)):
        big = Image.fromarray(pixels, "L").resize((84, 84), Image.BICUBIC).convert("RGB")
        path = folder / f"fm_{k:05d}.png"
        big.save(path)
        files.append(str(path))
    return files


def cli(args: List[str]) -> Tuple[float, Dict]:
    os.sync()
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "cluster.py"), *args, "-q"], check=True, cwd=REPO)
    seconds = time.perf_counter() - started
    return seconds, json.loads(Path(args[args.index("-o") + 1], "run.json").read_text())


def rerun_part(root: Path, images: int, repeats: int) -> Dict:
    files = fmnist_files(root / "fmnist", images)
    listing = listed(root / "fmnist.txt", files)
    first, again, other, stages = [], [], [], {}
    for repeat in range(repeats):
        out = str(root / f"rerun{repeat}")
        seconds, manifest = cli(["-i", listing, "-o", out, "-e", "lite0"])
        first.append(seconds)
        stages["first"] = manifest["timings_s"]
        seconds, manifest = cli(["-i", listing, "-o", out])
        again.append(seconds)
        stages["again"] = manifest["timings_s"]
        assert manifest["graph"].get("kept") and manifest["individuals"].get("kept")
        seconds, manifest = cli(["-i", listing, "-o", out, "-th", "0.86"])
        other.append(seconds)
        stages["other_threshold"] = manifest["timings_s"]
        assert manifest["individuals"].get("kept")
        print(f"rerun {repeat}: first {first[-1]:.1f} s, again {again[-1]:.2f} s, -th 0.86 {other[-1]:.2f} s",
              flush=True)
        shutil.rmtree(out)
    median = {name: statistics.median(values) for name, values in (("first", first), ("again", again),
                                                                   ("other", other))}
    return {"images": images, "model": "lite0", "first_run_s": {"median": round(median["first"], 3),
                                                                "runs": [round(t, 3) for t in first]},
            "same_command_again_s": {"median": round(median["again"], 3), "runs": [round(t, 3) for t in again]},
            "another_threshold_s": {"median": round(median["other"], 3), "runs": [round(t, 3) for t in other]},
            "ratio_same_command_again": round(median["again"] / median["first"], 4),
            "ratio_another_threshold": round(median["other"] / median["first"], 4), "target_ratio": 0.05,
            "stages_of_the_last_repeat": stages}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 768])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--parts", nargs="+", default=["add", "rerun"], choices=["add", "rerun"])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "campaign.json"))
    parser.add_argument("--keep", action="store_true", help="update only the given --parts in an existing --out")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    document = {"benchmark": "campaign: --add against a full re-run; re-runs from what the campaign kept",
                "machine": bench_machine.machine(),
                "versions": bench_machine.versions(["numpy", "scipy", "pandas", "torch", "numba"]),
                "threshold": THRESHOLD, "repeats": args.repeats}
    if args.keep and os.path.isfile(args.out):
        with open(args.out, encoding="utf-8") as handle:
            document = {**json.load(handle), **{k: v for k, v in document.items() if k != "repeats"}}
    try:
        if "add" in args.parts:
            document["add"] = [add_part(root / f"d{dim}", args.old, args.new, dim, args.repeats) for dim in args.dims]
        if "rerun" in args.parts:
            document["rerun"] = rerun_part(root / "rerun", args.images, args.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    for part in document.get("add", []):
        print(f"d={part['dim']}: full re-run {part['full_rerun_s']['median']:.2f} s, --add {part['add_s']['median']:.2f}"
              f" s: ratio {part['ratio_add_over_full']:.3f} (target <= 0.10), identical {part['identical_partitions']}")
    if "rerun" in document:
        rerun = document["rerun"]
        print(f"re-runs of {rerun['images']} images: the same command again {rerun['ratio_same_command_again']:.3f}, "
              f"another -th {rerun['ratio_another_threshold']:.3f} of the first run (targets <= 0.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
