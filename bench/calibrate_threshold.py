"""Calibrate the default cosine threshold of `-c cosine` for `-e lite0`, and suggest a near-duplicate threshold.

    .venv/bin/python bench/calibrate_threshold.py [--out bench/results/calibration.json]

For every threshold t in 0.50, 0.51, ..., 0.98 the lite0 embeddings of each labelled set are grouped by single-link
cosine clustering (connected components of the graph "cosine >= t", brute force: the sets are small) and scored
with the project's own `evaluate.metrics.partition_metrics` (pairwise precision / recall / F1, ARI).

Sets (each is skipped with a message when its source is absent):
  biodivx_species      26 real light-trap crops (../shared/data/biodivx-crops), labels = morphotype, by eye
  biodivx_individuals  the same crops, labels = physical individual tracked over the 3 frames, by eye
  tux_kinds            photos from Debian's tuxpaint-stamps-default, one per stamp, label = category/subcategory
  tux_bursts_kinds     VIEWS synthetic camera-trap views of each stamp (example/make_example.py: box jitter,
                       rotation, brightness, rescale, JPEG), label = category/subcategory
  tux_bursts_individuals  the same views, label = source stamp (one physical object)

"kinds" sets calibrate the clustering threshold (crops of one kind together); "individuals" sets calibrate the
near-duplicate threshold of the later dedup stage (views of one object together, different objects apart).
Recommendation rules (precision first: an expert merges two clean clusters in seconds, but splitting a mixed one
means looking at every crop):
  clustering  the lowest t whose pairwise precision is >= PRECISION_TARGET on every kinds set present and on the
              real crops scored per individual (the by-eye species call is uncertain), so that recall is as high
              as that precision allows; the threshold the kinds sets alone would allow is reported beside it.
  near-dup    the lowest t whose pairwise precision is >= NEAR_DUP_PRECISION_TARGET on every individuals set.
Writes the JSON (machine, versions, per-threshold tables, pair-similarity summaries, recommendation) and prints a
short table. Takes about a minute on 2 CPU cores (embedding ~1 100 images).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
for folder in (str(REPO), str(REPO / "bench")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402

import machine as bench_machine  # noqa: E402

THRESHOLDS = np.round(np.arange(0.50, 0.9801, 0.01), 2)
PRECISION_TARGET = 0.95
NEAR_DUP_PRECISION_TARGET = 0.99
BACKEND = "lite0"
DEFAULT_BIODIVX = REPO.parent / "shared" / "data" / "biodivx-crops"
DEFAULT_TUX = Path("/usr/share/tuxpaint/stamps")
SEED = 7

# By-eye labels of the 26 shared light-trap crops (frames 2023-09-08 00:16:17, :19 and :21), keyed by
# (frame HHMMSS, CROPNUMBER). Kept here, not as a data file: they describe data that lives outside the repository.
# Individuals were followed across frames by appearance and position; crop numbers change between frames.
BIODIVX_INDIVIDUALS = {
    ("001617", 0): "A", ("001619", 0): "A", ("001621", 0): "A",  # dark blob on a purple halo (beetle-like)
    ("001619", 1): "B", ("001621", 1): "B",                      # brown triangular moth (enters in frame 2)
    ("001617", 1): "C", ("001619", 2): "C", ("001621", 2): "C",  # small black fly, legs spread, pale halo
    ("001617", 2): "D", ("001619", 3): "D", ("001621", 3): "D",  # slender grey midge, long abdomen
    ("001617", 3): "E", ("001619", 4): "E", ("001621", 4): "E",  # small dark fly on a mottled grey halo
    ("001617", 4): "F", ("001619", 5): "F", ("001621", 6): "F",  # crane fly, long legs, reddish body
    ("001617", 5): "G", ("001619", 6): "G", ("001621", 5): "G",  # tiny blurred dark insect
    ("001617", 6): "H", ("001619", 7): "H", ("001621", 7): "H",  # large fly, brown wings
    ("001617", 7): "I", ("001619", 8): "I", ("001621", 8): "I",  # dark body on a textured purple halo
}
# Morphotypes: E and I look like one kind (small dark fly, compact body, faint legs, mottled halo; the halo is grey
# in E and purple in I) but at 50-70 px that is the one uncertain call: E-I (up to 0.845) is above the chosen
# threshold, the highest surely-different pair (I-A, 0.795) below it. Every other individual is its own kind; C is a different,
# bigger-legged black fly on a plain halo.
BIODIVX_SPECIES = {"A": "beetle_dark", "B": "moth_brown", "C": "fly_black_legs", "D": "midge_grey",
                   "E": "fly_small_dark", "F": "crane_fly", "G": "tiny_dark", "H": "fly_large", "I": "fly_small_dark"}

# Subcategories of tuxpaint-stamps-default that hold photographs (checked by eye on a contact sheet), >= 9 each.
# Drawings (symbols, signs, seasonal clip art), cartoon/, toys/ (a teddy bear among the mammals), plastic/
# flowers and *_mirror copies are left out.
TUX_SUBCATEGORIES = ("animals/mammals", "animals/birds", "animals/fish", "animals/insects", "food/fruit",
                     "food/vegetables", "plants/flowers", "hobbies/music", "household/tools", "space/planets")
TUX_SKIP_PARTS = {"cartoon", "toys", "plastic"}
VIEWS = 4

KINDS_SETS = ("biodivx_species", "tux_kinds", "tux_bursts_kinds")
REAL_KINDS_SET = "biodivx_species"  # real insects: the set whose F1 picks the threshold on the precision plateau
INDIVIDUAL_SETS = ("biodivx_individuals", "tux_bursts_individuals")


def load_example_module():
    """example/make_example.py as a module: its `camera_view` / `jpeg_bytes` make the synthetic bursts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_make_example", REPO / "example" / "make_example.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- data sets

