"""Fitting decoded crops to a model's input with torch instead of PIL: the same geometry and kernel, less CPU time.

`torch.nn.functional.interpolate(mode="bicubic"|"bilinear", antialias=True)` implements PIL's resampling filters
(support scaled with the reduction, normalised weights, a = -0.5 for bicubic). Two ways to run it:
  - "torch" (stage A): in the decoding workers, on the CPU, with torch's vectorised uint8 kernel (1.6-4x faster than
    PIL's resize for 100-420 px crops); `Preprocess.load` returns the fitted (3, S, S) tensor as with PIL.
  - "device" (stage B): the workers only decode; the crops travel at their own size and `fit_batch` pads and resizes
    them on the model's device in two float32 passes with PIL's rounding to uint8 between them (CUDA has no uint8
    antialiased kernel), the same arithmetic on every device.
Measured against PIL (tests/test_resize.py, bench/embed.py "parity"): the float32 passes within +-1 per pixel; the
uint8 kernel within +-1 except about one value in a million at +-2 (10 of the 86 real and example crops: its 14-bit
fixed-point weights against PIL's 22-bit ones; an error of 1 in the first pass grows through bicubic's lobes); lite0
embeddings at cosine >= 0.9999 of PIL's for both. Stage A misses the +-1 bar, so it has its own embedding cache
(`cache_variant`); stage B shares PIL's.
Only bicubic and bilinear resampling have a torch twin; a preprocessing with another filter stays on PIL.
Stage B is the CUDA default but no test machine has a GPU: its first use on a device checks it against PIL on five
drawn crops (`device_resize_checked`) and falls back to PIL when it fails or disagrees (crop_cluster/fallbacks.py).
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Sequence

RESIZERS = ("pil", "torch", "device")
KERNELS = {"torch": "uint8", "device": "float32"}  # resize -> the interpolation arithmetic it runs
TORCH_MODES = {2: "bilinear", 3: "bicubic"}  # PIL.Image.BILINEAR, PIL.Image.BICUBIC -> interpolate mode
WHITE = 255


def default_resize(device: str) -> str:
    """'device' (stage B) when the model runs on a GPU, else 'pil'.

    On a GPU the model runs in bf16 autocast, which moves embeddings far more than torch's resize does (cosine
    >= 0.9999 to PIL's), so nothing reproducible is lost there. On a CPU the model runs in float32 and PIL keeps
    every embedding, hence every clusters.csv, as it was: torch's resize moves a pair that sits within 1e-4 of the
    threshold across it (measured on the example's crops: 0.81997 -> 0.82010 at -th 0.82); `--resize torch` is the
    faster choice there when that does not matter."""
    return "device" if device.startswith("cuda") else "pil"


def cache_variant(resize: Optional[str]) -> str:
    """What a resize adds to the embedding cache's key: 'torch-uint8' for stage A, whose pixels can differ from
    PIL's by 2 (so its embeddings must not mix with PIL's), '' for 'pil', 'device' and None (within +-1 of PIL)."""
    return "torch-uint8" if resize == "torch" else ""


def torch_mode(resample: int) -> str:
    """interpolate's mode for a PIL resampling filter; ValueError for the filters torch does not implement."""
    try:
        return TORCH_MODES[int(resample)]
    except KeyError:
        raise ValueError(f"PIL resampling filter {resample} has no antialiased torch twin; use resize 'pil'") from None


def _interpolate(pixels, height: int, width: int, mode: str, kernel: str):
    """uint8 (B, 3, h, w) -> uint8 (B, 3, height, width): PIL's separable resize (horizontal pass first, rounded to
    uint8, then vertical). kernel 'uint8': torch's uint8 kernel in one call (CPU only); 'float32': two float32
    passes with rounding (any device)."""
    import torch
    import torch.nn.functional as F

    if pixels.shape[-2:] == (height, width):
        return pixels
    if kernel == "uint8":
        return F.interpolate(pixels.contiguous(memory_format=torch.channels_last), size=(height, width), mode=mode,
                             antialias=True, align_corners=False)
    values = pixels.float()
    if values.shape[-1] != width:
        values = F.interpolate(values, size=(values.shape[-2], width), mode=mode, antialias=True,
                               align_corners=False).round_().clamp_(0, 255)
    if values.shape[-2] != height:
        values = F.interpolate(values, size=(height, width), mode=mode, antialias=True,
                               align_corners=False).round_().clamp_(0, 255)
    return values.to(torch.uint8)


@contextlib.contextmanager
def _one_thread(on_cpu: bool):
    """Resize a crop on one CPU thread: a 40-420 px image gains nothing from torch's intra-op threads, and on a
    loaded machine their barrier costs 30-40 ms per crop (measured on 2 shared cores: 44 ms with 2 threads, 1.2 ms
    with one). Setting the thread count is a cheap runtime call; the previous count is restored."""
    if not on_cpu:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit_tensor(pixels, size: int, geometry: str, mode: str, kernel: str = "uint8"):
    """uint8 (3, h, w) on any device -> uint8 (3, size, size) on that device, with embed.data.Preprocess.fit's
    geometry: "pad" centres the crop on a white square and resizes it ((side - h) // 2 above, as PIL's paste);
    "crop" resizes the shorter side to `size` and cuts out the centre square. kernel: as for `_interpolate` (the
    default is stage A's; 'uint8' needs a CPU tensor)."""
    with _one_thread(pixels.device.type == "cpu"):
        return _fit(pixels.unsqueeze(0), size, geometry, mode, kernel)[0].contiguous()


