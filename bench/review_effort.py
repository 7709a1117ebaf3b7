#!/usr/bin/env python3
"""Benchmark: review effort, the expert's work to a correct partition, with and without the report's suggestions.

    PYTHONPATH=. .venv/bin/python bench/review_effort.py                 # every set below that is present
    PYTHONPATH=. .venv/bin/python bench/review_effort.py --sets trap_near biodivx
    PYTHONPATH=. .venv/bin/python bench/review_effort.py -i DIR --labels CSV -o RESULT.json [-e lite0] [-th T]

Each set is clustered by the real program (`crop_cluster.cluster`, lite0 by default, the default threshold); a
simulated reviewer who knows the labels (bench/review_sim.py) then works through the report's own data with the
page's actions, side by side:
  baseline     the cards in the page's default order (largest first), crop by crop: strays of a card moved to
               their label's group (one selection per label), the card merged into its label's group;
  queue        the "likely misplaced crops" queue (outputs/report/review_order.py) first, then the cards;
  suggestions  the report's suggestions first (outputs/report/suggestions.py), accepted or rejected one key
               each, in rounds: export, `crop-cluster --review` (rejections remembered in the campaign store), the
               new report's suggestions; then the cards no one decided on.
Every strategy ends with its export applied by `crop-cluster --review` into a copy of the run: the partition must
be the simulated one (`review_partition_equal`), and its metrics.json F1 is recorded.
Reported per strategy: actions (undo-log entries), clicks (selection changes), thumbnails viewed (every showing),
to pairwise F1 >= 0.99 and at the end; F1 after 50, 100, 200 actions and the curve; `actions_ratio_vs_baseline` and
`viewed_ratio_vs_baseline`. The simulation is deterministic (one run); the program's run time is recorded once.
`calibration`: every suggestion of the set's first report judged by the reviewer as it stands: per kind and bin of
(similarity - threshold), the share of pre-selected individuals kept, per set and averaged over the sets
(outputs/report/suggestions.py PRECISION comes from it).

Sets (each skipped with a message when its source is absent; written once into --work):
  fmnist_2000, fmnist_10000  the first N Fashion-MNIST test images (x3, 84 px), label = class (dataset-fashion-mnist)
  trap_near, trap_near_hard  bench/individual_sets.py: each tuxpaint photo on its own trap screen with 1-4 near
                             copies, label = its kind (category/subcategory; tuxpaint-stamps-default)
  biodivx                    the 26 shared light-trap crops, label = morphotype by eye (bench/calibrate_threshold.py)
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
for folder in (str(REPO), str(REPO / "bench")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402

import review_sim as sim  # noqa: E402
from machine import machine, versions  # noqa: E402

SETS = ("fmnist_2000", "fmnist_10000", "trap_near", "trap_near_hard", "biodivx")
FMNIST_LABELS = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
STRATEGIES = ("baseline", "queue", "suggestions")
SEED = 7


# ---------------------------------------------------------------- sets

def write_labels(path: Path, rows: List[Tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows(rows)
    return path


def fmnist_set(work: Path, n: int) -> Optional[Tuple[str, Path]]:
    import individual_sets

    from PIL import Image

    if not individual_sets.FMNIST.is_file():
        return None
    folder = work / f"fmnist_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(FMNIST_LABELS, "rb") as handle:
        classes = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)[:n]
    rows = []
    for k, pixels in enumerate(individual_sets.fmnist_images(n)):
        path = folder / f"fm_{k:05d}.png"
        if not path.is_file():
            Image.fromarray(pixels, "L").resize((84, 84), Image.BICUBIC).convert("RGB").save(path)
        rows.append((str(path), str(int(classes[k]))))
    return str(folder), write_labels(work / f"fmnist_{n}.labels.csv", rows)


def trap_set(work: Path, name: str) -> Optional[Tuple[str, Path]]:
    import calibrate_threshold
    import individual_sets

    photos = calibrate_threshold.tux_photos(calibrate_threshold.DEFAULT_TUX)
    if photos is None:
        return None
    labels = work / f"{name}.labels.csv"
    folder = work / name
    if not labels.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        kind = dict(photos)
        files, sources = individual_sets.write_near_set([p for p, _ in photos], folder, SEED, name)
        write_labels(labels, [(f, kind[s]) for f, s in zip(files, sources)])
    return str(folder), labels


def biodivx_set(work: Path) -> Optional[Tuple[str, Path]]:
    import calibrate_threshold

    found = calibrate_threshold.biodivx_files(calibrate_threshold.DEFAULT_BIODIVX)
    if found is None:
        return None
    files, species, _ = found
    return str(calibrate_threshold.DEFAULT_BIODIVX), write_labels(work / "biodivx.labels.csv",
                                                                 list(zip(files, species)))


def prepare(name: str, work: Path) -> Optional[Tuple[str, Path]]:
    if name.startswith("fmnist_"):
        return fmnist_set(work, int(name.split("_")[1]))
    if name.startswith("trap_near"):
        return trap_set(work, name)
    if name == "biodivx":
        return biodivx_set(work)
    raise SystemExit(f"unknown set {name!r}; available: {', '.join(SETS)}")


# ---------------------------------------------------------------- runs

def first_run(inputs: str, labels: Path, out: Path, cache: Path, embed: str, threshold: Optional[float]) -> Dict:
    """The program on the set, into a fresh `out` (embeddings from the shared cache once computed); returns
    run.json's content and the seconds it took."""
    import crop_cluster

    shutil.rmtree(out, ignore_errors=True)
    options = {"embed": embed, "labels": str(labels), "cache_dir": str(cache)}
    if threshold is not None:
        options["threshold"] = threshold
    started = time.perf_counter()
    result = crop_cluster.cluster([inputs], str(out), **options)
    return {**result.manifest, "bench_seconds": round(time.perf_counter() - started, 2)}


