"""The Python API: the whole run as one call, and exact threshold clustering of any array.

    import crop_cluster
    result = crop_cluster.cluster(["crops/"], "results/", embed="lite0", threshold=0.82)
    result.table, result.embeddings, result.manifest
    labels = crop_cluster.threshold_clusters(vectors, 0.9)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence, Union

from .options import options_from

if TYPE_CHECKING:
    import numpy as np

    from .pipeline import Result


def cluster(inputs: Union[str, Sequence[str], None], out_folder: str, **options: Any) -> "Result":
    """Run crop-cluster as the command line does and return its result.

    inputs: image files, folders, globs or .txt lists (like -i); None or [] with `embeddings=` re-clusters a saved
    embeddings.pkl. out_folder: like -o. options: the command line's long flags, underscored (`embed="lite0"`,
    `threshold=0.82`, `gen_cluster_dirs=True`, `filter=["ood_score > 0.4"]`, ...), with the same defaults and
    checks; `progress=True` shows progress bars (off by default). Returns a Result with `table` (pandas
    DataFrame, the rows of clusters.csv), `embeddings` (float32 (N, d), row i = table row i) and `manifest` (the
    content of run.json). Raises crop_cluster.CropClusterError (OptionsError for bad options) naming the bad
    value and the fix; configures no logging (messages go to the "crop-cluster" logger).
    """
    from .pipeline import run

    return run(options_from(inputs, out_folder, options))


def threshold_clusters(vectors: "np.ndarray", threshold: float, device: str = "cpu") -> "np.ndarray":
    """Exact single linkage at a cosine threshold: int64 labels (N,) of the connected components of the graph
    {(i, j): cos(x_i, x_j) >= threshold}; -1 for a vector linked to no other.

    vectors: (N, d) array of any float dtype (rows are L2-normalised here; zero rows are linked to nothing).
    Clusters are numbered 0..K-1 by decreasing size, ties by their first member. device: 'cpu' or 'cuda:N'.
    """
    import numpy as np

    from .clustering.forest import partition_at, spanning_forest
    from .errors import OptionsError

    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise OptionsError(f"threshold_clusters takes a 2-d array (N, d); got shape {x.shape}")
    if not -1.0 <= threshold <= 1.0:
        raise OptionsError(f"threshold {threshold}: a cosine similarity lies in [-1, 1]")
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    components = partition_at(spanning_forest(np.ascontiguousarray(x), threshold, device), threshold)
    _, first, inverse, sizes = np.unique(components, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -sizes))              # components by decreasing size, then first member
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    labels = rank[inverse.ravel()]
    labels[sizes[inverse.ravel()] == 1] = -1
    kept = np.unique(labels[labels >= 0])            # renumber 0..K-1 without the singletons' ranks
    remap = np.full(order.size, -1, dtype=np.int64)
    remap[kept] = np.arange(kept.size)
    return np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
