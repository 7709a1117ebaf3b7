"""A fast backend for CLI tests: the embedding of an image is the centred mean colour of its non-white pixels (3-d)."""
from __future__ import annotations

from crop_cluster.embed.base import EmbeddingBackend
from crop_cluster.embed.data import Preprocess


class MeanColourBackend(EmbeddingBackend):
    name = "fake"

    def __init__(self, device: str, model_path: str):
        super().__init__(device, model_path)
        self.preprocess = Preprocess(48, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))

    def embed_batch(self, batch):
        """(B, 3, H, W) in 0..1 -> (B, 3): mean colour of the pixels that are not near-white, minus 0.5."""
        import torch

        pixels = batch.flatten(2)                                   # (B, 3, H*W)
        foreground = (pixels.min(dim=1, keepdim=True).values < 0.95).float()
        foreground = torch.where(foreground.sum(dim=2, keepdim=True) > 0, foreground, torch.ones_like(foreground))
        return (pixels * foreground).sum(dim=2) / foreground.sum(dim=2) - 0.5
