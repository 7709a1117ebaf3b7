"""Image loading for embedding: decode, fix orientation, flatten transparency; failures become reasons, not crashes."""
from __future__ import annotations

import warnings
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps

BACKGROUND_RGB = (255, 255, 255)


def load_rgb(path: str) -> Image.Image:
    """Open `path` as an RGB image: EXIF orientation applied, transparency composited onto white.

    Raises OSError / ValueError (PIL's own) for unreadable, truncated or non-image files.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: scale to 8 bits, never clip
        image = _grey16_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _grey16_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) greyscale -> 8-bit 'L', scaled by 1/257 (full 16-bit range onto 0..255)."""
    values = np.asarray(image, dtype=np.float64)
    scale = 257.0 if values.max(initial=0) <= 65535 else values.max() / 255.0
    return Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8), "L")


def describe_error(error: BaseException) -> str:
    """One-line reason for skipped.csv, e.g. 'cannot decode image (UnidentifiedImageError: ...)'."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"cannot decode image ({type(error).__name__}: {text})" if text else f"cannot decode image ({type(error).__name__})"


class ImageDataset:
    """Map-style dataset over `files`: item i is (i, tensor) or (i, reason) when file i cannot be decoded.

    `transform` maps an RGB PIL image to a tensor (3, H, W); it travels with the backend (embed/base.py).
    """

    def __init__(self, files: Sequence[str], transform: Callable):
        self.files = list(files)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[int, Union["object", str]]:
        try:
            return index, self.transform(load_rgb(self.files[index]))
        except Exception as error:  # any decoder failure is a reason to skip this one file, never to stop the run
            return index, describe_error(error)


def collate(items: List[Tuple[int, object]]):
    """Split a list of dataset items into (indices, stacked tensor or None, [(index, reason), ...])."""
    import torch

    good = [(i, x) for i, x in items if not isinstance(x, str)]
    bad = [(i, x) for i, x in items if isinstance(x, str)]
    batch = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], batch, bad
