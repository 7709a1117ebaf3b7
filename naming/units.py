"""What one name is decided for, by --name_level, and the vector that stands for it.

- `cluster` (default): each cluster, and each individual left out of every cluster; a cluster's vector is the
  L2-normalised mean of its individuals' vectors (each insect counts once, however many frames it was seen in);
- `individual`: each individual, its vector the L2-normalised mean of its crops;
- `crop`: each crop, its own embedding.

At cluster level a cluster whose individuals, each named on its own, clearly match two or more different names
(naming.rule.member_names) is named individual by individual instead (split_mixed_clusters): its centroid lies
between those names and matches neither well, while each of its individuals matches one.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def naming_units(level: str, cluster: np.ndarray, individual: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(unit int64 (n,) 0..U-1 per row, in order of first appearance; kind: object (U,) 'cluster', 'individual' or
    'crop'). cluster: int64 (n,) per row, -1 not clustered; individual: int64 (n,) per row."""
    n = individual.size
    if level == "crop":
        return np.arange(n, dtype=np.int64), np.full(n, "crop", dtype=object)
    if level == "individual":
        key = individual.astype(np.int64)
    elif level == "cluster":
        span = int(cluster.max(initial=-1)) + 1                    # clusters 0..span-1, then one key per individual
        key = np.where(cluster >= 0, cluster, span + individual).astype(np.int64)
    else:
        raise ValueError(f"unknown naming level '{level}'")
    _, first, unit = np.unique(key, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)                   # renumber in order of first appearance
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    clustered = cluster[np.sort(first)] >= 0                       # per unit, in the new order
    kind = np.where(clustered, "cluster", "individual").astype(object) if level == "cluster" else \
        np.full(first.size, "individual", dtype=object)
    return rank[unit.reshape(-1)], kind


def split_mixed_clusters(cluster: np.ndarray, individual: np.ndarray,
                         member_name: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
    """naming_units('cluster', ...) with every cluster whose individuals have two or more different names in
    `member_name` split into its individuals (kind 'individual'): (unit int64 (n,), kind object (U,), the number of
    clusters split). cluster, individual: int64 (n,) per row; member_name: int64 (I,) per individual, -1 none."""
    clustered = (cluster >= 0) & (member_name[individual] >= 0)
    pairs = np.unique(np.stack([cluster[clustered], member_name[individual[clustered]]]), axis=1)
    names_per_cluster = np.bincount(pairs[0], minlength=int(cluster.max(initial=-1)) + 1) if pairs.size else \
        np.zeros(int(cluster.max(initial=-1)) + 1, dtype=np.int64)
    mixed = np.flatnonzero(names_per_cluster >= 2)
    kept = np.where(np.isin(cluster, mixed), -1, cluster)
    unit, kind = naming_units("cluster", kept, individual)
    return unit, kind, int(mixed.size)


def unit_vectors(embedding: np.ndarray, individual: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """float32 (U, d): per unit the L2-normalised mean of its individuals' L2-normalised mean vectors.

    embedding: float32 (n, d) per row; individual, unit: int64 (n,) per row (every row of an individual in one
    unit)."""
    from scipy.sparse import csr_matrix

    n = individual.size
    n_individuals = int(individual.max(initial=-1)) + 1
    ones = np.ones(n, dtype=np.float32)
    members = csr_matrix((ones, (individual, np.arange(n))), shape=(n_individuals, n))
    per_individual = _normalised(np.asarray(members @ embedding, dtype=np.float32))
    of_individual = np.full(n_individuals, -1, dtype=np.int64)
    of_individual[individual] = unit
    present = np.flatnonzero(of_individual >= 0)
    grouping = csr_matrix((np.ones(present.size, dtype=np.float32), (of_individual[present], present)),
                          shape=(n_units, n_individuals))
    return _normalised(np.asarray(grouping @ per_individual, dtype=np.float32))


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
