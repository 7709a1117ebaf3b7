"""Individuals with pixel verification of the uncertain band: calibration, method choice, hashing peers, tracks, cost.

    flock /tmp/bench.lock .venv/bin/python bench/verify_individuals.py [--work /tmp/verify-work] \
        [--out bench/results/verify_individuals.json]

Sets (bench/individual_sets.py; each skipped with a message when its source is absent): trap_near, trap_near_hard,
fmnist_near, tux_tracks, and the 26 shared real crops (biodivx, 9 individuals, labels by eye in
bench/calibrate_threshold.py). The generated crops and their lite0 embeddings are kept in --work, so a re-run
scores without embedding again (delete the folder to rebuild).

Needs the `bench` extra (`pip install -e .[bench]`) and `pip install --no-deps imagededup==0.3.3.post2` (its
torchvision requirement cannot be met beside this torch; its hashing module does not use it); without imagededup
its rows are left out.

Reports, per set, pairwise precision / recall and ARI (evaluate.metrics.partition_metrics) of
  ours_before   `link_individuals` with the defaults, verification off (today's individuals)
  ours_after    the same with the verification of dedup/verify.py at the defaults (dedup.BACKEND_DEFAULTS)
  peers         imagededup PHash / DHash and imagehash phash / dhash / whash / average_hash: connected components
                of "Hamming distance <= d", at imagededup's default d (10 of 64 bits) and at the best d of
                0..16 per set and hash (chosen on the set itself: an upper bound for them)
the method comparison: the score distributions of same-picture and different-picture pairs among the band's
candidate pairs (aligned grey NCC, aligned detail NCC, grid high-pass NCC) and what each decision rule accepts;
the ablation (the defaults' pieces added one at a time, every set's P / R / ARI); the near veto (would the pixel
check, as a veto on the embedding's own near-duplicate links, remove the different-picture ones; and the density
gate of dedup/density.py, which applies the strict check only where the neighbourhood is dense).
`--density_sweep FILE` instead varies the gate's constants (bench/results/verify_density_sweep.json).
Tracks: track-only and default linking with and without verification on tux_tracks (with and without boxes) and
on the real crops. Cost: seconds per verified pair and per thumbnail, medians of 3 runs, and the bound at 1e5
crops (the spanning forest has at most n - 1 edges, each refused one brings at most VERIFY_ALTERNATIVES more pairs)
against lite0's embedding time per crop measured in the same run; `run_share`: whole default runs of
`cluster.py` with and without --no_verify, side by side (--run_sets).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
for folder in (str(REPO), str(REPO / "bench")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402

import calibrate_individuals as calib  # noqa: E402
import calibrate_threshold as base  # noqa: E402
import individual_sets as sets_mod  # noqa: E402
import machine as bench_machine  # noqa: E402
from crop_cluster.dedup import verify as V  # noqa: E402

SEED = 15
NEAR_SETS = ("trap_near", "trap_near_hard", "fmnist_near")
HASH_DISTANCES = range(0, 17)
IMAGEDEDUP_DEFAULT_DISTANCE = 10


# ---------------------------------------------------------------- sets and embeddings

def prepare(work: Path, biodivx: Path, tuxpaint: Path, seed: int) -> Dict[str, Dict]:
    """Write (once) the generated sets under `work` and embed them (once) with lite0; returns name -> set dict
    with files, labels, emb float32 (n, 1280), timed, boxes (or None)."""
    work.mkdir(parents=True, exist_ok=True)
    out: Dict[str, Dict] = {}
    bio = base.biodivx_files(biodivx)
    if bio is not None:
        out["biodivx"] = {"files": bio[0], "labels": bio[2], "timed": True, "boxes": None}
    photos = base.tux_photos(tuxpaint)
    if photos is not None:
        for name in ("trap_near", "trap_near_hard"):
            out[name] = _cached_set(work, name, lambda folder, n=name: sets_mod.write_near_set(
                [p for p, _ in photos], folder, seed, n))
        animals = [p for p in photos if p[1] in calib.SEQ_CATEGORIES]
        out["tux_tracks"] = _cached_set(work, "tux_tracks", lambda folder: calib.write_sequence(
            animals, folder, seed), timed=True)
    if sets_mod.FMNIST.is_file():
        out["fmnist_near"] = _cached_set(work, "fmnist_near", lambda folder: sets_mod.write_fmnist_set(folder, seed))
    backend = None
    for name, s in out.items():
        cached = work / f"{name}.emb.npy"
        if cached.is_file():
            s["emb"] = np.load(cached)
            continue
        if backend is None:
            from crop_cluster.embed import load_backend

            backend = load_backend(base.BACKEND, "cpu")
        s["emb"], seconds = base.embed(backend, s["files"])
        s["embed_seconds"] = seconds
        np.save(cached, s["emb"])
    return out


def _cached_set(work: Path, name: str, write, timed: bool = False) -> Dict:
    folder = work / name
    index = work / f"{name}.json"
    if index.is_file():
        data = json.loads(index.read_text())
    else:
        folder.mkdir(exist_ok=True)
        written = write(folder)
        data = {"files": written[0], "labels": written[1],
                "boxes": written[2].tolist() if len(written) > 2 else None}
        index.write_text(json.dumps(data))
    boxes = None if data["boxes"] is None else np.asarray(data["boxes"], dtype=np.float64)
    return {"files": data["files"], "labels": data["labels"], "timed": timed, "boxes": boxes}


# ---------------------------------------------------------------- linking and scoring

def link_set(s: Dict, verify: bool, dedup_threshold: Optional[float], track_seconds: float = 30.0,
             track_min: Optional[float] = None, boxes: bool = False, verify_from: Optional[float] = None,
             min_score: Optional[float] = None, min_detail: Optional[float] = None):
    """`link_individuals` on set `s` (the defaults where a value is None): its Individuals."""
    from crop_cluster.dedup import BACKEND_DEFAULTS, VERIFY_MIN_DETAIL, VERIFY_MIN_SCORE
    from crop_cluster.dedup.individuals import LinkParams, link_individuals
    from crop_cluster.dedup.verify import ThumbnailSource
    from crop_cluster.inputs.sidecars import parse_crop_name

    defaults = BACKEND_DEFAULTS[base.BACKEND]
    files = s["files"]
    n = len(files)
    seconds = calib.timestamps(files) if s["timed"] else np.full(n, np.nan)
    sources = [(parse_crop_name(f) or (None,))[0] for f in files]
    params = LinkParams(dedup_threshold=dedup_threshold, track_max_seconds=track_seconds if s["timed"] else 0.0,
                        track_min_similarity=defaults.track_min_similarity if track_min is None else track_min,
                        verify_from=(verify_from or defaults.verify_from) if verify else None,
                        verify_min_score=VERIFY_MIN_SCORE if min_score is None else min_score,
                        verify_min_detail=VERIFY_MIN_DETAIL if min_detail is None else min_detail)
    box_rows = s["boxes"] if boxes and s["boxes"] is not None else np.full((n, 4), np.nan)
    if "thumbs" not in s:
        s["thumbs"] = ThumbnailSource(files, None)
    return link_individuals(s["emb"], np.arange(n), files, sources, seconds, box_rows, params,
                            thumbnails=s["thumbs"] if verify else None)


def timed_link(s: Dict, verify: bool, dedup_threshold: float):
    """(Individuals, median seconds of 3 runs) of link_set with verification on or off; each run with verification
    starts from no thumbnails (so decoding is counted), the last run's ThumbnailSource stays in s["thumbs"]."""
    seconds = []
    for _ in range(3):
        s.pop("thumbs", None)
        started = time.perf_counter()
        found = link_set(s, verify, dedup_threshold)
        seconds.append(time.perf_counter() - started)
    return found, float(np.median(seconds))


