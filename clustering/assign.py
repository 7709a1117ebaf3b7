"""The clustering stage on a run's crops: cluster the individuals, apply the post-filters, number the clusters and
give every crop its cluster, the cluster's size and its similarity to the cluster's centre."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from crop_cluster.clustering import ALGORITHMS, ClusterParams, run_algorithm
from crop_cluster.clustering.components import number_clusters
from crop_cluster.clustering.postprocess import centroid_similarity, drop_far_members, drop_small_groups
from crop_cluster.crops import Crops


@dataclass(frozen=True)
class Clusters:
    """Per crop: cluster (int64 (n,), -1 = not clustered), cluster_size (int64 (n,), 1 when not clustered),
    sim_to_centroid (float32 (n,)); per individual: rep_cluster (int64 (I,)). info: for run.json; forest: the
    spanning forest `cosine` built (clustering.forest.Forest), for the threshold sweep."""

    cluster: np.ndarray
    cluster_size: np.ndarray
    sim_to_centroid: np.ndarray
    rep_cluster: np.ndarray
    info: Dict[str, Any] = field(default_factory=dict)
    forest: Any = None


def per_crop(crops: Crops, rep_cluster: np.ndarray, info: Optional[Dict] = None, forest: Any = None) -> Clusters:
    """Clusters of the crops from the per-individual cluster ids `rep_cluster` (int64 (I,), -1 = not clustered);
    similarities to the centroids of the individuals' representatives."""
    vectors = crops.rows(crops.representative_rows())
    cluster = rep_cluster[crops.individual]
    sizes = np.bincount(rep_cluster[rep_cluster >= 0], minlength=1)
    return Clusters(cluster=cluster, cluster_size=np.where(cluster >= 0, sizes[np.maximum(cluster, 0)], 1),
                    sim_to_centroid=centroid_similarity(vectors, rep_cluster)[crops.individual],
                    rep_cluster=rep_cluster, info=info or {}, forest=forest)


def number_by_size(crops: Crops, groups: np.ndarray) -> np.ndarray:
    """Per-individual groups (int64 (I,), arbitrary ids, -1 = none) numbered 0..K-1 by decreasing crop count,
    ties by the representatives' file names."""
    reps = crops.representative_rows()
    return number_clusters(groups, [crops.filenames[i] for i in reps], np.bincount(crops.individual))


@dataclass(frozen=True)
class Grouping:
    """The clustering of the individuals before it is read per crop: rep_cluster int64 (I,) cluster 0..K-1 by
    decreasing size (-1 none), info for run.json, forest (see Clusters)."""

    rep_cluster: np.ndarray
    info: Dict[str, Any] = field(default_factory=dict)
    forest: Any = None


def cluster_crops(crops: Crops, algorithm: str, params: ClusterParams, min_sim_to_centroid: Optional[float] = None,
                  forest: Any = None) -> Clusters:
    """Cluster the crops' individuals with `algorithm` (a clustering.ALGORITHMS name): `cluster_individuals`, read
    per crop."""
    grouping = cluster_individuals(crops, algorithm, params, min_sim_to_centroid, forest)
    return per_crop(crops, grouping.rep_cluster, grouping.info, grouping.forest)


def cluster_individuals(crops: Crops, algorithm: str, params: ClusterParams,
                        min_sim_to_centroid: Optional[float] = None, forest: Any = None) -> Grouping:
    """Cluster the crops' individuals with `algorithm` (a clustering.ALGORITHMS name).

    `cosine` links individuals through every distinct crop of theirs (two individuals are linked when any of their
    crops are: the poses of one insect bridge to others), reading the run's spanning forest over the distinct
    crops (`forest`); the other algorithms cluster one vector per individual, its representative's. Members less
    similar than `min_sim_to_centroid` to their centroid, and groups smaller than params.min_cluster_size, become -1.
    """
    vectors = crops.rows(crops.representative_rows())
    if ALGORITHMS[algorithm].links_members:
        members = np.flatnonzero(crops.distinct)
        result = run_algorithm(algorithm, crops.rows(members), params, item_of_row=crops.individual[members],
                               forest=forest)
    else:
        result = run_algorithm(algorithm, vectors, params)
    groups = result.groups
    if min_sim_to_centroid is not None:
        groups = drop_far_members(vectors, groups, min_sim_to_centroid)
    groups = drop_small_groups(groups, params.min_cluster_size)
    used = {name: getattr(params, name) for name in ALGORITHMS[algorithm].uses}
    info = {"algorithm": algorithm, "parameters": used, "min_cluster_size": params.min_cluster_size,
            "min_sim_to_centroid": min_sim_to_centroid, "device": params.device, **result.info}
    return Grouping(number_by_size(crops, groups), info, result.forest)
