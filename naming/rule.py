"""The naming rule as resolved for one run: the settings of its level, the threshold its gallery allows, and the
names each individual gets on its own (to find the clusters that mix names).

- resolve_settings: the given --name_threshold/--name_margin, else the backend's defaults calibrated at that
  --name_level (naming.BACKEND_DEFAULTS), else (a model not calibrated for naming) its clustering threshold; at
  cluster level also the individual level's settings, with which each member of a cluster is named on its own.
- threshold_used: the level's threshold, raised to the gallery's self-test threshold plus the calibrated offset
  (naming.prototypes.self_test_threshold) when the threshold is a default: a gallery whose names the model
  confuses names only clear matches, or nothing. A threshold given on the command line is used as given.
- member_names: each individual's name when it clears the members' rule, else -1 (naming.units.split_mixed_clusters).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from crop_cluster.naming import BACKEND_DEFAULTS, UNCALIBRATED_GALLERY_OFFSET, UNCALIBRATED_MARGIN

log = logging.getLogger("crop-cluster")


@dataclass(frozen=True)
class NamingSettings:
    """The rule as resolved for the run: level (naming.LEVELS), threshold, margin, rule (prototypes.RULES);
    gallery_offset: the threshold used is max(threshold, the gallery's self-test + gallery_offset), None: the
    threshold as given; members: at cluster level, the individual level's settings that name each member of a
    cluster on its own (a cluster whose members clear them with two or more names is named member by member),
    None at the other levels."""

    level: str
    threshold: float
    margin: float
    rule: str = "prototype"
    gallery_offset: Optional[float] = None
    members: Optional["NamingSettings"] = None


def resolve_settings(backend: Optional[str], level: Optional[str], threshold: Optional[float],
                     margin: Optional[float], cluster_threshold: float,
                     warn: bool = True) -> Tuple[NamingSettings, str]:
    """The run's NamingSettings and where its defaults came from. Given values win (a given threshold is used
    as given, without the gallery's raise); else the backend's defaults calibrated at that level; else (a backend
    not calibrated for naming) its clustering threshold, UNCALIBRATED_MARGIN and UNCALIBRATED_GALLERY_OFFSET. At
    cluster level the members' settings are the individual level's, resolved the same way. warn: log a warning
    when the backend has no calibrated defaults."""
    level = level or "cluster"
    defaults = BACKEND_DEFAULTS.get(backend or "", {}).get(level)
    source = f"calibrated for {backend} at {level} level (bench/results/naming.json)" if defaults else \
        f"not calibrated for {backend or 'this model'}: its clustering threshold (docs/naming.md, calibrating)"
    if defaults is None and threshold is None and warn:
        log.warning("--name_threshold: no calibrated default for %s; using the clustering threshold %.3f (see "
                    "docs/naming.md on calibrating for a new model)", backend or "this model", cluster_threshold)
    offset = None if threshold is not None else defaults.gallery_offset if defaults else UNCALIBRATED_GALLERY_OFFSET
    members = resolve_settings(backend, "individual", threshold, margin, cluster_threshold, warn=False)[0] \
        if level == "cluster" else None
    return NamingSettings(level,
                          threshold if threshold is not None else defaults.threshold if defaults else cluster_threshold,
                          margin if margin is not None else defaults.margin if defaults else UNCALIBRATED_MARGIN,
                          gallery_offset=offset, members=members), source


def threshold_used(settings: NamingSettings, vectors: np.ndarray, codes: np.ndarray, k: int) -> Tuple[float, float]:
    """(the cosine a unit's best name needs in this run, the gallery's self-test threshold): settings.threshold,
    raised to the self-test (naming.prototypes.self_test_threshold at settings.margin; -inf when the gallery names
    its own references right) plus settings.gallery_offset. vectors, codes: the references (R, d), (R,)."""
    from crop_cluster.naming.prototypes import self_test_threshold

    gallery = self_test_threshold(vectors, codes, k, settings.margin)
    if settings.gallery_offset is None:
        return settings.threshold, gallery
    return float(max(settings.threshold, gallery + settings.gallery_offset)), gallery


def member_names(embedding: np.ndarray, individual: np.ndarray, vectors: np.ndarray, codes: np.ndarray, k: int,
                 settings: NamingSettings) -> np.ndarray:
    """int64 (I,): each individual's name (index into the K names) when its centroid clears `settings` (the
    members' rule: threshold_used and the margin), else -1.

    embedding: float32 (n, d) per crop; individual: int64 (n,) 0..I-1 per crop; vectors, codes: the references."""
    from crop_cluster.naming.prototypes import decide, top_names
    from crop_cluster.naming.units import unit_vectors

    n_individuals = int(individual.max(initial=-1)) + 1
    queries = unit_vectors(embedding, individual, individual, n_individuals)
    index, score = top_names(queries, vectors, codes, k, settings.rule, top=2)
    decision = decide(index, score, threshold_used(settings, vectors, codes, k)[0], settings.margin)
    return np.where(decision.status == "named", decision.best, -1).astype(np.int64)
