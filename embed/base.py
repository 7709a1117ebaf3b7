"""Batching, ordering and normalisation shared by every backend.

A backend implements `transform` (PIL RGB image -> float32 tensor (3, H, W)) and `embed_batch` (tensor (B, 3, H, W)
on its device -> tensor (B, d)); `embed_files` does everything else once: parallel decoding, skip-and-report,
inference mode, bf16 autocast on CUDA only, float32 output, L2 normalisation, row i = i-th decodable file.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class EmbedResult:
    """embeddings: float32 (n_ok, d), L2-normalised; row k belongs to files[ok_index[k]].

    ok_index: int64 (n_ok,) positions in the input list, increasing; skipped: (path, reason) for the others.
    """

    embeddings: np.ndarray
    ok_index: np.ndarray
    skipped: List[Tuple[str, str]]


class EmbeddingBackend(ABC):
    """Base class. Subclasses set `name`, assign `self.transform` in `__init__` and implement `embed_batch`.

    transform: picklable callable, PIL RGB image -> float32 tensor (3, H, W); it runs in the decoding workers, so the
    model's preprocessing travels with the model and nothing outside embed/ builds one.
    """

    name = "base"

    def __init__(self, device: str, model_path: str):
        self.device = device
        self.model_path = model_path
        self.transform = None

    @property
    def model_id(self) -> str:
        """Recorded in embeddings.pkl and run.json as '<backend>:<model>', e.g. 'dino:facebook/dinov2-base'."""
        return f"{self.name}:{self.model_path}"

    @abstractmethod
    def embed_batch(self, batch):
        """float tensor (B, 3, H, W) on `self.device` -> tensor (B, d); normalisation happens in `embed_files`."""


def default_num_workers(device: str) -> int:
    """Decoding processes: none on small CPUs (the model needs the cores), up to 8 feeding a GPU."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return min(8, max(cores - 1, 0))
    return 0 if cores <= 2 else min(4, cores // 2)


def embed_files(backend: EmbeddingBackend, files: Sequence[str], batch_size: int = 32, num_workers: int = -1,
                progress: bool = True) -> EmbedResult:
    """Embed `files` with `backend`: decode in `num_workers` processes (-1 = default), batches of `batch_size`.

    Files that cannot be decoded are listed in `skipped` with a reason and left out of `embeddings`.
    """
    import torch
    from tqdm import tqdm

    from embed.data import ImageDataset, collate

    if num_workers < 0:
        num_workers = default_num_workers(backend.device)
    loader = torch.utils.data.DataLoader(
        ImageDataset(files, backend.transform), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate, pin_memory=backend.device.startswith("cuda"))
    on_cuda = backend.device.startswith("cuda")
    rows: List[np.ndarray] = []
    ok_index: List[int] = []
    skipped: List[Tuple[str, str]] = []
    with tqdm(total=len(files), unit="img", desc="embedding", disable=not progress, dynamic_ncols=True) as bar, \
            torch.inference_mode():
        for indices, batch, bad in loader:
            skipped.extend((files[i], reason) for i, reason in bad)
            if batch is not None:
                batch = batch.to(backend.device, non_blocking=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                    vectors = backend.embed_batch(batch)
                vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
                rows.append(vectors.cpu().numpy())
                ok_index.extend(indices)
            bar.update(len(indices) + len(bad))
    dim = rows[0].shape[1] if rows else 0
    embeddings = np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, dim), np.float32)
    return EmbedResult(embeddings, np.asarray(ok_index, dtype=np.int64), skipped)
