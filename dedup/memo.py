"""What the individuals stage computed from crop contents, kept across runs: pixel-check decisions per pair of
contents, the background similarity per content, the representative quality per content.

Each is a function of file contents (and of the parameters in its namespace) only, so a later run over the same
contents -- the same command again, another `-th`, an `--add` that brings new crops -- reads it instead of aligning,
multiplying or decoding again. Kept in the embedding cache's folder (embed/cache.py's chunked, atomic format; a
killed run loses at most what it had not written), one namespace per kind and parameters: `memo-<kind>-<key>`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


def pair_key(a: str, b: str, tag: str = "") -> str:
    """A 32-hex key of an unordered pair of contents (and a tag, e.g. 'strict')."""
    low, high = (a, b) if a <= b else (b, a)
    return hashlib.blake2b(f"{low}|{high}|{tag}".encode(), digest_size=16).hexdigest()


class Memo:
    """float32 vectors of `width` values per 32-hex key, under `root` in the namespace of (kind, params).
    root None: nothing is kept (every value is computed)."""

    def __init__(self, root: Optional[str], kind: str, params: Dict, width: int = 1) -> None:
        from crop_cluster.embed.cache import EmbeddingCache

        self.width = width
        self.cache = None if root is None else EmbeddingCache(root, "memo", f"{kind}:{json.dumps(params, sort_keys=True)}")
        self.hits = self.computed = 0

    def values(self, keys: Sequence[str], compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """float32 (k, width): the kept value of each key, `compute(positions)` (int64 positions into keys ->
        float32 (m, width)) for the others, which are then kept. Duplicate keys are computed once; '' keys (no
        known content) are computed every time and never kept."""
        keys = list(keys)
        out = np.zeros((len(keys), self.width), dtype=np.float32)
        if not keys:
            return out
        found = np.zeros(len(keys), dtype=bool)
        if self.cache is not None:
            lookup = self.cache.lookup(keys)
            if lookup.vectors.shape[1] == self.width:
                found = lookup.found & (np.asarray(keys, dtype=object) != "")
                out[found] = lookup.vectors[found]
        missing = np.flatnonzero(~found)
        if missing.size:
            named = np.asarray([keys[p] or f"\0{p}" for p in missing.tolist()], dtype=object)   # '' never shared
            unique, first, inverse = np.unique(named, return_index=True, return_inverse=True)
            fresh = np.asarray(compute(missing[first]), dtype=np.float32).reshape(len(unique), self.width)
            out[missing] = fresh[inverse]
            kept = np.asarray([not k.startswith("\0") for k in unique], dtype=bool)
            if self.cache is not None and kept.any():
                try:
                    self.cache.write([str(k) for k in unique[kept]], fresh[kept], [])
                    self.cache.compact()
                except OSError as error:
                    log.warning("cannot keep results in %s (%s); they are computed again next run",
                                self.cache.folder, os.strerror(error.errno) if error.errno else error)
        self.hits += int(found.sum())
        self.computed += int(missing.size)
        return out


@dataclass
class LinkMemo:
    """The contents of a run's crops and where their results are kept: digests (n,) per row ('' unknown: never
    kept), root: the cache folder (None: keep nothing), model: the embedding namespace (backgrounds are cosines of
    one model). Built by the caller of dedup.link.link_crops."""

    digests: Sequence[str]
    root: Optional[str]
    model: str

    def memo(self, kind: str, params: Dict, width: int = 1) -> Memo:
        return Memo(self.root, kind, params, width)
