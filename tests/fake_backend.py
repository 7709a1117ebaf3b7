"""A fast backend for CLI tests: the embedding of an image is the centred mean colour of its non-white pixels (3-d)."""
from __future__ import annotations

import numpy as np

from embed.base import EmbeddingBackend


class MeanColour:
    """PIL RGB image -> float32 tensor (3, 1, 1): mean colour of the pixels that are not near-white, minus 0.5."""

    def __call__(self, image):
        import torch

        pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3) / 255.0
        foreground = pixels[pixels.min(axis=1) < 0.95]
        colour = (foreground if len(foreground) else pixels).mean(axis=0) - 0.5
        return torch.from_numpy(colour.reshape(3, 1, 1).copy())


class MeanColourBackend(EmbeddingBackend):
    name = "fake"

    def __init__(self, device: str, model_path: str):
        super().__init__(device, model_path)
        self.transform = MeanColour()

    def embed_batch(self, batch):
        return batch.flatten(1)
