"""`-e dino`: DINOv2 (or any transformers vision backbone) by hub id or local folder; embedding = CLS token.

`-fp` is always honoured. A local folder needs config.json, the weights and preprocessor_config.json (what
`save_pretrained` writes). Loading tries the local Hugging Face cache first and fails fast with a clear message
when the model is neither there nor reachable.
"""
from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

from PIL import Image

from crop_cluster.embed import EmbedError
from crop_cluster.embed.base import EmbeddingBackend
from crop_cluster.embed.data import Preprocess

log = logging.getLogger(__name__)

OFFLINE_HINT = ("without internet, use -e lite0 (bundled, offline) or -fp <local folder> holding a model saved with "
                "save_pretrained (config.json, weights, preprocessor_config.json)")


def preprocess_of(processor) -> Preprocess:
    """The model's input size, resampling and normalisation from its transformers image processor, with this
    project's crop geometry ("pad": the whole crop on a white square, see README "Crop geometry") instead of the
    processor's resize-and-centre-crop."""
    sizes = [getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None,
             getattr(processor, "size", None)]
    values = [size.get(key) if isinstance(size, dict) else getattr(size, key, None)  # dict or transformers SizeDict
              for size in sizes if size is not None for key in ("height", "shortest_edge", "width")]
    side = next((int(value) for value in values if value), 224)
    rescale = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
    if getattr(processor, "do_normalize", True):
        mean = [float(m) / rescale for m in getattr(processor, "image_mean", None) or [0.0, 0.0, 0.0]]
        std = [float(s) / rescale for s in getattr(processor, "image_std", None) or [1.0, 1.0, 1.0]]
    else:
        mean, std = [0.0] * 3, [1.0 / rescale] * 3
    resample = int(getattr(processor, "resample", None) or Image.BICUBIC)
    return Preprocess(side, tuple(mean), tuple(std), geometry="pad", resample=resample)


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the Hugging Face endpoint answers a TCP connection (so a download can be attempted)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _load_pretrained(model_id: str):
    """(image processor, model) for `model_id`: local folder, local cache, then the hub; EmbedError otherwise."""
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no torchvision fallback chatter or weight-loading bars on our stderr
    hf_logging.disable_progress_bar()
    is_folder = os.path.isdir(model_id)
    if not is_folder and (model_id.startswith((".", os.sep, "~")) or os.path.exists(model_id)):
        raise EmbedError(f"-fp {model_id}: not a model folder; {OFFLINE_HINT}")
    attempts = [True] if is_folder else [True, False]  # local_files_only first, then the hub
    last_error: Exception = EmbedError("not attempted")
    for local_only in attempts:
        if not local_only and not _hub_reachable():
            raise EmbedError(f"model '{model_id}' is neither a local folder nor in the Hugging Face cache, and the "
                             f"hub cannot be reached; {OFFLINE_HINT}")
        try:
            processor = AutoImageProcessor.from_pretrained(model_id, local_files_only=local_only)
            model = AutoModel.from_pretrained(model_id, local_files_only=local_only)
            return processor, model
        except (OSError, ValueError, KeyError) as error:
            last_error = error
    reason = str(last_error).splitlines()[0]
    raise EmbedError(f"could not load model '{model_id}': {reason}; {OFFLINE_HINT}")


class DinoBackend(EmbeddingBackend):
    """CLS embedding (`pooler_output`, i.e. the layer-normed CLS token for Dinov2Model) of a transformers backbone."""

    name = "dino"

    def __init__(self, device: str, model_path: str):
        super().__init__(device, model_path)
        processor, model = _load_pretrained(model_path)
        self.model = model.eval().to(device)
        self.preprocess = preprocess_of(processor)

    def embed_batch(self, batch):
        output = self.model(pixel_values=batch)
        pooled = getattr(output, "pooler_output", None)
        return pooled if pooled is not None else output.last_hidden_state[:, 0]
