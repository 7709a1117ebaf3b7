"""`-e hierarchical -fp MODEL.pt2|.pt|.onnx`: a hierarchical taxonomic classifier exported by any lab.

No architecture code lives here: the model is a torch.export program (`.pt2`, torch.export.save), a TorchScript file
(torch.jit.trace/script + save; deprecated by PyTorch but widespread) or an ONNX file whose forward takes a
normalised image batch float (B, 3, S, S) and returns the embedding (B, d) and one logits tensor (B, C_l) per
taxonomic level, finest first: a tuple/list `(embedding, logits_species, logits_genus, ...)` or
a dict keyed "embedding" and the level names (ONNX: outputs named so, else taken in that order). `MODEL.json`
beside it (embed/taxonomy.py) names the levels, classes and tree, and the preprocessing. Both are checked on load
by running the model on two blank images.

Besides the embedding, each crop gets its tree-consistent top-1 class and probability per level (`extras`,
float32 (B, 2L): L class indices, then L probabilities, finest level first; `split_predictions` reads them). With
`probabilities=True` (for --species_list, naming/masking.py; cached under its own key, PROBABILITIES_VARIANT) every
class's softmax probability follows, level by level (B, 2L + sum C_l), so predictions can be masked afterwards.
torch.export and TorchScript models run on the device in bf16 autocast on CUDA (channels-last, the layout
convolutions are fastest in there, unless the model refuses it), float32 on CPU; ONNX runs in onnxruntime (its CUDA
provider when onnxruntime-gpu is installed, else the CPU).
"""
from __future__ import annotations

import logging
import os
from typing import List, Tuple

from crop_cluster.embed import EmbedError
from crop_cluster.embed.base import EmbeddingBackend
from crop_cluster.embed.data import Preprocess
from crop_cluster.embed.taxonomy import Taxonomy, load_taxonomy, sidecar_path

log = logging.getLogger(__name__)

