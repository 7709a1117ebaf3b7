"""Calibrate the individual-linking defaults of `-e lite0`: near-duplicate threshold and track similarity gate.

    flock /tmp/bench.lock .venv/bin/python bench/calibrate_individuals.py [--out bench/results/individuals.json]

Linking is scored pairwise (precision: share of linked pairs that are one true individual; recall: share of true
same-individual pairs that are linked) with `evaluate.metrics.partition_metrics`, calling
`dedup.individuals.link_individuals` itself, per rule and for the defaults. Sets (each skipped when absent):

  biodivx        26 real light-trap crops (../shared/data/biodivx-crops), 9 individuals over 3 frames 2 s apart,
                 labelled by eye (labels in bench/calibrate_threshold.py); timestamps from the names, no boxes
  tux_near       near-duplicates made from the photos of Debian's tuxpaint-stamps-default (median 190 x 140 px):
                 per photo its tight crop plus NEAR_COPIES copies (crop box jittered <= 2 % per side, resized
                 x0.75-1.33, brightness 0.95-1.05, JPEG quality 70-95); label = photo. Different photos of one
                 kind (orange and mandarine, two lettuces) are the "different specimens of one species" that must
                 stay apart
  tux_near_harsh the same with harsher copies (jitter <= 3 %, x0.5-1.5, brightness 0.9-1.1, JPEG 60-95): halving
                 a 190 px photo alone drops lite0's cosine to a median 0.91 (p05 0.84), into the range of
                 different specimens, so full recall here is not a goal; it shows what the threshold gives up
  tux_tracks     synthetic light-trap sequences: SEQ_INDIVIDUALS photos from the animal categories, each present
                 in a random run of frames (2 s apart) of a SEQ_FRAMES-frame sequence, one camera view per frame
                 (box jitter 5-10 %, rotation, brightness, rescale, JPEG: example/make_example.py), so insects
                 arrive and leave while others stay; label = photo. Scored without boxes (similarity and time only),
                 and with synthetic boxes (each insect drifts <= 0.3 box sizes per frame around its own spot)

Rules for the defaults (margins over fitting: the defaults are checked on unseen data):
  dedup_threshold       max(the lowest t from which near-only precision is 1.0 on every set, the highest
                        different-individual cosine on any set) + MARGIN;
  track_min_similarity  the middle of the range of s where track-only linking (without boxes: the hardest case)
                        has precision >= 0.99 and recall 1.0 on every timed set, rounded to 0.05.
Prints a table and writes JSON with the machine, versions, set sizes, per-threshold tables and the choice.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import calibrate_threshold as base  # noqa: E402  (bench/ is on sys.path when run as a script)

NEAR_THRESHOLDS = np.round(np.arange(0.80, 0.9951, 0.01), 2)
TRACK_SIMILARITIES = np.round(np.arange(0.30, 0.9051, 0.05), 2)
MARGIN = 0.02
NEAR_COPIES = 4
SEQ_INDIVIDUALS = 40
SEQ_FRAMES = 12
SEQ_CATEGORIES = ("animals/insects", "animals/birds", "animals/mammals", "animals/fish")
SEED = 11


# ---------------------------------------------------------------- data sets

NEAR_KINDS = {  # jitter per side (share of the box), log-uniform scale range, brightness range, JPEG quality range
    "tux_near": (0.02, (0.75, 1.33), (0.95, 1.05), (70, 95)),
    "tux_near_harsh": (0.03, (0.5, 1.5), (0.9, 1.1), (60, 95)),
}


def near_copy(canvas, box, rng: random.Random, kind: str) -> bytes:
    """One near-duplicate of the object at `box` in `canvas`: box jitter, resize, brightness, JPEG (NEAR_KINDS)."""
    from PIL import Image, ImageEnhance

    jitter, scales, brightness, quality = NEAR_KINDS[kind]
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    jittered = [x1 + rng.uniform(-jitter, jitter) * w, y1 + rng.uniform(-jitter, jitter) * h,
                x2 + rng.uniform(-jitter, jitter) * w, y2 + rng.uniform(-jitter, jitter) * h]
    view = canvas.crop(tuple(int(round(v)) for v in jittered))
    scale = float(np.exp(rng.uniform(np.log(scales[0]), np.log(scales[1]))))
    view = view.resize((max(8, int(view.width * scale)), max(8, int(view.height * scale))), Image.BICUBIC)
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(*brightness))
    buffer = io.BytesIO()
    view.save(buffer, format="JPEG", quality=rng.randint(*quality))
    return buffer.getvalue()


def write_near_set(photos, folder: Path, seed: int, kind: str):
    """Per photo: the tight crop (PNG) and NEAR_COPIES near-duplicates (JPEG). Returns (files, labels)."""
    rng = random.Random(seed)
    files, labels = [], []
    for k, (path, _) in enumerate(photos):
        canvas, box = base.on_white_padded(path)
        target = folder / f"near_{k:04d}_orig.png"
        canvas.crop(box).save(target)
        files.append(str(target))
        labels.append(path)
        for v in range(NEAR_COPIES):
            target = folder / f"near_{k:04d}_{v}.jpg"
            target.write_bytes(near_copy(canvas, box, rng, kind))
            files.append(str(target))
            labels.append(path)
    return files, labels


def write_sequence(photos, folder: Path, seed: int):
    """A synthetic sequence of SEQ_FRAMES frames 2 s apart. Returns (files, labels, boxes float64 (n, 4))."""
    example = base.load_example_module()
    rng = random.Random(seed)
    chosen = rng.sample(photos, min(SEQ_INDIVIDUALS, len(photos)))
    spans, spots = [], []
    for _ in chosen:
        length = rng.randint(2, SEQ_FRAMES)
        start = rng.randint(0, SEQ_FRAMES - length)
        spans.append((start, start + length))
        spots.append((rng.uniform(0, 4000), rng.uniform(0, 3000)))
    files, labels, boxes = [], [], []
    for frame in range(SEQ_FRAMES):
        stamp = f"20240601{0:02d}{frame * 2 // 60:02d}{frame * 2 % 60:02d}"
        number = 0
        for k, ((path, _), (start, end)) in enumerate(zip(chosen, spans)):
            if not start <= frame < end:
                continue
            canvas, box = base.on_white_padded(path)
            target = folder / f"crop_{stamp}-00-06_CROPNUMBER_{number}_UUID_x.jpg"
            target.write_bytes(example.jpeg_bytes(example.camera_view(canvas, box, rng), rng))
            x, y = spots[k]
            spots[k] = (x + rng.uniform(-0.3, 0.3) * 100, y + rng.uniform(-0.3, 0.3) * 100)
            files.append(str(target))
            labels.append(path)
            boxes.append([x - 50, y - 50, x + 50, y + 50])
            number += 1
    return files, labels, np.asarray(boxes, dtype=np.float64)


# ---------------------------------------------------------------- scoring

def link(emb, files, seconds, boxes, dedup_threshold, track_seconds, track_min):
    """Individual ids from `link_individuals` with the given rules switched on (exact always)."""
    from crop_cluster.dedup.individuals import LinkParams, link_individuals
    from crop_cluster.inputs.sidecars import parse_crop_name

    n = len(files)
    sources = [(parse_crop_name(f) or (None,))[0] for f in files]
    params = LinkParams(dedup_threshold=dedup_threshold, track_max_seconds=track_seconds,
                        track_min_similarity=track_min)
    found = link_individuals(emb, np.arange(n), files, sources, seconds,
                             boxes if boxes is not None else np.full((n, 4), np.nan), params)
    return found.individual


def score(labels, pred) -> Dict:
    from crop_cluster.evaluate.metrics import partition_metrics

    m = partition_metrics(list(labels), pred)
    return {"precision": m["pairwise_precision"], "recall": m["pairwise_recall"], "f1": m["pairwise_f1"],
            "individuals": int(pred.max() + 1)}


def different_max(emb, labels) -> float:
    """Highest cosine between crops of different individuals."""
    y = np.asarray(labels, dtype=object)
    sims = emb @ emb.T
    sims[y[:, None] == y[None, :]] = -1.0
    return round(float(sims.max()), 4)


def timestamps(files: Sequence[str]) -> np.ndarray:
    from crop_cluster.inputs.timestamps import parse_timestamps

    return parse_timestamps(files, "%Y%m%d%H%M%S").seconds


def evaluate_set(name: str, s: Dict, defaults) -> Dict:
    emb, labels, files = s["emb"], s["labels"], s["files"]
    seconds = timestamps(files) if s["timed"] else np.full(len(files), np.nan)
    boxes = s.get("boxes")
    out = {"n": len(files), "individuals": len(set(labels)), "different_individual_max_cosine":
           different_max(emb, labels)}
    out["near"] = [{"t": float(t), **score(labels, link(emb, files, seconds, None, float(t), 0.0, 0.5))}
                   for t in NEAR_THRESHOLDS]
    if s["timed"]:
        out["track"] = [{"s": float(v), **score(labels, link(emb, files, seconds, None, None, 30.0, float(v)))}
                        for v in TRACK_SIMILARITIES]
        if boxes is not None:
            out["track_with_boxes"] = [
                {"s": float(v), **score(labels, link(emb, files, seconds, boxes, None, 30.0, float(v)))}
                for v in TRACK_SIMILARITIES]
    out["defaults"] = score(labels, link(emb, files, seconds, None, defaults["dedup_threshold"], 30.0,
                                         defaults["track_min_similarity"]))
    if boxes is not None:
        out["defaults_with_boxes"] = score(labels, link(emb, files, seconds, boxes, defaults["dedup_threshold"],
                                                        30.0, defaults["track_min_similarity"]))
    return out


def lowest(results: Dict, table: str, key: str, target: float) -> Optional[float]:
    """Lowest value of `key` in every set's `table` from which precision stays >= target upwards."""
    values = None
    for res in results.values():
        if table not in res:
            continue
        rows = res[table]
        ok = [all(r["precision"] >= target for r in rows[i:]) for i in range(len(rows))]
        first = next((rows[i][key] for i in range(len(rows)) if ok[i]), None)
        if first is None:
            return None
        values = first if values is None else max(values, first)
    return values