def score(labels: Sequence[str], pred) -> Dict:
    """Pairwise precision / recall, ARI and the number of groups of `pred` (labels (n,) or an Individuals, whose
    verification counts per crop are added)."""
    from crop_cluster.evaluate.metrics import partition_metrics

    counts = getattr(pred, "counts", {})
    pred = np.asarray(getattr(pred, "individual", pred))
    m = partition_metrics(list(labels), pred)
    out = {"precision": round(m["pairwise_precision"], 4), "recall": round(m["pairwise_recall"], 4),
           "ari": round(m["ari"], 4), "groups": int(len(np.unique(pred)))}
    if "verify_candidates" in counts:
        out["verified_pairs_per_crop"] = round((counts["verify_candidates"] + counts.get("near_dense", 0))
                                               / len(pred), 4)
        out["strict_pairs_per_crop"] = round((counts.get("verify_strict", 0) + counts.get("near_dense", 0))
                                             / len(pred), 4)
    return out


def hash_peers(s: Dict) -> Dict[str, Dict]:
    """imagededup PHash/DHash and imagehash phash/dhash/whash/average_hash: components of Hamming distance <= d,
    at imagededup's default distance and at the best d per set (by ARI)."""
    from PIL import Image
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    import imagehash

    hashers = {}
    dedup_methods = _imagededup_methods()
    if dedup_methods is not None:
        for name in ("PHash", "DHash"):
            method = dedup_methods[name](verbose=False)
            hashers[f"imagededup.{name}"] = lambda path, m=method: np.frombuffer(
                bytes.fromhex(m.encode_image(image_file=path)), dtype=np.uint8)
    for name in ("phash", "dhash", "whash", "average_hash"):
        function = getattr(imagehash, name)
        hashers[f"imagehash.{name}"] = lambda path, f=function: np.packbits(
            f(Image.open(path)).hash.ravel())
    out = {}
    for name, hasher in hashers.items():
        codes = np.stack([hasher(path) for path in s["files"]])
        bits = np.unpackbits(codes, axis=1).astype(np.int16)          # (n, 64)
        distance = bits.shape[1] - (bits @ bits.T + (1 - bits) @ (1 - bits).T)
        rows = {}
        for d in HASH_DISTANCES:
            i, j = np.nonzero(distance <= d)
            graph = coo_matrix((np.ones(i.size), (i, j)), shape=distance.shape)
            rows[d] = score(s["labels"], connected_components(graph, directed=False)[1])
        best = max(rows, key=lambda d: rows[d]["ari"])
        out[name] = {"default_distance": IMAGEDEDUP_DEFAULT_DISTANCE, "at_default": rows[IMAGEDEDUP_DEFAULT_DISTANCE],
                     "best_distance": best, "at_best": rows[best]}
    return out


