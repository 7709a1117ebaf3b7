"""Threshold sweep (`--sweep START:STOP:STEP`): score many cosine thresholds from ONE similarity graph.

The maximum spanning forest of the ε-graph is built once at the lowest threshold (clustering/forest.py); the
partition at every higher threshold is a filter of its at most n - 1 edges, so a sweep of 26 values costs about one
clustering run plus milliseconds per value.

Recommendation (`recommend`):
- with labels: the threshold with the highest ARI (ties: the highest such threshold — clean clusters are easier to
  merge by hand than mixed ones to split);
- without labels: the threshold maximising n_clusters x (1 - singleton_fraction) — many groups while most
  individuals stay in one — among thresholds with no cluster holding more than a quarter of the individuals (ties: the
  highest). Lower thresholds chain clusters together (fewer clusters), higher ones leave individuals alone (more
  singletons); check the curves in sweep.png before trusting it.
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from crop_cluster.evaluate.metrics import partition_metrics

from crop_cluster.errors import CropClusterError


LABEL_COLUMNS = ("ari", "ami", "pairwise_precision", "pairwise_recall", "pairwise_f1")
MAX_STEPS = 1000
MAX_LARGEST_SHARE = 0.25  # without labels, a threshold whose largest cluster holds more individuals is chaining


class SweepError(CropClusterError, ValueError):
    """A --sweep value that is not START:STOP:STEP with -1 <= START <= STOP <= 1 and STEP > 0."""


def parse_sweep(spec: str) -> np.ndarray:
    """Thresholds float64 (k,) from 'START:STOP:STEP' (STOP included when it falls on the grid).
    Raises SweepError with an example when the spec is malformed."""
    fix = "write --sweep START:STOP:STEP with -1 <= START <= STOP <= 1 and STEP > 0, e.g. --sweep 0.70:0.95:0.01"
    parts = spec.split(":")
    try:
        start, stop, step = (float(p) for p in parts) if len(parts) == 3 else (None,) * 3
    except ValueError:
        start = stop = step = None
    if start is None or not all(map(math.isfinite, (start, stop, step))):
        raise SweepError(f"--sweep {spec}: not three numbers; {fix}")
    if not (-1.0 <= start <= stop <= 1.0 and step > 0):
        raise SweepError(f"--sweep {spec}: out of range; {fix}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_STEPS:
        raise SweepError(f"--sweep {spec}: {count} thresholds, more than {MAX_STEPS}; use a larger STEP")
    return np.round(start + step * np.arange(count), 10)  # 0.7 + 3 * 0.01 -> 0.73, not 0.7300000000000001


def sweep_partitions(embeddings: np.ndarray, thresholds: Sequence[float], forest=None,
                     crops: Optional[np.ndarray] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """(threshold, labels int64 (n,)) for each threshold in increasing order, from one spanning forest built at the
    lowest: labels are component ids, with components of fewer than 2 crops set to -1 (ids otherwise arbitrary),
    the rule of the clustering's numbering.

    embeddings: float32 (n, d), L2-normalised, one per item. forest: a clustering.forest.Forest over these items
    built at or below the lowest threshold (e.g. the one `-c cosine` built), reused instead of building one.
    crops: int (n,) crops per item (default 1 each): one individual seen in 2 crops is a cluster.
    """
    from crop_cluster.clustering.forest import partition_at, spanning_forest

    thresholds = np.sort(np.asarray(thresholds, dtype=np.float64))
    if forest is None or forest.threshold > thresholds[0]:
        forest = spanning_forest(embeddings, float(thresholds[0]))
    weights = np.ones(forest.n) if crops is None else np.asarray(crops, dtype=np.float64)
    for threshold in thresholds:
        groups = partition_at(forest, float(threshold))
        yield float(threshold), np.where(np.bincount(groups, weights=weights)[groups] >= 2, groups, -1)


def sweep_table(embeddings: np.ndarray, thresholds: Sequence[float], individual: np.ndarray,
                labels: Optional[Sequence[Optional[str]]] = None, forest=None) -> pd.DataFrame:
    """One row per threshold: threshold, n_clusters (groups of at least 2 crops), singleton_fraction (share of
    individuals not clustered), largest_cluster_share (largest cluster's individuals / all individuals), and with
    `labels` the row-level ari, ami, pairwise_precision, pairwise_recall, pairwise_f1 (as in metrics.json).

    embeddings: float32 (I, d), L2-normalised, one per individual; individual: int (n,), individual id per row
    (rows = images, so duplicates count like in metrics.json); labels: (n,) class per row, None = unlabelled;
    forest: reused when given (see `sweep_partitions`).
    """
    total = max(embeddings.shape[0], 1)
    records = []
    crops = np.bincount(individual, minlength=embeddings.shape[0])
    for threshold, rep in sweep_partitions(embeddings, thresholds, forest, crops):
        sizes = np.bincount(rep[rep >= 0]) if (rep >= 0).any() else np.zeros(0, dtype=np.int64)
        record: Dict[str, float] = {"threshold": threshold, "n_clusters": int((sizes >= 1).sum()),
                                    "singleton_fraction": round(float((rep < 0).sum()) / total, 6),
                                    "largest_cluster_share": round(float(sizes.max(initial=0)) / total, 6)}
        if labels is not None:
            scores = partition_metrics(labels, rep[individual])
            record.update({key: scores[key] for key in LABEL_COLUMNS})
        records.append(record)
    return pd.DataFrame.from_records(records)


def recommend(table: pd.DataFrame) -> Tuple[float, str]:
    """(threshold, rule in words) for a sweep_table (see the module docstring for the rules)."""
    thresholds = table["threshold"].to_numpy()
    if "ari" in table.columns:
        ari = table["ari"].to_numpy()
        best = np.flatnonzero(ari == ari.max())[-1]
        return float(thresholds[best]), f"highest ARI against the labels ({ari[best]:.3f})"
    counts = table["n_clusters"].to_numpy()
    eligible = (counts >= 2) & (table["largest_cluster_share"].to_numpy() <= MAX_LARGEST_SHARE)
    if not eligible.any():
        return float(thresholds[-1]), (f"no threshold gives 2 clusters with none above {MAX_LARGEST_SHARE:.0%} of "
                                       f"the individuals; the highest one is the safest; no labels given")
    score = counts * (1.0 - table["singleton_fraction"].to_numpy())
    score = np.where(eligible, score, -1.0)
    best = np.flatnonzero(score == score.max())[-1]
    return float(thresholds[best]), (
        f"most clusters weighted by the share of individuals in a cluster ({counts[best]} clusters, "
        f"{1 - table['singleton_fraction'].iloc[best]:.0%} clustered), no cluster above {MAX_LARGEST_SHARE:.0%} of "
        f"the individuals; no labels given")