EXPORTED_SUFFIXES = (".pt2",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
ONNX_SUFFIXES = (".onnx",)
EXPORT_HINT = "see README 'Hierarchical taxonomic model' for how to export one"
PROBABILITIES_VARIANT = "probabilities"   # embedding-cache key of the extras with every class's probability


def preprocess_of(taxonomy: Taxonomy) -> Preprocess:
    """The sidecar's input size and 0..1-scale mean/std as a Preprocess (0..255 pixel units)."""
    return Preprocess(taxonomy.size, mean=tuple(255.0 * m for m in taxonomy.mean),
                      std=tuple(255.0 * s for s in taxonomy.std), geometry=taxonomy.geometry)


def require_model_file(model_path: str) -> None:
    """EmbedError naming the accepted formats when `model_path` is not a file."""
    if not os.path.isfile(model_path):
        raise EmbedError(f"-fp {model_path}: no such model file; -e hierarchical needs a torch.export (.pt2), "
                         f"TorchScript ({'/'.join(TORCHSCRIPT_SUFFIXES)}) or ONNX (.onnx) file with MODEL.json "
                         f"beside it; {EXPORT_HINT}")


def split_predictions(extras, n_levels: int):
    """(index int64 (n, L), probability float32 (n, L)) from the backend's extras float32 (n, 2L or more: what
    follows the first 2L columns is left alone), finest first."""
    import numpy as np

    return np.rint(extras[:, :n_levels]).astype(np.int64), extras[:, n_levels:2 * n_levels].astype(np.float32)


class HierarchicalBackend(EmbeddingBackend):
    """Embedding + per-level predictions of an exported hierarchical classifier; `taxonomy` describes its levels."""

    name = "hierarchical"

    def __init__(self, device: str, model_path: str, channels_last: bool = True, probabilities: bool = False):
        super().__init__(device, model_path)
        self.probabilities = probabilities
        require_model_file(model_path)
        self.channels_last = channels_last and device.startswith("cuda")
        if device.startswith("cuda"):
            import torch

            torch.backends.cudnn.benchmark = True   # fixed input size: let cuDNN pick its fastest convolutions
        self.taxonomy = load_taxonomy(sidecar_path(model_path))
        self.preprocess = preprocess_of(self.taxonomy)
        self.session = self.module = None
        if model_path.lower().endswith(ONNX_SUFFIXES):
            self.session = _onnx_session(model_path, device)
            self.runtime = "onnxruntime"
        elif model_path.lower().endswith(EXPORTED_SUFFIXES):
            self.module = _exported_program(model_path, device)
        else:
            self.module = _torchscript(model_path, device)
        self._check()

    def _outputs(self, batch) -> Tuple["object", List["object"]]:
        """(embedding (B, d), [logits (B, C_l) per level, finest first]) for a normalised batch."""
        import torch

        levels = self.taxonomy.levels
        if self.session is not None:
            names = [output.name for output in self.session.get_outputs()]
            values = self.session.run(None, {self.session.get_inputs()[0].name: batch.float().cpu().numpy()})
            outputs = dict(zip(names, values)) if {"embedding", *levels} <= set(names) else values
            outputs = {k: torch.from_numpy(v) for k, v in outputs.items()} if isinstance(outputs, dict) \
                else [torch.from_numpy(v) for v in outputs]
        else:
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            outputs = self.module(batch)
        if isinstance(outputs, dict):
            missing = [key for key in ("embedding", *levels) if key not in outputs]
            if missing:
                raise EmbedError(f"{self.model_path} returns a dict without {', '.join(missing)}; it must hold "
                                 f"'embedding' and one logits tensor per level ({', '.join(levels)})")
            return outputs["embedding"], [outputs[level] for level in levels]
        if isinstance(outputs, torch.Tensor) or len(outputs) != 1 + len(levels):
            count = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
            raise EmbedError(f"{self.model_path} returns {count} tensor(s), but {self.taxonomy.source} lists "
                             f"{len(levels)} level(s) ({', '.join(levels)}): the model must return the embedding "
                             f"and then one logits tensor per level, finest first; {EXPORT_HINT}")
        return outputs[0], list(outputs[1:])

    def _check(self) -> None:
        """Run two blank images through the model and compare every output's shape with the sidecar."""
        import torch

        size = self.taxonomy.size
        blank = torch.zeros(2, 3, size, size, device=self.device)
        if self.channels_last and self.module is not None:
            try:
                self.module = self.module.to(memory_format=torch.channels_last)
                with torch.inference_mode():
                    self._outputs(blank)
            except Exception:  # noqa: BLE001 - e.g. a .view() that needs contiguous input: keep the default layout
                log.info("%s does not run channels-last; keeping the default memory layout", self.model_path)
                self.channels_last = False
                self.module = self.module.to(memory_format=torch.contiguous_format)
        try:
            with torch.inference_mode():
                embedding, logits = self._outputs(blank)
        except EmbedError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure of foreign model code becomes a clear message
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise EmbedError(f"{self.model_path} failed on a batch of shape (2, 3, {size}, {size}) (input.size "
                             f"{size} from {self.taxonomy.source}): {reason}") from None
        if embedding.ndim != 2 or embedding.shape[0] != 2 or embedding.shape[1] < 1:
            raise EmbedError(f"{self.model_path}: the embedding output has shape {tuple(embedding.shape)} for 2 "
                             f"images; expected (2, d)")
        for level, values, count in zip(self.taxonomy.levels, logits, self.taxonomy.counts):
            if tuple(values.shape) != (2, count):
                raise EmbedError(f"{self.model_path}: the logits of level '{level}' have shape "
                                 f"{tuple(values.shape)} for 2 images, but {self.taxonomy.source} lists {count} "
                                 f"classes for it; expected (2, {count}) (are the outputs in the order embedding, "
                                 f"{', '.join(self.taxonomy.levels)}?)")
        self.dim = int(embedding.shape[1])

    def embed_batch(self, batch):
        """(embedding (B, d), extras float32 (B, 2L): per-level class index, then probability; with
        `probabilities` then every class's softmax probability per level, finest first: (B, 2L + sum C_l))."""
        import torch

        embedding, logits = self._outputs(batch)
        index, probability = self.taxonomy.decode(logits)
        parts = [index.float(), probability]
        if self.probabilities:
            parts += [torch.softmax(values.float(), dim=1).to(index.device) for values in logits]
        return embedding.to(batch.device), torch.cat(parts, dim=1).to(batch.device)


def _exported_program(path: str, device: str):
    """The torch.export program at `path` as a module on `device` (exported in eval mode; it has no train/eval)."""
    import torch

    try:
        return torch.export.load(path).module().to(device)
    except Exception as error:  # noqa: BLE001 - torch raises several types for foreign or damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EmbedError(f"-fp {path}: not a torch.export program ({reason}); save one with "
                         f"torch.export.save(torch.export.export(model, (example,), dynamic_shapes=...), path) from "
                         f"a PyTorch at least as new as this one ({torch.__version__}); {EXPORT_HINT}") from None


def _torchscript(path: str, device: str):
    """The TorchScript module at `path` on `device`, in eval mode; EmbedError when it is not TorchScript."""
    import torch

    try:
        module = torch.jit.load(path, map_location=device)
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError/ValueError/pickle errors for foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EmbedError(f"-fp {path}: not a TorchScript model ({reason}); save the model with "
                         f"torch.jit.trace(model, example).save(path) or torch.jit.script(model).save(path) (a "
                         f"state dict or a pickled nn.Module cannot be loaded without its code), or export it to "
                         f".onnx; {EXPORT_HINT}") from None
    return module.eval()


def _onnx_session(path: str, device: str):
    """An onnxruntime session for `path`: the CUDA provider on a GPU when available, else the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise EmbedError(f"-fp {path}: running an ONNX model needs onnxruntime (pip install onnxruntime), or "
                         f"export the model to TorchScript instead") from None
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device.startswith("cuda"):
        log.warning("onnxruntime has no CUDA provider here: %s runs on the CPU (install onnxruntime-gpu, or export "
                    "the model to TorchScript to run it on %s)", path, device)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(path, options, providers=providers)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
        reason = str(error).strip().splitlines()[0]
        raise EmbedError(f"-fp {path}: not a usable ONNX model ({reason}); {EXPORT_HINT}") from None
