"""How crowded a crop's embedding neighbourhood is: the background similarity that a pair's cosine must clear.

A cosine of 0.94 says "another cut of this picture" for a moth alone of its kind on the night, but only "another
photo of the same kind" among 3 000 studio shots of one shoe model. The background of a crop is the BACKGROUND_RANK-th
highest cosine between it and a fixed random sample of at most BACKGROUND_SAMPLE distinct crops of the run, leaving
out the crops at DENSE_CERTAIN or above (its own near-certain copies) and itself. A pair (a, b) of cosine s is dense
when s - max(background(a), background(b)) < DENSE_MARGIN: its cosine stands out too little from what unrelated
crops around it reach, so dedup/individuals.py holds it to the strict pixel check (dedup/verify.py). The sample
keeps the cost at (crops asked) x BACKGROUND_SAMPLE dot products; in runs of more distinct crops than the sample the
rank is taken in the sample (one quantile of the crop's similarities, whatever the run size), in smaller runs among
all of them, and a run of BACKGROUND_RANK distinct crops or fewer has no background (no pair is dense).
"""
from __future__ import annotations

import numpy as np

from crop_cluster.dedup import DENSE_CERTAIN, DENSE_MARGIN

BACKGROUND_RANK = 10        # the background is the 10th highest similarity to the sample
BACKGROUND_SAMPLE = 4096    # distinct crops the background is measured against, at most
BLOCK = 1024                # crops per matrix product


class Background:
    """Background similarity of crops on demand (computed once per crop).

    embeddings: float32 (n, d) L2-normalised; distinct: int64 (m,) the rows that stand for distinct contents (the
    sample is drawn from them with a fixed seed, so a run's answer never changes)."""

    def __init__(self, embeddings: np.ndarray, distinct: np.ndarray, seed: int = 0):
        self.embeddings = embeddings
        if distinct.size > BACKGROUND_SAMPLE:
            distinct = np.sort(np.random.default_rng(seed).choice(distinct, BACKGROUND_SAMPLE, replace=False))
        self.sample = np.ascontiguousarray(embeddings[distinct], dtype=np.float32)
        self.known = np.full(len(embeddings), np.nan, dtype=np.float32)      # background per crop, NaN: not yet

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """float32 (k,): the background of each crop (int64 (k,) rows); -1 when the run has BACKGROUND_RANK distinct
        crops or fewer (nothing to rank: no pair is dense)."""
        crops = np.asarray(crops, dtype=np.int64).reshape(-1)
        missing = np.unique(crops[np.isnan(self.known[crops])])
        if len(self.sample) <= BACKGROUND_RANK:                                 # too few others to rank
            self.known[missing] = -1.0
            return self.known[crops]
        for start in range(0, missing.size, BLOCK):
            rows = missing[start:start + BLOCK]
            sims = self.embeddings[rows] @ self.sample.T                       # (b, sample)
            sims[sims >= DENSE_CERTAIN] = -1.0                                  # itself and its near-certain copies
            self.known[rows] = -np.partition(-sims, BACKGROUND_RANK - 1, axis=1)[:, BACKGROUND_RANK - 1]
        return self.known[crops]

    def dense(self, a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """bool (k,): which pairs (a[i], b[i]) of cosine sims[i] are dense (module docstring); never at or above
        DENSE_CERTAIN."""
        sims = np.asarray(sims, dtype=np.float32).reshape(-1)
        if not sims.size:
            return np.zeros(0, dtype=bool)
        return (sims < DENSE_CERTAIN) & (sims - np.maximum(self(a), self(b)) < DENSE_MARGIN)
