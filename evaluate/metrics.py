"""Compare a run's clusters and individuals with ground-truth labels (``metrics.json``).

Only labelled rows count. A predicted label of -1 (any negative value: not clustered) makes that
row its own singleton cluster, so leaving an image out never merges it with anything.

Pairwise scores count pairs of labelled rows, from the contingency table (never the O(n^2) pairs):
precision = same-class pairs among same-cluster pairs (1.0 when no cluster has 2 rows);
recall = same-cluster pairs among same-class pairs (1.0 when no class has 2 rows);
f1 = their harmonic mean (0.0 when both are 0).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from crop_cluster.errors import CropClusterError


DECIMALS = 6


class NoLabelsError(CropClusterError, ValueError):
    """No input file has a label, so there is nothing to evaluate."""


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs within groups of the given sizes."""
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def _labelled_mask(true_labels: Sequence[Optional[str]]) -> np.ndarray:
    return np.fromiter((t is not None for t in true_labels), dtype=bool, count=len(true_labels))


def _check_pred(pred: np.ndarray, n: int) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.shape != (n,) or not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(f"predicted labels must be an integer array of shape ({n},), got {pred.dtype} {pred.shape}")
    return pred.astype(np.int64)


def partition_metrics(true_labels: Sequence[Optional[str]], pred: np.ndarray) -> dict:
    """Score predicted groups against true labels over the labelled rows.

    true_labels: (n,) class names, None = unlabelled (row ignored).
    pred: int array (n,), group id per row; negative = not clustered (own singleton).
    Returns plain-JSON dict: ari, ami, nmi, v_measure (scikit-learn), purity (sum over predicted
    groups of their largest class count / n_rows), pairwise_precision, pairwise_recall, pairwise_f1
    (see module docstring), n_clusters (predicted groups with >= 2 labelled rows),
    singleton_fraction (share of labelled rows alone in their group among labelled rows),
    n_rows (labelled rows). Floats are rounded to 6 decimals.
    Raises NoLabelsError when no row is labelled.
    """
    from sklearn import metrics as skm  # here, not at import: a run without labels never needs scikit-learn
    from sklearn.metrics.cluster import contingency_matrix

    pred = _check_pred(pred, len(true_labels))
    keep = _labelled_mask(true_labels)
    n = int(keep.sum())
    if n == 0:
        raise NoLabelsError("no labelled rows to evaluate")
    true_codes, _ = pd.factorize(pd.Series([t for t in true_labels if t is not None], dtype=object))
    groups = pred[keep]
    noise = groups < 0
    groups[noise] = groups.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    pred_codes, _ = pd.factorize(groups)

    table = contingency_matrix(true_codes, pred_codes, sparse=True)  # (n_classes, n_groups)
    group_sizes = np.bincount(pred_codes)
    same_both = _pairs(table.data)
    precision = _ratio(same_both, _pairs(group_sizes), 1.0)
    recall = _ratio(same_both, _pairs(np.bincount(true_codes)), 1.0)
    f1 = _ratio(2 * precision * recall, precision + recall, 0.0)
    purity = table.max(axis=0).toarray().sum() / n

    scores = {
        "ari": skm.adjusted_rand_score(true_codes, pred_codes),
        "ami": skm.adjusted_mutual_info_score(true_codes, pred_codes),
        "nmi": skm.normalized_mutual_info_score(true_codes, pred_codes),
        "v_measure": skm.v_measure_score(true_codes, pred_codes),
        "purity": purity,
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": f1,
    }
    result = {key: round(float(value), DECIMALS) for key, value in scores.items()}
    result["n_clusters"] = int((group_sizes >= 2).sum())
    result["singleton_fraction"] = round(float((group_sizes[pred_codes] == 1).mean()), DECIMALS)
    result["n_rows"] = n
    return result


