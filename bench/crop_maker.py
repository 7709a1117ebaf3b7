"""Benchmark crops: JPEGs of random size, aspect and position cut from scikit-learn's sample photos (offline)."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List

import numpy as np


def _write_part(args) -> List[str]:
    """Crops start..start+count-1 into `folder`, crop k drawn from seed (seed, k), so any split gives the same files."""
    folder, start, count, seed, min_side, max_side = args
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(image) for image in load_sample_images().images]
    files = []
    for k in range(start, start + count):
        rng = np.random.default_rng([seed, k])
        photo = photos[k % len(photos)]
        side = int(rng.integers(min_side, max_side + 1))
        aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
        width = max(8, min(photo.width, int(side * np.sqrt(aspect))))
        height = max(8, min(photo.height, int(side / np.sqrt(aspect))))
        x, y = int(rng.integers(0, photo.width - width + 1)), int(rng.integers(0, photo.height - height + 1))
        crop = photo.crop((x, y, x + width, y + height))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        path = Path(folder) / f"crop_{k:06d}.jpg"
        crop.save(path, quality=int(rng.integers(80, 96)))
        files.append(str(path))
    return files


def make_crops(folder: Path, n: int, seed: int = 0, min_side: int = 40, max_side: int = 420,
               processes: int = 1) -> List[str]:
    """Write n crops (sides min_side..max_side px, aspect 1:3..3:1, half mirrored) into `folder`; their paths in
    order. processes > 1 writes them in that many processes (the files do not depend on it)."""
    folder.mkdir(parents=True, exist_ok=True)
    processes = max(1, min(processes, n))
    step = -(-n // processes) if n else 1
    parts = [(str(folder), start, min(step, n - start), seed, min_side, max_side) for start in range(0, n, step)]
    if processes == 1:
        return [path for part in parts for path in _write_part(part)]
    with ProcessPoolExecutor(processes) as pool:
        return [path for part in pool.map(_write_part, parts) for path in part]

