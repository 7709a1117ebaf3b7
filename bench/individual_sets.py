"""Labelled crop sets for calibrating individuals (bench/verify_individuals.py), written into a work folder.

Every set is (files, labels) with label = one physical picture/individual; timed sets carry their crop names'
timestamps (`crop_<YYYYmmddHHMMSS>-...`), the sequence also boxes. Sources: Debian's tuxpaint-stamps-default photos
(bench/calibrate_threshold.py picks the photo subcategories), dataset-fashion-mnist, the shared real crops.

  trap_near       per photo, on its own synthetic light-trap screen (off-white sheet, weave noise, uneven
                  light): the tight crop plus 1-4 near-duplicates (box jitter <= 4 % per side, resize x0.7-1.3,
                  brightness +-5 %, JPEG quality 50-95), as the issue's trap sequence
  trap_near_hard  the same plus rotation <= 4 degrees, Gaussian blur (radius 0-1.2 px) on half of them, and on a
                  third an occluder at one crop edge (a dark body covering 8-15 % of the side)
  fmnist_near     3 000 Fashion-MNIST test images (x3, on black), 1 000 of them with 1-2 near-duplicates as in
                  trap_near: many different pictures of few kinds, for precision at scale
  tux_tracks      bench/calibrate_individuals.py's synthetic sequence (40 moving photos, 12 frames 2 s apart)
"""
from __future__ import annotations

import gzip
import io
import random
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
FMNIST_IMAGES = 3000
FMNIST_WITH_COPIES = 1000

NEAR_KINDS = {  # jitter per side, scale range, brightness range, JPEG quality, rotation deg, blur share, occluder share
    "trap_near": dict(jitter=0.04, scale=(0.7, 1.3), brightness=(0.95, 1.05), quality=(50, 95), rotation=0.0,
                      blur=0.0, occlude=0.0),
    "trap_near_hard": dict(jitter=0.04, scale=(0.7, 1.3), brightness=(0.95, 1.05), quality=(50, 95), rotation=4.0,
                           blur=0.5, occlude=1 / 3),
}


