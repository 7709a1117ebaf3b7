"""The representative of an individual: its best crop, the largest and sharpest.

quality = area (width x height of the crop in pixels) x sharpness, where sharpness is the variance of the 3x3
Laplacian of a grey copy reduced to at most 64 px on its longer side (a fixed scale, so sharpness does not grow
with the crop's size; area rewards the closer, more detailed view). Ties go to the first crop in input order.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

SHARPNESS_SIDE = 64


def crop_quality(path: str) -> float:
    """area x sharpness of the image at `path`; 0.0 when it cannot be read any more (never chosen over a readable
    crop)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            area = float(image.width * image.height)
            image.draft("L", (SHARPNESS_SIDE, SHARPNESS_SIDE))      # JPEG: decode at reduced size directly
            grey = image.convert("L")
            grey.thumbnail((SHARPNESS_SIDE, SHARPNESS_SIDE))
            pixels = np.asarray(grey, dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError):
        return 0.0
    if min(pixels.shape) < 3:
        return 0.0
    laplacian = (pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:]
                 - 4.0 * pixels[1:-1, 1:-1])
    return area * float(laplacian.var())


def choose_representatives(individual: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """bool (n,): the crop of highest quality in each individual (ties: the first).

    individual: int64 (n,) ids 0..I-1; quality: float64 (n,) (use -inf for crops that must not be chosen unless
    nothing else is left).
    """
    n = individual.size
    order = np.lexsort((np.arange(n), -quality, individual))     # by individual, best first, then input order
    first = np.r_[True, individual[order][1:] != individual[order][:-1]] if n else np.zeros(0, dtype=bool)
    chosen = np.zeros(n, dtype=bool)
    chosen[order[first]] = True
    return chosen


def quality_of(paths: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """float64 (n,): `crop_quality` of paths[rows]; -inf elsewhere (rows not scored). Images are read on every core
    (PIL decodes without holding the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    quality = np.full(len(paths), -np.inf)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        quality[rows] = list(pool.map(crop_quality, [paths[row] for row in rows]))
    return quality
