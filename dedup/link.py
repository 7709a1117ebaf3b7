"""The individuals stage on a run's crops: exact copies, near-duplicates and tracks (dedup/individuals.py)."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np

from crop_cluster.crops import Crops
from crop_cluster.dedup import BACKEND_DEFAULTS, TRACK_MAX_DISTANCE, TRACK_MAX_SECONDS, LinkDefaults
from crop_cluster.dedup.individuals import LinkParams, link_individuals

log = logging.getLogger("crop-cluster")


def link_params(defaults: Optional[LinkDefaults], dedup_threshold: Optional[float],
                track_max_seconds: Optional[float], track_max_distance: Optional[float],
                track_min_similarity: Optional[float], verify_from: Optional[float], no_verify: bool,
                cluster_threshold: float, device: str) -> LinkParams:
    """LinkParams from the run's options (None = default): the backend's calibrated `defaults` (None for a model
    without them: no near-duplicate linking, no pixel verification, tracks gated at the clustering threshold), else
    the global ones."""
    dedup_threshold = dedup_threshold or (defaults.dedup_threshold if defaults else None)
    return LinkParams(
        dedup_threshold=dedup_threshold,
        track_max_seconds=TRACK_MAX_SECONDS if track_max_seconds is None else track_max_seconds,
        track_max_distance=track_max_distance or TRACK_MAX_DISTANCE,
        track_min_similarity=(track_min_similarity if track_min_similarity is not None
                              else defaults.track_min_similarity if defaults else cluster_threshold),
        device=device,
        verify_from=verify_band_start(defaults, dedup_threshold, verify_from, no_verify))


def verify_band_start(defaults: Optional[LinkDefaults], dedup_threshold: Optional[float],
                      verify_from: Optional[float], no_verify: bool) -> Optional[float]:
    """The lower cosine bound of the band checked on pixels (--verify_from, else the backend's calibrated one);
    None = no verification (--no_verify, no near-duplicate threshold, or no calibrated band for the model)."""
    if no_verify or dedup_threshold is None:
        return None
    return verify_from or (defaults.verify_from if defaults else None)


def backend_defaults(backend: Optional[str]) -> Optional[LinkDefaults]:
    """The calibrated linking defaults of a backend name (None for one without them)."""
    return BACKEND_DEFAULTS.get(backend) if backend else None


def link_crops(crops: Crops, meta, params: LinkParams, forest=None,
               thumbnail_cache: Optional[str] = None, model_key: str = "") -> Tuple[Crops, List[str], Dict]:
    """Group the crops into individuals; returns (the crops with their individual and representative, linked_by
    per row, the counts for run.json). meta: inputs.metadata.MetadataColumns of the crops (sources, seconds,
    boxes); forest: the run's spanning forest over the distinct crops (near-duplicates are its strongest links);
    thumbnail_cache: the folder that keeps the pixel check's thumbnails by content (the embedding cache's), and the
    pixel-check decisions, backgrounds and qualities (dedup/memo.py) when the crops' digests are known; model_key:
    the embedding namespace the backgrounds belong to."""
    from crop_cluster.dedup.memo import LinkMemo
    from crop_cluster.dedup.verify import ThumbnailSource

    if params.dedup_threshold is None:
        log.info("no calibrated near-duplicate threshold for model %s: only exact duplicates and tracks are linked "
                 "(give --dedup_threshold to link near-duplicates)", crops.model)
    exact_first = np.flatnonzero(crops.representative)[crops.individual]
    thumbnails = ThumbnailSource(crops.filenames, thumbnail_cache, crops.digests)
    memo = None if crops.digests is None else LinkMemo(crops.digests, thumbnail_cache, model_key or crops.model)
    found = link_individuals(crops.embedding, exact_first, crops.filenames, meta.sources, meta.seconds, meta.boxes,
                             params, forest, thumbnails, memo)
    found.counts["thumbnails_decoded"] = thumbnails.decoded
    log.info("%d images -> %d individuals (linked: %d exact, %d near-duplicate, %d near-verified, %d track)",
             len(crops.filenames), found.counts["individuals"], found.counts["linked_exact"],
             found.counts["linked_near"], found.counts["linked_near_verified"], found.counts["linked_track"])
    return crops.with_individuals(found.individual, found.representative), found.linked_by, found.counts