def review(out: Path, export: Path, labels: Path) -> Tuple[Dict, set, float]:
    """`crop-cluster -o out --review export` (with the labels, for metrics.json): (its metrics, the partition of
    its clusters.csv, seconds)."""
    import crop_cluster

    started = time.perf_counter()
    result = crop_cluster.cluster(None, str(out), review=str(export), labels=str(labels))
    seconds = time.perf_counter() - started
    table = result.table
    return result.manifest.get("metrics", {}), sim.table_partition(table["filename"].astype(str).tolist(),
                                                                    table["cluster"].to_numpy()), seconds


def page_of(out: Path, label_of_file: Dict[str, Optional[str]]) -> sim.Page:
    data = sim.read_document(str(out / "report.html"))
    return sim.Page(data, sim.crop_labels(data, label_of_file))


def labels_by_file(labels: Path, out: Path) -> Dict[str, Optional[str]]:
    """The label of every file of the run (matched like --labels)."""
    import pandas as pd

    from crop_cluster.evaluate.labels import read_labels

    files = pd.read_csv(out / "clusters.csv", usecols=["filename"], dtype=str)["filename"].tolist()
    return dict(zip(files, read_labels(str(labels), files)))


def strategy(name: str, run_out: Path, work: Path, labels: Path, label_of_file) -> Dict:
    """One strategy on a fresh copy of the run's folder; the export applied by --review at the end."""
    folder = work / f"{run_out.name}-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run_out, folder)
    page = page_of(folder, label_of_file)
    first = sim.first_judgements(page) if name == "suggestions" else None
    rounds: List[Dict] = []
    started = time.perf_counter()
    if name == "baseline":
        sim.walk_cards(page, sim.Homes())
    elif name == "queue":
        sim.run_queue(page)
    else:
        def next_round(old: sim.Page) -> sim.Page:
            export = folder / f"review-round{len(rounds)}.csv"
            old.write_export(str(export))
            metrics, partition, seconds = review(folder, export, labels)
            new = page_of(folder, label_of_file).carry(old)
            rounds.append({"actions": old.actions, "f1_page": round(old.f1, 6),
                           "f1_after_review": metrics.get("cluster", {}).get("pairwise_f1"),
                           "partition_equal": partition == old.partition(), "review_s": round(seconds, 2),
                           "suggestions": new.data["run"].get("suggestions")})
            return new

        page = sim.run_suggestions(page, next_round)
    simulated_s = time.perf_counter() - started
    export = folder / "review.csv"
    rows = page.write_export(str(export))
    metrics, partition, seconds = review(folder, export, labels)
    found = sim.effort(page)
    found.update(review_partition_equal=partition == page.partition(), export_rows=rows,
                 f1_after_review=metrics.get("cluster", {}).get("pairwise_f1"), final_review_s=round(seconds, 2),
                 simulated_s=round(simulated_s, 2), curve=curve(page), judged=first)
    if rounds:
        found["rounds"] = rounds
    shutil.rmtree(folder, ignore_errors=True)
    return found


