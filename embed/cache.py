"""Embedding cache: vectors keyed by file content (BLAKE2b digest) + model + preprocessing, written in checkpoints.

Layout: CACHE_DIR/<backend>-<key>/ holds `namespace.json` (what the key stands for: model id, model files' sizes and
times, the preprocessing version) and `chunk-*.npz` files, each written atomically (temporary file + rename) with
`numpy.savez` and read with `allow_pickle=False`: `digest` (n,) S32 hex digests, `embedding` float32 (n, d) unit rows,
`failed` (m,) S32 digests of contents that could not be decoded and `reason` (m,) their reasons, plus for backends
with outputs beside the embedding (embed/hierarchical.py) `extras` float32 (n, e). A run killed at any
moment leaves whole chunks only, so the next run resumes from the last checkpoint; chunks are merged into one when
they pile up. Nothing here is pickled, so a cache folder from elsewhere cannot run code.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import mmap
import os
import time
import uuid
import zipfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from crop_cluster.embed.base import EmbedResult

log = logging.getLogger(__name__)

CACHE_FOLDER = "embed_cache"   # default place: OUT/embed_cache
CHECKPOINT_SECONDS = 10.0      # a killed run loses at most this much embedding work
COMPACT_CHUNKS = 16            # merge the chunks of a namespace into one when there are more than this
PIPELINE_VERSION = "uint8-pad-draft-v1"  # bump when embed/data.py changes the pixels a model sees


def _stamp(path: str) -> List:
    """Model identity for the key: the id itself, or for a local file/folder its files' names, sizes and times (for a
    file, its JSON sidecar's too: MODEL.json beside MODEL.pt describes what the outputs mean)."""
    if os.path.isfile(path):
        info = os.stat(path)
        stamp = [os.path.abspath(path), info.st_size, info.st_mtime_ns]
        sidecar = os.path.splitext(path)[0] + ".json"
        if sidecar != path and os.path.isfile(sidecar):
            stamp += [os.stat(sidecar).st_size, os.stat(sidecar).st_mtime_ns]
        return stamp
    if os.path.isdir(path):
        return [os.path.abspath(path)] + sorted([entry.name, entry.stat().st_size, entry.stat().st_mtime_ns]
                                                for entry in os.scandir(path) if entry.is_file())
    return [path]


def _mapped(path: str, archive: zipfile.ZipFile, name: str) -> Optional[np.ndarray]:
    """Read-only memory map of member `name`.npy of the .npz at `path` when it is stored uncompressed with a plain
    dtype, else None (then it is read as usual). ValueError when the member runs past the end of the file."""
    info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)                       # the member's local header: its name and extra field follow
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip member header for {name}")
        handle.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little") +
                    int.from_bytes(local[28:30], "little"))
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            return None
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = reader(handle)
        offset = handle.tell()
    if fortran_order or dtype.hasobject or len(shape) != 2:
        return None
    if offset + int(np.prod(shape)) * dtype.itemsize > os.path.getsize(path):
        raise ValueError(f"{name} runs past the end of the file")
    if 0 in shape:
        return np.zeros(shape, dtype)
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)   # stays valid after the file is closed
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):     # read the member ahead: a cold file
        mapped.madvise(mmap.MADV_WILLNEED, offset - offset % mmap.PAGESIZE)  # reads like one read()
    return np.frombuffer(mapped, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)


@dataclass(frozen=True)
class Lookup:
    """Cache answer for a list of digests: `vectors` (n, d) in the cache's dtype (zeros where not found), `found`
    bool (n,), `failed` {position: reason} for contents known to be undecodable, `extras` float32 (n, e) or None."""

    vectors: np.ndarray
    found: np.ndarray
    failed: Dict[int, str]
    extras: Optional[np.ndarray] = None

    @property
    def missing(self) -> np.ndarray:
        """int64 positions still to embed."""
        known = self.found.copy()
        known[list(self.failed)] = True
        return np.flatnonzero(~known)


