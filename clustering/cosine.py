"""`-c cosine`: single-link clustering at a cosine threshold = connected components of the exact ε-graph."""
from __future__ import annotations

import numpy as np

from crop_cluster.clustering import ClusterParams, ClusterResult
from crop_cluster.clustering.forest import Forest, contract, partition_at, spanning_forest
from crop_cluster.clustering.guard import split_oversized


def cluster_cosine(embeddings: np.ndarray, params: ClusterParams, item_of_row: np.ndarray = None,
                   forest: Forest = None) -> ClusterResult:
    """Group id per row, int64 (n,): rows joined by any chain of pairs with cosine similarity >= params.threshold.

    embeddings: float32 (n, d), L2-normalised. Exact over the whole input (no chunking), memory bounded by tiles.
    The forest (built here at params.threshold unless given) is returned for reuse.
    item_of_row: int64 (m,) item (individual) of each row, every item 0..n-1 present: items are linked when any of
    their rows are, and groups, forest and guard are per item (n,).
    forest: the spanning forest of these rows already built at a threshold <= params.threshold (the run's shared
    graph pass); read instead of computing similarities again.
    With params.max_cluster_size > 0, larger components are split at their weakest links (clustering.guard).
    """
    graph: dict = {}
    if forest is None or forest.threshold > params.threshold:
        forest = spanning_forest(embeddings, params.threshold, params.device, stats=graph)
    else:
        graph["shared"] = True               # the run's one graph pass; its statistics are in run.json "graph"
    if item_of_row is not None:
        forest = contract(forest, item_of_row, int(item_of_row.max(initial=-1)) + 1)
    groups = partition_at(forest, params.threshold)
    info = {"graph": {**graph, "forest_threshold": forest.threshold, "forest_edges": int(forest.sims.size)}}
    if params.max_cluster_size:
        groups, split = split_oversized(forest, groups, params.threshold, params.max_cluster_size)
        info["chaining_guard"] = {"max_cluster_size": params.max_cluster_size, **split}
    return ClusterResult(groups, info, forest)
