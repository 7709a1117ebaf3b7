"""Image loading for embedding: decode, fix orientation, flatten transparency, fit to the model's input as uint8;
failures become reasons, not crashes. `Preprocess` is how a model sees an image; it travels with the backend."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps

BACKGROUND_RGB = (255, 255, 255)


def load_rgb(path: str, draft: Optional[Tuple[int, str]] = None) -> Image.Image:
    """Open `path` as an RGB image: EXIF orientation applied, transparency composited onto white.

    draft: (size, geometry) of the model input; a JPEG much larger than that is decoded at 1/2, 1/4 or 1/8 scale
    (PIL `draft`, DCT scaling: several times faster) while its side that `geometry` fits to stays >= size.
    Raises OSError / ValueError (PIL's own) for unreadable, truncated or non-image files.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if draft is not None and image.format == "JPEG":
                size, geometry = draft
                scale = size / (max(image.size) if geometry == "pad" else min(image.size))
                if scale < 0.5:
                    image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
            image.load()
            image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: scale to 8 bits, never clip
        image = _grey16_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def _grey16_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) greyscale -> 8-bit 'L', scaled by 1/257 (full 16-bit range onto 0..255)."""
    values = np.asarray(image, dtype=np.float64)
    scale = 257.0 if values.max(initial=0) <= 65535 else values.max() / 255.0
    return Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8), "L")


def describe_error(error: BaseException) -> str:
    """One-line reason for skipped.csv, e.g. 'cannot decode image (UnidentifiedImageError: ...)'."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"cannot decode image ({type(error).__name__}: {text})" if text else f"cannot decode image ({type(error).__name__})"


GEOMETRIES = ("pad", "crop")