def highest_full_recall(results: Dict) -> Optional[float]:
    """Highest s up to which track-only recall is 1.0 on every timed set."""
    top = None
    for res in results.values():
        if "track" not in res:
            continue
        full = [r["s"] for r in res["track"] if r["recall"] >= 1.0]
        value = max(full) if full else None
        if value is None:
            return None
        top = value if top is None else min(top, value)
    return top


# ---------------------------------------------------------------- run

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "individuals.json")
    parser.add_argument("--biodivx", type=Path, default=base.DEFAULT_BIODIVX)
    parser.add_argument("--tuxpaint", type=Path, default=base.DEFAULT_TUX)
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args(argv)


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from crop_cluster.dedup import BACKEND_DEFAULTS
    from crop_cluster.embed import load_backend

    backend = load_backend(base.BACKEND, "cpu")
    current = {"dedup_threshold": BACKEND_DEFAULTS[base.BACKEND].dedup_threshold,
               "track_min_similarity": BACKEND_DEFAULTS[base.BACKEND].track_min_similarity}
    sets: Dict[str, Dict] = {}
    skipped: Dict[str, str] = {}
    started = time.perf_counter()
    bio = base.biodivx_files(args.biodivx)
    if bio is None:
        skipped["biodivx"] = f"{args.biodivx} not found"
    else:
        files, _, individuals = bio
        sets["biodivx"] = {"files": files, "labels": individuals, "emb": base.embed(backend, files)[0], "timed": True}
    photos = base.tux_photos(args.tuxpaint)
    if photos is None:
        skipped["tuxpaint"] = f"{args.tuxpaint} not found (apt-get install -y tuxpaint-stamps-default)"
    else:
        with tempfile.TemporaryDirectory(prefix="individuals-") as tmp:
            for kind in NEAR_KINDS:
                (Path(tmp) / kind).mkdir()
                files, labels = write_near_set(photos, Path(tmp) / kind, args.seed, kind)
                sets[kind] = {"files": files, "labels": labels, "emb": base.embed(backend, files)[0],
                              "timed": False}
            seq_dir = Path(tmp) / "seq"
            seq_dir.mkdir()
            animals = [p for p in photos if p[1] in SEQ_CATEGORIES]
            files, labels, boxes = write_sequence(animals, seq_dir, args.seed)
            sets["tux_tracks"] = {"files": files, "labels": labels, "emb": base.embed(backend, files)[0],
                                  "timed": True, "boxes": boxes}
    if not sets:
        print("calibrate_individuals: no data set found; nothing to do", file=sys.stderr)
        return 2
    results = {name: evaluate_set(name, s, current) for name, s in sets.items()}

    near_t = lowest(results, "near", "t", 1.0)
    diff = max(r["different_individual_max_cosine"] for r in results.values())
    recommended_near = None if near_t is None else round(max(near_t, diff) + MARGIN, 2)
    track_s = lowest(results, "track", "s", 0.99)
    track_top = highest_full_recall(results)
    recommended_track = None if track_s is None or track_top is None or track_top < track_s else \
        round(round((track_s + track_top) / 2 / 0.05) * 0.05, 2)
    document = {
        "name": "individuals", "backend": base.BACKEND, "model": backend.model_id, "machine": base.machine_info(),
        "seed": args.seed, "seconds": round(time.perf_counter() - started, 1), "skipped_sets": skipped,
        "current_defaults": current,
        "recommendation": {
            "dedup_threshold": recommended_near, "near_lowest_precision_1": near_t,
            "different_individual_max_cosine": diff,
            "dedup_rule": f"max(lowest t with near-only precision 1.0 on every set, highest different-individual "
                          f"cosine) + {MARGIN}",
            "track_min_similarity": recommended_track, "track_lowest_precision_099": track_s,
            "track_highest_recall_1": track_top,
            "track_rule": "middle of [lowest s with track-only precision >= 0.99, highest s with track-only recall "
                          "1.0] over every timed set (no boxes), rounded to 0.05",
        },
        "sets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print_summary(results, document["recommendation"], current, skipped)
    print(f"\nwrote {args.out}")
    return 0


def print_summary(results: Dict, rec: Dict, current: Dict, skipped: Dict) -> None:
    print("pairwise precision / recall of linking, lite0")
    for name, res in results.items():
        print(f"\n{name}: {res['n']} crops, {res['individuals']} individuals, highest different-individual cosine "
              f"{res['different_individual_max_cosine']}")
        print("  near only   " + "  ".join(f"{r['t']:.2f}:{r['precision']:.2f}/{r['recall']:.2f}"
                                         for r in res["near"] if round(r["t"] * 100) % 2 == 0))
        for table in ("track", "track_with_boxes"):
            if table in res:
                print(f"  {table:11s} " + "  ".join(f"{r['s']:.2f}:{r['precision']:.2f}/{r['recall']:.2f}"
                                                    for r in res[table]))
        for key in ("defaults", "defaults_with_boxes"):
            if key in res:
                r = res[key]
                print(f"  {key}: precision {r['precision']:.3f} recall {r['recall']:.3f} "
                      f"({r['individuals']} individuals found)")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"\ncurrent defaults {current}; recommended dedup_threshold {rec['dedup_threshold']}, "
          f"track_min_similarity {rec['track_min_similarity']}")


if __name__ == "__main__":
    sys.exit(main())