def _imagededup_methods():
    """imagededup's hashing classes, or None when it is not installed. Its `methods` and `utils` packages import
    its CNN module (torchvision, not installable beside this torch) on import, so the two packages are entered
    without running their __init__; the hashing module itself and everything it uses are imagededup's own."""
    import importlib
    import importlib.util
    import types

    spec = importlib.util.find_spec("imagededup")
    if spec is None:
        return None
    root = Path(spec.origin).parent
    for package in ("imagededup.methods", "imagededup.utils"):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(root / package.split(".")[1])]
            sys.modules[package] = module
    hashing = importlib.import_module("imagededup.methods.hashing")
    return {"PHash": hashing.PHash, "DHash": hashing.DHash}


# ---------------------------------------------------------------- method comparison

GRID_MARGIN = 4
GRID_SCALES = (0.92, 1.0, 1.08)
GRID_DETAIL_SIGMA = 3.0


def band_pairs(s: Dict, low: float, high: float, per_crop: int = 5):
    """(rows, cols, same) of each crop's per_crop most similar partners with cosine in [low, high): the band's
    hard pairs, a superset of the spanning-forest pairs the verification sees."""
    emb = s["emb"]
    labels = np.asarray(s["labels"], dtype=object)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -1)
    masked = np.where((sims >= low) & (sims < high), sims, -1)
    top = np.argsort(-masked, axis=1)[:, :per_crop]
    r = np.repeat(np.arange(len(emb)), per_crop)
    c = top.ravel()
    keep = masked[r, c] >= low
    pairs = np.unique(np.stack([np.minimum(r, c)[keep], np.maximum(r, c)[keep]], 1), axis=0)
    return pairs[:, 0], pairs[:, 1], labels[pairs[:, 0]] == labels[pairs[:, 1]]


def grid_ncc_scores(thumbs_a: np.ndarray, thumbs_b: np.ndarray) -> np.ndarray:
    """The candidate method not chosen: high-pass thumbnails (minus a Gaussian low-pass), the centre of each found
    in the other by exhaustive search over per-axis zoom GRID_SCALES and integer shifts +-GRID_MARGIN px; the lower
    of the two directions' best NCC."""
    from scipy.ndimage import gaussian_filter

    def detail(t):
        v = t.astype(np.float32)
        return v - gaussian_filter(v, sigma=(0, GRID_DETAIL_SIGMA, GRID_DETAIL_SIGMA), mode="reflect")

    def pooled(t):                                       # the stored THUMB px thumbnails at the ALIGN px compared
        f = V.THUMB // V.ALIGN
        return t.astype(np.float32).reshape(len(t), V.ALIGN, f, V.ALIGN, f).mean(axis=(2, 4))

    out = np.empty(len(thumbs_a), dtype=np.float32)
    for start in range(0, len(thumbs_a), 256):
        a, b = detail(pooled(thumbs_a[start:start + 256])), detail(pooled(thumbs_b[start:start + 256]))
        out[start:start + 256] = np.minimum(_best_ncc(a, b), _best_ncc(b, a))
    return out


def _zoom_matrix(scale: float, size: int = V.ALIGN) -> np.ndarray:
    """float32 (size, size) linear-interpolation matrix R with (R @ v) = v zoomed by `scale` about the centre."""
    out = (np.arange(size) + 0.5 - size / 2) / scale + size / 2 - 0.5
    out = np.clip(out, 0, size - 1)
    low = np.floor(out).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    frac = (out - low).astype(np.float32)
    matrix = np.zeros((size, size), dtype=np.float32)
    np.add.at(matrix, (np.arange(size), low), 1 - frac)
    np.add.at(matrix, (np.arange(size), high), frac)
    return matrix


def _detail(thumbs: np.ndarray) -> np.ndarray:
    """float32 (k, S, S): thumbnails minus their Gaussian low-pass (sigma GRID_DETAIL_SIGMA, reflected edges)."""
    from scipy.ndimage import gaussian_filter

    values = thumbs.astype(np.float32)
    return values - gaussian_filter(values, sigma=(0, GRID_DETAIL_SIGMA, GRID_DETAIL_SIGMA), mode="reflect")


