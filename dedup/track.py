"""Tracks: the same insect across nearby frames, from similarity, time and (when boxes are known) position.

Frames are processed in time order within each sequence (one folder = one camera). Every track keeps its latest
crop (its tail). The crops of a new frame are matched one-to-one to the live tails by
`scipy.optimize.linear_sum_assignment`, maximising the total weight of the matched pairs, where a pair (crop c,
tail t) may match only when every gate passes:

* time:       0 <= t_c - t_t <= max_seconds (a track lives max_seconds after its last crop), and a different frame;
* similarity: cosine(c, t) >= min_similarity;
* position:   distance between box centres <= max_distance box sizes, when both crops have a box (box size =
              the mean over the two boxes of sqrt(width * height)).

weight = (cosine - min_similarity + 0.001) * (1 - 0.5 * distance / max_distance): similarity first, closer boxes
preferred. Infeasible pairs weigh 0 and are never kept, so a crop left without a good partner starts a new track
rather than being forced onto a poor one. A matched crop becomes its track's new tail.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np


@dataclass(frozen=True)
class TrackGates:
    """max_seconds: time gate in seconds (> 0); max_distance: in box sizes (> 0); min_similarity: cosine."""

    max_seconds: float
    max_distance: float
    min_similarity: float


def _weights(embeddings: np.ndarray, crops: np.ndarray, tails: np.ndarray, centres: np.ndarray, sizes: np.ndarray,
             gates: TrackGates) -> np.ndarray:
    """float64 (len(crops), len(tails)) assignment weights; 0 where a gate fails."""
    sims = embeddings[crops] @ embeddings[tails].T
    weight = np.where(sims >= gates.min_similarity, sims - gates.min_similarity + 1e-3, 0.0).astype(np.float64)
    offset = centres[crops][:, None, :] - centres[tails][None, :, :]
    scale = 0.5 * (sizes[crops][:, None] + sizes[tails][None, :])
    with np.errstate(invalid="ignore"):
        distance = np.hypot(offset[..., 0], offset[..., 1]) / scale          # NaN when either box is unknown
    known = np.isfinite(distance)
    weight[known & (distance > gates.max_distance)] = 0.0
    factor = np.where(known, 1.0 - 0.5 * np.minimum(distance, gates.max_distance) / gates.max_distance, 1.0)
    return weight * factor


def track_links(embeddings: np.ndarray, seconds: np.ndarray, frame: np.ndarray, sequence: np.ndarray,
                boxes: np.ndarray, gates: TrackGates, link: Callable[[int, int], bool]) -> int:
    """Propose track links in time order and pass each to `link(crop, tail)`; returns the number of assignments.

    embeddings: float32 (n, d) L2-normalised; seconds: float64 (n,) POSIX seconds, NaN = unknown (never tracked);
    frame: int64 (n,) source-frame id (crops sharing it are one frame); sequence: int64 (n,) camera/folder id;
    boxes: float64 (n, 4) x1, y1, x2, y2 in source pixels, NaN rows unknown. `link` may refuse (a frame in common
    with the tail's individual); the crop then starts a new track.
    """
    from scipy.optimize import linear_sum_assignment

    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    sizes = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 1.0))
    timed = np.flatnonzero(np.isfinite(seconds))
    order = timed[np.lexsort((frame[timed], seconds[timed], sequence[timed]))]
    proposed = 0
    starts = np.flatnonzero(np.r_[True, (np.diff(sequence[order]) != 0) | (np.diff(seconds[order]) != 0)
                                  | (np.diff(frame[order]) != 0)])
    tails: List[int] = []
    for begin, end in zip(starts, np.r_[starts[1:], order.size]):
        crops = order[begin:end]
        first = crops[0]
        tails = [t for t in tails if sequence[t] == sequence[first]
                 and seconds[first] - seconds[t] <= gates.max_seconds and frame[t] != frame[first]]
        matched: List[Tuple[int, int]] = []
        if tails:
            weight = _weights(embeddings, crops, np.asarray(tails), centres, sizes, gates)
            rows, cols = linear_sum_assignment(weight, maximize=True)
            matched = [(r, c) for r, c in zip(rows, cols) if weight[r, c] > 0]
        new_tails = list(tails)
        taken = set()
        for r, c in matched:
            proposed += 1
            if link(int(crops[r]), int(tails[c])):
                new_tails[c] = int(crops[r])
                taken.add(r)
        new_tails.extend(int(crops[r]) for r in range(crops.size) if r not in taken)
        tails = new_tails
    return proposed
