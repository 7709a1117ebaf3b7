"""Crops from embedded files or from a saved embeddings.pkl: one row per readable file, identical files sharing the
embedding (and the individual) of their first copy."""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from crop_cluster.crops import Crops, individual_ids, take_rows

log = logging.getLogger("crop-cluster")


def crops_from_embedded(files: Sequence[str], groups, representatives: np.ndarray, result,
                        model: str) -> Tuple[Crops, List[Tuple[str, str]]]:
    """Expand the embeddings of the distinct files back to every readable file.

    groups: dedup.exact.ExactGroups of `files`; representatives: int64 positions (into files) of the distinct
    contents that were embedded; result: embed.base.EmbedResult of those, in that order (ok_index: the rows that
    decoded). Returns the crops and the (filename, reason) of copies whose content failed to decode.
    """
    row_of_file = np.full(len(files), -1, dtype=np.int64)
    row_of_file[representatives[result.ok_index]] = np.arange(result.ok_index.size)
    decoded_first = np.where(groups.first >= 0, row_of_file[np.maximum(groups.first, 0)], -1)
    skipped = [(files[index], f"identical to {files[groups.first[index]]}, which could not be decoded")
               for index in np.flatnonzero((groups.first >= 0) & (decoded_first < 0)
                                           & (groups.first != np.arange(len(files))))]
    keep = np.flatnonzero(decoded_first >= 0)
    first = groups.first[keep]
    crops = Crops(filenames=[files[i] for i in keep], embedding=result.embeddings[decoded_first[keep]],
                  individual=individual_ids(first), representative=first == keep, distinct=first == keep,
                  model=model, predictions=None if result.extras is None else result.extras[decoded_first[keep]],
                  digests=[groups.digests[i] for i in keep])
    return crops, skipped


def crops_from_stored(stored, rows: np.ndarray, groups, present: Sequence[int],
                      predictions: Optional[np.ndarray]) -> Crops:
    """Crops from the rows `rows` (int64) of a saved embeddings file `stored` (outputs.embeddings.StoredEmbeddings).

    groups: dedup.exact.ExactGroups of the files among them that still exist, at positions `present` (into
    `rows`); files that are gone or unreadable stay their own individual. predictions: per-row hierarchical
    predictions (float32 (len(rows), 2L)) or None.
    """
    n = rows.size
    present = np.asarray(present, dtype=np.int64)
    first = np.arange(n, dtype=np.int64)
    readable = groups.first >= 0
    first[present[readable]] = present[groups.first[readable]]
    distinct = first == np.arange(n)
    digests = [""] * n
    for k, digest in zip(present, groups.digests):
        digests[k] = digest
    return Crops(filenames=[stored.filenames[k] for k in rows], embedding=take_rows(stored.embedding, rows),
                 individual=individual_ids(first), representative=distinct, distinct=distinct.copy(),
                 model=stored.model, predictions=predictions, digests=digests)


def cached_predictions(embeddings_file: str, model: str, digests: List[str]) -> Optional[np.ndarray]:
    """A hierarchical model's per-crop predictions (float32 (n, 2L)) for rows of a saved embeddings file, from the
    embedding cache of the run that wrote it (beside the file), by content digest (`digests`, '' = unknown);
    None for other models or when some are missing (said in the log)."""
    from crop_cluster.embed import backend_of_model
    from crop_cluster.embed.cache import CACHE_FOLDER, EmbeddingCache
    from crop_cluster.embed.taxonomy import sidecar_path

    if backend_of_model(model) != "hierarchical":
        return None
    model_path = model.split(":", 1)[1]
    if not os.path.isfile(sidecar_path(model_path)):
        log.warning("%s (the sidecar of %s) is gone: clusters.csv gets no predictions or cluster names",
                    sidecar_path(model_path), model)
        return None
    cache = EmbeddingCache(os.path.join(os.path.dirname(os.path.abspath(embeddings_file)), CACHE_FOLDER),
                           "hierarchical", model_path)
    lookup = cache.lookup(digests)
    if lookup.extras is None or not lookup.found.all():
        log.warning("the per-level predictions of %d of %d crops are not in %s (moved, deleted, or the model or its "
                    "sidecar changed): clusters.csv gets no predictions or cluster names; run -e hierarchical -fp "
                    "MODEL on the images to predict again", int((~lookup.found).sum()), len(digests), cache.folder)
        return None
    return lookup.extras.astype(np.float32)
