"""How far torch's resize (embed/resize.py) is from PIL's: per-pixel differences of the model inputs and cosine
similarities of the embeddings, on real files. Used by tests/test_resize.py and the benchmarks (bench/embed.py,
bench/gpu_all.py); plain dicts out, for the bench JSON.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def pixel_parity(files: Sequence[str], preprocess, device: str = "cpu", kernel: str = "float32") -> Dict:
    """Model inputs of `files` fitted by PIL against embed.resize.fit_tensor on `device` with `kernel` ('float32':
    stage B's passes, any device; 'uint8': stage A's kernel, CPU only; see embed.resize.KERNELS). Returns
    max_abs_diff (0..255), share_pixels_diff_gt1 (of all values), crops_with_diff_gt1, files."""
    import torch

    from crop_cluster.embed.data import load_rgb
    from crop_cluster.embed.resize import fit_tensor, torch_mode

    worst, above, crops_above, values = 0, 0, 0, 0
    for path in files:
        image = load_rgb(path, (preprocess.size, preprocess.geometry))
        reference = torch.from_numpy(np.asarray(preprocess.fit(image)).transpose(2, 0, 1).astype(np.int16))
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).to(device)
        fitted = fit_tensor(pixels, preprocess.size, preprocess.geometry, torch_mode(preprocess.resample), kernel)
        diff = (fitted.cpu().to(torch.int16) - reference).abs()
        worst = max(worst, int(diff.max()))
        above += int((diff > 1).sum())
        crops_above += bool((diff > 1).any())
        values += diff.numel()
    return {"files": len(files), "max_abs_diff": worst, "share_pixels_diff_gt1": above / max(values, 1),
            "crops_with_diff_gt1": crops_above}


def embedding_parity(backend, files: Sequence[str], resizes: Sequence[str] = ("torch", "device"),
                     batch_size: int = 32) -> Dict:
    """Embeddings of `files` with resize 'pil' against each of `resizes` (embed.base.embed_files, main process):
    {resize: {min_cosine, median_cosine, identical_rows, files}}."""
    from crop_cluster.embed.base import embed_files

    reference = embed_files(backend, files, batch_size, num_workers=0, progress=False, resize="pil").embeddings
    report = {}
    for resize in resizes:
        other = embed_files(backend, files, batch_size, num_workers=0, progress=False, resize=resize).embeddings
        cosine = np.sum(reference.astype(np.float64) * other, axis=1)
        report[resize] = {"files": len(files), "min_cosine": float(cosine.min(initial=1.0)),
                          "median_cosine": float(np.median(cosine)) if cosine.size else 1.0,
                          "identical_rows": int(np.all(reference == other, axis=1).sum())}
    return report
