"""run.json: parameters as resolved, versions, device, counts and timings of one run."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Any, Dict, Iterable

from crop_cluster.outputs.atomic import atomic_open

PACKAGES = ("crop-cluster", "torch", "transformers", "faiss-cpu", "faiss-gpu-cu12", "numpy", "scipy", "pandas",
            "pillow", "scikit-learn")


def package_versions(names: Iterable[str]) -> Dict[str, str]:
    """Installed version of each distribution in `names` (those not installed are left out)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def versions() -> Dict[str, str]:
    """Python, platform and installed package versions (packages that are not installed are left out)."""
    return {"python": platform.python_version(), "platform": platform.platform(), **package_versions(PACKAGES)}


def cluster_counts(clusters, individuals_total: int) -> Dict[str, Any]:
    """Counts over the final labels: clusters, singletons (individuals not clustered), largest cluster and its share,
    and the number of clusters per size band (`cluster_size_histogram`, individuals per cluster).

    clusters: int64 per representative (one entry per individual), -1 = not clustered.
    """
    import numpy as np

    clustered = clusters[clusters >= 0]
    sizes = np.bincount(clustered) if clustered.size else np.zeros(0, dtype=np.int64)
    sizes = sizes[sizes > 0]              # stable campaign ids leave gaps
    largest = int(sizes.max()) if sizes.size else 0
    return {"clusters": int(sizes.size), "singletons": int((clusters < 0).sum()), "largest_cluster": largest,
            "largest_cluster_share": round(largest / individuals_total, 6) if individuals_total else 0.0,
            "cluster_size_histogram": size_histogram(sizes)}


def size_histogram(sizes) -> dict:
    """Number of clusters per size band ('2', '3-4', '5-9', '10-19', '20-49', ...) for run.json; empty bands left out.

    sizes: members per cluster (int array).
    """
    bounds, decade = [2, 3, 5], 10
    while bounds[-1] <= (int(sizes.max()) if sizes.size else 0):
        bounds += [decade, 2 * decade, 5 * decade]
        decade *= 10
    histogram = {}
    for low, high in zip(bounds, bounds[1:]):
        count = int(((sizes >= low) & (sizes < high)).sum())
        if count:
            histogram[str(low) if high == low + 1 else f"{low}-{high - 1}"] = count
    return histogram


def write_manifest(path: str, manifest: Dict[str, Any]) -> None:
    """Write `manifest` plus the installed versions as indented JSON, atomically."""
    document = {**manifest, "versions": versions()}
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, default=str)
        handle.write("\n")
