"""Reference crops embedded with the run's model, through the embedding cache (embed/cache.py).

Vectors of two models cannot be compared, so references are always embedded with the model of the run's crops
(recorded in their model id, also for a run from --embeddings), in the run's cache: a gallery used again costs
nothing. References from an earlier output folder are also looked up in that folder's own cache under the same
model; when some of them can no longer be read and that folder embedded them with another model, the references are
refused with the way out (restore the crops, or run with the other model).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from crop_cluster.naming import NamingError
from crop_cluster.naming.references import References, cache_folders_of, recorded_model

log = logging.getLogger("crop-cluster")


@dataclass(frozen=True)
class EmbedSettings:
    """How the run embeds: model (its id, '<backend>:<model path>'), cache_root (the embedding cache folder),
    variant (embed.resize.cache_variant), device, batch_size, num_workers, progress, resize (as the run's options)."""

    model: str
    cache_root: str
    variant: str = ""
    device: str = "auto"
    batch_size: Optional[int] = None
    num_workers: int = -1
    progress: bool = False
    resize: Optional[str] = None


def embed_references(references: References, settings: EmbedSettings) -> Tuple[References, np.ndarray, Dict]:
    """(the references that could be embedded, their float32 (R', d) L2-normalised vectors, counts for run.json);
    the others are added to the References' skipped list with the reason."""
    from crop_cluster.embed import backend_of_model, load_backend
    from crop_cluster.embed.cache import EmbeddingCache, embed_with_cache
    from crop_cluster.embed.device import resolve_device

    backend = backend_of_model(settings.model)
    if backend is None:
        raise NamingError(f"--reference: the run's crops were embedded with '{settings.model}', a model this "
                          f"crop-cluster cannot load to embed the references alike; run on the images with -e/-fp")
    model_path = settings.model.split(":", 1)[1]
    digests, unreadable = _digests(references)
    found = np.zeros(len(references), dtype=bool)
    vectors: Optional[np.ndarray] = None
    for folder, rows in _by_output_folder(references).items():          # their own folder's cache first
        for root in cache_folders_of(folder):
            lookup = EmbeddingCache(root, backend, model_path, settings.variant).lookup([digests[k] for k in rows])
            hit = np.asarray(rows)[lookup.found]
            if hit.size:
                vectors = _store(vectors, len(references), hit, lookup.vectors[lookup.found])
                found[hit] = True
    todo = np.flatnonzero(~found & (np.asarray(digests, dtype=object) != ""))
    reasons = dict(unreadable)
    computed = 0
    if todo.size:
        cache = EmbeddingCache(settings.cache_root, backend, model_path, settings.variant)
        cached = embed_with_cache(cache, [references.filenames[k] for k in todo], [digests[k] for k in todo],
                                  lambda: load_backend(backend, resolve_device(settings.device), model_path),
                                  settings.batch_size, settings.num_workers, settings.progress, settings.resize)
        done = todo[cached.result.ok_index]
        vectors = _store(vectors, len(references), done, cached.result.embeddings)
        found[done] = True
        computed = cached.computed
        position = {references.filenames[k]: int(k) for k in todo}
        reasons.update((position[path], reason) for path, reason in cached.result.skipped)
    _refuse_other_model(references, found, settings.model)
    kept = references.keep(found)
    skipped = [(references.filenames[k], reasons.get(k, "could not be embedded")) for k in np.flatnonzero(~found)]
    kept = References(kept.filenames, kept.names, kept.sources, [digests[k] for k in np.flatnonzero(found)],
                      kept.taxonomy, kept.taxon_ids, kept.skipped + skipped)
    dim = 0 if vectors is None else vectors.shape[1]
    counts = {"references": int(found.sum()), "embeddings_computed": computed, "left_out": len(skipped)}
    return kept, (vectors[found] if vectors is not None else np.zeros((0, dim), np.float32)), counts


def _digests(references: References) -> Tuple[List[str], List[Tuple[int, str]]]:
    """The content digest of every reference (the store's for campaign references, else hashed now) and the
    (row, reason) of files that cannot be read."""
    from crop_cluster.dedup.exact import file_digest

    digests, unreadable = list(references.digests), []
    for k, (path, digest) in enumerate(zip(references.filenames, references.digests)):
        if digest:
            continue
        try:
            digests[k] = file_digest(path)
        except OSError as error:
            unreadable.append((k, f"cannot read file ({error.strerror or error})"))
    return digests, unreadable


def _by_output_folder(references: References) -> Dict[str, List[int]]:
    """Rows of the references that came from an output folder's campaign store (they carry a digest), by folder."""
    rows: Dict[str, List[int]] = {}
    for k, (source, digest) in enumerate(zip(references.sources, references.digests)):
        if digest:
            rows.setdefault(source, []).append(k)
    return rows


def _store(vectors: Optional[np.ndarray], n: int, rows: np.ndarray, values: np.ndarray) -> Optional[np.ndarray]:
    """`vectors` (float32 (n, d), created on first use) with `values` at `rows`."""
    if not rows.size:
        return vectors
    if vectors is None:
        vectors = np.zeros((n, values.shape[1]), dtype=np.float32)
    if values.shape[1] != vectors.shape[1]:
        raise NamingError(f"--reference: cached reference vectors have {values.shape[1]} dimensions, others "
                          f"{vectors.shape[1]}; delete the embedding cache folder to embed them again")
    vectors[rows] = values
    return vectors


def _refuse_other_model(references: References, found: np.ndarray, model: str) -> None:
    """NamingError when references of an output folder could not be had with `model` and that folder embedded with
    another model: its vectors cannot stand in for them."""
    for folder, rows in _by_output_folder(references).items():
        lost = [k for k in rows if not found[k]]
        theirs = recorded_model(folder)
        if lost and theirs is not None and theirs != model:
            raise NamingError(
                f"--reference {folder}: {len(lost)} of its reference crops (e.g. {references.filenames[lost[0]]}) "
                f"can no longer be read, and that campaign embedded them with '{theirs}', not this run's '{model}': "
                f"vectors of two models cannot be compared. Restore the crops (they are then embedded with "
                f"'{model}'), or run this campaign with the model of {folder} (-e {theirs.split(':', 1)[0]}"
                f"{' -fp ' + theirs.split(':', 1)[1] if ':' in theirs else ''})")
