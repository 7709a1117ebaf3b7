"""The rows of clusters.csv from the stages' values, and the files every run writes (clusters.csv, skipped.csv,
embeddings.pkl, optionally clusters.pkl)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from crop_cluster.crops import Crops
from crop_cluster.outputs.table import order_columns, write_csv, write_skipped


def cluster_table(crops: Crops, clusters, linked_by: Sequence[str], extra: pd.DataFrame) -> pd.DataFrame:
    """One row per clustered crop: the contract columns, dist_to_centroid, linked_by, then `extra` (metadata,
    label, group and taxonomy columns, one row per crop). clusters: clustering.assign.Clusters of the crops."""
    return order_columns(pd.concat([pd.DataFrame({
        "filename": crops.filenames, "cluster": clusters.cluster, "cluster_size": clusters.cluster_size,
        "sim_to_centroid": clusters.sim_to_centroid, "individual": crops.individual,
        "representative": crops.representative, "dist_to_centroid": 1.0 - clusters.sim_to_centroid,
        "linked_by": linked_by,
    }), extra], axis=1))


def taxon_columns(taxonomy, crops: Crops, cluster: np.ndarray, share: float, split_identified: bool,
                  info: Dict) -> pd.DataFrame:
    """clusters.csv columns of the clustered crops of a hierarchical model: per-level predictions and the cluster
    names (clustering/naming.py); adds the run.json entry `taxonomy` to `info`."""
    from crop_cluster.clustering.naming import name_columns
    from crop_cluster.embed.hierarchical import split_predictions
    from crop_cluster.embed.predictions import prediction_columns

    index, probability = split_predictions(crops.predictions, len(taxonomy.levels))
    names = name_columns(cluster, crops.individual, index, probability, taxonomy.levels, taxonomy.classes, share)
    ids, first_row = np.unique(cluster, return_index=True)
    named_at = pd.Series(names["cluster_taxon_level"][first_row[ids >= 0]]).value_counts()
    info["taxonomy"] = {"sidecar": taxonomy.source, "levels": list(taxonomy.levels), "share": share,
                        "clusters_named_at": {level or "none": int(count) for level, count in named_at.items()}}
    frame = pd.DataFrame({**prediction_columns(taxonomy, crops.predictions), **names})
    if split_identified:
        frame["identified"] = False
    return frame


def identified_table(taxonomy, crops: Crops, first_individual: int, level_name: Optional[str],
                     extra: pd.DataFrame) -> pd.DataFrame:
    """clusters.csv rows of the identified crops (--unknown_below): not clustered, named after their prediction at
    `level_name` (None = the finest); individuals numbered from `first_individual`; `extra`: their metadata."""
    from crop_cluster.embed.hierarchical import split_predictions
    from crop_cluster.embed.predictions import prediction_columns

    level = taxonomy.level_index(level_name or taxonomy.levels[0])
    index, probability = split_predictions(crops.predictions, len(taxonomy.levels))
    taxon = np.asarray(taxonomy.classes[level], dtype=object)[index[:, level]]
    n = len(crops.filenames)
    table = pd.DataFrame({
        "filename": crops.filenames, "cluster": np.full(n, -1), "cluster_size": np.ones(n, dtype=np.int64),
        "sim_to_centroid": np.full(n, np.nan, np.float32), "individual": crops.individual + first_individual,
        "representative": crops.representative, "dist_to_centroid": np.full(n, np.nan, np.float32),
        "linked_by": np.where(crops.representative, "", "exact"),
        **prediction_columns(taxonomy, crops.predictions),
        "cluster_taxon": taxon, "cluster_taxon_level": taxonomy.levels[level],
        "cluster_taxon_share": np.round(probability[:, level], 4),
        "cluster_name": [f"{name} (identified, p={p:.2f})" for name, p in zip(taxon, probability[:, level])],
        "identified": True})
    return pd.concat([table, extra], axis=1)


def write_tables(out_folder: str, table: pd.DataFrame, skipped: List[Tuple[str, str]], filenames: List[str],
                 embedding: np.ndarray, model: str, with_embeddings_table: bool,
                 digests: Optional[Sequence[str]] = None) -> None:
    """clusters.csv, skipped.csv and embeddings.pkl (rows of `filenames`, float32 (n, d), their content `digests`
    when known), each atomically; with `with_embeddings_table` (-se) also clusters.pkl, the table plus an embedding
    column."""
    from crop_cluster.outputs.embeddings import write_embeddings

    write_csv(table, os.path.join(out_folder, "clusters.csv"))
    write_skipped(skipped, os.path.join(out_folder, "skipped.csv"))
    write_embeddings(os.path.join(out_folder, "embeddings.pkl"), filenames, embedding, model, digests)
    if with_embeddings_table:
        from crop_cluster.outputs.atomic import atomic_open

        with atomic_open(os.path.join(out_folder, "clusters.pkl"), "wb") as handle:
            table.assign(embedding=list(embedding)).to_pickle(handle)
