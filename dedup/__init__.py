"""Individuals: exact duplicates (exact.py), near-duplicates (near.py), tracks across frames (track.py), the
representative crop (representative.py), all combined by individuals.py. This module holds only the defaults the
command line needs without importing NumPy (so `cluster.py -h` stays instant)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class LinkDefaults:
    """Per-backend defaults: near-duplicate cosine threshold, the track similarity gate (calibration in
    bench/results/individuals.json) and verify_from, the lower cosine bound of the uncertain band whose pairs the
    pixel verification checks (dedup/verify.py; bench/results/verify_individuals.json; None = not calibrated for
    this backend, no verification). docs/individuals.md."""

    dedup_threshold: float
    track_min_similarity: float
    verify_from: Optional[float] = None


BACKEND_DEFAULTS = {
    "lite0": LinkDefaults(dedup_threshold=0.93, track_min_similarity=0.65, verify_from=0.65),
    "dino": LinkDefaults(dedup_threshold=0.95, track_min_similarity=0.70),
}
TRACK_MAX_SECONDS = 30.0    # BiodivX links crops < 30 s apart on similarity alone
TRACK_MAX_DISTANCE = 2.0    # box sizes between box centres of consecutive crops of one track
VERIFY_MIN_SCORE = 0.98     # aligned-thumbnail NCC from which a band pair is the same picture (dedup/verify.py)
VERIFY_MIN_DETAIL = 0.85    # ... and the NCC of the aligned local-contrast-normalised thumbnails (dedup/verify.py)
VERIFY_STRICT_SCORE = 0.99  # ... and, where the neighbourhood is dense (dedup/density.py), this grey NCC
VERIFY_STRICT_DETAIL = 0.95 # ... and this detail NCC at the thumbnails' full 64 px
DENSE_MARGIN = 0.10         # a pair is dense when its cosine beats its ends' background by less (dedup/density.py)
DENSE_CERTAIN = 0.97        # from this cosine a near-duplicate needs no pixel check, however dense the neighbourhood