def _fit(images, size: int, geometry: str, mode: str, kernel: str):
    """fit_tensor for a stack of crops of one shape: uint8 (B, 3, h, w) -> uint8 (B, 3, size, size)."""
    import torch

    count, _, height, width = images.shape
    if geometry == "pad":
        side = max(width, height)
        if width > height and side != size:
            # as in Preprocess.fit: the horizontal pass of a white row is white, so only the crop's rows take it
            rows = _interpolate(images, height, size, mode, kernel)
            square = torch.full((count, 3, side, size), WHITE, dtype=torch.uint8, device=images.device)
            top = (side - height) // 2
            square[:, :, top:top + height] = rows
            return _interpolate(square, size, size, mode, kernel)
        if width != height:
            square = torch.full((count, 3, side, side), WHITE, dtype=torch.uint8, device=images.device)
            top, left = (side - height) // 2, (side - width) // 2
            square[:, :, top:top + height, left:left + width] = images
            images = square
        return _interpolate(images, size, size, mode, kernel)
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    images = _interpolate(images, new_h, new_w, mode, kernel)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return images[:, :, top:top + size, left:left + size]


def fit_batch(crops: Sequence, size: int, geometry: str, mode: str, device: str):
    """Stage B: decoded crops (uint8 (3, h_k, w_k) tensors on the host, any sizes) -> uint8 (B, 3, size, size) on
    `device`, each fitted as by `fit_tensor` with the float32 passes; crops of one shape are fitted together in one
    call."""
    import torch

    out = torch.empty((len(crops), 3, size, size), dtype=torch.uint8, device=device)
    groups: Dict[tuple, List[int]] = {}
    for position, crop in enumerate(crops):
        groups.setdefault(tuple(crop.shape), []).append(position)
    with _one_thread(torch.device(device).type == "cpu"):
        _fit_groups(crops, groups, out, size, geometry, mode, device)
    return out


def _fit_groups(crops: Sequence, groups: Dict[tuple, List[int]], out, size: int, geometry: str, mode: str,
                device: str) -> None:
    """fit_batch's work: each group of same-shape crops fitted in one call into its rows of `out`."""
    import torch

    for positions in groups.values():
        stacked = crops[positions[0]].unsqueeze(0) if len(positions) == 1 else \
            torch.stack([crops[p] for p in positions])
        fitted = _fit(stacked.to(device, non_blocking=True), size, geometry, mode, KERNELS["device"])
        if len(positions) == 1:
            out[positions[0]] = fitted[0]
        else:
            out[torch.tensor(positions, device=device)] = fitted


# --- the first-use check of stage B (crop_cluster/fallbacks.py) ----------------------------------------------------
CHECK_MAX_LEVELS = 2        # a check crop's pixels may differ from PIL's by at most this many grey levels ...
CHECK_MEAN_LEVELS = 0.01    # ... and by this much on average (measured on CPU: <= 1 and <= 5e-5 at 48-518 px; a
                            # resize without antialiasing: 93 and 0.47; bilinear for bicubic: 40 and 1.2)


def _check_crops(size: int):
    """Five drawn RGB crops (PIL images) around `size`: smaller and larger, wide and tall, one already square."""
    from PIL import Image, ImageDraw

    shapes = [(size // 3 + 1, size // 2 + 7), (size * 2 // 3 + 5, size // 5 + 3), (size * 5 // 4, size + 17),
              (size, size), (size // 10 + 3, size * 2)]
    crops = []
    for k, (height, width) in enumerate(shapes):
        image = Image.new("RGB", (width, height), (WHITE,) * 3)
        draw = ImageDraw.Draw(image)
        draw.ellipse([width * 0.1, height * 0.1, width * 0.9, height * 0.9], fill=(200, 60 + 40 * k, 40))
        draw.line([0, 0, width, height], fill=(20, 20, 20), width=2)
        crops.append(image)
    return crops


def device_resize_disagreement(preprocess, device: str) -> Optional[str]:
    """None when `fit_batch` on `device` fits the check crops as PIL does (`preprocess.fit`, embed.data.Preprocess)
    within CHECK_MAX_LEVELS and CHECK_MEAN_LEVELS; else what differs. Raises what the device raises."""
    import numpy as np
    import torch

    crops = _check_crops(preprocess.size)
    fitted = fit_batch([torch.from_numpy(np.array(crop)).permute(2, 0, 1) for crop in crops], preprocess.size,
                       preprocess.geometry, torch_mode(preprocess.resample), device).cpu().numpy()
    for crop, got in zip(crops, fitted):
        expected = np.asarray(preprocess.fit(crop), dtype=np.int16).transpose(2, 0, 1)
        error = np.abs(got.astype(np.int16) - expected)
        if error.max() > CHECK_MAX_LEVELS or error.mean() > CHECK_MEAN_LEVELS:
            return (f"differs from PIL on a {crop.width}x{crop.height} check crop (up to {int(error.max())} grey "
                    f"levels, {float(error.mean()):.3f} on average; allowed {CHECK_MAX_LEVELS} and "
                    f"{CHECK_MEAN_LEVELS})")
    return None


def device_resize_checked(preprocess, device: str) -> bool:
    """True when stage B may fit crops on `device` for this preprocessing: its first use in this process checks it
    against PIL (`device_resize_disagreement`); a failure or a disagreement means PIL in the decoding workers, with a
    warning and a run.json `fallbacks` entry (crop_cluster/fallbacks.py)."""
    from crop_cluster.fallbacks import fast_path_ok

    return fast_path_ok(f"--resize device ({preprocess.geometry} {preprocess.size} px)", device,
                        lambda: device_resize_disagreement(preprocess, device), "PIL (--resize pil)")
