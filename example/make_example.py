"""Generate the offline example: labelled "specimen crops" cut from scikit-learn's two sample photos.

    python example/make_example.py                    # writes example/crops/ and example/labels.csv
    python example/make_example.py --out /tmp/crops   # writes /tmp/crops/ and /tmp/labels.csv

Each specimen is a fixed region of china.jpg or flower.jpg (427 x 640 px). Its files are views made the way a camera
trap sees one object several times: the crop box jittered by 5-10 % of its size, a small rotation, a brightness
change, a rescale and a JPEG recompression. On top of that the set holds one byte-identical copy of a view (exact
duplicate), two PNG views with a transparent background (cut-out specimens) and one truncated JPEG, `broken.jpg`,
that no decoder can read (it shows skip-and-report).

Layout: OUT/<specimen>/<specimen>_<k>.jpg|png, OUT/broken.jpg. The labels CSV (columns filename,label; one row per
readable file, label = specimen) is written next to OUT, with filenames relative to the CSV's folder, so
`--labels example/labels.csv` matches from any working directory (and `--labels folders` gives the same labels).
Output is deterministic for a given seed: the same bytes on every run with the same Pillow/libjpeg.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

Box = Tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the source photo


@dataclass(frozen=True)
class Specimen:
    """One visually distinct region of a sample photo and how many views of it to write."""

    label: str
    photo: str  # basename in sklearn.datasets.load_sample_images(): "china.jpg" or "flower.jpg"
    box: Box
    views: int


SPECIMENS = (
    Specimen("pagoda_roof", "china.jpg", (95, 28, 322, 142), 7),
    Specimen("pagoda_balcony", "china.jpg", (88, 178, 330, 236), 6),
    Specimen("lake_island", "china.jpg", (372, 208, 548, 272), 6),
    Specimen("roof_tiles", "china.jpg", (205, 348, 300, 392), 5),
    Specimen("pine_tree", "china.jpg", (548, 138, 640, 300), 6),
    Specimen("shrubs", "china.jpg", (0, 330, 200, 427), 5),
    Specimen("dahlia", "flower.jpg", (165, 82, 450, 362), 8),
    Specimen("dahlia_bud", "flower.jpg", (282, 370, 470, 427), 6),
    Specimen("green_leaves", "flower.jpg", (0, 40, 150, 330), 6),
    Specimen("yellow_bud", "flower.jpg", (560, 380, 630, 427), 4),
)
PNG_VIEWS = (("dahlia", 2), ("pagoda_roof", 3))  # (specimen, view) written as PNG cut-outs with transparency
COPIED_VIEW = ("lake_island", 1)                  # this view gets a byte-identical twin "<name>_copy.jpg"
CORRUPT_NAME = "broken.jpg"
DEFAULT_SEED = 20240501


def load_photos() -> dict:
    """The two photos shipped with scikit-learn, by basename -> PIL RGB image (640 x 427)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {os.path.basename(name): Image.fromarray(array) for name, array in zip(bunch.filenames, bunch.images)}


def jitter_box(box: Box, rng: random.Random, size: Tuple[int, int]) -> Box:
    """Move each edge of `box` by up to f * (box side), f drawn in [0.05, 0.10]; clipped to the photo `size` (w, h)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    f = rng.uniform(0.05, 0.10)
    dx = [rng.uniform(-f, f) * w for _ in range(2)]
    dy = [rng.uniform(-f, f) * h for _ in range(2)]
    nx1, ny1 = max(0, round(x1 + dx[0])), max(0, round(y1 + dy[0]))
    nx2, ny2 = min(size[0], round(x2 + dx[1])), min(size[1], round(y2 + dy[1]))
    return nx1, ny1, max(nx2, nx1 + 8), max(ny2, ny1 + 8)


def camera_view(photo: Image.Image, box: Box, rng: random.Random) -> Image.Image:
    """One camera-trap-like view of the object in `box`: jittered box, rotation of up to 6 degrees, brightness
    x0.8-1.2, rescale x0.6-1.2 (at least 24 px a side). Returns an RGB image; the JPEG recompression happens when
    it is saved (see `jpeg_bytes`)."""
    x1, y1, x2, y2 = jitter_box(box, rng, photo.size)
    w, h = x2 - x1, y2 - y1
    # Rotate a larger patch about the box centre, then cut the box out of it, so no blank corners appear.
    mx, my = w // 4 + 4, h // 4 + 4
    outer = (max(0, x1 - mx), max(0, y1 - my), min(photo.width, x2 + mx), min(photo.height, y2 + my))
    patch = photo.crop(outer)
    centre = (x1 - outer[0] + w / 2, y1 - outer[1] + h / 2)
    patch = patch.rotate(rng.uniform(-6.0, 6.0), resample=Image.BICUBIC, center=centre, fillcolor=(128, 128, 128))
    view = patch.crop((x1 - outer[0], y1 - outer[1], x1 - outer[0] + w, y1 - outer[1] + h))
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.8, 1.2))
    scale = rng.uniform(0.6, 1.2)
    new_size = (max(24, round(w * scale)), max(24, round(h * scale)))
    return view.resize(new_size, resample=Image.BICUBIC)


def jpeg_bytes(image: Image.Image, rng: random.Random) -> bytes:
    """JPEG encoding at a random quality in 60-92 (the recompression step of a view)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(60, 92))
    return buffer.getvalue()