def biodivx_files(root: Path) -> Optional[Tuple[List[str], List[str], List[str]]]:
    """(files, species labels, individual labels) for the shared crops, or None when the folder is absent."""
    if not root.is_dir():
        return None
    files, species, individuals = [], [], []
    for path in sorted(root.glob("crop_*.png")):
        stamp = path.name.split("_")[1][8:14]            # crop_<YYYYmmddHHMMSS>-00-06_CROPNUMBER_<n>_...
        number = int(path.name.split("CROPNUMBER_")[1].split("_")[0])
        individual = BIODIVX_INDIVIDUALS.get((stamp, number))
        if individual is None:
            raise SystemExit(f"{path}: no by-eye label in BIODIVX_INDIVIDUALS; label it or remove it")
        files.append(str(path))
        individuals.append(individual)
        species.append(BIODIVX_SPECIES[individual])
    if len(files) != len(BIODIVX_INDIVIDUALS):
        raise SystemExit(f"{root}: expected {len(BIODIVX_INDIVIDUALS)} labelled crops, found {len(files)}")
    return files, species, individuals


def tux_photos(root: Path) -> Optional[List[Tuple[str, str]]]:
    """(path, 'category/subcategory') for every photo stamp, sorted; None when the package is not installed."""
    if not root.is_dir():
        return None
    photos = []
    for sub in TUX_SUBCATEGORIES:
        for path in sorted((root / sub).rglob("*.png")):
            parts = set(path.relative_to(root).parts[:-1])
            if parts & TUX_SKIP_PARTS or "_mirror" in path.stem:
                continue
            photos.append((str(path), sub))
    return photos or None


def on_white_padded(path: str):
    """The stamp composited onto white with a white margin of 30 % per side, and the object's box in it.

    Returns (RGB image, (x1, y1, x2, y2)); the margin lets box jitter and rotation stay inside the picture.
    """
    from crop_cluster.embed.data import load_rgb
    from PIL import Image

    with Image.open(path) as raw:
        alpha_box = raw.convert("RGBA").getchannel("A").getbbox()
    image = load_rgb(path)
    x1, y1, x2, y2 = alpha_box or (0, 0, image.width, image.height)
    mx, my = int(0.3 * image.width) + 8, int(0.3 * image.height) + 8
    canvas = Image.new("RGB", (image.width + 2 * mx, image.height + 2 * my), (255, 255, 255))
    canvas.paste(image, (mx, my))
    return canvas, (x1 + mx, y1 + my, x2 + mx, y2 + my)


def write_bursts(photos: Sequence[Tuple[str, str]], folder: Path, views: int, seed: int):
    """`views` camera-trap views per photo as JPEG files in `folder`.

    Returns (files, kind labels, individual labels), each of length len(photos) * views.
    """
    example = load_example_module()
    rng = random.Random(seed)
    files, kinds, individuals = [], [], []
    for k, (path, kind) in enumerate(photos):
        canvas, box = on_white_padded(path)
        for v in range(views):
            target = folder / f"{k:04d}_{v}.jpg"
            target.write_bytes(example.jpeg_bytes(example.camera_view(canvas, box, rng), rng))
            files.append(str(target))
            kinds.append(kind)
            individuals.append(path)
    return files, kinds, individuals


# ---------------------------------------------------------------- measures

