"""sweep.png: the sweep's curves against the threshold, drawn with Pillow (no plotting dependency)."""
from __future__ import annotations

from typing import List, Tuple

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from crop_cluster.outputs.atomic import atomic_open

SIZE = (960, 540)
MARGIN = (70, 40, 230, 60)  # left, top, right, bottom (pixels)
SERIES: List[Tuple[str, str, Tuple[int, int, int]]] = [
    ("n_clusters", "clusters (/ max)", (31, 119, 180)),
    ("singleton_fraction", "singleton fraction", (127, 127, 127)),
    ("largest_cluster_share", "largest cluster share", (214, 39, 40)),
    ("ari", "ARI", (44, 160, 44)),
    ("pairwise_f1", "pairwise F1", (255, 127, 14)),
    ("pairwise_precision", "pairwise precision", (148, 103, 189)),
    ("pairwise_recall", "pairwise recall", (140, 86, 75)),
]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def plot_sweep(table: pd.DataFrame, recommended: float, path: str) -> None:
    """Draw every available column of `table` (a sweep_table) on a 0..1 axis against the threshold, mark the
    recommended threshold, and write a PNG atomically. n_clusters is divided by its maximum to share the axis."""
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    left, top = MARGIN[0], MARGIN[1]
    right, bottom = SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]
    x = table["threshold"].to_numpy(dtype=float)
    low, high = float(x.min()), float(x.max())
    span = high - low if high > low else 1.0

    def px(t: float) -> float:
        return left + (t - low) / span * (right - left) if high > low else (left + right) / 2

    def py(v: float) -> float:
        return bottom - v * (bottom - top)

    for k in range(6):  # grid and y labels
        value = k / 5
        draw.line([(left, py(value)), (right, py(value))], fill=(225, 225, 225))
        draw.text((left - 8, py(value)), f"{value:.1f}", fill="black", font=small, anchor="rm")
    for t in x[:: max(1, len(x) // 10)]:
        draw.line([(px(t), bottom), (px(t), bottom + 5)], fill="black")
        draw.text((px(t), bottom + 8), f"{t:g}", fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, SIZE[1] - 18), "cosine similarity threshold", fill="black", font=font, anchor="mm")
    for k in range(int((bottom - top) / 8)):  # dashed line at the recommendation
        if k % 2 == 0:
            draw.line([(px(recommended), top + 8 * k), (px(recommended), top + 8 * k + 8)], fill="black", width=2)
    draw.text((px(recommended), top - 6), f"recommended {recommended:g}", fill="black", font=font, anchor="mb")
    legend_y = top
    for column, label, colour in SERIES:
        if column not in table.columns:
            continue
        values = table[column].to_numpy(dtype=float)
        if column == "n_clusters":
            peak = values.max()
            values = values / peak if peak > 0 else values
            label = f"clusters (/ {int(peak)})"
        points = [(px(t), py(v)) for t, v in zip(x, values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for point in points:
            draw.ellipse([point[0] - 3, point[1] - 3, point[0] + 3, point[1] + 3], fill=colour)
        draw.line([(right + 20, legend_y + 8), (right + 50, legend_y + 8)], fill=colour, width=3)
        draw.text((right + 58, legend_y + 8), label, fill="black", font=font, anchor="lm")
        legend_y += 26
    with atomic_open(path, "wb") as handle:
        image.save(handle, "PNG")
