"""embeddings.pkl: {'filename': list[str], 'embedding': float32 (N, d) L2-normalised, 'model': str, 'dim': int},
and since 0.3 'base' (str: the working folder of the run that wrote it, which relative filenames are relative to)
and 'digest' (list[str]: each file's content digest, '' unknown); files without them stay readable.

Reading uses a restricted unpickler that only rebuilds plain containers and numeric NumPy arrays (from checked shape,
dtype and bytes: numpy never sees unchecked pickle state), so a pkl from elsewhere can neither run code nor crash us; the content is validated (keys, shapes, dtype, unit rows) with messages that name the file.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

import numpy as np

from crop_cluster.errors import CropClusterError
from crop_cluster.outputs.atomic import atomic_open


# Plain numeric dtypes an embeddings file may use; object/structured dtypes are refused.
_NUMERIC_KINDS = "fiub"


class _DtypeSpec:
    """Stands in for numpy.dtype while unpickling: only a validated name and byte order reach numpy."""

    def __init__(self, name, align=False, copy=True):
        try:
            self.dtype = np.dtype(name) if isinstance(name, str) else None
        except TypeError:
            self.dtype = None
        if self.dtype is None or self.dtype.kind not in _NUMERIC_KINDS:
            raise pickle.UnpicklingError(f"refusing dtype {name!r}: only plain numeric arrays are allowed")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("malformed dtype state")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArraySpec:
    """Stands in for numpy.ndarray while unpickling; `array` is built from checked shape, dtype and bytes."""

    def __init__(self, cls=None, shape=None, typecode=None):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("malformed array state")
        _, shape, dtype, fortran, data = state
        self.array = _build_array(data, dtype, shape, "F" if fortran else "C")


def _build_array(data, dtype, shape, order: str) -> np.ndarray:
    if not isinstance(dtype, _DtypeSpec) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("malformed array data")
    if not isinstance(shape, tuple) or not all(isinstance(k, int) and k >= 0 for k in shape):
        raise pickle.UnpicklingError("malformed array shape")
    if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize:
        raise pickle.UnpicklingError("array data does not match its shape")
    if isinstance(data, bytearray):  # protocol 5 (what write_embeddings writes): a fresh writable buffer, no copy
        return np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order=order)
    return np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order=order).copy()


def _frombuffer(data, dtype, shape, order="C") -> np.ndarray:
    """Protocol-5 arrays: numpy's _frombuffer(buffer, dtype, shape, order), rebuilt from checked parts."""
    return _build_array(data, dtype, shape, order if order in ("C", "F") else "C")


def _scalar(dtype, data=None):
    if not isinstance(dtype, _DtypeSpec) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


_SAFE_GLOBALS = {"dtype": _DtypeSpec, "ndarray": _ArraySpec, "_reconstruct": _ArraySpec,
                 "_frombuffer": _frombuffer, "scalar": _scalar}
_SAFE_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                 "numpy._core.numeric")


def _materialise(value):
    """Replace the stand-ins in an unpickled dict/list by real arrays."""
    if isinstance(value, _ArraySpec):
        if value.array is None:
            raise pickle.UnpicklingError("array without data")
        return value.array
    if isinstance(value, dict):
        return {key: _materialise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_materialise(item) for item in value]
    return value


class EmbeddingsFileError(CropClusterError, ValueError):
    """An embeddings file that cannot be used; the message names it and says how to make a valid one."""


