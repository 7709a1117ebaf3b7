"""Resolve the `-d/--device` option to a torch device string."""
from __future__ import annotations

import os
import re
import shutil

from crop_cluster.embed import EmbedError

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Where an NVIDIA driver shows itself (Linux device nodes and /proc entry, WSL2's GPU node); without any of them and
# without nvidia-smi, CUDA cannot work, and `-d auto` answers 'cpu' without importing torch (~1.5 s).
_NVIDIA_TRACES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg")


def cuda_may_exist() -> bool:
    """False only when this machine surely has no NVIDIA driver (cheap: no torch import)."""
    return any(os.path.exists(path) for path in _NVIDIA_TRACES) or shutil.which("nvidia-smi") is not None


def resolve_device(spec: str) -> str:
    """'auto' -> 'cuda:0' when a CUDA GPU is usable, else 'cpu'; 'cuda' -> 'cuda:0'; 'cuda:N' checked to exist.

    Raises EmbedError when a CUDA device is asked for but is not available, naming `-d cpu` as the fix.
    """
    spec = spec.strip().lower()
    if not _DEVICE_PATTERN.match(spec):
        raise EmbedError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N")
    if spec == "cpu" or (spec == "auto" and not cuda_may_exist()):
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda:0" if available else "cpu"
    if not available:
        raise EmbedError(f"device '{spec}' was asked for but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use -d cpu, or -d auto to pick the GPU when there is one")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        raise EmbedError(f"device '{spec}' does not exist: torch sees {torch.cuda.device_count()} GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return f"cuda:{index}"
