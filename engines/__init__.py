"""Engines: where the heavy work (embedding, the similarity graph's tiles) runs; never what it computes.

`local` is this process with its GPU or CPU (embed.cache.embed_with_cache, clustering.forest.spanning_forest);
`ray` runs the same decoder, models, kernels and float32 re-scoring as Ray tasks and actors on a Ray cluster
(engines/ray_engine.py, the only module that calls Ray). The pipeline calls `embed` and `forest` below with plain
values; both engines return the same types and, up to float32 rounding, the same numbers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from crop_cluster.errors import CropClusterError

ENGINES = {
    "local": "this process, on its GPU or CPU (default)",
    "ray": "a Ray cluster (--ray_address or RAY_ADDRESS; a local Ray when neither is given)",
}
RAY_INSTALL = "bash install.sh --ray"
SHARED_FOLDER = "ray_shared"   # default --shared_dir: OUT/ray_shared


class EngineError(CropClusterError, RuntimeError):
    """The engine cannot run (Ray missing or unreachable, a worker's output not visible to the driver); the
    message says how to fix it."""


@dataclass(frozen=True)
class Engine:
    """Where the heavy work runs. name: a key of ENGINES; address: the Ray cluster ('host:port', 'auto'; None: the
    RAY_ADDRESS environment variable, else a local Ray started for this run); shared_dir: a folder every node
    reads and writes (the graph's tile forests and the embedding manifest; `--shared_dir`)."""

    name: str = "local"
    address: Optional[str] = None
    shared_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise EngineError(f"unknown engine '{self.name}'; available: {', '.join(ENGINES)}")
        if self.name == "local" and self.address:
            raise EngineError("--ray_address applies to --engine ray; add --engine ray or drop --ray_address")

    def describe(self) -> Dict:
        """For run.json: the engine's name, and for ray its address and shared folder as given."""
        if self.name == "local":
            return {"name": "local"}
        return {"name": self.name, "address": self.address or os.environ.get("RAY_ADDRESS") or "local",
                "shared_dir": self.shared_dir}


def require_ray() -> None:
    """Raise EngineError with the install command when Ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise EngineError(f"--engine ray needs Ray, which is not installed here: run `{RAY_INSTALL}` (or pip install "
                          f"'crop-cluster[ray]'), or use --engine local") from None


def embed(engine: Engine, cache, files: Sequence[str], digests: Sequence[str], backend: str,
          from_pretrained: Optional[str], device: str, batch_size: Optional[int] = None, num_workers: int = -1,
          progress: bool = True, resize: Optional[str] = None):
    """embed.cache.CachedEmbeddings for `files` (contents `digests`, hex): cached vectors are reused and new ones
    cached. backend/from_pretrained/device: as `-e`, `-fp`, `-d` (each Ray actor loads its own copy of the model);
    resize: as `--resize` (local engine; Ray's decoding tasks fit crops with PIL)."""
    if engine.name == "ray":
        require_ray()
        from crop_cluster.engines.ray_engine import ray_embed

        return ray_embed(engine, cache, files, digests, backend, from_pretrained, device, batch_size, progress)
    from crop_cluster.embed import load_backend
    from crop_cluster.embed.cache import embed_with_cache
    from crop_cluster.embed.device import resolve_device

    return embed_with_cache(cache, files, digests,
                            lambda: load_backend(backend, resolve_device(device), from_pretrained),
                            batch_size, num_workers, progress, resize)


def forest(engine: Engine, embeddings, threshold: float, device: str = "cpu", stats: Optional[Dict] = None,
           progress: bool = False):
    """clustering.forest.Forest: the maximum spanning forest of the pairs of rows of `embeddings` (float32 (n, d),
    L2-normalised) with cosine >= threshold. device: as `-d` ('auto', 'cpu', 'cuda', 'cuda:N'; on Ray anything but
    'cpu' means the cluster's GPUs when it has some); stats: filled for run.json."""
    if engine.name == "ray":
        require_ray()
        from crop_cluster.engines.ray_engine import ray_forest

        return ray_forest(engine, embeddings, threshold, device, stats, progress=progress)
    from crop_cluster.clustering.forest import spanning_forest
    from crop_cluster.embed.device import resolve_device

    return spanning_forest(embeddings, threshold, resolve_device(device), stats=stats)
