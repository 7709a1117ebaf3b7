"""Batching, ordering and normalisation shared by every backend.

A backend sets `preprocess` (embed.data.Preprocess: geometry in the decoding workers, uint8 tensors out; normalisation
on the device) and implements `embed_batch` (float tensor (B, 3, H, W) on its device -> tensor (B, d)); `embed_files`
does everything else once: parallel decoding, pinned memory on CUDA, skip-and-report, inference mode, bf16 autocast on
CUDA only, float32 output, L2 normalisation, row i = i-th decodable file, halving the batch on out-of-memory.
"""
from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from crop_cluster.embed import EmbedError, model_id

log = logging.getLogger(__name__)

# on_batch(indices, vectors, extras, bad): called after every model batch with the positions in `files` of the
# embedded images, their float32 (k, d) unit rows, their float32 (k, e) extras (None for backends without) and the
# [(position, reason)] of the undecodable ones (embed/cache.py).
BatchCallback = Callable[[List[int], np.ndarray, Optional[np.ndarray], List[Tuple[int, str]]], None]


@dataclass(frozen=True)
class EmbedResult:
    """embeddings: float32 (n_ok, d), L2-normalised; row k belongs to files[ok_index[k]].

    ok_index: int64 (n_ok,) positions in the input list, increasing; skipped: (path, reason) for the others.
    seconds: where the time went: 'decode' (waiting for decoded batches), 'model' (inference incl. transfers and,
    with resize 'device', fitting the crops there).
    extras: float32 (n_ok, e), what the backend outputs beside the embedding (e.g. the hierarchical backend's
    per-level predictions, embed/hierarchical.py), row k for files[ok_index[k]]; None for backends without.
    """

    embeddings: np.ndarray
    ok_index: np.ndarray
    skipped: List[Tuple[str, str]]
    seconds: Dict[str, float] = field(default_factory=dict)
    extras: Optional[np.ndarray] = None


class EmbeddingBackend(ABC):
    """Base class. Subclasses set `name`, assign `self.preprocess` in `__init__` and implement `embed_batch`.

    preprocess: embed.data.Preprocess; it runs in the decoding workers and on the device, so the model's
    preprocessing travels with the model and nothing outside embed/ builds one. runtime: what runs the model.
    """

    name = "base"
    runtime = "torch"

    def __init__(self, device: str, model_path: str):
        self.device = device
        self.model_path = model_path
        self.preprocess = None

    @property
    def model_id(self) -> str:
        """Recorded in embeddings.pkl and run.json as '<backend>:<model>', e.g. 'dino:facebook/dinov2-base'."""
        return model_id(self.name, self.model_path)

    @abstractmethod
    def embed_batch(self, batch):
        """float tensor (B, 3, H, W) on `self.device` -> tensor (B, d), or (tensor (B, d), extras tensor (B, e)) for
        a backend with outputs beside the embedding; normalisation (of the embedding only) happens in
        `embed_files`."""


