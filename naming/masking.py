"""`--species_list` with `-e hierarchical`: the model's predictions masked to the list, the unmasked ones kept.

Masking needs every class's probability, and the run's embedding pass keeps only the top-1 path per level. So the
model runs once more over the distinct crops with `probabilities=True`, cached under its own key
(embed/hierarchical.py, PROBABILITIES_VARIANT): a later run, and any other list, then costs a cache lookup. The
masked path (naming/species_list.py, mask_predictions: excluded classes zeroed at every level, each level
renormalised, the best allowed path) replaces the predictions everything downstream reads (cluster names,
--unknown_below); the unmasked path stays in the rows' predictions after it, for the unmasked_* columns.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional, Tuple

import numpy as np

from crop_cluster.crops import Crops
from crop_cluster.naming import RANKS, NamingError

log = logging.getLogger("crop-cluster")


def allowed_classes(species, taxonomy) -> np.ndarray:
    """bool (C0,): the model's finest-level classes on the list (species_list.SpeciesList.holds, with the class's
    lineage from the model's tree at the levels named like RANKS)."""
    finest = len(taxonomy.classes[0])
    allowed = np.zeros(finest, dtype=bool)
    for c in range(finest):
        lineage = tuple(taxonomy.classes[taxonomy.levels.index(rank)][taxonomy.ancestor[taxonomy.levels.index(rank), c]]
                        if rank in taxonomy.levels else "" for rank in RANKS)
        allowed[c] = species.holds(taxonomy.classes[0][c], lineage if any(lineage) else None)
    return allowed


def mask_crops(crops: Crops, taxonomy, species_list: str, settings) -> Tuple[Crops, Dict]:
    """The crops with predictions float32 (n, 4L): the masked path (index, probability per level) first, then the
    unmasked one; rows whose probabilities cannot be had keep the unmasked path in both (counted). settings:
    naming.embedding.EmbedSettings of the run. Returns (crops, the run.json entry)."""
    from crop_cluster.embed import load_backend
    from crop_cluster.embed.cache import EmbeddingCache, embed_with_cache
    from crop_cluster.embed.device import resolve_device
    from crop_cluster.embed.hierarchical import PROBABILITIES_VARIANT, split_predictions
    from crop_cluster.naming.species_list import mask_predictions, read_species_list

    species = read_species_list(species_list)
    allowed = allowed_classes(species, taxonomy)
    if not allowed.any():
        raise NamingError(f"--species_list {species_list}: none of the {allowed.size} {taxonomy.levels[0]} classes "
                          f"of {taxonomy.source} is on it (e.g. {taxonomy.classes[0][0]}); check the names, or the list")
    levels, counts = len(taxonomy.levels), taxonomy.counts
    model_path = settings.model.split(":", 1)[1]
    digests = np.asarray(crops.digests if crops.digests is not None else [""] * len(crops.filenames), dtype=object)
    unique, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    usable = unique != ""
    variant = PROBABILITIES_VARIANT + (f"-{settings.variant}" if settings.variant else "")
    cached = embed_with_cache(EmbeddingCache(settings.cache_root, "hierarchical", model_path, variant),
                              [crops.filenames[k] for k in first[usable]], unique[usable].tolist(),
                              lambda: load_backend("hierarchical", resolve_device(settings.device), model_path,
                                                   probabilities=True),
                              settings.batch_size, settings.num_workers, settings.progress, settings.resize)
    extras = cached.result.extras
    if extras is not None and extras.shape[1] != 2 * levels + sum(counts):
        raise NamingError(f"the cached class probabilities have {extras.shape[1]} columns, but {taxonomy.source} "
                          f"needs {2 * levels + sum(counts)}; delete {settings.cache_root} to predict again")
    unmasked = crops.predictions[:, :2 * levels]
    masked = unmasked.copy()
    found = np.zeros(unique.size, dtype=bool)
    if extras is not None and extras.shape[0]:
        bounds = np.cumsum([2 * levels, *counts])
        probabilities = [extras[:, bounds[k]:bounds[k + 1]] for k in range(levels)]
        index, probability = mask_predictions(probabilities, taxonomy.ancestor, allowed)
        slots = np.flatnonzero(usable)[cached.result.ok_index]
        per_unique = np.zeros((unique.size, 2 * levels), dtype=np.float32)
        per_unique[slots] = np.concatenate([index.astype(np.float32), probability], axis=1)
        found[slots] = True
        rows = found[inverse.reshape(-1)]
        masked[rows] = per_unique[inverse.reshape(-1)][rows]
    missing = int((~found[inverse.reshape(-1)]).sum())
    if missing:
        log.warning("--species_list: %d crops could not be run through the model again (their files are gone); "
                    "their predictions are not masked", missing)
    before, _ = split_predictions(unmasked, levels)
    after, _ = split_predictions(masked, levels)
    info = {"file": species_list, "level": taxonomy.levels[0], "classes": int(allowed.size),
            "classes_on_list": int(allowed.sum()), "crops_not_masked": missing,
            "crops_changed": int((before[:, 0] != after[:, 0]).sum()), "probabilities_computed": cached.computed}
    log.info("--species_list %s: %d of %d %s classes on the list; %d crops predicted otherwise once masked",
             species_list, info["classes_on_list"], info["classes"], info["level"], info["crops_changed"])
    return dataclasses.replace(crops, predictions=np.concatenate([masked, unmasked], axis=1)), info


def unmasked_columns(taxonomy, predictions: Optional[np.ndarray]):
    """DataFrame of unmasked_pred_<level> and unmasked_prob_<level> (coarsest first) from predictions float32
    (n, 4L) (mask_crops' layout); None for predictions that were not masked."""
    import pandas as pd

    from crop_cluster.embed.predictions import prediction_columns

    levels = len(taxonomy.levels)
    if predictions is None or predictions.shape[1] != 4 * levels:
        return None
    columns = prediction_columns(taxonomy, predictions[:, 2 * levels:])
    return pd.DataFrame({f"unmasked_{name}": values for name, values in columns.items()})
