"""Feature preparation shared by the non-graph algorithms: optional standardisation and PCA."""
from __future__ import annotations

import numpy as np


def reduce_features(embeddings: np.ndarray, components: int, standardize: bool = False, seed: int = 0) -> np.ndarray:
    """float32 (n, min(components, n, d)) PCA scores of the (optionally standardised) embeddings.

    components: 0 keeps every dimension (then only the standardisation applies). Randomised SVD for speed when
    the reduction is large, seeded for repeatable runs.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if standardize:
        from sklearn.preprocessing import StandardScaler

        x = StandardScaler().fit_transform(x).astype(np.float32)
    keep = min(components, x.shape[0], x.shape[1]) if components else 0
    if not keep or keep == x.shape[1]:
        return x
    from sklearn.decomposition import PCA

    return PCA(n_components=keep, random_state=seed).fit_transform(x).astype(np.float32)
