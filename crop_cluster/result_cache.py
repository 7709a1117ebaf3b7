"""Results a run computed, kept by what produced them, so that a later run pays only for what changed.

Two kinds, as npz files under the cache folder (CACHE/results/<kind>-<key>.npz, read with allow_pickle=False,
written atomically, the KEEP newest of each kind kept):

- `forest`: the maximum spanning forest of the similarity graph over a set of contents (digests, rows, cols, sims,
  threshold); the key hashes the embedding namespace and the sorted digests. A later run over the same contents
  reads it instead of any similarity search; an `--add` grows it (clustering.forest.grow_forest).
- `individuals`: the individuals of a set of crops (individual, representative, linked_by, counts); the key hashes
  everything they depend on (contents, paths, frames, times, boxes, linking parameters, the forest).

A key covers every input of its result, so a kept result is never stale, only missing; a damaged file is ignored
(computed again).
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import zipfile
from typing import Dict, Iterable, Optional

import numpy as np

log = logging.getLogger("crop-cluster")

FOLDER = "results"
KEEP = 8


def content_key(parts: Iterable) -> str:
    """A 32-hex BLAKE2b key of `parts` (strings, numbers, lists of strings, or numpy arrays hashed by their
    bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, list) and all(isinstance(item, str) for item in part):
            digest.update(f"list:{len(part)}".encode())
            digest.update("\0".join(part).encode("utf-8", "surrogateescape"))
        elif isinstance(part, np.ndarray):
            digest.update(str((part.dtype.str, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    return digest.hexdigest()


class ResultCache:
    """Kept results under `root` (the run's cache folder); root None keeps nothing."""

    def __init__(self, root: Optional[str]) -> None:
        self.folder = None if root is None else os.path.join(root, FOLDER)

    def _path(self, kind: str, key: str) -> str:
        return os.path.join(self.folder, f"{kind}-{key}.npz")

    def get(self, kind: str, key: Optional[str]) -> Optional[Dict[str, np.ndarray]]:
        """The arrays kept for (kind, key), None when there are none (or the file is damaged)."""
        if self.folder is None or not key or not os.path.isfile(self._path(kind, key)):
            return None
        try:
            with np.load(self._path(kind, key), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            log.warning("ignoring damaged kept result %s (%s); it is computed again", self._path(kind, key), error)
            return None
        os.utime(self._path(kind, key))            # recently used: kept longest
        return arrays

    def put(self, kind: str, key: str, arrays: Dict[str, np.ndarray]) -> None:
        """Keep `arrays` for (kind, key) atomically; older results of the kind beyond KEEP are removed. A failure
        to write (a full disk) is logged, not fatal: the result is simply computed again next time."""
        from crop_cluster.outputs.atomic import atomic_open

        if self.folder is None:
            return
        try:
            os.makedirs(self.folder, exist_ok=True)
            with atomic_open(self._path(kind, key), "wb") as handle:
                np.savez(handle, **arrays)
            kept = sorted(glob.glob(os.path.join(glob.escape(self.folder), f"{kind}-*.npz")), key=os.path.getmtime)
            for stale in kept[:-KEEP]:
                os.remove(stale)
        except OSError as error:
            log.warning("cannot keep the %s result in %s (%s); it is computed again next run", kind, self.folder,
                        os.strerror(error.errno) if error.errno else error)
