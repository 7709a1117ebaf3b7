"""Clustering algorithms behind one registry; each maps embeddings (n, d) to group ids (n,), -1 = not clustered.

Nothing heavy is imported here: the registry holds module names, so `cluster.py -h` stays instant.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

from crop_cluster.errors import CropClusterError


if TYPE_CHECKING:  # numpy is only needed once an algorithm runs
    import numpy as np


class ClusteringError(CropClusterError, ValueError):
    """Clustering options that cannot work (unknown algorithm, bad parameter, input too large for the algorithm)."""


@dataclass(frozen=True)
class ClusterParams:
    """Parameters of every algorithm; each algorithm reads the ones it uses (see ALGORITHMS[name].uses).

    threshold: cosine similarity for `cosine`. max_cluster_size: `cosine` chaining guard (0 = off).
    linkage, distance_threshold, pca, standardize: `agglomerative`. n_clusters: k for `kmeans`, or a cluster count
    for `agglomerative` instead of a distance threshold. min_cluster_size, min_samples: `hdbscan` (and
    min_cluster_size is also the post-filter for every algorithm). device: 'cpu' or 'cuda:N'. seed: k-means and PCA.
    """

    threshold: float = 0.9
    max_cluster_size: int = 0
    linkage: str = "ward"
    distance_threshold: Optional[float] = None
    n_clusters: Optional[int] = None
    pca: int = 0
    standardize: bool = False
    min_cluster_size: int = 2
    min_samples: Optional[int] = None
    device: str = "cpu"
    seed: int = 0


@dataclass
class ClusterResult:
    """Group id per row, int64 (n,), arbitrary ids, -1 = noise; `info` goes to run.json (plain JSON values);
    `forest`: the spanning forest `cosine` built (clustering.forest.Forest), for reuse by later stages."""

    groups: "np.ndarray"
    info: Dict[str, Any] = field(default_factory=dict)
    forest: Any = None


@dataclass(frozen=True)
class AlgorithmInfo:
    """Registry entry: the module and function implementing the algorithm, and the parameters it reads.

    links_members: the algorithm takes every distinct crop of each item (individual) with `item_of_row` and links
    items through any of their crops; the others take one vector per item.
    """

    module: str
    function: str
    uses: tuple
    summary: str
    links_members: bool = False


ALGORITHMS: Dict[str, AlgorithmInfo] = {
    "cosine": AlgorithmInfo(".cosine", "cluster_cosine", ("threshold", "max_cluster_size"),
                            "exact single linkage at a cosine threshold (connected components of the ε-graph)",
                            links_members=True),
    "agglomerative": AlgorithmInfo(".agglomerative", "cluster_agglomerative",
                                   ("linkage", "distance_threshold", "n_clusters", "pca", "standardize"),
                                   "scikit-learn agglomerative (ward/average/complete) after optional "
                                   "standardise + PCA; O(N^2) memory"),
    "kmeans": AlgorithmInfo(".kmeans", "cluster_kmeans", ("n_clusters", "seed"),
                            "spherical k-means (faiss), trained on a sample, assigned in chunks"),
    "hdbscan": AlgorithmInfo(".density", "cluster_hdbscan", ("min_cluster_size", "min_samples", "seed"),
                             "scikit-learn HDBSCAN after PCA to at most 50 dimensions; -1 = noise"),
}

LINKAGES = ("ward", "average", "complete")


def run_algorithm(name: str, embeddings: "np.ndarray", params: ClusterParams,
                  item_of_row: "Optional[np.ndarray]" = None, forest: Any = None) -> ClusterResult:
    """Run algorithm `name` on float32 (m, d) L2-normalised embeddings; ClusteringError naming the valid choices.

    item_of_row: int64 (m,) item id 0..n-1 of each row, for algorithms with `links_members` (groups are then per
    item, (n,)); None = one row per item. forest: a spanning forest over these m rows already built at or below
    the threshold (clustering.forest.Forest), read instead of computing similarities again.
    """
    if name not in ALGORITHMS:
        raise ClusteringError(f"unknown clustering algorithm '{name}'; available: {', '.join(ALGORITHMS)}")
    if not -1.0 <= params.threshold <= 1.0:
        raise ClusteringError(f"threshold {params.threshold} is not a cosine similarity; choose a value in [-1, 1], "
                              f"typically 0.6 to 0.95")
    info = ALGORITHMS[name]
    function = getattr(importlib.import_module(info.module, __package__), info.function)
    if item_of_row is None and forest is None:
        return function(embeddings, params)
    if not info.links_members:
        raise ValueError(f"-c {name} clusters one vector per item; it takes no item_of_row or forest")
    return function(embeddings, params, item_of_row=item_of_row, forest=forest)
