"""run.json: parameters as resolved, versions, device, counts and timings of one run."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Any, Dict

from outputs.atomic import atomic_open

PACKAGES = ("crop-cluster", "torch", "transformers", "faiss-cpu", "faiss-gpu-cu12", "numpy", "scipy", "pandas",
            "pillow", "scikit-learn")


def versions() -> Dict[str, str]:
    """Python, platform and installed package versions (packages that are not installed are left out)."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def cluster_counts(clusters, individuals_total: int) -> Dict[str, Any]:
    """Counts over the final labels: clusters, singletons (individuals not clustered), largest cluster and its share.

    clusters: int64 per representative (one entry per individual), -1 = not clustered.
    """
    import numpy as np

    clustered = clusters[clusters >= 0]
    sizes = np.bincount(clustered) if clustered.size else np.zeros(0, dtype=np.int64)
    largest = int(sizes.max()) if sizes.size else 0
    return {"clusters": int(sizes.size), "singletons": int((clusters < 0).sum()), "largest_cluster": largest,
            "largest_cluster_share": round(largest / individuals_total, 6) if individuals_total else 0.0}


def write_manifest(path: str, manifest: Dict[str, Any]) -> None:
    """Write `manifest` plus the installed versions as indented JSON, atomically."""
    document = {**manifest, "versions": versions()}
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, default=str)
        handle.write("\n")
