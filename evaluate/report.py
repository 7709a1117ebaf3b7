"""The evaluation files of a run: metrics.json (with --labels) and sweep.csv + sweep.png (with --sweep)."""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, Optional, Sequence

import numpy as np

from crop_cluster.outputs.atomic import atomic_open

log = logging.getLogger("crop-cluster")


def write_metrics(path: str, labels: Sequence[Optional[str]], cluster: np.ndarray, individual: np.ndarray,
                  num_classes: Optional[int], quality: Dict, blocks: Optional[Dict] = None) -> Dict:
    """metrics.json from the true labels (one per row, None = unlabelled), the clusters and individuals (int64
    (n,)) and the label-free `quality`, plus other stages' `blocks` ({key: dict}, e.g. naming/'s); returns the
    metrics document."""
    from crop_cluster.evaluate.metrics import evaluate_run

    metrics = {**evaluate_run(labels, cluster, individual, num_classes), "label_free": quality, **(blocks or {})}
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
        handle.write("\n")
    log.info("evaluation: ARI %.3f, AMI %.3f, pairwise F1 %.3f; %d clusters found%s", metrics["cluster"]["ari"],
             metrics["cluster"]["ami"], metrics["cluster"]["pairwise_f1"], metrics["cluster"]["n_clusters"],
             f" for {num_classes} classes (-x)" if num_classes else "")
    return metrics


def write_sweep(out_folder: str, spec: str, vectors: np.ndarray, individual: np.ndarray,
                labels: Optional[Sequence[Optional[str]]], forest) -> Dict:
    """--sweep START:STOP:STEP: sweep.csv and sweep.png in `out_folder` from the individuals' vectors (float32
    (I, d)), reusing the clustering's spanning forest; returns the run.json entry with the recommendation."""
    from crop_cluster.evaluate.sweep import parse_sweep, recommend, sweep_table
    from crop_cluster.evaluate.sweep_plot import plot_sweep
    from crop_cluster.outputs.table import write_csv

    table = sweep_table(vectors, parse_sweep(spec), individual, labels, forest)
    threshold, rule = recommend(table)
    write_csv(table, os.path.join(out_folder, "sweep.csv"))
    plot_sweep(table, threshold, os.path.join(out_folder, "sweep.png"))
    log.info("sweep %s: recommended threshold %g (%s); curves in sweep.csv and sweep.png", spec, threshold, rule)
    return {"spec": spec, "thresholds": len(table), "recommended_threshold": threshold, "rule": rule}
