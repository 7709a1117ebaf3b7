"""`--add`: link new crops into the campaign's individuals across the boundary between two batches of frames.

The tracking rule of dedup/track.py (similarity, time and box gates, one-to-one assignment frame by frame) runs
over the new crops together with the campaign crops that a track could reach: those of the same folders whose time
lies within `max_seconds` of the new batch. Crops already one individual are pre-joined (dedup/union.py keeps its
rule: crops of one source frame are never one individual). A new individual that a track reaches from a campaign
individual becomes that individual (the first one reached when several are); campaign individuals are never merged
with each other here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Linked:
    """new_to_old: int64 (J,) per new individual, the campaign individual (index among the old ones) it continues,
    -1 none; links: how many new individuals were linked."""

    new_to_old: np.ndarray
    links: int


def link_across(embedding: np.ndarray, is_old: np.ndarray, item: np.ndarray, filenames: Sequence[str],
                sources: Sequence[Optional[str]], seconds: np.ndarray, boxes: np.ndarray, n_old: int,
                max_seconds: float, max_distance: float, min_similarity: float) -> Linked:
    """Track links between campaign crops and new crops (module docstring).

    embedding: float32 (n, d) per row; is_old: bool (n,); item: int64 (n,) individual per row, old ones 0..n_old-1,
    new ones n_old..n_old+J-1; sources: source-frame id per row or None; seconds: float64 (n,) NaN unknown;
    boxes: float64 (n, 4) NaN unknown.
    """
    from crop_cluster.dedup.individuals import frame_ids
    from crop_cluster.dedup.track import TrackGates, track_links
    from crop_cluster.dedup.union import FrameUnion

    n_new = int(item.max(initial=n_old - 1)) + 1 - n_old
    new_to_old = np.full(n_new, -1, dtype=np.int64)
    new_rows = np.flatnonzero(~is_old & np.isfinite(seconds))
    if max_seconds <= 0 or new_rows.size == 0:
        return Linked(new_to_old, 0)
    folders = np.asarray([os.path.dirname(os.path.abspath(name)) for name in filenames], dtype=object)
    new_folders = set(folders[new_rows].tolist())
    low, high = seconds[new_rows].min() - max_seconds, seconds[new_rows].max() + max_seconds
    near = is_old & np.isfinite(seconds) & (seconds >= low) & (seconds <= high) & \
        np.isin(folders, list(new_folders))
    rows = np.flatnonzero(near | (~is_old & np.isfinite(seconds)))
    if not near.any():
        return Linked(new_to_old, 0)
    local_item = item[rows]
    frame = frame_ids([os.path.abspath(filenames[r]) for r in rows], [sources[r] for r in rows], seconds[rows])
    union = FrameUnion(frame)
    first_of: dict = {}
    for k, it in enumerate(local_item.tolist()):
        if it in first_of:
            union.link(k, first_of[it], "exact", force=True)
        else:
            first_of[it] = k
    _, sequence = np.unique(folders[rows], return_inverse=True)
    old_root_item: dict = {}

    def link(a: int, b: int) -> bool:
        ia, ib = int(local_item[a]), int(local_item[b])
        ra, rb = union.find(a), union.find(b)
        oa, ob = old_root_item.get(ra, ia if ia < n_old else None), old_root_item.get(rb, ib if ib < n_old else None)
        if oa is not None and ob is not None and oa != ob:
            return False                      # would merge two campaign individuals
        if not union.link(a, b, "track"):
            return union.same(a, b)
        owner = oa if oa is not None else ob
        if owner is not None:
            old_root_item[union.find(a)] = owner
        return True

    track_links(embedding[rows], seconds[rows], frame, sequence.astype(np.int64), boxes[rows],
                TrackGates(max_seconds, max_distance, min_similarity), link)
    roots = union.labels()
    owner_of_root: dict = {}
    for k in np.flatnonzero(local_item < n_old):
        owner_of_root.setdefault(int(roots[k]), int(local_item[k]))
    for k in np.flatnonzero(local_item >= n_old):
        owner = owner_of_root.get(int(roots[k]))
        if owner is not None:
            new_to_old[int(local_item[k]) - n_old] = owner
    return Linked(new_to_old, int((new_to_old >= 0).sum()))