def _best_ncc(template_src: np.ndarray, search_src: np.ndarray) -> np.ndarray:
    """float32 (k,): the highest NCC of the centre of each template_src image over every zoom and shift of the
    matching search_src image. Both float32 (k, S, S)."""
    k, size = template_src.shape[0], V.ALIGN
    side = size - 2 * GRID_MARGIN
    template = template_src[:, GRID_MARGIN:size - GRID_MARGIN, GRID_MARGIN:size - GRID_MARGIN].reshape(k, -1)
    template = template - template.mean(axis=1, keepdims=True)
    template /= np.maximum(np.linalg.norm(template, axis=1, keepdims=True), 1e-6)
    template = template.reshape(k, side, side)
    best = np.full(k, -1.0, dtype=np.float32)
    zooms = [_zoom_matrix(s) for s in GRID_SCALES]
    for zy in zooms:
        rows_zoomed = np.einsum("ij,kjl->kil", zy, search_src)
        for zx in zooms:
            image = np.einsum("kil,ml->kim", rows_zoomed, zx)               # (k, S, S) zoomed search image
            windows = np.lib.stride_tricks.sliding_window_view(image, (side, side), axis=(1, 2))
            numerator = np.einsum("kabxy,kxy->kab", windows, template)     # (k, 2M+1, 2M+1)
            integral = np.pad(image, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)
            squares = np.pad(image * image, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)

            def box(table):
                return (table[:, side:, side:] - table[:, :-side, side:] - table[:, side:, :-side]
                        + table[:, :-side, :-side])

            total, energy = box(integral), box(squares)
            variance = np.maximum(energy - total * total / (side * side), 1e-6)
            best = np.maximum(best, (numerator / np.sqrt(variance)).reshape(k, -1).max(axis=1))
    return best


def pair_scores(thumbs_a: np.ndarray, thumbs_b: np.ndarray) -> np.ndarray:
    """float32 (k,) verification score in [-1, 1] of k pairs of uint8 (k, V.THUMB, V.THUMB) thumbnails: the lower of
    the two directions' best aligned NCC of the detail images (module docstring)."""
    scores = np.empty(len(thumbs_a), dtype=np.float32)
    for start in range(0, len(thumbs_a), BATCH):
        a = _detail(thumbs_a[start:start + BATCH])
        b = _detail(thumbs_b[start:start + BATCH])
        scores[start:start + BATCH] = np.minimum(_best_ncc(a, b), _best_ncc(b, a))
    return scores



def compare_methods(sets: Dict[str, Dict], low: float, high: float) -> Dict:
    """On each set's band pairs: the score distributions of the candidate scores (aligned grey NCC, aligned detail
    NCC, grid high-pass NCC; milliseconds per pair, median of 3 runs over the first 1 024 pairs), and what each
    decision rule accepts (same-picture share, different-picture count) with the margins of the chosen one."""
    from crop_cluster.dedup import VERIFY_MIN_DETAIL, VERIFY_MIN_SCORE
    from crop_cluster.dedup.verify import ThumbnailSource, pair_scores, same_picture

    out = {}
    for name, s in sets.items():
        r, c, same = band_pairs(s, low, high)
        if not r.size:
            continue
        thumbs, _ = ThumbnailSource(s["files"], None)(np.arange(len(s["files"])))
        entry = {"band": [low, high], "pairs": int(r.size), "same_picture": int(same.sum())}
        for method, function in (("aligned_grey_ncc", lambda a, b: pair_scores(a, b)[0]),
                                 ("aligned_detail_ncc", lambda a, b: pair_scores(a, b)[1]),
                                 ("grid_highpass_ncc", grid_ncc_scores)):
            scores = function(thumbs[r], thumbs[c])
            timed = slice(0, min(r.size, 1024))
            seconds = []
            for _ in range(3):
                started = time.perf_counter()
                function(thumbs[r[timed]], thumbs[c[timed]])
                seconds.append((time.perf_counter() - started) / len(r[timed]))
            pos, neg = scores[same], scores[~same]
            entry[method] = {
                "ms_per_pair_median_of_3": round(float(np.median(seconds)) * 1e3, 3),
                "same_q01_q05_q50": np.quantile(pos, [0.01, 0.05, 0.5]).round(4).tolist() if pos.size else None,
                "different_max_q99": [round(float(neg.max()), 4), round(float(np.quantile(neg, 0.99)), 4)]
                if neg.size else None,
                "same_above_different_max": round(float(np.mean(pos > neg.max())), 4) if pos.size and neg.size
                else None}
        forward = pair_scores(thumbs[r], thumbs[c])
        backward = pair_scores(thumbs[c], thumbs[r])
        rules = {"grey >= %.2f (before)" % VERIFY_MIN_SCORE: forward[0] >= VERIFY_MIN_SCORE,
                 "grey and detail, one direction": (forward[0] >= VERIFY_MIN_SCORE)
                 & (forward[1] >= VERIFY_MIN_DETAIL),
                 "grey and detail, either direction (chosen)": same_picture(thumbs[r], thumbs[c]),
                 "strict check (chosen where dense)": same_picture(thumbs[r], thumbs[c],
                                                                   strict=np.ones(r.size, dtype=bool))}
        entry["rules"] = {rule: {"same_accepted": round(float(accepted[same].mean()), 4) if same.any() else None,
                                 "different_accepted": int(accepted[~same].sum())}
                          for rule, accepted in rules.items()}
        grey_passes = [(g >= VERIFY_MIN_SCORE) & ~same for g in (forward[0], backward[0])]
        detail_passes = [(d >= VERIFY_MIN_DETAIL) & ~same for d in (forward[1], backward[1])]
        entry["chosen_margins"] = {
            "different_max_grey_where_detail_passes": _masked_max([forward[0], backward[0]], detail_passes),
            "different_max_detail_where_grey_passes": _masked_max([forward[1], backward[1]], grey_passes)}
        out[name] = entry
    return out