class EmbeddingCache:
    """The cache folder of one model + preprocessing under `root`; nothing is created until the first write.

    variant: what else changes the pixels beyond tolerance (embed.resize.cache_variant: 'torch-uint8' for stage A's
    resize); '' keeps the key every earlier run used. dtype: of the stored vectors (float32 embeddings; uint8 for
    dedup/verify.py's thumbnails), the same for every chunk of the folder."""

    def __init__(self, root: str, backend: str, model_path: str, variant: str = "", dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.namespace = {"model": f"{backend}:{model_path}", "model_files": _stamp(model_path),
                          "pipeline": PIPELINE_VERSION, **({"variant": variant} if variant else {})}
        key = hashlib.blake2b(json.dumps(self.namespace).encode(), digest_size=8).hexdigest()
        self.folder = os.path.join(root, f"{backend}-{key}")

    def _chunks(self) -> List[str]:
        return sorted(glob.glob(os.path.join(glob.escape(self.folder), "chunk-*.npz")))

    def _read(self, path: str) -> Optional[Dict[str, np.ndarray]]:
        """One chunk's arrays, or None (with a warning) when it is damaged: its contents are simply embedded again.
        `embedding` and `extras` are read-only memory maps of the file where it stores them uncompressed (as `write`
        does): a lookup then copies only the rows it takes, once."""
        try:
            with np.load(path, allow_pickle=False) as data:
                chunk = {name: data[name] for name in ("digest", "failed", "reason")}
                for name in ("embedding", "extras"):
                    chunk[name] = _mapped(path, data.zip, name) if f"{name}.npy" in data.zip.namelist() else None
                    if chunk[name] is None and name in data.files:
                        chunk[name] = data[name]
                if chunk["embedding"] is None:
                    raise KeyError("embedding")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            log.warning("ignoring damaged cache file %s (%s); its images are embedded again", path, error)
            return None
        if chunk["embedding"].ndim != 2 or chunk["embedding"].dtype != self.dtype or \
                len(chunk["digest"]) != len(chunk["embedding"]) or len(chunk["failed"]) != len(chunk["reason"]) or \
                (chunk["extras"] is not None and (chunk["extras"].ndim != 2 or chunk["extras"].dtype != np.float32
                                                  or len(chunk["extras"]) != len(chunk["digest"]))):
            log.warning("ignoring malformed cache file %s; its images are embedded again", path)
            return None
        return chunk

    def lookup(self, digests: Sequence[str]) -> Lookup:
        """Which of `digests` (hex) are cached, their vectors, and which are known to be undecodable."""
        wanted: Dict[bytes, List[int]] = {}      # for the (few) known-undecodable contents, built when needed
        as_text = np.asarray(list(digests), dtype=str)
        keys = np.asarray(as_text, dtype="S32") if len(digests) else np.zeros(0, "S32")
        keyed = np.flatnonzero(np.char.str_len(as_text) <= 32) if len(digests) else np.zeros(0, np.int64)
        vectors, extras, found, failed = None, None, np.zeros(len(digests), dtype=bool), {}
        for path in self._chunks():
            chunk = self._read(path)
            if chunk is None:
                continue
            first = vectors is None and len(chunk["digest"])
            if first:
                vectors = np.zeros((0, chunk["embedding"].shape[1]), dtype=self.dtype)
                if chunk["extras"] is not None:
                    extras = np.zeros((0, chunk["extras"].shape[1]), dtype=np.float32)
            usable = len(chunk["digest"]) and chunk["embedding"].shape[1] == vectors.shape[1] and \
                (extras is None) == (chunk["extras"] is None) and \
                (extras is None or chunk["extras"].shape[1] == extras.shape[1])
            if usable:     # vectorised: sorted unique digests of the chunk (its last row of each), searched
                names = chunk["digest"].astype("S32")
                unique, first_reversed = np.unique(names[::-1], return_index=True)
                last = names.size - 1 - first_reversed
                spot = np.minimum(np.searchsorted(unique, keys[keyed]), unique.size - 1)
                hit = unique[spot] == keys[keyed]
                positions, rows = keyed[hit], last[spot[hit]]
                if first and positions.size == len(digests):      # the usual case, one chunk holds them all:
                    vectors = np.asarray(np.take(chunk["embedding"], rows, axis=0))   # one gather, no zeroed copy
                    if extras is not None:
                        extras = np.asarray(np.take(chunk["extras"], rows, axis=0))
                else:
                    if vectors.shape[0] != len(digests):
                        vectors = np.zeros((len(digests), vectors.shape[1]), dtype=self.dtype)
                        if extras is not None:
                            extras = np.zeros((len(digests), extras.shape[1]), dtype=np.float32)
                    vectors[positions] = chunk["embedding"][rows]
                    if extras is not None:
                        extras[positions] = chunk["extras"][rows]
                found[positions] = True
            if len(chunk["failed"]) and not wanted:
                for position, digest in enumerate(digests):
                    wanted.setdefault(digest.encode(), []).append(position)
            for digest, reason in zip(chunk["failed"].tolist(), chunk["reason"].tolist()):
                for position in wanted.get(digest, ()):
                    failed[position] = reason
        if failed:                                  # a vector found later wins over an earlier failure
            for position in np.flatnonzero(found).tolist():
                failed.pop(position, None)
        if vectors is None:
            vectors = np.zeros((len(digests), 0), self.dtype)
        elif vectors.shape[0] != len(digests):      # no chunk held any of them
            vectors = np.zeros((len(digests), vectors.shape[1]), dtype=self.dtype)
            extras = None if extras is None else np.zeros((len(digests), extras.shape[1]), dtype=np.float32)
        return Lookup(vectors, found, failed, extras)

    def write(self, digests: Sequence[str], vectors: np.ndarray, failed: Sequence[Tuple[str, str]],
              extras: Optional[np.ndarray] = None) -> None:
        """Add one chunk atomically: a reader (or a killed writer) sees all of it or none of it.
        extras: float32 (len(digests), e) stored beside the vectors, or None."""
        from crop_cluster.outputs.atomic import atomic_open

        if not len(digests) and not failed:
            return
        os.makedirs(self.folder, exist_ok=True)
        description = os.path.join(self.folder, "namespace.json")
        if not os.path.exists(description):
            with atomic_open(description, "w", encoding="utf-8") as handle:
                json.dump(self.namespace, handle, indent=2)
        name = f"chunk-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        arrays = {} if extras is None else {"extras": np.ascontiguousarray(extras, dtype=np.float32).reshape(
            len(digests), -1)}
        with atomic_open(os.path.join(self.folder, name), "wb") as handle:
            np.savez(handle, **arrays, digest=np.asarray(list(digests), dtype="S32"),
                     embedding=np.ascontiguousarray(vectors, dtype=self.dtype).reshape(len(digests), -1)
                     if len(digests) else np.zeros((0, 0), self.dtype),
                     failed=np.asarray([d for d, _ in failed], dtype="S32"),
                     reason=np.asarray([r for _, r in failed], dtype=str).reshape(len(failed)))

    def compact(self) -> None:
        """Merge the chunks into one when there are more than COMPACT_CHUNKS (fewer files to open next time)."""
        paths = self._chunks()
        if len(paths) <= COMPACT_CHUNKS:
            return
        chunks = [chunk for chunk in map(self._read, paths) if chunk is not None]
        dims = {(chunk["embedding"].shape[1], None if chunk["extras"] is None else chunk["extras"].shape[1])
                for chunk in chunks if len(chunk["digest"])}
        if len(dims) > 1:
            return
        digests = np.concatenate([chunk["digest"] for chunk in chunks])
        _, first = np.unique(digests, return_index=True)
        keep = np.sort(first)
        failed = np.concatenate([chunk["failed"] for chunk in chunks])
        reasons = np.concatenate([chunk["reason"].astype(str) for chunk in chunks])
        parts = [chunk["embedding"] for chunk in chunks if len(chunk["digest"])]
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), self.dtype)
        extra_parts = [chunk["extras"] for chunk in chunks if len(chunk["digest"]) and chunk["extras"] is not None]
        extras = np.concatenate(extra_parts)[keep] if extra_parts else None
        self.write([d.decode() for d in digests[keep]], vectors[keep],
                   [(d.decode(), str(r)) for d, r in zip(failed, reasons)], extras)
        for path in paths:  # the merged chunk is in place first: a kill here leaves duplicates, never a loss
            os.remove(path)


