"""`--add` on a run's crops: the campaign's stored crops joined to the new ones, new crops linked into campaign
individuals, and new individuals placed (campaign/link.py, campaign/add.py), all on crop_cluster.crops.Crops.

Row order of the combined crops: the campaign's stored crops first (individuals 0..n_old-1, one row per stored
content), then the new crops (their individuals numbered after).
"""
from __future__ import annotations

import logging
import os
import types
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from crop_cluster.crops import Crops

log = logging.getLogger("crop-cluster")


def shown(path: str) -> str:
    """A stored (absolute) path as clusters.csv shows it: relative to the working folder when it lies under it."""
    here = os.getcwd()
    return os.path.relpath(path, here) if path.startswith(os.path.join(here, "")) else path


def with_campaign(new: Crops, stored: pd.DataFrame, embedding: np.ndarray, ok: np.ndarray
                  ) -> Tuple[Crops, int, np.ndarray]:
    """The stored crops (rows `ok` of `stored`, campaign.store CROP_COLUMNS, whose vectors are `embedding`,
    float32 (len(ok), d)) followed by the `new` crops. Returns (the crops, n_old: the number of campaign
    individuals, their stored cluster id int64 (n_old,))."""
    old = stored.iloc[ok].reset_index(drop=True)
    if len(old) == 0:                               # a first night added with --add: no campaign yet
        embedding = np.zeros((0, new.embedding.shape[1]), dtype=np.float32)
    ids, old_individual = np.unique(old["individual"].to_numpy(np.int64), return_inverse=True)
    flagged = old["representative"].to_numpy(bool)
    first = pd.Series(np.arange(len(old))).groupby(old_individual).first().to_numpy().copy()
    chosen = pd.Series(np.flatnonzero(flagged)).groupby(old_individual[flagged]).first()
    first[chosen.index.to_numpy()] = chosen.to_numpy()          # the stored representative where there is one
    representative = np.zeros(len(old), dtype=bool)
    representative[first] = True
    n_old = int(ids.size)
    crops = Crops(filenames=[shown(path) for path in old["path"]] + new.filenames,
                  embedding=np.concatenate([embedding.astype(np.float32), new.embedding]),
                  individual=np.concatenate([old_individual.astype(np.int64), new.individual + n_old]),
                  representative=np.concatenate([representative, new.representative]),
                  distinct=np.concatenate([np.ones(len(old), dtype=bool), new.distinct]), model=new.model,
                  digests=old["digest"].tolist() + list(new.digests or [""] * len(new.filenames)))
    return crops, n_old, old["cluster"].to_numpy(np.int64)[first]


def link_new(crops: Crops, n_old: int, meta, params, thumbnail_cache: Optional[str] = None
             ) -> Tuple[Crops, List[str], Dict]:
    """Individuals among the new crops (dedup/link.py with `params`, dedup.individuals.LinkParams; thumbnail_cache:
    the folder its pixel verification caches in), then tracks from campaign individuals into new ones across the
    batch boundary. meta: MetadataColumns of all the crops.
    Returns (the crops, linked_by per row ('' for stored crops), counts for run.json)."""
    from crop_cluster.campaign.link import link_across
    from crop_cluster.dedup.link import link_crops

    is_old = crops.individual < n_old
    new_rows = np.flatnonzero(~is_old)
    linked_by = [""] * len(crops.filenames)
    if new_rows.size == 0:
        return crops, linked_by, {"linked_to_campaign_individuals": 0}
    sub = crops.keep(~is_old)
    sub_meta = types.SimpleNamespace(sources=[meta.sources[i] for i in new_rows], seconds=meta.seconds[new_rows],
                                     boxes=meta.boxes[new_rows])
    sub, sub_linked, counts = link_crops(sub, sub_meta, params, None, thumbnail_cache)
    individual, representative = crops.individual.copy(), crops.representative.copy()
    individual[new_rows], representative[new_rows] = sub.individual + n_old, sub.representative
    for row, rule in zip(new_rows, sub_linked):
        linked_by[row] = rule
    found = link_across(crops.embedding, is_old, individual, crops.filenames, meta.sources, meta.seconds,
                        meta.boxes, n_old, params.track_max_seconds, params.track_max_distance,
                        params.track_min_similarity)
    for j in np.flatnonzero(found.new_to_old >= 0):
        members = np.flatnonzero(individual == n_old + j)
        individual[members], representative[members] = found.new_to_old[j], False
        for row in members:
            linked_by[row] = linked_by[row] or "track"
    _, compact = np.unique(individual, return_inverse=True)      # campaign ids 0..n_old-1 stay, new ones close up
    log.info("--add: %d new individuals continue a campaign individual (tracks across the batch boundary)",
             found.links)
    return (crops.with_individuals(compact.astype(np.int64), representative), linked_by,
            {**counts, "linked_to_campaign_individuals": found.links})


def place_new(crops: Crops, n_old: int, old_label: np.ndarray, threshold: float, match_threshold: float,
              reviewed, device: str = "cpu"):
    """Cluster label per individual (int64 (I,)): campaign individuals keep their cluster, new ones join one at
    `match_threshold` or are clustered among themselves (campaign/add.py). Returns (labels, campaign.add.AddResult,
    conflict details with the file name of each conflicting crop)."""
    from crop_cluster.campaign.add import add_to_campaign

    old_rows = np.flatnonzero(crops.distinct & (crops.individual < n_old))
    new_rows = np.flatnonzero(crops.distinct & (crops.individual >= n_old))
    result = add_to_campaign(crops.embedding[old_rows], crops.individual[old_rows], old_label,
                             crops.embedding[new_rows], crops.individual[new_rows] - n_old, threshold,
                             match_threshold, set(reviewed), device)
    details = []
    for conflict in result.conflicts:
        row = new_rows[np.flatnonzero(crops.individual[new_rows] - n_old == conflict["individual"])[0]]
        details.append({**conflict, "filename": crops.filenames[row]})
    return result.label, result, details