@dataclass(frozen=True)
class StoredEmbeddings:
    """filenames: N paths; embedding: float32 (N, d), unit rows; model: '<backend>:<model id>'; base: the folder
    relative filenames are relative to ('' unknown: the working folder); digests: N content digests or None."""

    filenames: List[str]
    embedding: np.ndarray
    model: str
    base: str = ""
    digests: Optional[List[str]] = None

    def resolved(self) -> "StoredEmbeddings":
        """The same with absolute filenames (relative ones joined to `base`, else to the working folder)."""
        base = self.base or os.getcwd()
        return replace(self, filenames=[os.path.normpath(os.path.join(base, name)) for name in self.filenames],
                       base="")


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds only builtin containers and plain numeric NumPy arrays; never lets numpy see unchecked state."""

    def find_class(self, module: str, name: str):
        if module in _SAFE_MODULES and name in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[name]
        if module == "_codecs" and name == "encode":  # protocol 2 pickles store bytes through it
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def write_embeddings(path: str, filenames: List[str], embedding: np.ndarray, model: str,
                     digests: Optional[Sequence[str]] = None) -> None:
    """Write the contracted dict atomically (pickle protocol 5, Python >= 3.8: the array is written from its own
    memory and read back into one buffer, where protocol 4 needs a second copy of N x d each way), with the working
    folder as `base` and the contents as `digest` when known."""
    payload = {"filename": list(filenames), "embedding": np.ascontiguousarray(embedding, dtype=np.float32),
               "model": model, "dim": int(embedding.shape[1]), "base": os.getcwd()}
    if digests is not None:
        payload["digest"] = [str(d) for d in digests]
    with atomic_open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=5)


def _row_norms(embedding: np.ndarray) -> np.ndarray:
    """L2 norm of every row, (n,), without a temporary of the array's size: float32 sums (error ~1e-7), float64
    where float32 squares overflow."""
    norms = np.sqrt(np.einsum("ij,ij->i", embedding, embedding))
    if not np.isfinite(norms).all() and np.isfinite(embedding).all():
        norms = np.sqrt(np.einsum("ij,ij->i", embedding, embedding, dtype=np.float64))
    return norms


def read_embeddings(path: str) -> StoredEmbeddings:
    """Load and validate an embeddings.pkl written by this tool (or any dict with the same keys)."""
    fix = "use the embeddings.pkl from a previous crop-cluster output folder"
    try:
        with open(path, "rb") as handle:
            payload = _materialise(_SafeUnpickler(handle).load())
    except FileNotFoundError:
        raise EmbeddingsFileError(f"--embeddings {path}: no such file; {fix}") from None
    except Exception as error:  # any corruption of an outside file is the file's fault, not a crash
        raise EmbeddingsFileError(f"--embeddings {path}: not a readable embeddings file "
                                  f"({type(error).__name__}: {error}); {fix}") from None
    if not isinstance(payload, dict) or not {"filename", "embedding", "model"} <= set(payload):
        raise EmbeddingsFileError(f"--embeddings {path}: expected a dict with keys filename, embedding, model, dim; {fix}")
    filenames, embedding = payload["filename"], payload["embedding"]
    if not isinstance(filenames, list) or not all(isinstance(name, str) for name in filenames):
        raise EmbeddingsFileError(f"--embeddings {path}: 'filename' must be a list of paths; {fix}")
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 2 or len(filenames) != embedding.shape[0]:
        raise EmbeddingsFileError(f"--embeddings {path}: 'embedding' must be an array with one row per filename "
                                  f"({len(filenames)} filenames); {fix}")
    if len(set(filenames)) != len(filenames):
        raise EmbeddingsFileError(f"--embeddings {path}: a filename appears twice; {fix}")
    embedding = embedding.astype(np.float32, copy=False)
    norms = _row_norms(embedding)
    if not np.isfinite(norms).all():   # a NaN or infinite value anywhere in a row makes its norm non-finite
        raise EmbeddingsFileError(f"--embeddings {path}: the embeddings contain NaN or infinite values; {fix}")
    if embedding.shape[0] and not np.allclose(norms, 1.0, atol=1e-3):
        embedding = embedding / np.maximum(norms[:, None], 1e-12)
    base = payload.get("base")
    digests = payload.get("digest")
    if not isinstance(base, str):
        base = ""
    if not (isinstance(digests, list) and len(digests) == len(filenames) and all(isinstance(d, str) for d in digests)):
        digests = None
    return StoredEmbeddings(list(filenames), embedding, str(payload["model"]), base, digests)