class _Checkpointer:
    """embed_files' on_batch callback: collects fresh vectors and failures, writes a chunk every CHECKPOINT_SECONDS."""

    def __init__(self, cache: EmbeddingCache, digests: Sequence[str]):
        self.cache, self.digests = cache, digests
        self.pending: List[Tuple[List[int], np.ndarray, Optional[np.ndarray]]] = []
        self.failed: List[Tuple[str, str]] = []
        self.last = time.monotonic()

    def __call__(self, indices: List[int], vectors: np.ndarray, extras: Optional[np.ndarray],
                 bad: List[Tuple[int, str]]) -> None:
        if indices:
            self.pending.append((indices, vectors, extras))
        self.failed.extend((self.digests[i], reason) for i, reason in bad)
        if time.monotonic() - self.last >= CHECKPOINT_SECONDS:
            self.flush()

    def flush(self) -> None:
        indices = [i for chunk, _, _ in self.pending for i in chunk]
        vectors = np.concatenate([v for _, v, _ in self.pending]) if self.pending else np.zeros((0, 0), np.float32)
        extras = [e for _, _, e in self.pending if e is not None]
        self.cache.write([self.digests[i] for i in indices], vectors, self.failed,
                         np.concatenate(extras) if extras else None)
        self.pending, self.failed, self.last = [], [], time.monotonic()


