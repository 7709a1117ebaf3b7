"""The classifier's columns in report.html: per-level predictions, cluster names, and the crops it identified.

All optional. A hierarchical classifier adds to clusters.csv, per level from coarsest to finest (column order),
`pred_<level>` (top-1 class) and `prob_<level>` (its probability), and per row `cluster_taxon`,
`cluster_taxon_level`, `cluster_name` (the same on every row of one cluster) and, when its confidence filter was used,
`identified` (True for crops left out of clustering because the classifier was sure of them). Without these columns
the report's data document is exactly what it was without a classifier.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

NAMING = ("cluster_taxon", "cluster_taxon_level", "cluster_name")
KEYS = ("taxon", "level", "name")  # the document's keys for NAMING
IDENTIFIED = "identified"


def prediction_levels(columns: Sequence[str]) -> List[str]:
    """Levels with both a `pred_<level>` and a `prob_<level>` column, in column order (coarsest first)."""
    present = set(columns)
    return [c[5:] for c in columns if c.startswith("pred_") and len(c) > 5 and f"prob_{c[5:]}" in present]


def handled_columns(columns: Sequence[str]) -> List[str]:
    """The classifier's columns that the report shows in its own way (not as plain metadata lines)."""
    levels = prediction_levels(columns)
    own = {*NAMING, IDENTIFIED, *(f"pred_{level}" for level in levels), *(f"prob_{level}" for level in levels)}
    return [c for c in columns if c in own]


def identified_mask(table: pd.DataFrame) -> np.ndarray:
    """bool (n,): the row was identified by the classifier (all False without an `identified` column).
    Accepts booleans as well as their text ('True'/'False', e.g. after a CSV round trip)."""
    if IDENTIFIED not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table[IDENTIFIED].astype(str).str.strip().str.lower().isin(("true", "1", "1.0")).to_numpy()


def namings(table: pd.DataFrame) -> Optional[np.ndarray]:
    """str (n, 3): cluster_taxon, cluster_taxon_level, cluster_name per row ('' when missing); None without a
    `cluster_name` column."""
    if "cluster_name" not in table.columns:
        return None
    frame = pd.DataFrame({c: table[c] if c in table.columns else "" for c in NAMING}, index=table.index)
    return frame.fillna("").astype(str).to_numpy()


def predictions(table: pd.DataFrame, rows: np.ndarray, levels: Sequence[str]) -> Dict:
    """Per row of `rows`, its top-1 class and probability per level, each class name stored once.

    Returns {"levels": levels, "names": [str], "rows": per row a list over levels of [name index, probability
    rounded to 0.01 or None], or None where that level has no prediction}.
    """
    names = table[[f"pred_{level}" for level in levels]].iloc[rows].fillna("").astype(str).to_numpy()
    probs = table[[f"prob_{level}" for level in levels]].iloc[rows].apply(pd.to_numeric, errors="coerce")
    codes, vocabulary = pd.factorize(names.ravel())
    per_row = []
    for name_row, code_row, prob_row in zip(names, codes.reshape(names.shape), probs.to_numpy(dtype=np.float64)):
        per_row.append([None if name == "" else [int(code), None if np.isnan(p) else round(float(p), 2)]
                        for name, code, p in zip(name_row, code_row, prob_row)])
    return {"levels": list(levels), "names": [str(v) for v in vocabulary], "rows": per_row}


def identified_groups(table: pd.DataFrame, naming: Optional[np.ndarray], reps: np.ndarray, members: np.ndarray,
                      crops: np.ndarray) -> List[Dict]:
    """The identified individuals grouped by predicted taxon (level and taxon; by cluster_name where the taxon is
    empty), largest group first, members by decreasing probability at the group's level.

    naming: namings(table); reps: representative row per individual; members: indices into `reps` of the identified
    individuals; crops: int (I,), crops per individual. Returns [{"name", "taxon", "level", "size", "rows",
    "members"}], name being the taxon (or the cluster_name without one).
    """
    keyed: Dict[tuple, Dict] = {}
    for k in members.tolist():
        taxon, level, name = naming[reps[k]] if naming is not None else ("", "", "")
        key = (level, taxon) if taxon else ("", name)
        group = keyed.setdefault(key, {"name": taxon or name, "taxon": taxon, "level": level if taxon else "",
                                       "members": []})
        group["members"].append(k)
    for group in keyed.values():
        indices = np.asarray(group["members"], dtype=np.int64)
        group["members"] = _by_probability(table, reps, indices, group["level"])
        group.update(size=int(indices.size), rows=int(crops[indices].sum()))
    return sorted(keyed.values(), key=lambda g: (-g["size"], g["name"].lower()))


def _by_probability(table: pd.DataFrame, reps: np.ndarray, group: np.ndarray, level: str) -> List[int]:
    """`group` ordered by decreasing prob_<level> (missing last), ties by filename."""
    rows = reps[group]
    filenames = table["filename"].astype(str).to_numpy()[rows]
    column = f"prob_{level}"
    if level and column in table.columns:
        prob = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)[rows]
    else:
        prob = np.full(group.size, np.nan)
    return group[np.lexsort((filenames, np.nan_to_num(-prob, nan=np.inf)))].tolist()