def _masked_max(values: List[np.ndarray], masks: List[np.ndarray]) -> Optional[float]:
    """The highest of values[i][masks[i]] over i, None when every mask is empty."""
    picked = np.concatenate([v[m] for v, m in zip(values, masks)])
    return round(float(picked.max()), 4) if picked.size else None


def ablation(sets: Dict[str, Dict], dedup_threshold: float) -> Dict[str, Dict]:
    """The defaults' pieces added one at a time, each row with every set's P / R / ARI: the previous check (grey
    NCC one direction, band from 0.75, two rounds), + the detail score, + either direction, + the sibling round,
    + the band from the default verify_from (= today's defaults)."""
    from crop_cluster.dedup import individuals as I
    from crop_cluster.dedup import verify as verify_module

    def one_direction(a, b, min_score, min_detail, strict=None):
        grey, detail, _ = verify_module.pair_scores(a, b)
        return (grey >= min_score) & (detail >= min_detail)

    class NoDensity(I.Background):
        """The background of the defaults with no pair ever dense: the rows before the strict check."""

        def dense(self, a, b, sims):
            return np.zeros(len(np.asarray(sims).reshape(-1)), dtype=bool)

    steps = [("grey, one direction, from 0.75, 2 rounds (before)", dict(detail=-1.0, forward=True, siblings=0,
                                                                        verify_from=0.75, dense=False)),
             ("+ detail >= VERIFY_MIN_DETAIL", dict(detail=None, forward=True, siblings=0, verify_from=0.75,
                                                    dense=False)),
             ("+ either direction", dict(detail=None, forward=False, siblings=0, verify_from=0.75, dense=False)),
             ("+ sibling round", dict(detail=None, forward=False, siblings=I.VERIFY_SIBLINGS, verify_from=0.75,
                                      dense=False)),
             ("+ band from the default verify_from", dict(detail=None, forward=False, siblings=I.VERIFY_SIBLINGS,
                                                          verify_from=None, dense=False)),
             ("+ strict check of dense pairs, near ones included (defaults)",
              dict(detail=None, forward=False, siblings=I.VERIFY_SIBLINGS, verify_from=None, dense=True))]
    chosen, siblings, background = verify_module.same_picture, I.VERIFY_SIBLINGS, I.Background
    out = {}
    try:
        for label, step in steps:
            verify_module.same_picture = one_direction if step["forward"] else chosen
            I.VERIFY_SIBLINGS = step["siblings"]
            I.Background = background if step["dense"] else NoDensity
            out[label] = {name: score(s["labels"], link_set(s, True, dedup_threshold, verify_from=step["verify_from"],
                                                            min_detail=step["detail"]))
                          for name, s in sets.items()}
            print(label, {name: (r["precision"], r["recall"]) for name, r in out[label].items()}, flush=True)
    finally:
        verify_module.same_picture, I.VERIFY_SIBLINGS, I.Background = chosen, siblings, background
    return out


def near_veto(sets: Dict[str, Dict], dedup_threshold: float) -> Dict[str, Dict]:
    """Would the pixel check help as a veto on the embedding's own near-duplicate links (cosine >= threshold)?
    Among each crop's 5 most similar partners at or above the threshold: same- and different-picture pairs that
    pass the default check, a loose one (grey 0.95, detail 0.70) and the strict one, either direction; and the
    density gate (dedup/density.py): the pairs it calls dense, and the different-picture pairs still linked by
    the defaults (not dense, or dense and passing the strict check)."""
    from crop_cluster.dedup.density import Background
    from crop_cluster.dedup.verify import ThumbnailSource, same_picture

    out = {}
    for name, s in sets.items():
        r, c, same = band_pairs(s, dedup_threshold, 1.01)
        if not r.size:
            continue
        thumbs, _ = ThumbnailSource(s["files"], None)(np.arange(len(s["files"])))
        entry = {"pairs": int(r.size), "same_picture": int(same.sum())}
        kept = {label: same_picture(thumbs[r], thumbs[c], **kwargs)
                for label, kwargs in (("default", {}), ("loose", dict(min_score=0.95, min_detail=0.70)),
                                      ("strict", dict(strict=np.ones(r.size, dtype=bool))))}
        for label, passed in kept.items():
            entry[label] = {"same_kept": int(passed[same].sum()), "different_kept": int(passed[~same].sum()),
                            "different": int((~same).sum())}
        dense = Background(s["emb"], np.arange(len(s["emb"]))).dense(r, c, np.einsum("ij,ij->i", s["emb"][r],
                                                                                    s["emb"][c]))
        gated = ~dense | kept["strict"]
        entry["density_gate"] = {"dense_same": int((dense & same).sum()), "dense_different": int((dense & ~same).sum()),
                                 "same_kept": int(gated[same].sum()), "different_kept": int(gated[~same].sum())}
        out[name] = entry
    return out


