"""Pixel verification of uncertain near-duplicate pairs: is crop b another cut of the very same picture as crop a?

The embedding tells "same kind" well but cannot always tell "another crop of the same photo" from "another photo of
the same kind" (a lite0 cosine of 0.90 can be either). For pairs in the uncertain band (cosine between the backend's
`verify_from` and its near-duplicate threshold) a second, independent signal decides. Both crops become small grey
thumbnails (THUMB x THUMB: the whole crop resized, aspect ignored, so box jitter becomes a scale and a shift); at
half that side (ALIGN px), b is aligned onto a by Gauss-Newton (Lucas-Kanade) over a full affine warp plus gain and
offset of the brightness, coarse to fine (LEVELS: half then full resolution, Gaussian-smoothed). Two scores cover the
centre (MARGIN px off every side, where box jitter and edge occluders act): the grey NCC of the aligned thumbnails,
and the detail NCC of their local-contrast-normalised versions (each pixel minus its local mean over its local
spread), which weighs every region by its own texture rather than by its contrast to the background, so two objects
of one outline with different insides no longer correlate. A third score, the fine detail, is the same detail NCC at
the full THUMB px with the same warp. A pair is the same picture when grey and detail reach their thresholds
(dedup.VERIFY_MIN_SCORE, VERIFY_MIN_DETAIL) and, for a `strict` pair (one whose embedding neighbourhood is dense,
dedup/density.py), grey also reaches VERIFY_STRICT_SCORE and the fine detail VERIFY_STRICT_DETAIL, with b aligned
onto a, or else a onto b (`same_picture`). The method and its thresholds were chosen by measurement
(bench/verify_individuals.py, docs/individuals.md).

Thumbnails are kept in the embedding cache's folder keyed by file content (`ThumbnailSource`), so a re-run, or a
run from saved embeddings, decodes no image twice; only the crops of candidate pairs are ever decoded.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from crop_cluster.dedup import VERIFY_MIN_DETAIL, VERIFY_MIN_SCORE, VERIFY_STRICT_DETAIL, VERIFY_STRICT_SCORE

log = logging.getLogger(__name__)

THUMB = 64                       # thumbnail side in pixels, as stored (the fine detail's resolution)
ALIGN = THUMB // 2               # side (px) at which pairs are aligned and grey and detail are scored
MARGIN = 4                       # px (at ALIGN) left out on every side when aligning and scoring
LEVELS = ((2, 1.5, 8), (1, 0.8, 6))  # (downsampling factor, Gaussian sigma px, Gauss-Newton iterations), coarse first
FINAL_SIGMA = 0.7                # Gaussian sigma (px) of the thumbnails compared after alignment
DETAIL_SIGMA = 1.5               # Gaussian sigma (px) of the local mean and spread of the detail score
DETAIL_FLOOR = 0.03              # added to the local spread (grey levels / 255): flat regions stay noise, not texture
DAMPING = 1e-3                   # Levenberg damping of the 8 x 8 normal equations
RETRY_FROM = 0.85                # grey NCC from which a refused pair is aligned the other way too (same_picture)
BATCH = 1024                     # pairs aligned per vectorised step
THUMB_NAMESPACE = f"grey{THUMB}-v1"
DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))   # threads decoding thumbnails

Thumbnails = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


def make_thumbnail(path: str) -> np.ndarray:
    """uint8 (THUMB, THUMB) grey thumbnail of the image at `path` (EXIF orientation applied, transparency on white,
    box filter). Raises OSError / ValueError for files that do not decode."""
    from PIL import Image

    from crop_cluster.embed.data import load_rgb

    image = load_rgb(path, draft=(2 * THUMB, "crop")).convert("L")
    return np.asarray(image.resize((THUMB, THUMB), Image.BOX), dtype=np.uint8)


def _decode_all(paths: List[str]) -> List[object]:
    """make_thumbnail of every path, in DECODE_THREADS threads (Pillow decodes and resizes without the GIL): per
    path its uint8 (THUMB, THUMB) thumbnail or the OSError / ValueError it raised, in order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str):
        try:
            return make_thumbnail(path)
        except (OSError, ValueError) as error:
            return error

    if len(paths) < 2 * DECODE_THREADS:
        return [one(path) for path in paths]
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        return list(pool.map(one, paths, chunksize=16))


def _blur(images, sigma: float):
    """Gaussian blur (replicated edges) of a torch float32 (k, 1, h, h) batch, as two products with a (h, h)
    matrix (much faster on CPUs than a convolution with a 1-D kernel)."""
    import torch

    size = images.shape[-1]
    radius = int(3 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-taps * taps / (2.0 * sigma * sigma))
    weights /= weights.sum()
    matrix = np.zeros((size, size), dtype=np.float32)
    for row in range(size):
        np.add.at(matrix[row], np.clip(row + taps, 0, size - 1), weights)
    matrix = torch.from_numpy(matrix)
    return matrix @ images @ matrix.T