# Decoding workers feeding a GPU run this much nicer than the process that launches the model, so that the GPU is
# never kept waiting for a CPU that the workers hold (measured on an H100 with 16 cores, bench/embed_gpu.py).
GPU_WORKER_NICENESS = 5


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_workers(device: str) -> int:
    """Decoding processes: none on small CPUs (the model needs the cores); feeding a GPU, one per core but one (up
    to 32): decoding and fitting JPEG crops takes ~4 ms of a core per image, so an H100 running DINOv2-B (~5 000
    images/s) needs every core it has."""
    cores = _usable_cores()
    if device.startswith("cuda"):
        return min(32, max(cores - 1, 0))
    return 0 if cores <= 2 else min(4, cores // 2)


def default_batch_size(device: str) -> int:
    """Images per model call: 32 on CPU (larger batches gain nothing there), 256 on a GPU."""
    return 256 if device.startswith("cuda") else 32


def _nicer_worker(_: int) -> None:
    """DataLoader worker_init_fn on CUDA: lower this decoding worker's priority (GPU_WORKER_NICENESS)."""
    try:
        os.nice(GPU_WORKER_NICENESS)
    except OSError:
        pass


class _BatchRunner:
    """Runs one loader batch through the model in sub-batches, halving them for good after an out-of-memory error."""

    def __init__(self, backend: EmbeddingBackend, batch_size: int):
        self.backend = backend
        self.size = batch_size

    def __call__(self, batch) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(float32 (B, d) unit rows, float32 (B, e) extras or None) for a uint8 batch on the device."""
        import torch

        on_cuda = self.backend.device.startswith("cuda")
        parts, extras, start = [], [], 0
        while start < batch.shape[0]:
            part = batch[start:start + self.size]
            try:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                    output = self.backend.embed_batch(self.backend.preprocess.normalise(part))
                vectors, extra = output if isinstance(output, tuple) else (output, None)
                parts.append(torch.nn.functional.normalize(vectors.float(), dim=1).cpu())
                if extra is not None:
                    extras.append(extra.float().cpu())
            except torch.cuda.OutOfMemoryError:
                if on_cuda:
                    torch.cuda.empty_cache()
                if self.size == 1:
                    raise EmbedError(f"out of memory on {self.backend.device} with a batch of one image "
                                     f"({self.backend.model_id}); free the GPU, or use -d cpu") from None
                self.size = max(1, self.size // 2)
                log.warning("out of memory on %s: continuing with batches of %d (give --batch_size %d to start "
                            "there)", self.backend.device, self.size, self.size)
                continue
            start += part.shape[0]
        return torch.cat(parts).numpy(), torch.cat(extras).numpy() if extras else None


def embed_files(backend: EmbeddingBackend, files: Sequence[str], batch_size: int = 32, num_workers: int = -1,
                progress: bool = True, on_batch: Optional[BatchCallback] = None,
                resize: Optional[str] = None) -> EmbedResult:
    """Embed `files` with `backend`: decode in `num_workers` processes (-1 = default), batches of `batch_size`.

    resize: who fits the crops to the model input (embed.resize.RESIZERS: 'pil', 'torch' in the workers, 'device'
    on the model's device, once checked against PIL there: embed.resize.device_resize_checked); None =
    embed.resize.default_resize of the backend's device. Files that cannot be decoded are listed in `skipped` with a reason and left out of `embeddings`.
    """
    import functools

    import torch
    from tqdm import tqdm

    from crop_cluster.embed.data import ImageDataset, collate
    from crop_cluster.embed.resize import default_resize, device_resize_checked

    if num_workers < 0:
        num_workers = default_num_workers(backend.device)
    on_cuda = backend.device.startswith("cuda")
    preprocess = backend.preprocess.with_resize(resize or default_resize(backend.device))
    if preprocess.resize == "device" and not device_resize_checked(preprocess, backend.device):
        preprocess = preprocess.with_resize("pil")        # its first use disagreed with PIL, or failed
    loader = torch.utils.data.DataLoader(
        ImageDataset(files, preprocess), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=functools.partial(collate, stack=preprocess.resize != "device"), pin_memory=on_cuda,
        worker_init_fn=_nicer_worker if on_cuda and num_workers and GPU_WORKER_NICENESS else None)
    run_batch = _BatchRunner(backend, batch_size)
    rows: List[np.ndarray] = []
    extra_rows: List[np.ndarray] = []
    ok_index: List[int] = []
    skipped: List[Tuple[str, str]] = []
    seconds = {"decode": 0.0, "model": 0.0}
    with tqdm(total=len(files), unit="img", desc="embedding", disable=not progress, dynamic_ncols=True) as bar, \
            torch.inference_mode():
        batches = iter(loader)
        while True:
            started = time.perf_counter()
            item = next(batches, None)
            seconds["decode"] += time.perf_counter() - started
            if item is None:
                break
            indices, batch, bad = item
            skipped.extend((files[i], reason) for i, reason in bad)
            vectors, extras = np.zeros((0, 0), np.float32), None
            if batch is not None:
                started = time.perf_counter()
                vectors, extras = run_batch(preprocess.to_device(batch, backend.device))
                seconds["model"] += time.perf_counter() - started
                rows.append(vectors)
                if extras is not None:
                    extra_rows.append(extras)
                ok_index.extend(indices)
            if on_batch is not None:
                on_batch(indices, vectors, extras, bad)
            bar.update(len(indices) + len(bad))
    dim = rows[0].shape[1] if rows else 0
    embeddings = np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, dim), np.float32)
    return EmbedResult(embeddings, np.asarray(ok_index, dtype=np.int64), skipped,
                       {name: round(value, 3) for name, value in seconds.items()},
                       np.concatenate(extra_rows) if extra_rows else None)