def curve(page: sim.Page, dense: int = 300, step: int = 10) -> List[List[float]]:
    """[actions, F1] after every action up to `dense`, then every `step` actions (the last point kept)."""
    points = {}
    for actions, f1, _, _ in page.curve:
        if actions <= dense or actions % step == 0:
            points[actions] = round(f1, 4)
    last = page.curve[-1]
    points[last[0]] = round(last[1], 4)
    return [[k, v] for k, v in sorted(points.items())]


BINS = ("<= -0.25", "-0.25..-0.15", "-0.15..-0.10", "-0.10..-0.05", "-0.05..0", "> 0")


def calibration(judged: List[Tuple[str, float, int, int]]) -> Dict[str, List[Optional[float]]]:
    """Per kind, per bin of margin (suggestions.BIN_EDGES): kept / pre-selected individuals, None when empty."""
    from crop_cluster.outputs.report.suggestions import BIN_EDGES, KINDS

    kept = defaultdict(lambda: np.zeros(len(BIN_EDGES)))
    total = defaultdict(lambda: np.zeros(len(BIN_EDGES)))
    for kind, margin, k, n in judged:
        b = int(np.searchsorted(BIN_EDGES, margin))
        kept[kind][b] += k
        total[kind][b] += n
    return {kind: [None if total[kind][b] == 0 else round(float(kept[kind][b] / total[kind][b]), 3)
                   for b in range(len(BIN_EDGES))] for kind in KINDS}


def run_set(name: str, inputs: str, labels: Path, work: Path, embed: str, threshold: Optional[float]) -> Dict:
    run_out = work / f"run-{name}-{embed}" if threshold is None else work / f"run-{name}-{embed}-{threshold}"
    manifest = first_run(inputs, labels, run_out, work / "cache", embed, threshold)
    label_of_file = labels_by_file(labels, run_out)
    result = {"crops": manifest["counts"]["rows"], "individuals": manifest["counts"]["individuals"],
              "clusters": manifest["counts"]["clusters"], "dim": manifest.get("dim"),
              "threshold": manifest["parameters"]["threshold"], "model": manifest.get("model"),
              "labels": len({v for v in label_of_file.values() if v is not None}),
              "f1_start": manifest.get("metrics", {}).get("cluster", {}).get("pairwise_f1"),
              "run_seconds": manifest.get("bench_seconds"), "suggestions": manifest.get("suggestions"),
              "strategies": {}}
    for strategy_name in STRATEGIES:
        found = strategy(strategy_name, run_out, work, labels, label_of_file)
        result["strategies"][strategy_name] = found
        print(f"  {name} {strategy_name}: actions {found['actions_to_target']} viewed {found['viewed_to_target']} "
              f"clicks {found['clicks_to_target']} f1 {found['f1_start']} -> {found['f1_end']} "
              f"(review: {found['f1_after_review']}, partition equal {found['review_partition_equal']})", flush=True)
    base = result["strategies"]["baseline"]
    for strategy_name in ("queue", "suggestions"):
        found = result["strategies"][strategy_name]
        for key, measure in (("actions_ratio_vs_baseline", "actions_to_target"),
                             ("viewed_ratio_vs_baseline", "viewed_to_target")):
            found[key] = None if found[measure] is None or not base[measure] else \
                round(found[measure] / base[measure], 3)
    result["actions_ratio_vs_baseline"] = result["strategies"]["suggestions"]["actions_ratio_vs_baseline"]
    result["calibration"] = calibration(result["strategies"]["suggestions"].pop("judged"))
    for found in result["strategies"].values():
        found.pop("judged", None)
    return result