@dataclass(frozen=True)
class Preprocess:
    """How a model sees an image: geometry in the decoding workers (uint8), normalisation on the model's device.

    geometry: "pad" (default; measured best for specimen crops, see README "Crop geometry"): the whole crop is
    centred on a white square, which is resized to `size`; "crop": the shorter side is resized to
    `size` and the centre square is cut out (the ImageNet habit; cuts off long legs and antennae).
    mean, std: per channel, in 0..255 pixel units: the model input is (pixel - mean) / std.
    """

    size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    geometry: str = "pad"
    resample: int = Image.BICUBIC
    resize: str = "pil"

    def __post_init__(self) -> None:
        from crop_cluster.embed.resize import RESIZERS

        if self.geometry not in GEOMETRIES:
            raise ValueError(f"unknown geometry '{self.geometry}'; available: {', '.join(GEOMETRIES)}")
        if self.resize not in RESIZERS:
            raise ValueError(f"unknown resize '{self.resize}'; available: {', '.join(RESIZERS)}")

    @property
    def key(self) -> str:
        """Everything that changes the pixels a model sees, e.g. for cache keys: 'pad224;r3;m127,127,127;...'."""
        numbers = lambda values: ",".join(f"{v:.6g}" for v in values)  # noqa: E731
        return (f"{self.geometry}{self.size};r{self.resample};m{numbers(self.mean)};s{numbers(self.std)};"
                f"draft;white")

    def with_resize(self, resize: str) -> "Preprocess":
        """This preprocessing with the resize done by `resize` (embed.resize.RESIZERS): 'pil' (PIL in the decoding
        workers), 'torch' (torch in the workers, stage A) or 'device' (the workers only decode; `to_device` fits the
        batch on the model's device, stage B). A filter without a torch twin (embed.resize.TORCH_MODES) keeps PIL."""
        from dataclasses import replace

        from crop_cluster.embed.resize import TORCH_MODES, RESIZERS

        if resize not in RESIZERS:
            raise ValueError(f"unknown resize '{resize}'; available: {', '.join(RESIZERS)}")
        return replace(self, resize=resize if int(self.resample) in TORCH_MODES else "pil")

    def load(self, path: str):
        """uint8 tensor of the image at `path`: (3, size, size), or with resize 'device' the decoded crop at its own
        size (3, h, w); raises like `load_rgb`."""
        import torch

        image = load_rgb(path, (self.size, self.geometry))
        if self.resize == "pil":
            return torch.from_numpy(np.asarray(self.fit(image)).transpose(2, 0, 1).copy())
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, h, w) view of the (h, w, 3) copy
        if self.resize == "device":
            return pixels
        from crop_cluster.embed.resize import KERNELS, fit_tensor, torch_mode

        return fit_tensor(pixels, self.size, self.geometry, torch_mode(self.resample), KERNELS["torch"])

    def to_device(self, batch, device: str):
        """A collated batch -> uint8 (B, 3, size, size) on `device`: a stacked tensor is moved there; a list of
        crops at their own sizes (resize 'device') is fitted there by embed.resize.fit_batch."""
        if isinstance(batch, list):
            from crop_cluster.embed.resize import fit_batch, torch_mode

            return fit_batch(batch, self.size, self.geometry, torch_mode(self.resample), device)
        return batch.to(device, non_blocking=True)

    def fit(self, image: Image.Image) -> Image.Image:
        """RGB image -> RGB image of size x size with this geometry. "pad" pads to a square first and then resizes
        (the order lite0's threshold was calibrated with: on 33-px crops resizing first moves similarities by 0.03)."""
        width, height = image.size
        if self.geometry == "pad":
            side = max(width, height)
            if width > height and side != self.size:
                # The same pixels as resizing the padded square, faster: PIL resizes in two passes (horizontal,
                # then vertical, rounding to uint8 between them), and the horizontal pass of a white padding row is
                # a white row, so only the crop's own rows go through it before the vertical padding is added.
                rows = image.resize((self.size, height), self.resample)
                square = Image.new("RGB", (self.size, side), BACKGROUND_RGB)
                square.paste(rows, (0, (side - height) // 2))
                return square.resize((self.size, self.size), self.resample)
            if width != height:
                square = Image.new("RGB", (side, side), BACKGROUND_RGB)
                square.paste(image, ((side - width) // 2, (side - height) // 2))
                image = square
            return image if side == self.size else image.resize((self.size, self.size), self.resample)
        scale = self.size / min(width, height)
        new = (max(self.size, round(width * scale)), max(self.size, round(height * scale)))
        image = image if new == image.size else image.resize(new, self.resample)
        left, top = (new[0] - self.size) // 2, (new[1] - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def normalise(self, batch):
        """uint8 tensor (B, 3, H, W) on any device -> float32 (pixel - mean) / std on the same device."""
        import torch

        mean = torch.tensor(self.mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        # in place on one fresh float copy: the same values as (batch.float() - mean) / std, ~3x faster on a CPU
        return batch.to(torch.float32, copy=True).sub_(mean).div_(std)


class ImageDataset:
    """Map-style dataset over `files`: item i is (i, uint8 tensor (3, H, W)) or (i, reason) when file i cannot be
    decoded. `preprocess` travels with the backend (embed/base.py) and runs in the decoding workers."""

    def __init__(self, files: Sequence[str], preprocess: Preprocess):
        self.files = list(files)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[int, Union["object", str]]:
        try:
            return index, self.preprocess.load(self.files[index])
        except Exception as error:  # any decoder failure is a reason to skip this one file, never to stop the run
            return index, describe_error(error)


def collate(items: List[Tuple[int, object]], stack: bool = True):
    """Split a list of dataset items into (indices, batch or None, [(index, reason), ...]); batch: the tensors
    stacked, or with stack=False (crops of different sizes, resize 'device') the list of them."""
    import torch

    good = [(i, x) for i, x in items if not isinstance(x, str)]
    bad = [(i, x) for i, x in items if isinstance(x, str)]
    batch = (torch.stack([x for _, x in good]) if stack else [x for _, x in good]) if good else None
    return [i for i, _ in good], batch, bad
