"""Clustering algorithms behind one registry; each maps embeddings (n, d) to group ids (n,), -1 = not clustered."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict

if TYPE_CHECKING:  # numpy is only needed once an algorithm runs; keeps `cluster.py -h` instant
    import numpy as np


class ClusteringError(ValueError):
    """Clustering options that cannot work (unknown algorithm, threshold out of range)."""


def _cosine(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    from clustering.cosine import cluster_cosine

    return cluster_cosine(embeddings, threshold)


ALGORITHMS: Dict[str, Callable[..., "np.ndarray"]] = {"cosine": _cosine}


def run_algorithm(name: str, embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Group ids (n,) from algorithm `name`; ClusteringError listing the valid names when it is unknown."""
    if name not in ALGORITHMS:
        raise ClusteringError(f"unknown clustering algorithm '{name}'; available: {', '.join(ALGORITHMS)}")
    if not -1.0 <= threshold <= 1.0:
        raise ClusteringError(f"threshold {threshold} is not a cosine similarity; choose a value in [-1, 1], "
                              f"typically 0.6 to 0.95")
    return ALGORITHMS[name](embeddings, threshold)
