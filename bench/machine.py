"""What a benchmark ran on, for its results JSON: the machine (CPU, cores, memory, GPU) and package versions.

The benchmarks put the repository on sys.path first (they import the project), so `outputs` is importable here.
"""
from __future__ import annotations

import os
import platform
from typing import Dict, Iterable, Optional


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def usable_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine(device: Optional[str] = None) -> Dict:
    """cores, cpu, memory_gb, python, platform; with a CUDA `device` also gpu, gpu_memory_gb and cuda (else gpu None).
    Imports torch only for a CUDA device."""
    found: Dict = {"cores": usable_cores(), "cpu": cpu_name(),
                   "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                   "python": platform.python_version(), "platform": platform.platform(), "gpu": None}
    if device and device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        found.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return found


def versions(names: Iterable[str]) -> Dict[str, str]:
    """Installed version of each distribution in `names` (those not installed are left out)."""
    from crop_cluster.outputs.manifest import package_versions

    return package_versions(names)