def density_sweep(sets: Dict[str, Dict], dedup_threshold: float) -> List[Dict]:
    """The density gate's constants varied around the defaults (DENSE_MARGIN, DENSE_CERTAIN, the strict grey and
    fine-detail thresholds), every set's P / R / groups with the other defaults; margin 0 = the gate off."""
    from crop_cluster.dedup import DENSE_CERTAIN, DENSE_MARGIN, VERIFY_STRICT_DETAIL, VERIFY_STRICT_SCORE
    from crop_cluster.dedup import density as density_module
    from crop_cluster.dedup import verify as verify_module

    grid = [dict(margin=m, certain=DENSE_CERTAIN, score=VERIFY_STRICT_SCORE, detail=VERIFY_STRICT_DETAIL)
            for m in (0.0, 0.05, 0.10, 0.15, 0.20)]
    grid += [dict(margin=DENSE_MARGIN, certain=c, score=VERIFY_STRICT_SCORE, detail=VERIFY_STRICT_DETAIL)
             for c in (0.95, 0.99, 0.995)]
    grid += [dict(margin=DENSE_MARGIN, certain=DENSE_CERTAIN, score=g, detail=d)
             for g, d in ((0.98, 0.90), (0.99, 0.90), (0.99, 0.97), (0.995, 0.95))]
    saved = (density_module.DENSE_MARGIN, density_module.DENSE_CERTAIN, verify_module.VERIFY_STRICT_SCORE,
             verify_module.VERIFY_STRICT_DETAIL)
    rows = []
    try:
        for point in grid:
            density_module.DENSE_MARGIN, density_module.DENSE_CERTAIN = point["margin"], point["certain"]
            verify_module.VERIFY_STRICT_SCORE, verify_module.VERIFY_STRICT_DETAIL = point["score"], point["detail"]
            found = {name: score(s["labels"], link_set(s, True, dedup_threshold)) for name, s in sets.items()}
            rows.append({**point, "sets": {name: {k: r[k] for k in ("precision", "recall", "ari", "groups")}
                                           for name, r in found.items()}})
            print(point, {name: (r["precision"], r["recall"]) for name, r in found.items()}, flush=True)
    finally:
        (density_module.DENSE_MARGIN, density_module.DENSE_CERTAIN, verify_module.VERIFY_STRICT_SCORE,
         verify_module.VERIFY_STRICT_DETAIL) = saved
    return rows


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "verify_individuals.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/verify-individuals-work"))
    parser.add_argument("--biodivx", type=Path, default=base.DEFAULT_BIODIVX)
    parser.add_argument("--tuxpaint", type=Path, default=base.DEFAULT_TUX)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--prepare_only", action="store_true", help="write and embed the sets, then stop")
    parser.add_argument("--sets", type=lambda v: v.split(","), default=None,
                        help="comma-separated set names to score (quick runs; default: all)")
    parser.add_argument("--ablation_sets", type=lambda v: v.split(","),
                        default=["trap_near", "trap_near_hard", "biodivx", "tux_tracks", "fmnist_near"],
                        help="sets of the ablation rows (default: all)")
    parser.add_argument("--run_sets", type=lambda v: [x for x in v.split(",") if x],
                        default=["trap_near_hard", "fmnist_near"],
                        help="sets timed as whole runs with and without verification (empty: none)")
    parser.add_argument("--density_sweep", type=Path, default=None, metavar="OUT.json",
                        help="only sweep the density gate's constants (density_sweep) and write them to OUT.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sets = prepare(args.work, args.biodivx, args.tuxpaint, args.seed)
    print({name: len(s["files"]) for name, s in sets.items()})
    if args.prepare_only:
        return 0
    from crop_cluster.dedup import (BACKEND_DEFAULTS, DENSE_CERTAIN, DENSE_MARGIN, VERIFY_MIN_DETAIL,
                                    VERIFY_MIN_SCORE, VERIFY_STRICT_DETAIL, VERIFY_STRICT_SCORE)
    from crop_cluster.dedup.density import BACKGROUND_RANK, BACKGROUND_SAMPLE
    from crop_cluster.dedup.individuals import VERIFY_EXTRA_PER_CROP, VERIFY_SIBLINGS

    defaults = BACKEND_DEFAULTS[base.BACKEND]
    sets = {k: v for k, v in sets.items() if not args.sets or k in args.sets}
    if args.density_sweep is not None:
        rows = density_sweep(sets, defaults.dedup_threshold)
        args.density_sweep.write_text(json.dumps({"name": "verify_density_sweep", "backend": base.BACKEND,
                                                  "machine": bench_machine.machine("cpu"), "seed": args.seed,
                                                  "rows": rows}, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.density_sweep}")
        return 0
    started = time.perf_counter()
    table: Dict[str, Dict] = {}
    for name, s in sets.items():
        before, before_s = timed_link(s, False, defaults.dedup_threshold)
        after, after_s = timed_link(s, True, defaults.dedup_threshold)
        row = {"n": len(s["files"]), "individuals": len(set(s["labels"])),
               "ours_before": score(s["labels"], before), "ours_after": score(s["labels"], after)}
        row["ours_after"]["decoded_per_crop"] = round(s["thumbs"].decoded / len(s["files"]), 4)
        row["ours_after"]["added_seconds_per_crop_median_of_3"] = round(max(after_s - before_s, 0.0)
                                                                        / len(s["files"]), 6)
        if s["timed"]:
            row["tracks_only"] = score(s["labels"], link_set(s, False, None))
            if s["boxes"] is not None:
                row["tracks_only_with_boxes"] = score(s["labels"], link_set(s, False, None, boxes=True))
                row["ours_before_with_boxes"] = score(s["labels"], link_set(s, False, defaults.dedup_threshold,
                                                                            boxes=True))
                row["ours_after_with_boxes"] = score(s["labels"], link_set(s, True, defaults.dedup_threshold,
                                                                           boxes=True))
        row["peers"] = hash_peers(s)
        table[name] = row
        print_row(name, row)
    methods = compare_methods({k: v for k, v in sets.items() if k != "tux_tracks"}, defaults.verify_from,
                              defaults.dedup_threshold)
    steps = ablation({k: v for k, v in sets.items() if k in args.ablation_sets}, defaults.dedup_threshold)
    veto = near_veto(sets, defaults.dedup_threshold)
    cost = measure_cost(sets)
    cost["run_share"] = run_share(sets, args.run_sets)
    cost["share_of_embedding_per_set"] = {
        name: round(row["ours_after"]["added_seconds_per_crop_median_of_3"] / cost["lite0_embed_seconds_per_crop"], 4)
        for name, row in table.items()}
    cost["estimated_share_of_embedding_per_set"] = {
        name: round((row["ours_after"]["verified_pairs_per_crop"] * cost["seconds_per_pair_one_direction"]
                     + row["ours_after"]["strict_pairs_per_crop"]
                     * (cost["seconds_per_pair_one_direction_with_fine_detail"]
                        - cost["seconds_per_pair_one_direction"])
                     + row["ours_after"]["decoded_per_crop"] * cost["seconds_per_thumbnail"])
                    / cost["lite0_embed_seconds_per_crop"], 4) for name, row in table.items()}
    document = {"name": "verify_individuals", "backend": base.BACKEND, "machine": bench_machine.machine("cpu"),
                "versions": bench_machine.versions(["torch", "numpy", "scipy", "pillow", "imagehash", "imagededup"]),
                "seed": args.seed, "seconds": round(time.perf_counter() - started, 1),
                "defaults": {"dedup_threshold": defaults.dedup_threshold, "verify_from": defaults.verify_from,
                             "verify_min_score": VERIFY_MIN_SCORE, "verify_min_detail": VERIFY_MIN_DETAIL,
                             "verify_siblings": VERIFY_SIBLINGS, "verify_extra_per_crop": VERIFY_EXTRA_PER_CROP,
                             "verify_strict_score": VERIFY_STRICT_SCORE,
                             "verify_strict_detail": VERIFY_STRICT_DETAIL, "dense_margin": DENSE_MARGIN,
                             "dense_certain": DENSE_CERTAIN, "background_rank": BACKGROUND_RANK,
                             "background_sample": BACKGROUND_SAMPLE, "thumbnail_px": V.THUMB, "align_px": V.ALIGN,
                             "track_min_similarity": defaults.track_min_similarity},
                "sets": table, "ablation": steps, "near_veto": veto, "method_comparison": methods, "cost": cost}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"method_comparison": methods, "cost": cost}, indent=1))
    print(f"wrote {args.out}")
    return 0


