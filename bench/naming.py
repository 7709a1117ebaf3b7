"""Names from references (naming/) with lite0, offline: choose the rule and calibrate --name_threshold and
--name_margin on calibration splits, score them on other splits, at cluster, individual and crop level.

    flock /tmp/bench.lock .venv/bin/python bench/naming.py [--out bench/results/naming.json] [--draws 5]

Sets (each skipped with a message when its source is absent). Every draw takes half of a set's names as *known*
(their references enter the gallery) and leaves the other half *unknown* (no reference: their clusters must stay
`unknown`); the queries are the other crops of every name, clustered by the real pipeline (crop_cluster.cluster,
lite0 defaults), and named by naming/ exactly as a run names them.

  regime "views" (targets at the defaults: precision of the names given >= 0.97, coverage of known material
  >= 0.95, unknowns left unknown >= 0.95, AUROC known vs unknown >= 0.99):
    tux_views      each Debian tuxpaint photo a name (a "taxon"); 7 camera views per photo (example/make_example.py:
                   box jitter, rotation, brightness, rescale, JPEG): 3 references, 4 queries. Calibration and test
                   splits hold different photos.
    biodivx        the 26 shared light-trap crops, each individual a name; its first-frame crop the reference (one
                   per name: the individual that enters in frame 2 has none and is always unknown), frames 2-3 the
                   queries. Too small to split: test only.
  regime "kinds" (hard; targets precision first: names given >= 0.95 correct and <= 5 % of unknown units named,
  the coverage this leaves reported):
    tux_categories the photos' category/subcategory as names (10 kinds of 9 to 64 photos): 3 reference photos per
                   kind, the others queries; calibration and test splits hold different photos of each kind.
    fmnist         Fashion-MNIST classes as names (60 test images per class, x3 on black): 3 references per class.
                   Scored, not calibrated on: lite0 does not tell these classes apart from 3 references (AUROC about
                   0.8), and the threshold that would keep its names precise leaves many views clusters unnamed
                   (`fmnist_alone` shows what calibrating on it too would give); the gallery check shows why
                   (`gallery_references_closer_to_another_name`).

Calibration (per level and rule): over thresholds 0.30-0.99 and margins MARGINS, pooled over each set's
calibration draws, the (threshold, margin) with the highest mean coverage on the views sets among those meeting
every target on the calibration draws (views: precision and unknowns left unknown; kinds: precision first): of those within 0.005
of the best coverage, the middle of the longest run of thresholds at one margin (ties: the smaller margin), so the
defaults sit as far from both failures as the calibration allows. The rule (prototype, per-reference max, kNN) is chosen on the calibration draws too, at cluster level (the default
level): the highest views coverage at its calibrated defaults; ties to the prototype (K vectors to compare, not R).
That rule is used at every level, with each level's own calibrated threshold and margin (`decision`). Test
figures are medians over the test draws. Timing: a whole CLI run on the largest query set with and without
--reference, side by side, median of 5.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
for folder in (str(REPO), str(REPO / "bench")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402

import calibrate_threshold as calibration  # noqa: E402
import machine as bench_machine  # noqa: E402

BACKEND, MODEL = "lite0", "efficientnet-lite0"
THRESHOLDS = np.round(np.arange(0.30, 0.9901, 0.01), 2)
MARGINS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)
LEVELS = ("cluster", "individual", "crop")
RULES = ("prototype", "max", "knn")
REFERENCES = 3
PLATEAU = 0.005           # coverage this close to the best counts as the best (calibrate)
VIEWS = 7
FMNIST_PER_CLASS = 60
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TARGETS = {"views": {"precision": 0.97, "coverage": 0.95, "unknown_left_unknown": 0.95, "auroc": 0.99},
           "kinds": {"precision": 0.95, "unknown_named_at_most": 0.05}}
REGIME = {"tux_views": "views", "biodivx": "views", "tux_categories": "kinds", "fmnist": "kinds"}
CALIBRATE_ON = ("tux_views", "tux_categories")    # fmnist and biodivx are scored, not calibrated on (docstring)
SEED = 29


@dataclass
class LabelledSet:
    """files, names (n,): every crop and its true name; half (n,): 'calibration' or 'test'; reference_ok (n,):
    may be drawn as a reference (biodivx: first frame only); time_format for the pipeline (None: none)."""

    files: List[str]
    names: List[str]
    half: List[str]
    reference_ok: List[bool]
    time_format: Optional[str] = None


# ---------------------------------------------------------------- data sets

def tux_views(photos, folder: Path, rng: random.Random) -> LabelledSet:
    """VIEWS camera views per photo (each photo a name); photos split half/half into calibration and test."""
    example = calibration.load_example_module()
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(len(photos)))
    rng.shuffle(order)
    test = set(order[len(order) // 2:])
    files, names, half = [], [], []
    for k, (path, _) in enumerate(photos):
        canvas, box = calibration.on_white_padded(path)
        for v in range(VIEWS):
            target = folder / f"{k:04d}_{v}.jpg"
            target.write_bytes(example.jpeg_bytes(example.camera_view(canvas, box, rng), rng))
            files.append(str(target))
            names.append(Path(path).stem)
            half.append("test" if k in test else "calibration")
    return LabelledSet(files, names, half, [True] * len(files))


def tux_categories(photos, folder: Path, rng: random.Random) -> LabelledSet:
    """Each photo on white, tightly cropped, named by its category; photos of each category split half/half."""
    folder.mkdir(parents=True, exist_ok=True)
    files, names, half = [], [], []
    by_kind: Dict[str, List[int]] = {}
    for k, (_, kind) in enumerate(photos):
        by_kind.setdefault(kind, []).append(k)
    test = set()
    for members in by_kind.values():
        members = members[:]
        rng.shuffle(members)
        test.update(members[len(members) // 2:])
    for k, (path, kind) in enumerate(photos):
        canvas, box = calibration.on_white_padded(path)
        target = folder / f"{k:04d}.png"
        canvas.crop(box).save(target)
        files.append(str(target))
        names.append(kind)
        half.append("test" if k in test else "calibration")
    return LabelledSet(files, names, half, [True] * len(files))


def fmnist(folder: Path, rng: random.Random) -> Optional[LabelledSet]:
    """FMNIST_PER_CLASS test images per class (x3, on a black margin), split half/half per class."""
    from PIL import Image

    images, labels = FMNIST_DIR / "t10k-images-idx3-ubyte.gz", FMNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not images.is_file() or not labels.is_file():
        return None
    with gzip.open(images, "rb") as handle:
        data = handle.read()
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels, "rb") as handle:
        classes = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    folder.mkdir(parents=True, exist_ok=True)
    files, names, half = [], [], []
    for c in range(10):
        members = np.flatnonzero(classes == c)[:FMNIST_PER_CLASS].tolist()
        rng.shuffle(members)
        for j, k in enumerate(members):
            big = Image.fromarray(pixels[k], "L").resize((84, 84), Image.BICUBIC).convert("RGB")
            canvas = Image.new("RGB", (124, 124), (0, 0, 0))
            canvas.paste(big, (20, 20))
            target = folder / f"fm_{k:05d}.png"
            canvas.save(target)
            files.append(str(target))
            names.append(FMNIST_CLASSES[c])
            half.append("test" if j >= FMNIST_PER_CLASS // 2 else "calibration")
    return LabelledSet(files, names, half, [True] * len(files))


def biodivx(root: Path) -> Optional[LabelledSet]:
    """The shared crops: each individual a name; its first-frame crop may be a reference; test only."""
    found = calibration.biodivx_files(root)
    if found is None:
        return None
    files, _, individuals = found
    first = [Path(f).name.split("_")[1][8:14] == "001617" for f in files]
    return LabelledSet(files, individuals, ["test"] * len(files), first, "%Y%m%d%H%M%S")


# ---------------------------------------------------------------- draws

@dataclass
class Draw:
    """One split: the reference rows (into the set's files) and their names, the query rows, the known names."""

    half: str
    references: List[int]
    queries: List[int]
    known: List[str]


def draws(data: LabelledSet, half: str, count: int, rng: random.Random) -> List[Draw]:
    """`count` draws over the set's `half`: half of its names known, REFERENCES references for each (drawn among
    the rows that may be references), the other rows of every name the queries (a name's would-be references are
    left out for unknown names too, so known and unknown names keep alike numbers of queries)."""
    rows_of: Dict[str, List[int]] = {}
    for k, (name, h) in enumerate(zip(data.names, data.half)):
        if h == half:
            rows_of.setdefault(name, []).append(k)
    result = []
    for _ in range(count):
        names = sorted(rows_of)
        rng.shuffle(names)
        known = set(names[:len(names) // 2])
        references, queries = [], []
        for name, rows in rows_of.items():
            eligible = [k for k in rows if data.reference_ok[k]]
            chosen = set(rng.sample(eligible, min(REFERENCES, len(eligible))))
            if name in known and chosen:
                references += sorted(chosen)
            queries += [k for k in rows if k not in chosen]
        result.append(Draw(half, references, queries, sorted(n for n in known if any(
            data.names[k] == n for k in references))))
    return result


# ---------------------------------------------------------------- naming per draw

def embed_all(files: Sequence[str], cache_dir: Path) -> Dict[str, np.ndarray]:
    """lite0 vectors of every file, through the project's embedding cache (the pipeline runs reuse them)."""
    from crop_cluster.dedup.exact import file_digest
    from crop_cluster.embed import load_backend
    from crop_cluster.embed.cache import EmbeddingCache, embed_with_cache

    cache = EmbeddingCache(str(cache_dir), BACKEND, MODEL)
    result = embed_with_cache(cache, list(files), [file_digest(f) for f in files], lambda: load_backend(BACKEND, "cpu"),
                              32, 0, False).result
    if result.skipped:
        raise SystemExit(f"could not embed: {result.skipped[:3]}")
    return {f: v for f, v in zip(files, result.embeddings)}


def partition(data: LabelledSet, rows: Sequence[int], out: Path, cache_dir: Path):
    """The real pipeline on the query rows: (table with cluster, individual per row in `rows` order, embeddings)."""
    import crop_cluster

    files = [data.files[k] for k in rows]
    result = crop_cluster.cluster(files, str(out), embed=BACKEND, cache_dir=str(cache_dir), report=False,
                                  time_format=data.time_format, device="cpu")
    position = {f: i for i, f in enumerate(result.table["filename"])}
    order = np.asarray([position[f] for f in files])
    return result.table.iloc[order].reset_index(drop=True), result.embeddings[order]


@dataclass
class Units:
    """Per naming unit (U,): score (best), gap (to the second; NaN one name), right (the best name is the true
    one), known, unknown (bool), crops (int)."""

    score: np.ndarray
    gap: np.ndarray
    right: np.ndarray
    known: np.ndarray
    unknown: np.ndarray
    crops: np.ndarray
    auroc: Optional[float]


def units_of(level: str, rule: str, table, embedding: np.ndarray, truth_rows: Sequence[str],
             ref_vectors: np.ndarray, ref_names: Sequence[str]) -> Units:
    """Name the units of `level` with `rule` (naming/ as a run does) and keep what the calibration needs."""
    from crop_cluster.naming.evaluate import auroc, unit_truth
    from crop_cluster.naming.prototypes import name_codes, top_names
    from crop_cluster.naming.units import naming_units, unit_vectors

    cluster = table["cluster"].to_numpy(np.int64)
    individual = table["individual"].to_numpy(np.int64)
    individual = np.unique(individual, return_inverse=True)[1].reshape(-1)
    names, codes = name_codes(ref_names)
    unit, kind = naming_units(level, cluster, individual)
    queries = unit_vectors(embedding, individual if level != "crop" else np.arange(unit.size), unit, kind.size)
    index, score = top_names(queries, ref_vectors, codes, len(names), rule)
    truth = unit_truth(list(truth_rows), unit, kind.size)
    known_names = set(names)
    known = np.asarray([t in known_names for t in truth])
    best = np.asarray(names, dtype=object)[index[:, 0]]
    gap = np.where(index[:, 1] >= 0, score[:, 0] - score[:, 1], np.nan)
    area = auroc(score[known, 0].astype(np.float64), score[~known, 0].astype(np.float64))
    return Units(score[:, 0].astype(np.float64), gap, best == np.asarray(truth, dtype=object), known, ~known,
                 np.bincount(unit, minlength=kind.size), area)


def gallery_share(ref_vectors: np.ndarray, ref_names: Sequence[str]) -> float:
    """The share of references closer to another name than to their own (naming.prototypes.gallery_overlap)."""
    from crop_cluster.naming.prototypes import gallery_overlap, name_codes

    names, codes = name_codes(ref_names)
    return float(gallery_overlap(ref_vectors, codes, len(names)).mean())


def grid(parts: Sequence[Units]) -> Dict[str, np.ndarray]:
    """Pooled over `parts`: precision, coverage, unknown_named, named (M, T) for MARGINS x THRESHOLDS."""
    score = np.concatenate([p.score for p in parts])
    gap = np.concatenate([p.gap for p in parts])
    right = np.concatenate([p.right for p in parts])
    known = np.concatenate([p.known for p in parts])
    unknown = np.concatenate([p.unknown for p in parts])
    shape = (len(MARGINS), THRESHOLDS.size)
    out = {key: np.full(shape, np.nan) for key in ("precision", "coverage", "unknown_named", "named")}
    for i, margin in enumerate(MARGINS):
        confident = np.isnan(gap) | (np.nan_to_num(gap, nan=1.0) >= margin - 1e-7)
        named = (score[None, :] >= THRESHOLDS[:, None] - 1e-7) & confident[None, :]       # (T, U)
        n_named = named.sum(1)
        out["named"][i] = n_named
        out["precision"][i] = np.where(n_named > 0, (named & right).sum(1) / np.maximum(n_named, 1), np.nan)
        out["coverage"][i] = (named & right & known).sum(1) / max(known.sum(), 1)
        out["unknown_named"][i] = (named & unknown).sum(1) / max(unknown.sum(), 1)
    return out


def feasible(measures: Dict[str, np.ndarray], regime: str) -> np.ndarray:
    """bool (M, T): the targets a calibration can check (AUROC does not depend on the threshold)."""
    precision = np.nan_to_num(measures["precision"], nan=1.0)      # nothing named: no wrong name
    if regime == "views":
        return (precision >= TARGETS["views"]["precision"]) & \
            (1 - measures["unknown_named"] >= TARGETS["views"]["unknown_left_unknown"])
    return (precision >= TARGETS["kinds"]["precision"]) & \
        (measures["unknown_named"] <= TARGETS["kinds"]["unknown_named_at_most"])


def calibrate(calibration_grids: Dict[str, Dict[str, np.ndarray]]) -> Dict:
    """The (threshold, margin) in the middle of the widest plateau of best mean views coverage (within
    PLATEAU) among the points meeting every calibration set's targets: the longest run of thresholds at one
    margin (ties: the smaller margin), its middle threshold. When no point meets every set's targets, the views
    sets' targets alone, and it says so."""
    views = [name for name in calibration_grids if REGIME[name] == "views"]
    every = np.logical_and.reduce([feasible(g, REGIME[name]) for name, g in calibration_grids.items()])
    constraint = "every calibration set's targets"
    if not every.any():
        every = np.logical_and.reduce([feasible(calibration_grids[name], "views") for name in views])
        constraint = "the views sets' targets only (no threshold meets the kinds targets too)"
    coverage = np.mean([calibration_grids[name]["coverage"] for name in views], axis=0)
    best = np.where(every, coverage, -1.0).max()
    good = every & (coverage >= best - PLATEAU)
    runs = []                                           # (length, -margin, margin index, first, last)
    for m in range(len(MARGINS)):
        t = 0
        while t < THRESHOLDS.size:
            if good[m, t]:
                end = t
                while end + 1 < THRESHOLDS.size and good[m, end + 1]:
                    end += 1
                runs.append((end - t + 1, -MARGINS[m], m, t, end))
                t = end + 1
            else:
                t += 1
    length, _, m, first, last = max(runs)
    middle = (first + last) // 2
    return {"threshold": float(THRESHOLDS[middle]), "margin": float(MARGINS[m]), "constraint": constraint,
            "plateau": [float(THRESHOLDS[first]), float(THRESHOLDS[last])],
            "calibration_views_coverage": round(float(coverage[m, middle]), 4)}


def at(measures: Dict[str, np.ndarray], threshold: float, margin: float) -> Dict:
    m, t = MARGINS.index(margin), int(np.argmin(np.abs(THRESHOLDS - threshold)))
    return {key: None if np.isnan(measures[key][m, t]) else round(float(measures[key][m, t]), 4)
            for key in ("precision", "coverage", "unknown_named", "named")}


def median_over(parts: Sequence[Units], threshold: float, margin: float) -> Dict:
    """Median over draws of each test measure at (threshold, margin), and of the AUROC."""
    rows = [at(grid([p]), threshold, margin) for p in parts]
    summary = {}
    for key in ("precision", "coverage", "unknown_named"):
        values = [r[key] for r in rows if r[key] is not None]
        summary[key] = round(float(np.median(values)), 4) if values else None
    summary["unknown_left_unknown"] = None if summary["unknown_named"] is None else \
        round(1 - summary["unknown_named"], 4)
    aurocs = [p.auroc for p in parts if p.auroc is not None]
    summary["auroc"] = round(float(np.median(aurocs)), 4) if aurocs else None
    summary["draws"] = len(parts)
    summary["units_per_draw"] = int(np.median([p.score.size for p in parts]))
    return summary


def passes(summary: Dict, regime: str) -> Dict[str, bool]:
    targets = TARGETS[regime]
    if regime == "views":
        return {key: summary[key] is not None and summary[key] >= target for key, target in targets.items()}
    return {"precision": summary["precision"] is None or summary["precision"] >= targets["precision"],
            "unknown_named_at_most": summary["unknown_named"] <= targets["unknown_named_at_most"]}


# ---------------------------------------------------------------- timing

def timing(data: LabelledSet, draw: Draw, work: Path, cache_dir: Path, repeats: int = 5) -> Dict:
    """A whole CLI run on the draw's queries without and with --reference (a CSV of its references), side by
    side, `repeats` times each: medians, the naming stage's seconds and the ratio."""
    import crop_cluster

    refs = work / "timing_refs.csv"
    refs.write_text("filename,name\n" + "".join(f"{data.files[k]},{data.names[k]}\n" for k in draw.references))
    files = [data.files[k] for k in draw.queries]
    plain, named, stage = [], [], []
    for repeat in range(repeats):
        for reference in ((), (str(refs),)):
            out = work / f"timing_{repeat}_{len(reference)}"
            start = time.perf_counter()
            result = crop_cluster.cluster(files, str(out), embed=BACKEND, cache_dir=str(cache_dir), report=False,
                                          reference=reference, device="cpu")
            (named if reference else plain).append(time.perf_counter() - start)
            if reference:
                stage.append(result.manifest["timings_s"]["naming"])
    return {"queries": len(files), "references": len(draw.references), "repeats": repeats,
            "run_without_s": round(float(np.median(plain)), 3), "run_with_s": round(float(np.median(named)), 3),
            "naming_stage_s": round(float(np.median(stage)), 3),
            "ratio": round(float(np.median(named) / np.median(plain)), 3)}


# ---------------------------------------------------------------- run

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "naming.json")
    parser.add_argument("--draws", type=int, default=5, help="draws per half (default %(default)s)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--biodivx", type=Path, default=calibration.DEFAULT_BIODIVX)
    parser.add_argument("--tuxpaint", type=Path, default=calibration.DEFAULT_TUX)
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args(argv)


def build(args, work: Path) -> Tuple[Dict[str, LabelledSet], Dict[str, str]]:
    rng = random.Random(args.seed)
    sets: Dict[str, LabelledSet] = {}
    skipped: Dict[str, str] = {}
    photos = calibration.tux_photos(args.tuxpaint)
    if photos is None:
        skipped["tux_views"] = skipped["tux_categories"] = \
            f"{args.tuxpaint} not found (apt-get install -y tuxpaint-stamps-default)"
    else:
        sets["tux_views"] = tux_views(photos, work / "tux_views", rng)
        sets["tux_categories"] = tux_categories(photos, work / "tux_categories", rng)
    found = fmnist(work / "fmnist", rng)
    if found is None:
        skipped["fmnist"] = f"{FMNIST_DIR} not found (apt-get install -y dataset-fashion-mnist)"
    else:
        sets["fmnist"] = found
    found = biodivx(args.biodivx)
    if found is None:
        skipped["biodivx"] = f"{args.biodivx} not found"
    else:
        sets["biodivx"] = found
    return sets, skipped


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.getLogger("crop-cluster").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="naming-bench-") as scratch:
        work = args.work or Path(scratch)
        return run(args, work)


def run(args, work: Path) -> int:
    started = time.perf_counter()
    sets, skipped = build(args, work)
    if not sets:
        print("naming bench: no data set found; nothing to do", file=sys.stderr)
        return 2
    cache_dir = work / "cache"
    vectors = embed_all([f for s in sets.values() for f in s.files], cache_dir)
    rng = random.Random(args.seed + 1)
    units: Dict[Tuple[str, str, str, str], List[Units]] = {}     # (set, half, level, rule) -> per draw
    draw_log: Dict[str, Dict] = {}
    overlaps: Dict[str, List[float]] = {}
    first_test_draw = {}
    for name, data in sets.items():
        draw_log[name] = {}
        for half in ("calibration", "test"):
            if half not in data.half:
                continue
            made = draws(data, half, args.draws, rng)
            draw_log[name][half] = {"draws": len(made), "references": int(np.median([len(d.references) for d in made])),
                                    "queries": int(np.median([len(d.queries) for d in made])),
                                    "known_names": int(np.median([len(d.known) for d in made])),
                                    "names": len({data.names[k] for k, h in enumerate(data.half) if h == half})}
            if half == "test":
                first_test_draw[name] = made[0]
            for number, draw in enumerate(made):
                table, embedding = partition(data, draw.queries, work / "runs" / f"{name}_{half}_{number}",
                                             cache_dir)
                ref_vectors = np.stack([vectors[data.files[k]] for k in draw.references])
                ref_names = [data.names[k] for k in draw.references]
                overlaps.setdefault(name, []).append(gallery_share(ref_vectors, ref_names))
                truth = [data.names[k] for k in draw.queries]
                for level in LEVELS:
                    for rule in RULES:
                        units.setdefault((name, half, level, rule), []).append(
                            units_of(level, rule, table, embedding, truth, ref_vectors, ref_names))
            print(f"{name} {half}: {len(made)} draws", flush=True)
    calibration_sets = [name for name in CALIBRATE_ON if name in sets]
    results: Dict[str, Dict] = {}
    for level in LEVELS:
        results[level] = {}
        for rule in RULES:
            grids = {name: grid(units[(name, "calibration", level, rule)]) for name in calibration_sets}
            chosen = calibrate(grids)
            test = {name: median_over(units[(name, "test", level, rule)], chosen["threshold"], chosen["margin"])
                    for name in sets}
            for name, summary in test.items():
                summary["meets_targets"] = passes(summary, REGIME[name])
            results[level][rule] = {"calibrated": chosen, "test": test,
                                    "calibration": {name: at(g, chosen["threshold"], chosen["margin"])
                                                    for name, g in grids.items()}}
        results[level]["best_rule_on_calibration"] = max(
            RULES, key=lambda r: (results[level][r]["calibrated"]["calibration_views_coverage"], r == "prototype"))
    views = [name for name in calibration_sets if REGIME[name] == "views"]
    chosen_rule = results["cluster"]["best_rule_on_calibration"]
    decision = {"rule": chosen_rule, "reason": (
        f"the rule with the highest mean coverage on the views sets' calibration draws ({', '.join(views)}) at its "
        f"calibrated defaults at cluster level, the default --name_level (ties to the prototype: K vectors to "
        f"compare instead of R); one rule at every level, so scores read alike"),
        "defaults": {level: {key: results[level][chosen_rule]["calibrated"][key] for key in ("threshold", "margin")}
                     for level in LEVELS}}
    fmnist_alone = None
    if "fmnist" in sets and "tux_views" in sets:    # what calibrating on fmnist too would give
        both = ("tux_views", "fmnist")
        alone = calibrate({name: grid(units[(name, "calibration", "cluster", "prototype")]) for name in both})
        fmnist_alone = {"calibrated_on": list(both), **alone,
                        "test": {name: median_over(units[(name, "test", "cluster", "prototype")], alone["threshold"],
                                                   alone["margin"]) for name in sets}}
    sweeps = {}
    for name in sets:
        chosen = results["cluster"]["prototype"]["calibrated"]
        pooled = grid(units[(name, "test", "cluster", "prototype")])
        m = MARGINS.index(chosen["margin"])
        sweeps[name] = [{"threshold": float(t), **{key: None if np.isnan(pooled[key][m, i]) else
                                                  round(float(pooled[key][m, i]), 4)
                                                  for key in ("precision", "coverage", "unknown_named", "named")}}
                        for i, t in enumerate(THRESHOLDS)]
    largest = max(first_test_draw, key=lambda n: len(first_test_draw[n].queries))
    cost = timing(sets[largest], first_test_draw[largest], work, cache_dir)
    dim = len(next(iter(vectors.values())))
    document = {
        "name": "naming", "backend": BACKEND, "model": f"{BACKEND}:{MODEL}",
        "machine": {**bench_machine.machine(), "versions": bench_machine.versions(
            ("torch", "numpy", "scipy", "scikit-learn", "pandas", "pillow", "onnxruntime"))},
        "command": "flock /tmp/bench.lock .venv/bin/python bench/naming.py" + (
            f" --draws {args.draws}" if args.draws != 5 else ""),
        "seed": args.seed, "d": dim, "references_per_name": REFERENCES, "targets": TARGETS, "regime": REGIME,
        "sets": {name: {"n": len(s.files), "names": len(set(s.names)), "regime": REGIME[name],
                        "calibrated_on": name in calibration_sets, "draws": draw_log[name],
                        "gallery_references_closer_to_another_name": round(float(np.median(overlaps[name])), 4)}
                 for name, s in sets.items()},
        "fmnist_alone": fmnist_alone,
        "skipped_sets": skipped, "thresholds": [float(t) for t in THRESHOLDS], "margins": list(MARGINS),
        "decision": decision, "levels": results, "sweep_cluster_prototype_test": sweeps, "timing": cost,
        "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print_summary(document)
    print(f"\nwrote {args.out}")
    return 0


def print_summary(document: Dict) -> None:
    print(f"\nnames from references, {document['model']}: test medians at the calibrated defaults "
          f"(precision / coverage / unknowns left unknown / AUROC)")
    for level, per_rule in document["levels"].items():
        for rule in RULES:
            entry = per_rule[rule]
            chosen = entry["calibrated"]
            mark = "*" if document["decision"]["rule"] == rule else " "
            cells = []
            for name, summary in entry["test"].items():
                cells.append(f"{name} {summary['precision']}/{summary['coverage']}/"
                             f"{summary['unknown_left_unknown']}/{summary['auroc']}")
            print(f"{mark}{level:10s} {rule:9s} t={chosen['threshold']:.2f} m={chosen['margin']:.2f}  "
                  + "  ".join(cells))
    timing_ = document["timing"]
    print(f"timing: run {timing_['run_without_s']} s, with --reference {timing_['run_with_s']} s "
          f"(naming stage {timing_['naming_stage_s']} s, ratio {timing_['ratio']})")


if __name__ == "__main__":
    sys.exit(main())