def single_link(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Connected components of "similarity >= threshold": int64 labels (n,) for a dense (n, n) similarity."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(csr_matrix(similarity >= threshold), directed=False)
    return labels.astype(np.int64)


def sweep(embeddings: np.ndarray, labels: Sequence[str]) -> List[Dict]:
    """One row per threshold: t, n_groups (incl. singletons), pairwise precision/recall/F1, ARI."""
    from crop_cluster.evaluate.metrics import partition_metrics

    similarity = embeddings @ embeddings.T
    rows = []
    for t in THRESHOLDS:
        pred = single_link(similarity, float(t))
        m = partition_metrics(list(labels), pred)
        rows.append({"t": float(t), "n_groups": int(pred.max() + 1), "precision": m["pairwise_precision"],
                     "recall": m["pairwise_recall"], "f1": m["pairwise_f1"], "ari": m["ari"]})
    return rows


def pair_summary(embeddings: np.ndarray, labels: Sequence[str]) -> Dict:
    """Cosine similarity quantiles of same-label pairs and different-label pairs (upper triangle only)."""
    y = np.asarray(labels, dtype=object)
    iu = np.triu_indices(len(y), 1)
    sims = (embeddings @ embeddings.T)[iu]
    same = (y[:, None] == y[None, :])[iu]
    out = {}
    for name, values in (("same", sims[same]), ("different", sims[~same])):
        qs = np.quantile(values, [0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0]) if values.size else [float("nan")] * 7
        out[name] = {"n_pairs": int(values.size),
                     **{k: round(float(q), 4) for k, q in zip(("min", "p01", "p05", "median", "p95", "p99", "max"), qs)}}
    return out


def lowest_threshold(tables: Dict[str, List[Dict]], names: Sequence[str], target: float) -> Optional[float]:
    """Lowest t at which every named table present has precision >= target; None if no t qualifies."""
    present = [tables[n] for n in names if n in tables]
    if not present:
        return None
    for i, t in enumerate(THRESHOLDS):
        if all(table[i]["precision"] >= target for table in present):
            return float(t)
    return None


def best_on_plateau(tables: Dict[str, List[Dict]], lowest: Optional[float]) -> Optional[float]:
    """From `lowest` up, the t with the best F1 on the real-insect kinds set while every kinds set keeps precision
    >= PRECISION_TARGET; ties go to the highest t (the widest margin above the wrong merges below `lowest`)."""
    if lowest is None or REAL_KINDS_SET not in tables:
        return lowest
    present = [tables[n] for n in KINDS_SETS if n in tables]
    best_t, best_f1 = lowest, -1.0
    for i, t in enumerate(THRESHOLDS):
        if t < lowest - 1e-9 or not all(table[i]["precision"] >= PRECISION_TARGET for table in present):
            continue
        f1 = tables[REAL_KINDS_SET][i]["f1"]
        if f1 >= best_f1 - 1e-9:
            best_t, best_f1 = float(t), max(f1, best_f1)
    return best_t


def row_at(table: List[Dict], t: float) -> Dict:
    return table[int(np.argmin(np.abs(THRESHOLDS - t)))]


# ---------------------------------------------------------------- run

def machine_info() -> Dict:
    """The machine (bench/machine.py, no GPU here) and the versions of the packages the calibration uses."""
    return {**bench_machine.machine(), "versions": bench_machine.versions(
        ("torch", "numpy", "scipy", "scikit-learn", "pillow"))}


def embed(backend, files: Sequence[str]) -> Tuple[np.ndarray, float]:
    """lite0 embeddings (n, 1280) of `files` (all must decode) and the wall time in seconds."""
    from crop_cluster.embed.base import embed_files

    start = time.perf_counter()
    result = embed_files(backend, list(files), batch_size=32, num_workers=0, progress=False)
    if result.skipped:
        raise SystemExit(f"could not decode: {result.skipped[:3]}")
    return result.embeddings, time.perf_counter() - start


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "calibration.json")
    parser.add_argument("--biodivx", type=Path, default=DEFAULT_BIODIVX, help="folder of the shared crops")
    parser.add_argument("--tuxpaint", type=Path, default=DEFAULT_TUX,
                        help="tuxpaint stamps root (apt-get install tuxpaint-stamps-default)")
    parser.add_argument("--views", type=int, default=VIEWS, help="synthetic views per stamp (default %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args(argv)


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from crop_cluster.embed import BACKENDS, load_backend

    backend = load_backend(BACKEND, "cpu")
    sets: Dict[str, Dict] = {}
    skipped: Dict[str, str] = {}

    bio = biodivx_files(args.biodivx)
    if bio is None:
        skipped["biodivx"] = f"{args.biodivx} not found"
    else:
        files, species, individuals = bio
        emb, seconds = embed(backend, files)
        sets["biodivx_species"] = {"n": len(files), "labels": species, "emb": emb, "embed_s": seconds}
        sets["biodivx_individuals"] = {"n": len(files), "labels": individuals, "emb": emb, "embed_s": 0.0}

    photos = tux_photos(args.tuxpaint)
    if photos is None:
        skipped["tuxpaint"] = f"{args.tuxpaint} not found (apt-get install -y tuxpaint-stamps-default)"
    else:
        emb, seconds = embed(backend, [p for p, _ in photos])
        sets["tux_kinds"] = {"n": len(photos), "labels": [k for _, k in photos], "emb": emb, "embed_s": seconds}
        with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
            files, kinds, individuals = write_bursts(photos, Path(tmp), args.views, args.seed)
            emb, seconds = embed(backend, files)
        sets["tux_bursts_kinds"] = {"n": len(files), "labels": kinds, "emb": emb, "embed_s": seconds}
        sets["tux_bursts_individuals"] = {"n": len(files), "labels": individuals, "emb": emb, "embed_s": 0.0}

    if not sets:
        print("calibrate_threshold: no data set found; nothing to do", file=sys.stderr)
        return 2
    tables = {name: sweep(s["emb"], s["labels"]) for name, s in sets.items()}
    pairs = {name: pair_summary(s["emb"], s["labels"]) for name, s in sets.items()}

    lenient_t = lowest_threshold(tables, KINDS_SETS, PRECISION_TARGET)
    cluster_t = best_on_plateau(tables, lenient_t)
    near_t = lowest_threshold(tables, INDIVIDUAL_SETS, NEAR_DUP_PRECISION_TARGET)
    current = BACKENDS[BACKEND].default_threshold
    recommendation = {
        "backend": BACKEND,
        "current_default": current,
        "cluster_threshold": cluster_t,
        "cluster_rule": f"clusters group kinds: among t with pairwise precision >= {PRECISION_TARGET} on every kinds "
                        f"set present ({', '.join(KINDS_SETS)}), the best F1 on {REAL_KINDS_SET}, ties to the "
                        f"highest t",
        "cluster_threshold_lenient": lenient_t,
        "cluster_lenient_rule": f"the lowest t with pairwise precision >= {PRECISION_TARGET} on every kinds set",
        "near_duplicate_threshold": near_t,
        "near_duplicate_rule": f"lowest t with pairwise precision >= {NEAR_DUP_PRECISION_TARGET} on every "
                               f"set present of {', '.join(INDIVIDUAL_SETS)}",
        "at_cluster_threshold": {n: row_at(tables[n], cluster_t) for n in tables} if cluster_t else None,
        "at_current_default": {n: row_at(tables[n], current) for n in tables},
        "at_near_duplicate_threshold": {n: row_at(tables[n], near_t) for n in tables} if near_t else None,
    }
    document = {
        "name": "calibration", "backend": BACKEND, "model": backend.model_id, "machine": machine_info(),
        "thresholds": [float(t) for t in THRESHOLDS],
        "sets": {name: {"n": s["n"], "n_labels": len(set(s["labels"])), "embed_s": round(s["embed_s"], 2)}
                 for name, s in sets.items()},
        "skipped_sets": skipped, "views_per_stamp": args.views, "seed": args.seed,
        "pair_similarity": pairs, "tables": tables, "recommendation": recommendation,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")

    print_summary(tables, pairs, recommendation, skipped)
    print(f"\nwrote {args.out}")
    return 0


def print_summary(tables, pairs, recommendation, skipped) -> None:
    names = list(tables)
    print("single-link cosine clustering, lite0: pairwise precision / recall / ARI per set")
    print("   t  " + "  ".join(f"{n[:22]:>22s}" for n in names))
    for i, t in enumerate(THRESHOLDS):
        marked = (recommendation["cluster_threshold"], recommendation["cluster_threshold_lenient"],
                  recommendation["near_duplicate_threshold"], recommendation["current_default"])
        if round(t * 100) % 5 and t not in marked:
            continue
        cells = [f"{r['precision']:.2f}/{r['recall']:.2f}/{r['ari']:+.2f}" for r in (tables[n][i] for n in names)]
        print(f"{t:.2f}  " + "  ".join(f"{c:>22s}" for c in cells))
    print("\ncosine of same-label / different-label pairs (median; same p05 vs different p99, max):")
    for n, p in pairs.items():
        print(f"  {n:24s} same {p['same']['median']:.3f} (p05 {p['same']['p05']:.3f})   "
              f"different {p['different']['median']:.3f} (p99 {p['different']['p99']:.3f}, "
              f"max {p['different']['max']:.3f})")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"\nrecommended lite0 cluster threshold: {recommendation['cluster_threshold']} "
          f"(current {recommendation['current_default']}); rule: {recommendation['cluster_rule']}")
    print(f"  lowest threshold with kind-level precision >= {PRECISION_TARGET}: "
          f"{recommendation['cluster_threshold_lenient']}")
    print(f"suggested lite0 near-duplicate threshold: {recommendation['near_duplicate_threshold']}; "
          f"rule: {recommendation['near_duplicate_rule']}")


if __name__ == "__main__":
    sys.exit(main())