def print_row(name: str, row: Dict) -> None:
    def fmt(r):
        return f"P {r['precision']:.4f} R {r['recall']:.4f} ARI {r['ari']:.4f} ({r['groups']})"

    print(f"{name}: {row['n']} crops, {row['individuals']} individuals")
    for key in ("ours_before", "ours_after", "tracks_only", "tracks_only_with_boxes", "ours_before_with_boxes",
                "ours_after_with_boxes"):
        if key in row:
            print(f"  {key:24s} {fmt(row[key])}")
    for peer, r in row["peers"].items():
        print(f"  {peer:24s} d={r['default_distance']}: {fmt(r['at_default'])}   best d={r['best_distance']}: "
              f"{fmt(r['at_best'])}")


def measure_cost(sets: Dict[str, Dict]) -> Dict:
    """Seconds per verified pair and direction (pair_scores without and with the fine detail), per thumbnail
    (ThumbnailSource: decoded in its threads) and per lite0 embedding (medians of 3), and the bound at 1e5 crops."""
    from crop_cluster.dedup.individuals import VERIFY_EXTRA_PER_CROP
    from crop_cluster.dedup.verify import THUMB, ThumbnailSource, pair_scores
    from crop_cluster.embed import load_backend

    rng = np.random.default_rng(0)
    thumbs_a = rng.integers(0, 256, (1024, THUMB, THUMB), dtype=np.uint8)
    thumbs_b = np.clip(thumbs_a.astype(np.int16) + rng.integers(-8, 9, thumbs_a.shape), 0, 255).astype(np.uint8)
    coarse, fine = [], []
    for _ in range(3):
        t = time.perf_counter()
        pair_scores(thumbs_a, thumbs_b, fine=np.zeros(len(thumbs_a), dtype=bool))
        coarse.append((time.perf_counter() - t) / len(thumbs_a))
        t = time.perf_counter()
        pair_scores(thumbs_a, thumbs_b)
        fine.append((time.perf_counter() - t) / len(thumbs_a))
    files = next((s["files"] for name, s in sets.items() if name.startswith("trap_near")),
                 next(iter(sets.values()))["files"])[:400]
    thumb = []
    for _ in range(3):
        t = time.perf_counter()
        ThumbnailSource(files, None)(np.arange(len(files)))
        thumb.append((time.perf_counter() - t) / len(files))
    backend = load_backend(base.BACKEND, "cpu")
    embed = [base.embed(backend, files[:64])[1] / 64 for _ in range(3)]
    pair_s, fine_s, thumb_s, embed_s = (float(np.median(v)) for v in (coarse, fine, thumb, embed))

    n = 100_000
    pairs = (n - 1) + VERIFY_EXTRA_PER_CROP * n
    bound = pairs * 2 * fine_s + n * thumb_s
    return {"seconds_per_pair_one_direction": round(pair_s, 6),
            "seconds_per_pair_one_direction_with_fine_detail": round(fine_s, 6),
            "seconds_per_thumbnail": round(thumb_s, 6), "lite0_embed_seconds_per_crop": round(embed_s, 6),
            "at_1e5_worst_case_pairs": int(pairs),
            "at_1e5_worst_case_seconds": round(bound, 1), "at_1e5_embedding_seconds": round(n * embed_s, 1),
            "worst_case_share_of_embedding": round(bound / (n * embed_s), 4),
            "note": "worst case: every one of the n - 1 spanning-forest edges lies in the band and is refused, the "
                    "alternative and sibling rounds use their whole budget (VERIFY_EXTRA_PER_CROP pairs per crop), "
                    "every pair is dense and aligned both ways with the fine detail, and every crop is decoded. Per "
                    "set, measured: the linking time with verification minus without (median of 3, thumbnails "
                    "decoded afresh; it also holds a second similarity search at verify_from that the pipeline does "
                    "not make, its forest being shared); estimated: pairs x one direction + strict pairs x the fine "
                    "detail's extra + decoded crops x thumbnail. The embedding alone is a lower bound of the run: "
                    "run_share measures whole runs"}


