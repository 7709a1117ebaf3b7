"""Fast CPU inference: a torch module exported once to ONNX (cached on disk) and run with onnxruntime.

The exported file lives in the user cache folder (`$CROP_CLUSTER_CACHE`, else `$XDG_CACHE_HOME/crop-cluster`, else
`~/.cache/crop-cluster`), under a name keyed by the weights, the preprocessing, torch's version and the opset, so a
change to any of them exports again; an unwritable cache folder means a temporary export for this run only.
Needs the `onnxruntime` and `onnx` (the exporter's) packages; `onnx_session` returns None without them.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from typing import Optional, Sequence

log = logging.getLogger(__name__)

OPSET = 17


def user_cache_dir() -> str:
    """Where crop-cluster keeps files that outlive one run (exported models)."""
    if os.environ.get("CROP_CLUSTER_CACHE"):
        return os.environ["CROP_CLUSTER_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "crop-cluster")


def _available() -> bool:
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_path(stem: str, key_parts: Sequence[str]) -> str:
    """Cache path of the export of `stem` for `key_parts` (weights digest, preprocessing key, ...)."""
    import torch

    digest = hashlib.blake2b("\n".join([*key_parts, torch.__version__, f"opset{OPSET}"]).encode(), digest_size=8)
    return os.path.join(user_cache_dir(), "onnx", f"{stem}-{digest.hexdigest()}.onnx")


def _export(module, input_size: int, path: str) -> None:
    """Export `module` (float (B, 3, S, S) -> (B, d)) with a dynamic batch axis to `path`, atomically."""
    import warnings

    import torch

    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and constant-folding notes
            torch.onnx.export(module, (torch.zeros(2, 3, input_size, input_size),), temp, dynamo=False,
                              input_names=["pixels"], output_names=["embedding"], opset_version=OPSET,
                              dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}})
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def onnx_session(module, input_size: int, stem: str, key_parts: Sequence[str]) -> Optional["object"]:
    """An onnxruntime CPU session for `module`, exporting it first when no cached export exists.

    Returns None (the caller keeps torch) when onnxruntime or onnx is not installed.
    """
    if not _available():
        log.info("onnxruntime/onnx not installed: running the model in torch (pip install onnxruntime onnx for "
                 "about 3x the speed on CPU)")
        return None
    import onnxruntime

    path = onnx_path(stem, key_parts)
    with tempfile.TemporaryDirectory() as scratch:
        if not os.path.isfile(path):
            log.info("exporting %s to ONNX once (a few seconds): %s", stem, path)
            try:
                _export(module, input_size, path)
            except OSError as error:  # an unwritable cache folder: export for this run only
                log.warning("cannot write %s (%s); exporting to a temporary file for this run", path, error)
                path = os.path.join(scratch, os.path.basename(path))
                _export(module, input_size, path)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
