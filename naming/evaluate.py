"""Open-set quality of names from references, against true labels (metrics.json's `naming` block, bench/naming.py).

Per naming unit (a cluster, an individual or a crop) the true label is the majority label of its crops; a unit is
*known* when that label is a reference name, *unknown* otherwise. Measures:

- auroc: how well the best prototype score tells known units (positive) from unknown ones, over every threshold;
- precision: of the units given a name (status `named`), the share whose name is their true label;
- coverage: of the known units, the share given their true name; coverage_crops: the same weighted by crops;
- unknown_left_unknown: of the unknown units, the share left `unknown`; unknown_named: the share given a name
  (a false name: their label has no reference); rolled_up: units named at a coarser rank, counted apart;
- sweep: precision, coverage and unknown_named for every threshold at the run's margin.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

SWEEP = np.round(np.arange(0.30, 0.9901, 0.01), 2)


def unit_truth(labels: Sequence[Optional[str]], unit: np.ndarray, n_units: int) -> List[Optional[str]]:
    """The majority label of each unit's rows (ties: the first in sorted order); None for a unit without labels."""
    import pandas as pd

    frame = pd.DataFrame({"unit": unit, "label": list(labels)}).dropna()
    frame = frame[frame["label"].astype(str) != ""]
    truth: List[Optional[str]] = [None] * n_units
    if frame.empty:
        return truth
    counts = frame.groupby(["unit", "label"]).size().reset_index(name="n")
    counts = counts.sort_values(["unit", "n", "label"], ascending=[True, False, True], kind="stable")
    for u, label in counts.drop_duplicates("unit")[["unit", "label"]].itertuples(index=False):
        truth[int(u)] = str(label)
    return truth


def auroc(positive: np.ndarray, negative: np.ndarray) -> Optional[float]:
    """Area under the ROC curve of scores (higher = positive), ties counted half; None without both kinds."""
    if positive.size == 0 or negative.size == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))
    return float((ranks[:positive.size].sum() - positive.size * (positive.size + 1) / 2) /
                 (positive.size * negative.size))


def open_set_metrics(score: np.ndarray, gap: np.ndarray, best: Sequence[str], status: Sequence[str],
                     truth: Sequence[Optional[str]], known: Sequence[str], crops: np.ndarray, margin: float,
                     thresholds: np.ndarray = SWEEP) -> Dict:
    """The measures of the module docstring, per unit (U,): score float the best prototype score, gap float the
    margin over the second name (NaN: one name only), best the best name, status the machine's decision
    ('named', 'rolled_up', 'unknown'), truth the true label (None: unlabelled, left out), crops int the crops of
    each unit; known: the reference names; margin: the run's --name_margin."""
    labelled = np.asarray([t is not None for t in truth])
    known_names = set(known)
    is_known = labelled & np.asarray([t in known_names for t in truth])
    is_unknown = labelled & ~is_known
    status = np.asarray(status, dtype=object)
    right = np.asarray([b == t for b, t in zip(best, truth)])
    named = status == "named"
    weight = np.asarray(crops, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    confident = np.isnan(gap) | (np.nan_to_num(gap, nan=1.0) >= margin - 1e-7)

    def share(top: np.ndarray, bottom: np.ndarray) -> Optional[float]:
        return None if not bottom.any() else round(float(top[bottom].mean()), 4)

    area = auroc(score[is_known], score[is_unknown])
    return {
        "units": int(labelled.sum()), "known_units": int(is_known.sum()), "unknown_units": int(is_unknown.sum()),
        "auroc": None if area is None else round(area, 4),
        "precision": share(right, named & labelled), "named": int((named & labelled).sum()),
        "coverage": share(named & right, is_known),
        "coverage_crops": None if not is_known.any() else
        round(float(weight[is_known & named & right].sum() / weight[is_known].sum()), 4),
        "unknown_left_unknown": share(status == "unknown", is_unknown),
        "unknown_named": share(named, is_unknown),
        "rolled_up": int((status == "rolled_up")[labelled].sum()),
        "sweep": sweep(score, confident, right, is_known, is_unknown, labelled, thresholds)}


def sweep(score: np.ndarray, confident: np.ndarray, right: np.ndarray, is_known: np.ndarray, is_unknown: np.ndarray,
          labelled: np.ndarray, thresholds: np.ndarray) -> List[Dict]:
    """Per threshold: named (units), precision, coverage and unknown_named at the margin already in `confident`
    (bool per unit: the best name beats the second by the margin)."""
    rows = []
    for t in thresholds:
        named = (score >= t - 1e-7) & confident & labelled
        rows.append({"threshold": float(t), "named": int(named.sum()),
                     "precision": None if not named.any() else round(float(right[named].mean()), 4),
                     "coverage": None if not is_known.any() else round(float((named & right)[is_known].mean()), 4),
                     "unknown_named": None if not is_unknown.any() else round(float(named[is_unknown].mean()), 4)})
    return rows