@dataclass(frozen=True)
class CachedEmbeddings:
    """result: as embed_files would return for all files; computed/reused: embeddings made now / read from the
    cache; info: for run.json (device, runtime, batch size, model, the cache's counts and seconds per step)."""

    result: EmbedResult
    computed: int
    reused: int
    info: Dict


def embed_with_cache(cache: EmbeddingCache, files: Sequence[str], digests: Sequence[str], load: Callable[[], object],
                     batch_size: Optional[int] = None, num_workers: int = -1, progress: bool = True,
                     resize: Optional[str] = None) -> CachedEmbeddings:
    """Embed `files` (contents `digests`, hex), reusing cached vectors and caching new ones every CHECKPOINT_SECONDS.

    load(): the backend; called only when something is missing, so a fully cached run never loads the model.
    batch_size None: default_batch_size of the backend's device. resize: as for embed_files (None: its default).
    """
    from crop_cluster.embed.base import default_batch_size, embed_files

    started = time.perf_counter()
    lookup = cache.lookup(digests)
    missing = lookup.missing
    seconds = {"lookup": round(time.perf_counter() - started, 3)}
    info: Dict = {"device": "none (every embedding was in the cache)"}
    fresh = None
    if missing.size:
        started = time.perf_counter()
        backend = load()
        seconds["load_model"] = round(time.perf_counter() - started, 3)
        batch_size = batch_size or default_batch_size(backend.device)
        from crop_cluster.embed.resize import default_resize

        info = {"device": backend.device, "runtime": backend.runtime, "batch_size": batch_size,
                "resize": backend.preprocess.with_resize(resize or default_resize(backend.device)).resize}
        log.info("embedding %d images with %s on %s (%s); %d found in the cache", missing.size, backend.model_id,
                 backend.device, backend.runtime, int(lookup.found.sum()))
        checkpoint = _Checkpointer(cache, [digests[i] for i in missing])
        fresh = embed_files(backend, [files[i] for i in missing], batch_size, num_workers, progress, checkpoint,
                            resize)
        checkpoint.flush()
        cache.compact()
        seconds.update(fresh.seconds)
    else:
        log.info("all %d distinct images are in the cache %s: no model loaded", len(files), cache.folder)
    dim = fresh.embeddings.shape[1] if fresh is not None and fresh.embeddings.size else lookup.vectors.shape[1]
    extra_dim = next((e.shape[1] for e in (fresh.extras if fresh is not None else None, lookup.extras)
                      if e is not None), None)
    ok = lookup.found.copy()
    if fresh is None:               # all from the cache: its answer as it is (zeros where not found), no copies
        vectors, extras = lookup.vectors, lookup.extras
    else:
        vectors = np.zeros((len(files), dim), dtype=np.float32)
        extras = None if extra_dim is None else np.zeros((len(files), extra_dim), dtype=np.float32)
    if fresh is not None and ok.any():
        vectors[ok] = lookup.vectors[ok]
        if extras is not None and lookup.extras is not None:
            extras[ok] = lookup.extras[ok]
    reasons = dict(lookup.failed)
    if fresh is not None:
        done = missing[fresh.ok_index]
        if done.size:                               # (none embedded: fresh.embeddings is (0, 0))
            vectors[done] = fresh.embeddings
        if done.size and extras is not None and fresh.extras is not None:
            extras[done] = fresh.extras
        ok[done] = True
        position = {files[i]: int(i) for i in missing}
        reasons.update((position[path], reason) for path, reason in fresh.skipped)
    ok_index = np.flatnonzero(ok)
    computed = int(fresh.ok_index.size) if fresh is not None else 0
    info["embedding_cache"] = {"folder": cache.folder, "computed": computed, "reused": int(lookup.found.sum()),
                               "known_undecodable": len(lookup.failed), "seconds": seconds}
    every = ok_index.size == len(files)                 # nothing left out: the arrays themselves
    return CachedEmbeddings(EmbedResult(vectors if every else vectors[ok_index], ok_index.astype(np.int64),
                                        [(files[i], reasons[i]) for i in sorted(reasons)], seconds,
                                        None if extras is None else extras if every else extras[ok_index]),
                            computed, int(lookup.found.sum()), info)
