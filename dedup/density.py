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

The sample is a function of the run's set of contents, never of their order: the BACKGROUND_SAMPLE distinct crops
with the smallest content digests (BLAKE2b, so a uniform random choice), or a seeded draw when digests are unknown.
With a memo (dedup/memo.py) each crop's background is kept per (model, sample), so a run over the same contents
multiplies nothing again.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

from crop_cluster.dedup import DENSE_CERTAIN, DENSE_MARGIN

BACKGROUND_RANK = 10        # the background is the 10th highest similarity to the sample
BACKGROUND_SAMPLE = 4096    # distinct crops the background is measured against, at most
BLOCK = 1024                # crops per matrix product


class Background:
    """Background similarity of crops on demand (computed once per crop).

    embeddings: float32 (n, d) L2-normalised; distinct: int64 (m,) the rows that stand for distinct contents;
    digests: the content digest per row (the sample: the smallest ones), None: a draw with a fixed seed; memo: a
    dedup.memo.LinkMemo to keep the backgrounds in (its digests are the rows' digests)."""

    def __init__(self, embeddings: np.ndarray, distinct: np.ndarray, seed: int = 0,
                 digests: Optional[Sequence[str]] = None, memo=None):
        self.embeddings = embeddings
        if digests is not None and all(digests[k] for k in distinct.tolist()):
            by_content = distinct[np.argsort(np.asarray([digests[k] for k in distinct.tolist()], dtype=object),
                                             kind="stable")]
            distinct = np.sort(by_content[:BACKGROUND_SAMPLE])
        elif distinct.size > BACKGROUND_SAMPLE:
            distinct = np.sort(np.random.default_rng(seed).choice(distinct, BACKGROUND_SAMPLE, replace=False))
            memo = None                  # a seeded draw depends on the order: nothing to keep
        self.sample = np.ascontiguousarray(embeddings[distinct], dtype=np.float32)
        self.known = np.full(len(embeddings), np.nan, dtype=np.float32)      # background per crop, NaN: not yet
        self.digests, self.store = digests, None
        if memo is not None and digests is not None:
            sample_key = hashlib.blake2b("|".join(sorted(digests[k] for k in distinct.tolist())).encode(),
                                         digest_size=16).hexdigest()
            self.store = memo.memo("background", {"model": memo.model, "sample": sample_key,
                                                  "rank": BACKGROUND_RANK, "certain": DENSE_CERTAIN})

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """float32 (k,): the background of each crop (int64 (k,) rows); -1 when the run has BACKGROUND_RANK distinct
        crops or fewer (nothing to rank: no pair is dense)."""
        crops = np.asarray(crops, dtype=np.int64).reshape(-1)
        missing = np.unique(crops[np.isnan(self.known[crops])])
        if len(self.sample) <= BACKGROUND_RANK:                                 # too few others to rank
            self.known[missing] = -1.0
            return self.known[crops]
        if self.store is None:
            self.known[missing] = self._compute(missing)
        else:
            self.known[missing] = self.store.values([self.digests[k] for k in missing.tolist()],
                                                    lambda at: self._compute(missing[at]))[:, 0]
        return self.known[crops]

    def _compute(self, rows: np.ndarray) -> np.ndarray:
        """float32 (k,): the background of crops `rows` (int64), from the sample."""
        out = np.empty(rows.size, dtype=np.float32)
        for start in range(0, rows.size, BLOCK):
            block = rows[start:start + BLOCK]
            sims = self.embeddings[block] @ self.sample.T                      # (b, sample)
            sims[sims >= DENSE_CERTAIN] = -1.0                                  # itself and its near-certain copies
            out[start:start + block.size] = -np.partition(-sims, BACKGROUND_RANK - 1, axis=1)[:, BACKGROUND_RANK - 1]
        return out

    def dense(self, a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """bool (k,): which pairs (a[i], b[i]) of cosine sims[i] are dense (module docstring); never at or above
        DENSE_CERTAIN."""
        sims = np.asarray(sims, dtype=np.float32).reshape(-1)
        if not sims.size:
            return np.zeros(0, dtype=bool)
        return (sims < DENSE_CERTAIN) & (sims - np.maximum(self(a), self(b)) < DENSE_MARGIN)
