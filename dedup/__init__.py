"""Individuals: exact duplicates (exact.py), near-duplicates (near.py), tracks across frames (track.py), the
representative crop (representative.py), all combined by individuals.py. This module holds only the defaults the
command line needs without importing NumPy (so `cluster.py -h` stays instant)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkDefaults:
    """Per-backend defaults: near-duplicate cosine threshold and the track similarity gate (calibration in
    bench/results/individuals.json; README "Individuals")."""

    dedup_threshold: float
    track_min_similarity: float


BACKEND_DEFAULTS = {
    "lite0": LinkDefaults(dedup_threshold=0.93, track_min_similarity=0.65),
    "dino": LinkDefaults(dedup_threshold=0.95, track_min_similarity=0.70),
}
TRACK_MAX_SECONDS = 30.0    # BiodivX links crops < 30 s apart on similarity alone
TRACK_MAX_DISTANCE = 2.0    # box sizes between box centres of consecutive crops of one track