def run_share(sets: Dict[str, Dict], names: Sequence[str], repeats: int = 3) -> Dict:
    """Whole default runs (`cluster.py -e lite0 -d cpu`, fresh output folder and embedding cache each time, report
    included) with and without --no_verify, alternating, `repeats` times per set: median wall seconds of each and
    the share verification adds to the run."""
    import shutil
    import subprocess
    import tempfile

    out = {}
    for name in names:
        if name not in sets:
            continue
        folder = str(Path(sets[name]["files"][0]).parent)
        seconds = {"verify": [], "no_verify": []}
        for _ in range(repeats):
            for mode in ("no_verify", "verify"):
                target = tempfile.mkdtemp(prefix=f"run-share-{name}-")
                command = [sys.executable, str(REPO / "cluster.py"), "-i", folder, "-o", target, "-e", "lite0",
                           "-d", "cpu", "-q"] + (["--no_verify"] if mode == "no_verify" else [])
                started = time.perf_counter()
                subprocess.run(command, check=True)
                seconds[mode].append(time.perf_counter() - started)
                counts = json.loads(Path(target, "run.json").read_text(encoding="utf-8"))["counts"]
                shutil.rmtree(target)
        with_s, without_s = float(np.median(seconds["verify"])), float(np.median(seconds["no_verify"]))
        out[name] = {"crops": len(sets[name]["files"]), "seconds_no_verify": round(without_s, 2),
                     "seconds_verify": round(with_s, 2), "added_share_of_run": round(with_s / without_s - 1, 4),
                     "individuals": counts["individuals"]}
        print("run share", name, out[name], flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
