"""embeddings.pkl: {'filename': list[str], 'embedding': float32 (N, d) L2-normalised, 'model': str, 'dim': int}.

Reading uses a restricted unpickler that only rebuilds plain containers and NumPy arrays, so a pkl from elsewhere
cannot run code; the content is validated (keys, shapes, dtype, unit rows) with messages that name the file.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import List

import numpy as np

from outputs.atomic import atomic_open

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "str"), ("builtins", "int"), ("builtins", "bytes"),
    ("_codecs", "encode"),
}


class EmbeddingsFileError(ValueError):
    """An embeddings file that cannot be used; the message names it and says how to make a valid one."""


@dataclass(frozen=True)
class StoredEmbeddings:
    """filenames: N paths; embedding: float32 (N, d), unit rows; model: '<backend>:<model id>'."""

    filenames: List[str]
    embedding: np.ndarray
    model: str


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def write_embeddings(path: str, filenames: List[str], embedding: np.ndarray, model: str) -> None:
    """Write the contracted dict atomically (pickle protocol 4)."""
    payload = {"filename": list(filenames), "embedding": np.ascontiguousarray(embedding, dtype=np.float32),
               "model": model, "dim": int(embedding.shape[1])}
    with atomic_open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=4)


def read_embeddings(path: str) -> StoredEmbeddings:
    """Load and validate an embeddings.pkl written by this tool (or any dict with the same keys)."""
    fix = "use the embeddings.pkl from a previous crop-cluster output folder"
    try:
        with open(path, "rb") as handle:
            payload = _SafeUnpickler(handle).load()
    except FileNotFoundError:
        raise EmbeddingsFileError(f"--embeddings {path}: no such file; {fix}") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise EmbeddingsFileError(f"--embeddings {path}: not a readable embeddings file ({error}); {fix}") from None
    if not isinstance(payload, dict) or not {"filename", "embedding", "model"} <= set(payload):
        raise EmbeddingsFileError(f"--embeddings {path}: expected a dict with keys filename, embedding, model, dim; {fix}")
    filenames, embedding = payload["filename"], payload["embedding"]
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 2 or len(filenames) != embedding.shape[0]:
        raise EmbeddingsFileError(f"--embeddings {path}: 'embedding' must be an array with one row per filename "
                                  f"({len(filenames)} filenames); {fix}")
    if len(set(filenames)) != len(filenames):
        raise EmbeddingsFileError(f"--embeddings {path}: a filename appears twice; {fix}")
    embedding = embedding.astype(np.float32, copy=False)
    if not np.isfinite(embedding).all():
        raise EmbeddingsFileError(f"--embeddings {path}: the embeddings contain NaN or infinite values; {fix}")
    norms = np.linalg.norm(embedding, axis=1)
    if embedding.shape[0] and not np.allclose(norms, 1.0, atol=1e-3):
        embedding = embedding / np.maximum(norms[:, None], 1e-12)
    return StoredEmbeddings([str(f) for f in filenames], embedding, str(payload["model"]))
