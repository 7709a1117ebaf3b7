"""The crops a run has read, in input order: the value that flows from the embed stage through individuals and
clustering to the outputs."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional

import numpy as np


@dataclass(frozen=True)
class Crops:
    """One row per readable image, in input order.

    filenames: list of n paths. embedding: float32 (n, d), L2-normalised. individual: int64 (n,), ids 0..I-1.
    representative: bool (n,), one True per individual. distinct: bool (n,), the first row of each identical file
    content (the rows whose embeddings differ). model: the model id of the embeddings. predictions: float32 (n, 2L)
    per-level class index and probability from a hierarchical model (embed/hierarchical.py), else None.
    digests: the content digest of each row (BLAKE2b-128 hex, '' where the file could not be read), the campaign
    store's crop key; None when unknown.
    """

    filenames: List[str]
    embedding: np.ndarray
    individual: np.ndarray
    representative: np.ndarray
    distinct: np.ndarray
    model: str
    predictions: Optional[np.ndarray] = None
    digests: Optional[List[str]] = None

    def representative_rows(self) -> np.ndarray:
        """int64 (I,): the representative's row of each individual, in individual-id order."""
        chosen = np.flatnonzero(self.representative)
        ordered = np.empty(chosen.size, dtype=np.int64)
        ordered[self.individual[chosen]] = chosen
        return ordered

    def rows(self, index: np.ndarray) -> np.ndarray:
        """embedding[index], float32 (len(index), d), without copying n x d when `index` is every row in order."""
        return take_rows(self.embedding, index)

    def keep(self, mask: np.ndarray) -> "Crops":
        """The rows where `mask` (bool (n,)) holds; exact-duplicate individuals renumbered, the first kept copy of
        each its representative."""
        if mask.all():
            return self
        _, first, individual = np.unique(self.individual[mask], return_index=True, return_inverse=True)
        representative = np.zeros(individual.size, dtype=bool)
        representative[first] = True
        return Crops([name for name, k in zip(self.filenames, mask) if k], self.embedding[mask],
                     individual.astype(np.int64), representative, representative.copy(), self.model,
                     None if self.predictions is None else self.predictions[mask],
                     None if self.digests is None else [d for d, k in zip(self.digests, mask) if k])

    def with_individuals(self, individual: np.ndarray, representative: np.ndarray) -> "Crops":
        """The same crops grouped into other individuals (int64 (n,), bool (n,))."""
        return replace(self, individual=individual, representative=representative)


def take_rows(embedding: np.ndarray, index: np.ndarray) -> np.ndarray:
    """embedding[index] (float32 (len(index), d)), without copying N x d when `index` is every row in order, as
    it is whenever no two crops were linked (index: int64 positions)."""
    if index.size == embedding.shape[0] and np.array_equal(index, np.arange(index.size)):
        return embedding
    return embedding[index]


def individual_ids(first: np.ndarray) -> np.ndarray:
    """Individual id per row, 0..I-1 in order of first appearance, from `first` (int64 (n,), the index of the
    first identical row)."""
    _, ids = np.unique(first, return_inverse=True)
    return ids.astype(np.int64)