def evaluate_run(
    true_labels: Sequence[Optional[str]],
    cluster_labels: np.ndarray,
    individual_ids: np.ndarray,
    num_classes: Optional[int],
) -> dict:
    """Metrics of one run against labels (the content of ``metrics.json``).

    true_labels: (n,) class name per row, None = unlabelled. cluster_labels: int (n,), -1 = not
    clustered. individual_ids: int (n,) >= 0; every individual is a group, singletons included.
    num_classes: the ``-x`` value, recorded as given (None when absent).
    Returns {"n_labelled", "n_unlabelled", "n_label_classes", "num_classes_given",
    "cluster": partition_metrics(true, cluster_labels), "individual": partition_metrics(true, individual_ids)}.
    Raises NoLabelsError when no row has a label.
    """
    n_labelled = int(_labelled_mask(true_labels).sum())
    if n_labelled == 0:
        raise NoLabelsError(
            f"the labels matched none of the {len(true_labels)} input files, so nothing can be evaluated. "
            "A label row matches a file by exact filename, else by the same absolute path (relative "
            "entries are read relative to the CSV's folder, then the current folder), else by a "
            "basename that is unique in the CSV and among the inputs; fix the CSV's filename column "
            "or use '--labels folders'."
        )
    return {
        "n_labelled": n_labelled,
        "n_unlabelled": len(true_labels) - n_labelled,
        "n_label_classes": len({t for t in true_labels if t is not None}),
        "num_classes_given": None if num_classes is None else int(num_classes),
        "cluster": partition_metrics(true_labels, cluster_labels),
        "individual": partition_metrics(true_labels, individual_ids),
    }


def cosine_silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine silhouette of the rows of `x` (float (m, d)) with integer `labels` (m,), 2 <= clusters < m.

    scikit-learn's `silhouette_score(x, labels, metric="cosine")` (agreeing with it to ~1e-12) without the m x m
    distance matrix and without importing scikit-learn and scipy.stats (1.5-7 s on a 2-core CPU): for unit rows the
    summed cosine distance from row i to a cluster C is |C| - u_i . sum_{j in C} u_j, so one (m, d) x (d, K)
    product in float64 gives every row's distance to every cluster.
    """
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    unit = x / norms[:, np.newaxis]
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    freqs = np.bincount(codes)
    order = np.argsort(codes, kind="stable")
    sums = np.add.reduceat(unit[order], np.r_[0, np.cumsum(freqs)[:-1]], axis=0)    # (K, d) per cluster
    per_cluster = freqs[None, :] - unit @ sums.T                   # (m, K): summed distances, itself included
    rows = np.arange(codes.size)
    intra = per_cluster[rows, codes] - (1.0 - np.einsum("ij,ij->i", unit, unit))    # without its own distance
    per_cluster[rows, codes] = np.inf
    per_cluster /= freqs
    inter = per_cluster.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        intra /= (freqs - 1).take(codes, mode="clip")
        scores = inter - intra
        scores /= np.maximum(intra, inter)
    scores[freqs[codes] == 1] = 0.0                        # a row alone in its cluster scores 0 (as scikit-learn)
    return float(np.mean(np.nan_to_num(scores)))


def silhouette(embeddings: np.ndarray, clusters: np.ndarray, sample: int = 5000, seed: int = 0) -> dict:
    """Label-free cohesion/separation: mean cosine silhouette of the clustered rows (-1 rows left out).

    embeddings: float32 (n, d), L2-normalised, one row per individual; clusters: int (n,), -1 = not clustered.
    At most `sample` clustered rows are scored, drawn with a fixed `seed`, so the cost stays bounded
    (O(sample^2 d)) and reruns agree. Returns {"silhouette": float in [-1, 1] or None when fewer than 2 clusters
    (or no row outside a cluster's own members) exist, "rows_scored": int, "clustered_rows": int}.
    """
    clustered = np.flatnonzero(np.asarray(clusters) >= 0)
    rows = clustered
    if rows.size > sample:
        rows = np.sort(np.random.default_rng(seed).choice(clustered, size=sample, replace=False))
    labels = np.asarray(clusters)[rows]
    n_labels = np.unique(labels).size
    value = None
    if 2 <= n_labels <= rows.size - 1:
        value = round(cosine_silhouette(embeddings[rows], labels), DECIMALS)
    return {"silhouette": value, "rows_scored": int(rows.size) if value is not None else 0,
            "clustered_rows": int(clustered.size)}