def cutout_png_bytes(image: Image.Image) -> bytes:
    """PNG (RGBA) of `image` with everything outside a soft-edged centred ellipse fully transparent."""
    mask = Image.new("L", image.size, 0)
    w, h = image.size
    ImageDraw.Draw(mask).ellipse((w * 0.04, h * 0.04, w * 0.96, h * 0.96), fill=255)
    rgba = image.convert("RGBA")
    rgba.putalpha(mask.filter(ImageFilter.GaussianBlur(radius=2)))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    return buffer.getvalue()


def make_example(out: Path, labels_csv: Path, seed: int = DEFAULT_SEED) -> List[Tuple[str, str]]:
    """Write the example crops under `out` and the labels CSV at `labels_csv`.

    Existing files with the same names are overwritten; nothing else in `out` is touched.
    Returns the (filename relative to the CSV's folder, label) rows written to the CSV, in file order
    (the corrupt file has no row).
    """
    rng = random.Random(seed)
    photos = load_photos()
    out.mkdir(parents=True, exist_ok=True)
    labels_csv.parent.mkdir(parents=True, exist_ok=True)
    written: List[Tuple[Path, str]] = []
    first_jpeg = b""
    for specimen in SPECIMENS:
        folder = out / specimen.label
        folder.mkdir(exist_ok=True)
        for k in range(1, specimen.views + 1):
            view = camera_view(photos[specimen.photo], specimen.box, rng)
            data = jpeg_bytes(view, rng)
            is_png = (specimen.label, k) in PNG_VIEWS
            if is_png:
                # A JPEG round trip first, so the cut-out carries the same compression artefacts as the other views.
                data = cutout_png_bytes(Image.open(io.BytesIO(data)).convert("RGB"))
            path = folder / f"{specimen.label}_{k:02d}.{'png' if is_png else 'jpg'}"
            path.write_bytes(data)
            written.append((path, specimen.label))
            first_jpeg = first_jpeg or data
            if (specimen.label, k) == COPIED_VIEW:
                twin = folder / f"{specimen.label}_{k:02d}_copy.jpg"
                twin.write_bytes(data)
                written.append((twin, specimen.label))
    # A download cut off after a quarter of its bytes: the header parses, the pixel data ends early.
    (out / CORRUPT_NAME).write_bytes(first_jpeg[: len(first_jpeg) // 4])

    rows = [(Path(os.path.relpath(path, labels_csv.parent)).as_posix(), label) for path, label in written]
    with open(labels_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows(rows)
    return rows


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=here / "crops",
                        help="folder for the crops (default: example/crops next to this script)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="labels CSV to write (default: labels.csv in the folder that holds --out)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out.resolve()
    labels_csv = (args.labels or out.parent / "labels.csv").resolve()
    rows = make_example(out, labels_csv, args.seed)
    print(f"make_example: wrote {len(rows) + 1} files ({len(SPECIMENS)} specimens, {len(rows)} readable, "
          f"1 corrupt: {CORRUPT_NAME}) under {out}")
    print(f"make_example: labels in {labels_csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