def _centre_grid(size: int, margin: int):
    """(x, y) torch float32 (m,) normalised [-1, 1] coordinates of the pixel centres `margin` px inside a side."""
    import torch

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(coords[margin:size - margin], coords[margin:size - margin], indexing="ij")
    return x.reshape(-1), y.reshape(-1)


def _sample(images, warp, x, y):
    """Bilinear samples (k, c, m) of images (k, c, h, w) at the affine `warp` (k, 6) of the points (x, y)."""
    import torch
    import torch.nn.functional as F

    wx = (1 + warp[:, 0:1]) * x + warp[:, 1:2] * y + warp[:, 2:3]
    wy = warp[:, 3:4] * x + (1 + warp[:, 4:5]) * y + warp[:, 5:6]
    grid = torch.stack([wx, wy], -1).unsqueeze(1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


def pair_scores(thumbs_a: np.ndarray, thumbs_b: np.ndarray, fine: Optional[np.ndarray] = None,
                fine_from: Tuple[float, float] = (-1.0, -1.0)) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grey, detail, fine): float32 (k,) scores in [-1, 1] of k pairs of uint8 (k, THUMB, THUMB) thumbnails after
    aligning b onto a: the NCC of the centres, the NCC of their local-contrast-normalised centres, and the latter
    at THUMB px (module docstring). -1 where undefined (a flat crop). The fine detail is computed for the pairs
    `fine` (bool (k,); None: all) whose grey and detail reach fine_from (the pairs it can still decide), NaN for the
    others."""
    import torch

    wanted = np.ones(len(thumbs_a), dtype=bool) if fine is None else np.asarray(fine, dtype=bool)
    scores = np.empty((3, len(thumbs_a)), dtype=np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # small batched ops: one thread is faster than the pool's hand-offs (bench figure)
    try:
        for start in range(0, len(thumbs_a), BATCH):
            part = slice(start, start + BATCH)
            scores[:, part] = _align_and_score(thumbs_a[part], thumbs_b[part], wanted[part], fine_from)
    finally:
        torch.set_num_threads(threads)
    return scores[0], scores[1], scores[2]


def same_picture(thumbs_a: np.ndarray, thumbs_b: np.ndarray, min_score: float = VERIFY_MIN_SCORE,
                 min_detail: float = VERIFY_MIN_DETAIL, strict: Optional[np.ndarray] = None) -> np.ndarray:
    """bool (k,): pairs of uint8 (k, THUMB, THUMB) thumbnails that are one picture: b aligned onto a, or else a
    aligned onto b (the score covers the first one's centre, so a cut that sees more, or has an occluder at its
    edge, aligns better one way), reaches grey NCC >= min_score and detail NCC >= min_detail, and where strict
    (bool (k,), None = nowhere) also grey >= VERIFY_STRICT_SCORE and fine detail >= VERIFY_STRICT_DETAIL. The other
    direction is tried only where the first reached grey NCC RETRY_FROM (a cost bound: far below it, it never
    passed)."""
    strict = np.zeros(len(thumbs_a), dtype=bool) if strict is None else np.asarray(strict, dtype=bool)

    def passes(grey, detail, fine, strictly):
        return (grey >= min_score) & (detail >= min_detail) & \
            (~strictly | ((grey >= VERIFY_STRICT_SCORE) & (fine >= VERIFY_STRICT_DETAIL)))

    fine_from = (max(min_score, VERIFY_STRICT_SCORE), min_detail)
    grey, detail, fine = pair_scores(thumbs_a, thumbs_b, strict, fine_from)
    same = passes(grey, detail, fine, strict)
    again = np.flatnonzero(~same & (grey >= RETRY_FROM))
    if again.size:
        same[again] = passes(*pair_scores(thumbs_b[again], thumbs_a[again], strict[again], fine_from),
                             strict[again])
    return same


def _align_and_score(thumbs_a: np.ndarray, thumbs_b: np.ndarray, fine: np.ndarray,
                     fine_from: Tuple[float, float]) -> np.ndarray:
    """pair_scores for one batch: the warp (k, 6) and brightness gain/offset (k,) of b onto a by damped
    Gauss-Newton at each of LEVELS (at ALIGN px), then the grey and detail NCC of the centres at ALIGN px and, for
    the pairs `fine` (bool (k,)) at or above fine_from, the detail NCC at THUMB px with the same warp (the warp is in
    normalised coordinates; NaN elsewhere): float32 (3, k)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        fine_a = torch.from_numpy(thumbs_a.astype(np.float32) / 255).unsqueeze(1)
        fine_b = torch.from_numpy(thumbs_b.astype(np.float32) / 255).unsqueeze(1)
        full_a = F.avg_pool2d(fine_a, THUMB // ALIGN)
        full_b = F.avg_pool2d(fine_b, THUMB // ALIGN)
        k = full_a.shape[0]
        warp = torch.zeros(k, 6)
        gain, offset = torch.ones(k), torch.zeros(k)
        for factor, sigma, iterations in LEVELS:
            a = _blur(F.avg_pool2d(full_a, factor) if factor > 1 else full_a, sigma)
            b = _blur(F.avg_pool2d(full_b, factor) if factor > 1 else full_b, sigma)
            size, margin = ALIGN // factor, max(1, MARGIN // factor)
            x, y = _centre_grid(size, margin)
            target = a[:, 0, margin:size - margin, margin:size - margin].reshape(k, -1)
            grad_y, grad_x = torch.gradient(b[:, 0], dim=(1, 2))
            channels = torch.stack([b[:, 0], grad_x * size / 2, grad_y * size / 2], 1)   # d/d(normalised unit)
            if factor == LEVELS[0][0]:
                offset = target.mean(1) - b.mean((1, 2, 3))
            for _ in range(iterations):
                value, gx, gy = _sample(channels, warp, x, y).unbind(1)
                gx, gy = gx * gain[:, None], gy * gain[:, None]
                jacobian_t = torch.stack([gx * x, gx * y, gx, gy * x, gy * y, gy, value, torch.ones_like(value)], 1)
                residual = target - (gain[:, None] * value + offset[:, None])
                normal = jacobian_t @ jacobian_t.transpose(1, 2) + DAMPING * torch.eye(8)      # (k, 8, 8)
                step = torch.linalg.solve(normal, jacobian_t @ residual.unsqueeze(-1))[..., 0]
                warp = warp + step[:, :6]
                gain, offset = gain + step[:, 6], offset + step[:, 7]
        grey, detail = _centre_scores(full_a, full_b, warp, MARGIN, grey=True)
        scores = np.full((3, k), np.nan, dtype=np.float32)
        scores[0], scores[1] = grey.numpy(), detail.numpy()
        deciding = np.flatnonzero(fine & (scores[0] >= fine_from[0]) & (scores[1] >= fine_from[1]))
        if deciding.size:
            index = torch.from_numpy(deciding)
            scores[2, deciding] = _centre_scores(fine_a[index], fine_b[index], warp[index], MARGIN * THUMB // ALIGN,
                                                 grey=False)[1].numpy()
    return scores


def _centre_scores(a, b, warp, margin: int, grey: bool):
    """(grey NCC or None, detail NCC): torch (k,) scores of the centres (`margin` px off every side) of torch
    float32 (k, 1, h, h) a and of b under the normalised affine `warp` (k, 6), both Gaussian-smoothed first."""
    size, k = a.shape[-1], a.shape[0]
    x, y = _centre_grid(size, margin)
    inside = (slice(None), 0, slice(margin, size - margin), slice(margin, size - margin))
    smooth_a, smooth_b = _blur(a, FINAL_SIGMA), _blur(b, FINAL_SIGMA)
    grey_score = _ncc(smooth_a[inside].reshape(k, -1), _sample(smooth_b, warp, x, y)[:, 0]) if grey else None
    return grey_score, _ncc(_local_contrast(smooth_a)[inside].reshape(k, -1),
                            _sample(_local_contrast(smooth_b), warp, x, y)[:, 0])


def _ncc(a, b):
    """Normalised cross-correlation (k,) of the rows of two torch (k, m) arrays; -1 where it is undefined."""
    import torch

    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return torch.nan_to_num((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-6), nan=-1.0)


def _local_contrast(images):
    """Local contrast normalisation of a torch (k, 1, h, h) batch in [0, 1]: (v - local mean) / (local std +
    DETAIL_FLOOR), local = Gaussian of sigma DETAIL_SIGMA px. Every region weighs by its texture, not by its
    contrast to the background, so two silhouettes of one outline but different insides no longer correlate."""
    mean = _blur(images, DETAIL_SIGMA)
    spread = (_blur(images * images, DETAIL_SIGMA) - mean * mean).clamp_min(0).sqrt()
    return (images - mean) / (spread + DETAIL_FLOOR)


def verify_pairs(rows: np.ndarray, cols: np.ndarray, thumbnails: Thumbnails, min_score: float = VERIFY_MIN_SCORE,
                 min_detail: float = VERIFY_MIN_DETAIL, strict: Optional[np.ndarray] = None) -> np.ndarray:
    """bool (k,): which candidate pairs (rows[i], cols[i]) (int64 crop indices) are the same picture.

    thumbnails(crops int64 (m,)) -> (uint8 (m, THUMB, THUMB), ok bool (m,)); a pair with an undecodable crop is
    never accepted. min_score, min_detail: the grey and detail NCC thresholds; strict: bool (k,), the pairs held
    to the strict thresholds too (same_picture)."""
    accepted = np.zeros(rows.size, dtype=bool)
    if not rows.size:
        return accepted
    crops, inverse = np.unique(np.concatenate([rows, cols]), return_inverse=True)
    thumbs, ok = thumbnails(crops)
    a, b = inverse[:rows.size], inverse[rows.size:]
    usable = np.flatnonzero(ok[a] & ok[b])
    accepted[usable] = same_picture(thumbs[a[usable]], thumbs[b[usable]], min_score, min_detail,
                                    None if strict is None else np.asarray(strict, dtype=bool)[usable])
    return accepted


class ThumbnailSource:
    """Thumbnails of the crops `filenames` on demand, cached by file content under `cache_root` (the embedding
    cache's folder: namespace `thumbs-<key>`), so each content is decoded once across runs.

    Called with int64 crop indices (m,), returns (uint8 (m, THUMB, THUMB), ok bool (m,)); files that cannot be read
    or decoded get ok False (they are reported by the embedding stage, never here)."""

    def __init__(self, filenames: Sequence[str], cache_root: Optional[str], digests: Optional[Sequence[str]] = None):
        from crop_cluster.embed.cache import EmbeddingCache

        self.filenames = list(filenames)
        self.digests = None if digests is None else list(digests)     # known contents: no file is hashed again
        self.cache = None if cache_root is None else EmbeddingCache(cache_root, "thumbs", THUMB_NAMESPACE,
                                                                    dtype=np.uint8)
        self.decoded = 0
        self.known: Dict[int, Optional[np.ndarray]] = {}      # crop -> thumbnail (None: undecodable), this run

    def __call__(self, crops: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        missing = np.asarray([c for c in np.unique(crops) if int(c) not in self.known], dtype=np.int64)
        if missing.size:
            fetched, fetched_ok = self._fetch(missing)
            for crop, thumb, good in zip(missing, fetched, fetched_ok):
                self.known[int(crop)] = thumb if good else None
        thumbs = np.zeros((crops.size, THUMB, THUMB), dtype=np.uint8)
        ok = np.zeros(crops.size, dtype=bool)
        for position, crop in enumerate(crops):
            thumb = self.known[int(crop)]
            if thumb is not None:
                thumbs[position], ok[position] = thumb, True
        return thumbs, ok

    def _fetch(self, crops: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(thumbnails, ok) of `crops` from the cache, else decoded (and then cached)."""
        from crop_cluster.dedup.exact import file_digest
        from crop_cluster.embed.data import describe_error

        thumbs = np.zeros((crops.size, THUMB, THUMB), dtype=np.uint8)
        ok = np.zeros(crops.size, dtype=bool)
        digests: List[str] = []
        for position, crop in enumerate(crops):
            if self.digests is not None and self.digests[crop]:
                digests.append(self.digests[crop])
                continue
            try:
                digests.append(file_digest(self.filenames[crop]))
            except OSError:
                digests.append("")
        if self.cache is not None:
            lookup = self.cache.lookup(digests)
            if lookup.vectors.shape[1] == THUMB * THUMB:
                found = np.flatnonzero(lookup.found)
                thumbs[found] = lookup.vectors[found].reshape(-1, THUMB, THUMB)
                ok[found] = True
            known_bad = set(lookup.failed)
        else:
            known_bad = set()
        fresh, failed = [], []
        wanted = [p for p in np.flatnonzero(~ok).tolist() if digests[p] and p not in known_bad]
        for position, made in zip(wanted, _decode_all([self.filenames[crops[p]] for p in wanted])):
            if isinstance(made, BaseException):
                failed.append((digests[position], describe_error(made)))
                continue
            thumbs[position] = made
            ok[position] = True
            fresh.append(position)
        self.decoded += len(fresh)
        if self.cache is not None and (fresh or failed):
            try:
                self.cache.write([digests[p] for p in fresh],
                                 thumbs[fresh].reshape(len(fresh), -1), failed)
            except OSError as error:
                log.warning("cannot write thumbnails to %s (%s); they are decoded again next run",
                            self.cache.folder, os.strerror(error.errno) if error.errno else error)
        return thumbs, ok
