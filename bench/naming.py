"""Names from references (naming/) with lite0, offline: the previous rule (the baseline) and the gallery rule side by
side, each calibrated on calibration splits and scored on other splits, at cluster, individual and crop level.

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
    fmnist         Fashion-MNIST classes as names (60 test images per class, x3 on black): 3 references per class,
                   the images of each class split half/half.
    biodivx        the 26 shared light-trap crops, each individual a name; its first-frame crop the reference (one
                   per name: the individual that enters in frame 2 has none and is always unknown), frames 2-3 the
                   queries. Too small to split: test only; besides the draws, scored over every choice of known
                   names (`biodivx_every_split`: the queries are the same in every draw).
  regime "kinds" (hard; targets precision first: names given >= 0.95 correct and <= 5 % of unknown units named,
  the coverage this leaves reported):
    tux_categories the photos' category/subcategory as names (10 kinds of 9 to 64 photos): 3 reference photos per
                   kind, the others queries; calibration and test splits hold different photos of each kind.

Rules (naming/rule.py, naming/prototypes.py, naming/units.py):
  baseline  the previous rule: a unit is named when its best prototype's cosine reaches one threshold and beats
            the second name by a margin; calibrated as before on tux_views and tux_categories (fmnist was left out:
            one threshold cannot serve it and the views at once).
  gallery   the same, with the threshold raised to the gallery's self-test (the cosine up to which the rule names
            the gallery's own references wrongly, leave one out, naming.prototypes.self_test_threshold) plus an
            offset, so a gallery whose names the model confuses names only clear matches; and at cluster level a
            cluster whose individuals clear the individual-level rule with two or more names is named individual by
            individual (naming.units.split_mixed_clusters). Calibrated on tux_views, tux_categories and fmnist.
  gallery_debiased  the gallery rule with the self-test's own cosine (to a prototype of one reference fewer)
            scaled to what the whole prototype would give (debiased_self_test), so look-alike names tie instead of
            each losing to the other: measured, not shipped.

Calibration (per level and rule): over thresholds 0.30-0.99, margins MARGINS and (gallery rule) offsets OFFSETS
(or none), pooled over each calibration set's calibration draws, the points meeting every calibration set's
targets (views: precision and unknowns left unknown; kinds: precision first) with the highest mean coverage on the
views sets; of those within PLATEAU of it, the longest run of thresholds at one (margin, offset), its middle
threshold (ties: the smaller margin, then the smallest offset: a larger one only names less on these sets), so the
threshold sits as far from both failures as the calibration allows. The individual level is calibrated first: its
settings name the members that split clusters.
Test figures are medians over the test draws. Ceilings: the best any (threshold, margin) of the baseline reaches on
the test draws themselves, fmnist named from 3, 10 and 30 references per class (`fmnist_ceiling`), and the AUROC
of other scores (`auroc_alternatives_cluster_test`: nearest reference, centred, z-normalised); `biodivx_units`: each
biodivx cluster and individual against every individual's first-frame reference. Timing: a
whole CLI run on the largest query set with and without --reference, and naming alone with each rule, side by side,
medians of 5.
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
OFFSETS = (None,) + tuple(np.round(np.arange(0.0, 0.3001, 0.03), 2).tolist())   # gallery rule; None: no raise
LEVELS = ("individual", "crop", "cluster")          # calibration order: the individual level names the members
RULES = ("baseline", "gallery", "gallery_debiased")
REFERENCES = 3
PLATEAU = 0.005           # coverage this close to the best counts as the best (calibrate)
VIEWS = 7
FMNIST_PER_CLASS = 60
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TARGETS = {"views": {"precision": 0.97, "coverage": 0.95, "unknown_left_unknown": 0.95, "auroc": 0.99},
           "kinds": {"precision": 0.95, "unknown_named_at_most": 0.05}}
REGIME = {"tux_views": "views", "biodivx": "views", "tux_categories": "kinds", "fmnist": "views"}
CALIBRATE_ON = {"baseline": ("tux_views", "tux_categories"),              # as the previous bench (docstring)
                "gallery": ("tux_views", "tux_categories", "fmnist"),  # biodivx: test only
                "gallery_debiased": ("tux_views", "tux_categories", "fmnist")}
CEILING_REFERENCES = (3, 10, 30)                   # fmnist_ceiling: references per class
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
    """Per naming unit (U,) of one draw: score (best), gap (to the second; NaN one name), right (the best name is the
    true one), known, unknown (bool), crops (int); auroc known vs unknown by score; self_test: per margin of MARGINS
    the gallery's self-test threshold (-inf: none); split: clusters named individual by individual."""

    score: np.ndarray
    gap: np.ndarray
    right: np.ndarray
    known: np.ndarray
    unknown: np.ndarray
    crops: np.ndarray
    auroc: Optional[float]
    self_test: Dict[float, float]
    split: int


