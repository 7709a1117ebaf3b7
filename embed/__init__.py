"""Embedding backends behind one registry.

A backend turns images into float32, L2-normalised vectors, row i = file i. Nothing here imports torch at import
time: `load_backend` imports the chosen backend module on demand, so `cluster.py -h` stays instant.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

from crop_cluster.errors import CropClusterError


class EmbedError(CropClusterError, ValueError):
    """A model, device or embeddings file that cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class BackendInfo:
    """Registry entry: where the backend lives and the defaults the CLI needs without loading it.

    default_threshold: cosine similarity at or above which two crops are linked by `-c cosine` (see README,
    "Choosing a threshold", for how each value was calibrated).
    """

    module: str
    class_name: str
    default_model: str
    default_threshold: float
    summary: str


BACKENDS = {
    "dino": BackendInfo(".hf", "DinoBackend", "facebook/dinov2-base", 0.90,
                        "DINOv2 (or any transformers vision model) by hub id or local folder; CLS token"),
    "lite0": BackendInfo(".lite0", "Lite0Backend", "efficientnet-lite0", 0.82,
                         "EfficientNet-Lite0 ImageNet, bundled with the install, works offline; 1280-d"),
    "hierarchical": BackendInfo(".hierarchical", "HierarchicalBackend", "", 0.85,
                                "your hierarchical taxonomic classifier (-fp MODEL.pt or .onnx + MODEL.json): "
                                "embedding + per-level predictions and taxon cluster names"),
}


def backend_info(name: str) -> BackendInfo:
    """Registry entry for `name`; EmbedError listing the valid names when it is unknown."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise EmbedError(f"unknown embedding backend '{name}'; available: {', '.join(BACKENDS)}") from None


def backend_of_model(model: str) -> Optional[str]:
    """Backend name recorded at the front of an embeddings file's `model` string ('lite0:...' -> 'lite0')."""
    name = model.split(":", 1)[0]
    return name if name in BACKENDS else None


def model_id(name: str, model_path: Optional[str] = None) -> str:
    """'<backend>:<model>' as recorded in embeddings.pkl, run.json and the cache, known without loading the model."""
    return f"{name}:{model_path or backend_info(name).default_model}"


def load_backend(name: str, device: str, model_path: Optional[str] = None, **options):
    """Instantiate backend `name` on `device` ('cpu', 'cuda:0'), loading `model_path` or the backend's default;
    `options`: the backend's own keywords (e.g. the hierarchical backend's `probabilities`)."""
    info = backend_info(name)
    cls = getattr(importlib.import_module(info.module, __package__), info.class_name)
    return cls(device=device, model_path=model_path or info.default_model, **options)
