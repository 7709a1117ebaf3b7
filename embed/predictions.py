"""What a hierarchical classifier's per-level predictions give the run: the taxonomy behind them, the split of
identified crops (--unknown_below) and the pred_<level>/prob_<level> columns of clusters.csv."""
from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

import numpy as np

from crop_cluster.crops import Crops
from crop_cluster.errors import OptionsError

log = logging.getLogger("crop-cluster")


def check_model(model_file: Optional[str], unknown_level: Optional[str]) -> None:
    """-e hierarchical: the model file must exist and its sidecar be valid (and `unknown_level` one of its
    levels); checked before anything is hashed or embedded."""
    from crop_cluster.embed.hierarchical import require_model_file
    from crop_cluster.embed.taxonomy import load_taxonomy, sidecar_path

    require_model_file(model_file)
    taxonomy = load_taxonomy(sidecar_path(model_file))
    if unknown_level:
        taxonomy.level_index(unknown_level)


def taxonomy_of(crops: Crops, unknown_below: Optional[float], unknown_level: Optional[str],
                embeddings_file: Optional[str]):
    """The Taxonomy of the hierarchical model behind the crops' predictions; None when there are none (then
    --unknown_below, which reads them, is refused naming the fix)."""
    if crops.predictions is None:
        if unknown_below is not None:
            raise OptionsError("--unknown_below reads each crop's predicted probability, which only -e hierarchical "
                               "computes" + (f"; {embeddings_file} holds embeddings only: run -e hierarchical -fp "
                                             f"MODEL on the images (cached embeddings are reused)"
                                             if embeddings_file else ""))
        return None
    from crop_cluster.embed.taxonomy import load_taxonomy, sidecar_path

    taxonomy = load_taxonomy(sidecar_path(crops.model.split(":", 1)[1]))
    if crops.predictions.shape[1] != 2 * len(taxonomy.levels):
        raise OptionsError(f"the cached predictions have {crops.predictions.shape[1] // 2} levels but "
                           f"{taxonomy.source} lists {len(taxonomy.levels)}; delete the embedding cache folder to "
                           f"predict again")
    if unknown_level:
        taxonomy.level_index(unknown_level)
    return taxonomy


def split_identified(crops: Crops, taxonomy, min_probability: float,
                     level: Optional[str]) -> Tuple[Crops, Crops, Dict]:
    """--unknown_below: (the crops to cluster: top-1 probability below `min_probability` at `level` (None = the
    finest), the identified rest, the run.json entry)."""
    known, info = identified_rows(crops, taxonomy, min_probability, level)
    return crops.keep(~known), crops.keep(known), info


def identified_rows(crops: Crops, taxonomy, min_probability: float, level: Optional[str]) -> Tuple[np.ndarray, Dict]:
    """--unknown_below: (bool (n,), the crops identified: top-1 probability at least `min_probability` at `level`
    (None = the finest); the run.json entry)."""
    from crop_cluster.embed.hierarchical import split_predictions

    level = level or taxonomy.levels[0]
    _, probability = split_predictions(crops.predictions, len(taxonomy.levels))
    known = probability[:, taxonomy.level_index(level)] >= min_probability
    log.info("--unknown_below %g: %d of %d crops are identified at %s level and listed, not clustered",
             min_probability, int(known.sum()), known.size, level)
    if known.all():
        raise OptionsError(f"every one of the {known.size} crops has a {level} probability of at least "
                           f"{min_probability:g}, so nothing is left to cluster; raise --unknown_below")
    info = {"level": level, "min_probability": min_probability, "crops": int(known.sum())}
    return known, info


def prediction_columns(taxonomy, predictions: np.ndarray) -> Dict[str, np.ndarray]:
    """pred_<level> (class name) and prob_<level> per level, coarsest first, from float32 (n, 2L) predictions."""
    from crop_cluster.embed.hierarchical import split_predictions

    index, probability = split_predictions(predictions, len(taxonomy.levels))
    columns: Dict[str, np.ndarray] = {}
    for level in reversed(range(len(taxonomy.levels))):
        columns[f"pred_{taxonomy.levels[level]}"] = np.asarray(taxonomy.classes[level], dtype=object)[index[:, level]]
        columns[f"prob_{taxonomy.levels[level]}"] = np.round(probability[:, level], 4)
    return columns