@dataclass
class Partition:
    """One draw's queries as the pipeline grouped them: table (cluster, individual per query row), embedding (Q, d),
    truth (Q,) names; references: vectors (R, d) and names (R,)."""

    table: object
    embedding: np.ndarray
    truth: List[str]
    ref_vectors: np.ndarray
    ref_names: List[str]


def member_settings(calibrated: Dict) -> "object":
    """naming.rule.NamingSettings of the individual level as calibrated for the gallery rule (the members' rule)."""
    from crop_cluster.naming.rule import NamingSettings

    return NamingSettings("individual", calibrated["threshold"], calibrated["margin"],
                          gallery_offset=calibrated["gallery_offset"])


def whole_prototype_scale(vectors: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """float64 (K,): per name, by how much a crop's expected cosine to its name's prototype of n references exceeds
    that to one of n - 1 (1 for one reference): with references of mean pairwise cosine rho, a new crop's expected
    cosine to the normalised mean of m of them is rho / sqrt(rho + (1 - rho) / m)."""
    sums = np.zeros((k, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, vectors.astype(np.float64))
    n = np.bincount(codes, minlength=k).astype(np.float64)
    rho = np.clip(((sums ** 2).sum(axis=1) - n) / np.maximum(n * (n - 1), 1.0), 1e-6, 1.0)
    return np.where(n > 1, np.sqrt(rho + (1 - rho) / np.maximum(n - 1, 1.0)) / np.sqrt(rho + (1 - rho) / n), 1.0)


def leave_one_out_cost(ref_vectors: np.ndarray, ref_names: Sequence[str]) -> Optional[float]:
    """The median cosine a tested reference loses to its own name's prototype made without it (against the whole
    prototype, by whole_prototype_scale): how far look-alike names lean to each other in the self-test."""
    from crop_cluster.naming.prototypes import leave_one_out, name_codes

    names, codes = name_codes(ref_names)
    own, _, _, tested = leave_one_out(ref_vectors, codes, len(names))
    if not tested.any():
        return None
    return float(np.median((own * (whole_prototype_scale(ref_vectors, codes, len(names))[codes] - 1))[tested]))


def debiased_self_test(vectors: np.ndarray, codes: np.ndarray, k: int, margin: float) -> float:
    """naming.prototypes.self_test_threshold with each reference's own cosine (to its name's prototype of n - 1
    references) scaled to what the name's whole prototype would give (whole_prototype_scale)."""
    from crop_cluster.naming.prototypes import SELF_TEST_ERRORS, leave_one_out

    own, other, runner, tested = leave_one_out(vectors, codes, k)
    own = np.nan_to_num(own * whole_prototype_scale(vectors, codes, k)[codes], nan=np.inf)
    wrong = tested & (other > own) & (other - np.maximum(own, runner) >= margin - 1e-7)
    allowed = int(np.floor(SELF_TEST_ERRORS * tested.sum() + 1e-9))
    return float("-inf") if wrong.sum() <= allowed else float(np.sort(other[wrong])[::-1][allowed])


def units_of(level: str, part: Partition, members=None, debiased: bool = False) -> Units:
    """Name the units of `level` (naming/ as a run does; `members`: the members' NamingSettings, which split
    clusters that mix names: the gallery rules at cluster level) and keep what the calibration needs (debiased: the
    self-test of debiased_self_test)."""
    from crop_cluster.naming.evaluate import auroc, unit_truth
    from crop_cluster.naming.prototypes import name_codes, self_test_threshold, top_names
    from crop_cluster.naming.rule import member_names
    from crop_cluster.naming.units import naming_units, split_mixed_clusters, unit_vectors

    cluster = part.table["cluster"].to_numpy(np.int64)
    individual = np.unique(part.table["individual"].to_numpy(np.int64), return_inverse=True)[1].reshape(-1)
    names, codes = name_codes(part.ref_names)
    test = debiased_self_test if debiased else self_test_threshold
    self_test = {m: test(part.ref_vectors, codes, len(names), m) for m in MARGINS}
    split = 0
    if members is not None:
        if debiased:                                     # the members' raise from the same self-test
            from dataclasses import replace

            members = replace(members, gallery_offset=None,
                              threshold=max(members.threshold, self_test[members.margin] + members.gallery_offset)
                              if members.gallery_offset is not None else members.threshold)
        member = member_names(part.embedding, individual, part.ref_vectors, codes, len(names), members)
        unit, kind, split = split_mixed_clusters(cluster, individual, member)
    else:
        unit, kind = naming_units(level, cluster, individual)
    queries = unit_vectors(part.embedding, individual if level != "crop" else np.arange(unit.size), unit, kind.size)
    index, score = top_names(queries, part.ref_vectors, codes, len(names))
    truth = unit_truth(list(part.truth), unit, kind.size)
    known = np.asarray([t in set(names) for t in truth])
    best = np.asarray(names, dtype=object)[index[:, 0]]
    gap = np.where(index[:, 1] >= 0, score[:, 0] - score[:, 1], np.nan)
    area = auroc(score[known, 0].astype(np.float64), score[~known, 0].astype(np.float64))
    return Units(score[:, 0].astype(np.float64), gap, best == np.asarray(truth, dtype=object), known, ~known,
                 np.bincount(unit, minlength=kind.size), area, self_test, split)


def gallery_share(ref_vectors: np.ndarray, ref_names: Sequence[str]) -> float:
    """The share of references closer to another name than to their own (naming.prototypes.gallery_overlap)."""
    from crop_cluster.naming.prototypes import gallery_overlap, name_codes

    names, codes = name_codes(ref_names)
    return float(gallery_overlap(ref_vectors, codes, len(names)).mean())


# ---------------------------------------------------------------- calibration

def grid(parts: Sequence[Units], offsets: Sequence[Optional[float]]) -> Dict[str, np.ndarray]:
    """Pooled over `parts`: precision, coverage, unknown_named, named (M, O, T) for MARGINS x offsets x THRESHOLDS;
    a unit is named when its score reaches the threshold and its draw's self-test at that margin plus the offset
    (None: no raise) and it beats the second name by the margin."""
    score = np.concatenate([p.score for p in parts])
    gap = np.concatenate([p.gap for p in parts])
    right = np.concatenate([p.right for p in parts])
    known = np.concatenate([p.known for p in parts])
    unknown = np.concatenate([p.unknown for p in parts])
    shape = (len(MARGINS), len(offsets), THRESHOLDS.size)
    out = {key: np.full(shape, np.nan) for key in ("precision", "coverage", "unknown_named", "named")}
    for i, margin in enumerate(MARGINS):
        confident = np.isnan(gap) | (np.nan_to_num(gap, nan=1.0) >= margin - 1e-7)
        for j, offset in enumerate(offsets):
            floor = np.concatenate([np.full(p.score.size, -np.inf if offset is None else p.self_test[margin] + offset)
                                    for p in parts])
            named = (score[None, :] >= THRESHOLDS[:, None] - 1e-7) & (confident & (score >= floor - 1e-7))[None, :]
            n_named = named.sum(1)
            out["named"][i, j] = n_named
            out["precision"][i, j] = np.where(n_named > 0, (named & right).sum(1) / np.maximum(n_named, 1), np.nan)
            out["coverage"][i, j] = (named & right & known).sum(1) / max(known.sum(), 1)
            out["unknown_named"][i, j] = (named & unknown).sum(1) / max(unknown.sum(), 1)
    return out


def feasible(measures: Dict[str, np.ndarray], regime: str) -> np.ndarray:
    """bool (M, O, T): the targets a calibration can check (AUROC does not depend on the threshold)."""
    precision = np.nan_to_num(measures["precision"], nan=1.0)      # nothing named: no wrong name
    if regime == "views":
        return (precision >= TARGETS["views"]["precision"]) & \
            (1 - measures["unknown_named"] >= TARGETS["views"]["unknown_left_unknown"])
    return (precision >= TARGETS["kinds"]["precision"]) & \
        (measures["unknown_named"] <= TARGETS["kinds"]["unknown_named_at_most"])


def calibrate(calibration_grids: Dict[str, Dict[str, np.ndarray]], offsets: Sequence[Optional[float]]) -> Dict:
    """The (threshold, margin, offset) in the middle of the widest plateau of best mean views coverage (within
    PLATEAU) among the points meeting every calibration set's targets: the longest run of thresholds at one
    (margin, offset), its middle threshold (ties: the smaller margin, then the smallest offset). When
    no point meets every set's targets, the views sets' targets alone, and it says so."""
    views = [name for name in calibration_grids if REGIME[name] == "views"]
    every = np.logical_and.reduce([feasible(g, REGIME[name]) for name, g in calibration_grids.items()])
    constraint = "every calibration set's targets"
    if not every.any():
        every = np.logical_and.reduce([feasible(calibration_grids[name], "views") for name in views])
        constraint = "the views sets' targets only (no point meets the kinds targets too)"
    coverage = np.mean([calibration_grids[name]["coverage"] for name in views], axis=0)
    best = np.where(every, coverage, -1.0).max()
    good = every & (coverage >= best - PLATEAU)
    runs = []                                           # (length, -margin, m, o, first, last)
    for m in range(len(MARGINS)):
        for o in range(len(offsets)):
            t = 0
            while t < THRESHOLDS.size:
                if good[m, o, t]:
                    end = t
                    while end + 1 < THRESHOLDS.size and good[m, o, end + 1]:
                        end += 1
                    runs.append((end - t + 1, -MARGINS[m], m, o, t, end))
                    t = end + 1
                else:
                    t += 1
    longest = max(run[:2] for run in runs)
    tied = [run for run in runs if run[:2] == longest]
    length, _, m, o, first, last = min(tied, key=lambda run: run[3])
    middle = (first + last) // 2
    return {"threshold": float(THRESHOLDS[middle]), "margin": float(MARGINS[m]), "gallery_offset": offsets[o],
            "constraint": constraint, "plateau": [float(THRESHOLDS[first]), float(THRESHOLDS[last])],
            "tied_offsets": [offsets[run[3]] for run in tied],
            "calibration_views_coverage": round(float(coverage[m, o, middle]), 4)}


def at(measures: Dict[str, np.ndarray], offsets: Sequence[Optional[float]], chosen: Dict) -> Dict:
    m, o = MARGINS.index(chosen["margin"]), list(offsets).index(chosen["gallery_offset"])
    t = int(np.argmin(np.abs(THRESHOLDS - chosen["threshold"])))
    return {key: None if np.isnan(measures[key][m, o, t]) else round(float(measures[key][m, o, t]), 4)
            for key in ("precision", "coverage", "unknown_named", "named")}


def median_over(parts: Sequence[Units], chosen: Dict) -> Dict:
    """Median over draws of each test measure at the chosen point, of the AUROC and of the threshold used."""
    offsets = (chosen["gallery_offset"],)
    rows = [at(grid([p], offsets), offsets, chosen) for p in parts]
    summary = {}
    for key in ("precision", "coverage", "unknown_named"):
        values = [r[key] for r in rows if r[key] is not None]
        summary[key] = round(float(np.median(values)), 4) if values else None
    summary["unknown_left_unknown"] = None if summary["unknown_named"] is None else \
        round(1 - summary["unknown_named"], 4)
    aurocs = [p.auroc for p in parts if p.auroc is not None]
    summary["auroc"] = round(float(np.median(aurocs)), 4) if aurocs else None
    summary["threshold_used"] = round(float(np.median([used(p, chosen) for p in parts])), 4)
    summary["draws"] = len(parts)
    summary["units_per_draw"] = int(np.median([p.score.size for p in parts]))
    summary["clusters_split_per_draw"] = float(np.mean([p.split for p in parts]))
    return summary


def used(part: Units, chosen: Dict) -> float:
    """The threshold a run uses on this draw's gallery at the chosen point (capped at 1: nothing named above)."""
    offset = chosen["gallery_offset"]
    raised = -np.inf if offset is None else part.self_test[chosen["margin"]] + offset
    return min(1.0, max(chosen["threshold"], raised))


def passes(summary: Dict, regime: str) -> Dict[str, bool]:
    targets = TARGETS[regime]
    if regime == "views":
        return {key: summary[key] is not None and summary[key] >= target for key, target in targets.items()}
    return {"precision": summary["precision"] is None or summary["precision"] >= targets["precision"],
            "unknown_named_at_most": summary["unknown_named"] <= targets["unknown_named_at_most"]}


def oracle(parts: Sequence[Units], regime: str) -> Dict:
    """The best pooled coverage any (threshold, margin) of the baseline rule reaches on these very draws while
    meeting the regime's precision and unknowns targets: a ceiling no calibration can beat."""
    measures = grid(parts, (None,))
    ok = feasible(measures, regime)
    coverage = np.where(ok, measures["coverage"], -1.0)
    m, _, t = np.unravel_index(int(np.argmax(coverage)), coverage.shape)
    return {"coverage": round(float(coverage[m, 0, t]), 4), "threshold": float(THRESHOLDS[t]),
            "margin": float(MARGINS[m]), "precision": None if np.isnan(measures["precision"][m, 0, t]) else
            round(float(measures["precision"][m, 0, t]), 4),
            "unknown_named": round(float(measures["unknown_named"][m, 0, t]), 4)}


# ---------------------------------------------------------------- every split, ceilings, sweep

def every_split(data: LabelledSet, vectors: Dict[str, np.ndarray], part: Partition, level: str, members,
                chosen: Dict, debiased: bool) -> Dict:
    """Every choice of half the set's names as known (the queries stay the same: every name's one eligible
    reference is set aside in each draw): mean and median of the measures at the chosen point over all of them."""
    from itertools import combinations

    names = sorted(set(data.names))
    first = {data.names[k]: data.files[k] for k in range(len(data.files)) if data.reference_ok[k]}
    rows = []
    for known in combinations(names, len(names) // 2):
        held = [name for name in known if name in first]
        one = Partition(part.table, part.embedding, part.truth, np.stack([vectors[first[n]] for n in held]), held)
        units = units_of(level, one, members, debiased)
        rows.append(at(grid([units], (chosen["gallery_offset"],)), (chosen["gallery_offset"],), chosen))
    summary = {"splits": len(rows)}
    for key in ("precision", "coverage", "unknown_named"):
        values = [r[key] for r in rows if r[key] is not None]
        summary[key] = {"mean": round(float(np.mean(values)), 4), "median": round(float(np.median(values)), 4),
                        "share_meeting_target": None if key == "unknown_named" else
                        round(float(np.mean([v >= TARGETS["views"][key] for v in values])), 4)}
    return summary


def units_table(data: LabelledSet, vectors: Dict[str, np.ndarray], part: Partition, level: str) -> List[Dict]:
    """Every unit of `level` (no split) of the partition named against every eligible reference of every name
    (biodivx: each individual's first-frame crop): its crops' names, its truth, its own name's cosine and the best
    and second names with their cosines; what decides each unit, for the docs."""
    from crop_cluster.naming.evaluate import unit_truth
    from crop_cluster.naming.prototypes import name_codes, prototypes
    from crop_cluster.naming.units import naming_units, unit_vectors

    first = {data.names[k]: data.files[k] for k in range(len(data.files)) if data.reference_ok[k]}
    names, codes = name_codes(sorted(first))
    protos = prototypes(np.stack([vectors[first[n]] for n in names]), codes, len(names))
    cluster = part.table["cluster"].to_numpy(np.int64)
    individual = np.unique(part.table["individual"].to_numpy(np.int64), return_inverse=True)[1].reshape(-1)
    unit, kind = naming_units(level, cluster, individual)
    scores = unit_vectors(part.embedding, individual, unit, kind.size) @ protos.T
    truth = unit_truth(list(part.truth), unit, kind.size)
    rows = []
    for u in range(kind.size):
        order = np.argsort(-scores[u], kind="stable")
        rows.append({"crops": sorted(t for t, v in zip(part.truth, unit.tolist()) if v == u), "truth": truth[u],
                     "own": None if truth[u] not in names else round(float(scores[u, names.index(truth[u])]), 4),
                     "best": names[order[0]], "best_cosine": round(float(scores[u, order[0]]), 4),
                     "second": names[order[1]], "second_cosine": round(float(scores[u, order[1]]), 4)})
    return rows


def fmnist_ceiling(data: LabelledSet, vectors: Dict[str, np.ndarray], parts: Sequence[Partition],
                   rng: random.Random) -> Dict:
    """Fashion-MNIST's test draws named with the baseline rule from 3, 10 and 30 references per known class (drawn
    from the calibration half): median AUROC at cluster level and the oracle coverage (the best any threshold and
    margin reach on these draws): what more references would buy, whatever the threshold."""
    pool: Dict[str, List[str]] = {}
    for f, n, h in zip(data.files, data.names, data.half):
        if h == "calibration":
            pool.setdefault(n, []).append(f)
    result = {}
    for count in CEILING_REFERENCES:
        units = []
        for part in parts:
            known = sorted(set(part.ref_names))
            files = [f for n in known for f in rng.sample(pool[n], min(count, len(pool[n])))]
            names = [n for n in known for _ in range(min(count, len(pool[n])))]
            units.append(units_of("cluster", Partition(part.table, part.embedding, part.truth,
                                                       np.stack([vectors[f] for f in files]), names)))
        result[str(count)] = {"auroc": round(float(np.median([u.auroc for u in units])), 4),
                              "oracle": oracle(units, "views")}
    return result


def auroc_alternatives(parts: Sequence[Partition]) -> Dict[str, Optional[float]]:
    """Median AUROC known vs unknown at cluster level (no split) with other scores of a unit for its best name, over
    the draws: prototype (as shipped), max (nearest reference), centred (queries and references minus the mean of
    the run's crops, then normalised: SimpleShot's CL2N on the run itself), znorm (per name, the cosine less the
    mean over the other names' references, over their spread)."""
    from crop_cluster.naming.evaluate import auroc, unit_truth
    from crop_cluster.naming.prototypes import name_codes, name_scores, prototypes
    from crop_cluster.naming.units import naming_units, unit_vectors

    def normalised(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    found: Dict[str, List[float]] = {key: [] for key in ("prototype", "max", "centred", "znorm")}
    for part in parts:
        cluster = part.table["cluster"].to_numpy(np.int64)
        individual = np.unique(part.table["individual"].to_numpy(np.int64), return_inverse=True)[1].reshape(-1)
        names, codes = name_codes(part.ref_names)
        unit, kind = naming_units("cluster", cluster, individual)
        queries = unit_vectors(part.embedding, individual, unit, kind.size)
        known = np.asarray([t in set(names) for t in unit_truth(list(part.truth), unit, kind.size)])
        centre = part.embedding.mean(axis=0)
        protos = prototypes(part.ref_vectors, codes, len(names))
        others = part.ref_vectors @ protos.T
        others[np.arange(codes.size), codes] = np.nan
        scores = {"prototype": queries @ protos.T,
                  "max": name_scores(queries, part.ref_vectors, codes, len(names), "max"),
                  "centred": normalised(queries - centre) @ prototypes(normalised(part.ref_vectors - centre),
                                                                       codes, len(names)).T,
                  "znorm": (queries @ protos.T - np.nanmean(others, axis=0)) /
                  np.maximum(np.nanstd(others, axis=0), 1e-3)}
        for key, values in scores.items():
            best = values.max(axis=1).astype(np.float64)
            area = auroc(best[known], best[~known])
            if area is not None:
                found[key].append(area)
    return {key: round(float(np.median(values)), 4) if values else None for key, values in found.items()}


def sweep(parts: Sequence[Units], margin: float) -> List[Dict]:
    """Pooled test measures per threshold at `margin`, without the gallery's raise: what a user gets by giving
    --name_threshold (a given threshold is used as given)."""
    pooled = grid(parts, (None,))
    m = MARGINS.index(margin)
    return [{"threshold": float(t), **{key: None if np.isnan(pooled[key][m, 0, i]) else
                                       round(float(pooled[key][m, 0, i]), 4)
                                       for key in ("precision", "coverage", "unknown_named", "named")}}
            for i, t in enumerate(THRESHOLDS)]


# ---------------------------------------------------------------- timing

def timing(data: LabelledSet, draw: Draw, part: Partition, work: Path, cache_dir: Path, gallery: Dict,
           repeats: int = 5) -> Dict:
    """A whole CLI run on the draw's queries without and with --reference (a CSV of its references), side by
    side, `repeats` times each: medians, the naming stage's seconds and the ratio; and naming alone
    (naming.run.name_run on the run's arrays) with the baseline rule and the gallery rule side by side."""
    import crop_cluster
    from crop_cluster.naming.references import References
    from crop_cluster.naming.rule import NamingSettings
    from crop_cluster.naming.run import name_run

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
    references = References([data.files[k] for k in draw.references], part.ref_names, ["bench"] * len(part.ref_names),
                            [""] * len(part.ref_names))
    cluster = part.table["cluster"].to_numpy(np.int64)
    individual = np.unique(part.table["individual"].to_numpy(np.int64), return_inverse=True)[1].reshape(-1)
    rules = {"baseline": NamingSettings("cluster", gallery["baseline"]["threshold"], gallery["baseline"]["margin"]),
             "gallery": NamingSettings("cluster", gallery["gallery"]["threshold"], gallery["gallery"]["margin"],
                                       gallery_offset=gallery["gallery"]["gallery_offset"],
                                       members=gallery["members"])}
    alone = {rule: [] for rule in rules}
    for _ in range(repeats):
        for rule, settings in rules.items():
            start = time.perf_counter()
            name_run(references, part.ref_vectors, part.embedding, cluster, individual, [""] * len(files), settings)
            alone[rule].append(time.perf_counter() - start)
    return {"queries": len(files), "references": len(draw.references), "repeats": repeats,
            "run_without_s": round(float(np.median(plain)), 3), "run_with_s": round(float(np.median(named)), 3),
            "naming_stage_s": round(float(np.median(stage)), 3),
            "ratio": round(float(np.median(named) / np.median(plain)), 3),
            "name_run_s": {rule: round(float(np.median(times)), 4) for rule, times in alone.items()},
            "name_run_ratio_gallery_to_baseline": round(float(np.median(alone["gallery"]) /
                                                              np.median(alone["baseline"])), 3)}


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
    logging.getLogger("crop-cluster").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="naming-bench-") as scratch:
        work = args.work or Path(scratch)
        return run(args, work)


def partitions(sets: Dict[str, LabelledSet], vectors: Dict[str, np.ndarray], args, work: Path, cache_dir: Path):
    """Every set's draws, each clustered by the pipeline: ({(set, half): [(Draw, Partition)]}, draw_log, the
    gallery check and the leave-one-out cost per set and draw)."""
    rng = random.Random(args.seed + 1)
    made_all: Dict[Tuple[str, str], List[Tuple[Draw, Partition]]] = {}
    draw_log: Dict[str, Dict] = {}
    overlaps: Dict[str, List[float]] = {}
    costs: Dict[str, List[float]] = {}
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
            for number, draw in enumerate(made):
                table, embedding = partition(data, draw.queries, work / "runs" / f"{name}_{half}_{number}",
                                             cache_dir)
                part = Partition(table, embedding, [data.names[k] for k in draw.queries],
                                 np.stack([vectors[data.files[k]] for k in draw.references]),
                                 [data.names[k] for k in draw.references])
                overlaps.setdefault(name, []).append(gallery_share(part.ref_vectors, part.ref_names))
                cost = leave_one_out_cost(part.ref_vectors, part.ref_names)
                if cost is not None:
                    costs.setdefault(name, []).append(cost)
                made_all.setdefault((name, half), []).append((draw, part))
            print(f"{name} {half}: {len(made)} draws", flush=True)
    return made_all, draw_log, overlaps, costs


def run(args, work: Path) -> int:
    started = time.perf_counter()
    sets, skipped = build(args, work)
    if not sets:
        print("naming bench: no data set found; nothing to do", file=sys.stderr)
        return 2
    cache_dir = work / "cache"
    vectors = embed_all([f for s in sets.values() for f in s.files], cache_dir)
    made, draw_log, overlaps, costs = partitions(sets, vectors, args, work, cache_dir)
    results: Dict[str, Dict] = {rule: {} for rule in RULES}
    units: Dict[Tuple[str, str, str, str], List[Units]] = {}
    members: Dict[str, object] = {}
    for level in LEVELS:
        for rule in RULES:
            split_by = members.get(rule) if level == "cluster" else None
            debiased = rule == "gallery_debiased"
            for (name, half), pairs in made.items():
                units[(name, half, level, rule)] = [units_of(level, part, split_by, debiased) for _, part in pairs]
            offsets = OFFSETS if rule != "baseline" else (None,)
            calibration_sets = [name for name in CALIBRATE_ON[rule] if name in sets]
            grids = {name: grid(units[(name, "calibration", level, rule)], offsets) for name in calibration_sets}
            chosen = calibrate(grids, offsets)
            test = {name: median_over(units[(name, "test", level, rule)], chosen) for name in sets}
            for name, summary in test.items():
                summary["meets_targets"] = passes(summary, REGIME[name])
            results[rule][level] = {"calibrated": chosen, "calibrated_on": calibration_sets, "test": test,
                                    "calibration": {name: at(g, offsets, chosen) for name, g in grids.items()}}
            if rule != "baseline" and level == "individual":
                members[rule] = member_settings(chosen)
            if "biodivx" in sets:
                results[rule][level]["biodivx_every_split"] = every_split(
                    sets["biodivx"], vectors, made[("biodivx", "test")][0][1], level, split_by, chosen, debiased)
    decision = {"rule": "gallery", "reason": (
        "the gallery rule is calibrated on fmnist too (its self-test raises the threshold where the model confuses "
        "the gallery's names, so one set of defaults serves the views and fmnist), and names the clusters that mix "
        "names member by member; the baseline is the previous rule, calibrated as before"),
        "defaults": {level: {key: results["gallery"][level]["calibrated"][key]
                             for key in ("threshold", "margin", "gallery_offset")} for level in LEVELS}}
    oracles = {name: {level: oracle(units[(name, "test", level, "baseline")], REGIME[name]) for level in LEVELS}
               for name in sets}
    ceiling = None
    if "fmnist" in sets:
        ceiling = fmnist_ceiling(sets["fmnist"], vectors, [part for _, part in made[("fmnist", "test")]],
                                 random.Random(args.seed + 2))
    biodivx_units = None if "biodivx" not in sets else {
        level: units_table(sets["biodivx"], vectors, made[("biodivx", "test")][0][1], level)
        for level in ("cluster", "individual")}
    alternatives = {name: auroc_alternatives([part for _, part in made[(name, "test")]]) for name in sets}
    margin = results["gallery"]["cluster"]["calibrated"]["margin"]
    sweeps = {name: sweep(units[(name, "test", "cluster", "gallery")], margin) for name in sets}
    self_tests = {name: {"median_cluster_margin": median_finite([u.self_test[margin] for u in
                                                                 units[(name, half, "cluster", "gallery")]])
                         for half in ("test",)} for name in sets}
    largest = max(sets, key=lambda n: len(made[(n, "test")][0][0].queries))
    draw, part = made[(largest, "test")][0]
    cost = timing(sets[largest], draw, part, work, cache_dir,
                  {"baseline": results["baseline"]["cluster"]["calibrated"],
                   "gallery": results["gallery"]["cluster"]["calibrated"], "members": members["gallery"]})
    dim = len(next(iter(vectors.values())))
    document = {
        "name": "naming", "backend": BACKEND, "model": f"{BACKEND}:{MODEL}",
        "machine": {**bench_machine.machine(), "versions": bench_machine.versions(
            ("torch", "numpy", "scipy", "scikit-learn", "pandas", "pillow", "onnxruntime"))},
        "command": "flock /tmp/bench.lock .venv/bin/python bench/naming.py" + (
            f" --draws {args.draws}" if args.draws != 5 else ""),
        "seed": args.seed, "d": dim, "references_per_name": REFERENCES, "targets": TARGETS, "regime": REGIME,
        "calibrate_on": CALIBRATE_ON,
        "sets": {name: {"n": len(s.files), "names": len(set(s.names)), "regime": REGIME[name],
                        "draws": draw_log[name],
                        "gallery_references_closer_to_another_name": round(float(np.median(overlaps[name])), 4),
                        "gallery_self_test_threshold": self_tests[name],
                        "leave_one_out_cost": None if name not in costs else
                        round(float(np.median(costs[name])), 4)}
                 for name, s in sets.items()},
        "skipped_sets": skipped, "thresholds": [float(t) for t in THRESHOLDS], "margins": list(MARGINS),
        "offsets": list(OFFSETS), "decision": decision, "rules": results, "oracle_test": oracles,
        "fmnist_ceiling": ceiling, "auroc_alternatives_cluster_test": alternatives, "biodivx_units": biodivx_units,
        "sweep_cluster_gallery_test": sweeps, "timing": cost,
        "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print_summary(document)
    print(f"\nwrote {args.out}")
    return 0


def median_finite(values: Sequence[float]) -> Optional[float]:
    """The median of the finite values (self-test thresholds: -inf when the gallery names its references right),
    None when there are none; with the share of finite ones."""
    finite = [v for v in values if np.isfinite(v)]
    return None if not finite else round(float(np.median(finite)), 4)


def print_summary(document: Dict) -> None:
    print(f"\nnames from references, {document['model']}: test medians at the calibrated defaults "
          f"(precision / coverage / unknowns left unknown / AUROC)")
    for level in LEVELS:
        for rule in RULES:
            entry = document["rules"][rule][level]
            chosen = entry["calibrated"]
            cells = []
            for name, summary in entry["test"].items():
                cells.append(f"{name} {summary['precision']}/{summary['coverage']}/"
                             f"{summary['unknown_left_unknown']}/{summary['auroc']}")
            offset = chosen["gallery_offset"]
            print(f"{level:10s} {rule:8s} t={chosen['threshold']:.2f} m={chosen['margin']:.2f} "
                  f"o={'-' if offset is None else f'{offset:.2f}'}  " + "  ".join(cells))
            if "biodivx_every_split" in entry:
                every = entry["biodivx_every_split"]
                print(f"{'':20s} biodivx over {every['splits']} splits: coverage mean {every['coverage']['mean']}, "
                      f"precision mean {every['precision']['mean']}, unknown named mean "
                      f"{every['unknown_named']['mean']}")
    if document["fmnist_ceiling"]:
        print("fmnist ceiling: " + ", ".join(f"{k} refs/class AUROC {v['auroc']} oracle coverage "
                                             f"{v['oracle']['coverage']}" for k, v in
                                             document["fmnist_ceiling"].items()))
    timing_ = document["timing"]
    print(f"timing: run {timing_['run_without_s']} s, with --reference {timing_['run_with_s']} s "
          f"(naming stage {timing_['naming_stage_s']} s, ratio {timing_['ratio']}); naming alone "
          f"{timing_['name_run_s']} (gallery/baseline {timing_['name_run_ratio_gallery_to_baseline']})")


if __name__ == "__main__":
    sys.exit(main())
