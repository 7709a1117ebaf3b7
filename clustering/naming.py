"""Cluster names from a hierarchical classifier's per-crop predictions: the deepest taxon the members agree on.

For each cluster and each level, finest first, every taxon's share is the probability-weighted vote of the
cluster's crops: sum of w * p over the crops predicting it, over sum of w over all crops, where p is the crop's
probability of its predicted class at that level and w = 1 / (crops of its individual), so an insect seen in thirty
frames votes once, like one seen once. The cluster's taxon is the first (deepest) taxon whose share reaches
`share`; a cluster whose members agree on nothing, not even at the coarsest level, has none. Works for any
clustering: it only reads the per-row cluster ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np


@dataclass(frozen=True)
class ClusterTaxa:
    """Per cluster 0..K-1: taxon int64 (K,) class index at `level` (-1 = none agreed), level int64 (K,) index
    (0 = finest, -1 = none), share float64 (K,) the winning taxon's weighted share (at the chosen level, else at the
    coarsest level)."""

    taxon: np.ndarray
    level: np.ndarray
    share: np.ndarray


def cluster_taxa(cluster: np.ndarray, individual: np.ndarray, index: np.ndarray, probability: np.ndarray,
                 share: float) -> ClusterTaxa:
    """The deepest agreed taxon of each cluster.

    cluster: int64 (n,) 0..K-1, -1 = not clustered (ignored); individual: int64 (n,); index: int64 (n, L) predicted
    class per level, finest first; probability: float (n, L) its probability; share: in (0, 1].
    """
    import pandas as pd

    k = int(cluster.max(initial=-1)) + 1
    taxon, level, best_share = np.full(k, -1, np.int64), np.full(k, -1, np.int64), np.zeros(k)
    rows = np.flatnonzero(cluster >= 0)
    if k == 0:
        return ClusterTaxa(taxon, level, best_share)
    weight = 1.0 / np.bincount(individual[rows])[individual[rows]]
    total = np.bincount(cluster[rows], weights=weight, minlength=k)
    for depth in range(index.shape[1]):
        votes = pd.DataFrame({"cluster": cluster[rows], "taxon": index[rows, depth],
                              "vote": weight * probability[rows, depth]})
        summed = votes.groupby(["cluster", "taxon"], sort=False)["vote"].sum().reset_index()
        top = summed.sort_values("vote", ascending=False, kind="stable").drop_duplicates("cluster")
        ids = top["cluster"].to_numpy()
        shares = top["vote"].to_numpy() / total[ids]
        open_ = level[ids] < 0
        agreed = open_ & (shares >= share - 1e-12)
        taxon[ids[agreed]], level[ids[agreed]] = top["taxon"].to_numpy()[agreed], depth
        best_share[ids[open_]] = shares[open_]
    return ClusterTaxa(taxon, level, best_share)


def cluster_name(cluster_id: int, taxon: str, level: int, levels: Sequence[str]) -> str:
    """Readable name: 'Agrotis ipsilon (cluster 3)' at the finest level, 'Geometridae sp. 37 (genus uncertain)'
    above it, 'unplaced sp. 12 (order uncertain)' without an agreed taxon."""
    if level == 0:
        return f"{taxon} (cluster {cluster_id})"
    if level > 0:
        return f"{taxon} sp. {cluster_id} ({levels[level - 1]} uncertain)"
    return f"unplaced sp. {cluster_id} ({levels[-1]} uncertain)"


def name_columns(cluster: np.ndarray, individual: np.ndarray, index: np.ndarray, probability: np.ndarray,
                 levels: Sequence[str], classes: Sequence[Sequence[str]], share: float) -> Dict[str, np.ndarray]:
    """Per-row columns cluster_taxon, cluster_taxon_level, cluster_taxon_share and cluster_name ('' / NaN for rows
    not clustered); arguments as in `cluster_taxa`, plus the level names and class names per level, finest first."""
    found = cluster_taxa(cluster, individual, index, probability, share)
    taxa = [classes[level][taxon] if level >= 0 else "" for taxon, level in zip(found.taxon, found.level)]
    per_cluster = {   # one entry per cluster, then one for the rows in none (-1)
        "cluster_taxon": taxa + [""],
        "cluster_taxon_level": [levels[level] if level >= 0 else "" for level in found.level] + [""],
        "cluster_taxon_share": np.append(np.round(found.share, 4), np.nan),
        "cluster_name": [cluster_name(k, taxon, int(level), levels)
                         for k, (taxon, level) in enumerate(zip(taxa, found.level))] + [""]}
    position = np.where(cluster >= 0, cluster, found.taxon.size)
    return {column: np.asarray(values, dtype=object if column != "cluster_taxon_share" else np.float64)[position]
            for column, values in per_cluster.items()}