def trap_screen(width: int, height: int, rng: np.random.Generator):
    """RGB PIL image of a light-trap screen: off-white sheet, fine weave noise, smooth uneven lighting."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    base = np.array([rng.uniform(205, 235), rng.uniform(200, 230), rng.uniform(185, 225)], dtype=np.float32)
    light = gaussian_filter(rng.normal(0, 1, (height, width)), sigma=max(width, height) / 6)
    light = 1 + 0.08 * light / max(float(np.abs(light).max()), 1e-6)
    weave = rng.normal(0, 6, (height, width, 1)) + rng.normal(0, 3, (height, width, 3))
    pixels = base[None, None, :] * light[..., None] + weave
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def on_screen(path: str, rng: np.random.Generator):
    """The stamp at `path` composited on its own trap screen with a 30 % margin; (RGB image, object box)."""
    from PIL import Image

    with Image.open(path) as raw:
        photo = raw.convert("RGBA")
    x1, y1, x2, y2 = photo.getchannel("A").getbbox() or (0, 0, photo.width, photo.height)
    mx, my = int(0.3 * photo.width) + 8, int(0.3 * photo.height) + 8
    canvas = trap_screen(photo.width + 2 * mx, photo.height + 2 * my, rng).convert("RGBA")
    canvas.alpha_composite(photo, (mx, my))
    return canvas.convert("RGB"), (x1 + mx, y1 + my, x2 + mx, y2 + my)


def near_copy(canvas, box, rng: random.Random, kind: Dict) -> bytes:
    """JPEG bytes of one near-duplicate of the object at `box` in `canvas` (the transformations of NEAR_KINDS)."""
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    j = kind["jitter"]
    cut = [x1 + rng.uniform(-j, j) * w, y1 + rng.uniform(-j, j) * h,
           x2 + rng.uniform(-j, j) * w, y2 + rng.uniform(-j, j) * h]
    if kind["rotation"]:
        centre = ((cut[0] + cut[2]) / 2, (cut[1] + cut[3]) / 2)
        canvas = canvas.rotate(rng.uniform(-kind["rotation"], kind["rotation"]), resample=Image.BICUBIC,
                               center=centre)
    view = canvas.crop(tuple(int(round(v)) for v in cut))
    if rng.random() < kind["occlude"]:
        draw = ImageDraw.Draw(view)
        depth = rng.uniform(0.08, 0.15)
        side = rng.randrange(4)
        vw, vh = view.size
        colour = tuple(rng.randint(30, 90) for _ in range(3))
        span = rng.uniform(0.3, 0.6)
        if side in (0, 1):   # left / right edge
            x = 0 if side == 0 else vw
            y = rng.uniform(0.2, 0.8) * vh
            draw.ellipse((x - depth * vw, y - span * vh / 2, x + depth * vw, y + span * vh / 2), fill=colour)
        else:                # top / bottom edge
            y = 0 if side == 2 else vh
            x = rng.uniform(0.2, 0.8) * vw
            draw.ellipse((x - span * vw / 2, y - depth * vh, x + span * vw / 2, y + depth * vh), fill=colour)
    scale = float(np.exp(rng.uniform(np.log(kind["scale"][0]), np.log(kind["scale"][1]))))
    view = view.resize((max(8, int(view.width * scale)), max(8, int(view.height * scale))), Image.BICUBIC)
    if rng.random() < kind["blur"]:
        view = view.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(*kind["brightness"]))
    buffer = io.BytesIO()
    view.save(buffer, format="JPEG", quality=rng.randint(*kind["quality"]))
    return buffer.getvalue()


def write_near_set(photos: List[str], folder: Path, seed: int, name: str) -> Tuple[List[str], List[str]]:
    """Per photo: the tight crop (PNG) on its screen and 1-4 near-duplicates (JPEG). Returns (files, labels)."""
    rng = random.Random(seed)
    screens = np.random.default_rng(seed)
    files, labels = [], []
    for k, path in enumerate(photos):
        canvas, box = on_screen(path, screens)
        target = folder / f"near_{k:04d}_orig.png"
        canvas.crop(box).save(target)
        files.append(str(target))
        labels.append(path)
        for v in range(rng.randint(1, 4)):
            target = folder / f"near_{k:04d}_{v}.jpg"
            target.write_bytes(near_copy(canvas, box, rng, NEAR_KINDS[name]))
            files.append(str(target))
            labels.append(path)
    return files, labels


def fmnist_images(count: int) -> np.ndarray:
    """uint8 (count, 28, 28): the first `count` Fashion-MNIST test images (idx format)."""
    with gzip.open(FMNIST, "rb") as handle:
        data = handle.read()
    n = int.from_bytes(data[4:8], "big")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 28, 28)[:count]


def write_fmnist_set(folder: Path, seed: int) -> Tuple[List[str], List[str]]:
    """FMNIST_IMAGES pictures (x3 upscaled on a black margin), FMNIST_WITH_COPIES of them with 1-2 near copies."""
    from PIL import Image

    rng = random.Random(seed)
    images = fmnist_images(FMNIST_IMAGES)
    with_copies = set(rng.sample(range(len(images)), FMNIST_WITH_COPIES))
    kind = dict(NEAR_KINDS["trap_near"], jitter=0.04)
    files, labels = [], []
    for k, pixels in enumerate(images):
        big = Image.fromarray(pixels, "L").resize((84, 84), Image.BICUBIC).convert("RGB")
        canvas = Image.new("RGB", (124, 124), (0, 0, 0))
        canvas.paste(big, (20, 20))
        box = (20, 20, 104, 104)
        target = folder / f"fm_{k:05d}_orig.png"
        canvas.crop(box).save(target)
        files.append(str(target))
        labels.append(str(k))
        for v in range(rng.randint(1, 2) if k in with_copies else 0):
            target = folder / f"fm_{k:05d}_{v}.jpg"
            target.write_bytes(near_copy(canvas, box, rng, kind))
            files.append(str(target))
            labels.append(str(k))
    return files, labels
