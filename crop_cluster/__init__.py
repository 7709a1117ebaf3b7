"""crop-cluster: group image crops of insects (and other specimens) by visual similarity.

    import crop_cluster
    result = crop_cluster.cluster(["crops/"], "results/", embed="lite0")   # keywords = the long flags
    result.table        # pandas DataFrame: the rows of clusters.csv
    result.embeddings   # float32 (N, d), row i belongs to result.table row i
    result.manifest     # dict: run.json
    labels = crop_cluster.threshold_clusters(vectors, 0.9)   # exact single linkage; -1 = linked to none

The stages are subpackages: crop_cluster.inputs, .embed, .dedup, .clustering, .outputs, .evaluate; the pipeline
(crop_cluster.pipeline) is the only module that knows them all, the command line is crop_cluster.cli. Importing
this package imports no NumPy, torch or pandas.
"""
from .api import cluster, threshold_clusters
from .errors import CropClusterError, OptionsError
from .options import Options

__version__ = "0.2.0"
__all__ = ["cluster", "threshold_clusters", "Options", "CropClusterError", "OptionsError", "__version__"]