def summary(results: Dict[str, Dict]) -> List[Dict]:
    rows = []
    for name, result in results.items():
        row = {"set": name, "crops": result["crops"], "f1_start": result["f1_start"]}
        for strategy_name, found in result["strategies"].items():
            row[strategy_name] = {key: found[key] for key in ("actions_to_target", "viewed_to_target",
                                                              "clicks_to_target", "f1_after_actions")}
        row["actions_ratio_vs_baseline"] = result["actions_ratio_vs_baseline"]
        row["viewed_ratio_vs_baseline"] = result["strategies"]["suggestions"]["viewed_ratio_vs_baseline"]
        rows.append(row)
    return rows


def averaged(results: Dict[str, Dict]) -> Dict[str, List[Optional[float]]]:
    """The calibration averaged over the sets (each set counts once per bin where it has suggestions)."""
    out = {}
    for kind in ("merge", "split", "move"):
        columns = [r["calibration"][kind] for r in results.values()]
        out[kind] = [None if not [c[b] for c in columns if c[b] is not None] else
                     round(float(np.mean([c[b] for c in columns if c[b] is not None])), 3)
                     for b in range(len(BINS))]
    return out


def least(results: Dict[str, Dict]) -> Dict[str, List[Optional[float]]]:
    """Per kind and bin, the least share kept on any set, never more than in a stronger bin (a running minimum
    from the strongest bin down): suggestions.LEAST, what the worth-an-action test assumes."""
    out = {}
    for kind in ("merge", "split", "move"):
        columns = [r["calibration"][kind] for r in results.values()]
        lowest = [min([c[b] for c in columns if c[b] is not None], default=None) for b in range(len(BINS))]
        running, row = None, []
        for value in reversed(lowest):
            running = value if running is None else running if value is None else min(running, value)
            row.append(None if running is None else round(float(running), 3))
        out[kind] = row[::-1]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), help="named sets (default: all present)")
    parser.add_argument("-i", "--input", help="a folder of crops to measure instead of the named sets")
    parser.add_argument("--labels", help="with -i: CSV filename,label")
    parser.add_argument("-e", "--embed", default="lite0")
    parser.add_argument("-th", "--threshold", type=float, default=None)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "review-effort",
                        help="where sets, runs and copies are written (reused)")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "bench" / "results" / "review_effort.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.input:
        if not args.labels:
            parser.error("-i needs --labels CSV (filename,label)")
        named = {Path(args.input).resolve().name: (str(Path(args.input).resolve()), Path(args.labels).resolve())}
    else:
        named = {}
        for name in args.sets:
            found = prepare(name, args.work)
            if found is None:
                print(f"skipped {name}: its source is not installed (see bench/review_effort.py)")
                continue
            named[name] = found
    results = {}
    for name, (inputs, labels) in named.items():
        print(f"{name}:", flush=True)
        results[name] = run_set(name, inputs, labels, args.work, args.embed, args.threshold)
    output = {"benchmark": "review_effort", "embed": args.embed, "target_f1": sim.TARGET_F1,
              "machine": machine(), "versions": versions(["numpy", "pandas", "torch", "onnxruntime"]),
              "summary": summary(results), "calibration": averaged(results), "calibration_least": least(results),
              "calibration_bins": list(BINS),
              "sets": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(output["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
