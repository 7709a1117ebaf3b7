"""The 2-D map of report.html: UMAP when the `umap` package is importable, else PCA (scikit-learn); kept beside the
thumbnails by the content of the vectors, so a run over the same representatives maps nothing again."""
from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Tuple

import numpy as np

KEPT = "map.npz"           # in OUT/report/: the last map, with the key of the vectors it was made from


def kept_projection(embeddings: np.ndarray, folder: str, seed: int = 0) -> Tuple[np.ndarray, str]:
    """`project_2d`, read back from folder/KEPT when it was made from the same vectors (their bytes' BLAKE2b) and
    the same method would run; else computed and kept there (a rebuildable cache: a failure to keep it is
    ignored)."""
    try:
        import umap  # noqa: F401  (the method is part of the key)
        method = "umap"
    except ImportError:
        method = "pca"
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    key = hashlib.blake2b(vectors.tobytes() + f"{vectors.shape}|{seed}|{method}".encode(),
                          digest_size=16).hexdigest()
    path = os.path.join(folder, KEPT)
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) == key:
                return data["points"].astype(np.int32), str(data["method"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        pass
    points, method = project_2d(vectors, seed)
    try:
        os.makedirs(folder, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"          # a stale one is removed with the thumbnails'
        with open(temporary, "wb") as handle:
            np.savez(handle, key=np.asarray(key), points=points, method=np.asarray(method))
        os.replace(temporary, path)
    except OSError:
        pass
    return points, method


def project_2d(embeddings: np.ndarray, seed: int = 0) -> Tuple[np.ndarray, str]:
    """Coordinates for a scatter plot of `embeddings` float32 (n, d).

    Returns (int32 (n, 2) scaled to 0..1000 on both axes, method name 'umap' | 'pca'). Fewer than 3 rows or a
    rank-0 input gives points on a line / at the centre rather than an error.
    """
    n = embeddings.shape[0]
    points = np.zeros((n, 2), dtype=np.float64)
    method = "pca"
    if n >= 3:
        try:
            import umap  # optional; only used when the user installed it

            points = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, n - 1)).fit_transform(embeddings)
            method = "umap"
        except ImportError:
            from sklearn.decomposition import PCA

            k = min(2, embeddings.shape[1])
            points[:, :k] = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit_transform(
                embeddings.astype(np.float64))
    if n == 0:
        return np.zeros((0, 2), dtype=np.int32), method
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high - low > 1e-12, high - low, 1.0)
    scaled = np.where(high - low > 1e-12, (points - low) / span, 0.5)
    return np.rint(scaled * 1000).astype(np.int32), method
