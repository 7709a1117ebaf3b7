"""Small JPEG thumbnails of the crops for report.html, written into OUT/report/; originals are only read."""
from __future__ import annotations

import hashlib
import os
from typing import List, Optional, Sequence

from PIL import Image, ImageOps

from crop_cluster.outputs.atomic import output_error

THUMBNAIL_PX = 128
QUALITY = 80


def thumbnail_name(path: str) -> str:
    """File name of `path`'s thumbnail: a hash of its absolute path, size and modification time (a changed
    original gets a new thumbnail; an unchanged one is reused by the next run)."""
    stat = os.stat(path)
    key = f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(key, digest_size=10).hexdigest() + ".jpg"


def _write_thumbnail(source: str, target: str, size: int) -> None:
    """Decode `source` (its errors propagate as they are: an unreadable original) and write the thumbnail to
    `target` (an OSError there is OutputError: the disk is full or the folder not writable)."""
    with Image.open(source) as image:
        image.draft("RGB", (size, size))               # JPEG: decode at reduced scale, much faster
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.BILINEAR)
    temporary = f"{target}.{os.getpid()}.tmp"  # a rebuildable cache: renamed into place, not fsynced (10x faster)
    try:
        image.save(temporary, "JPEG", quality=QUALITY)
        os.replace(temporary, target)
    except OSError as error:
        raise output_error(error, target) from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def make_thumbnails(filenames: Sequence[str], folder: str, size: int = THUMBNAIL_PX) -> List[Optional[str]]:
    """Write a thumbnail (longest side `size` px) of every file into `folder`; returns, per file, the
    thumbnail's name inside `folder`, or None when the file can no longer be read (OutputError when a thumbnail
    cannot be written). Thumbnails already present
    (same file, size and mtime) are reused; other .jpg files in `folder` (earlier runs) are removed."""
    os.makedirs(folder, exist_ok=True)
    names: List[Optional[str]] = []
    for path in filenames:
        try:
            name = thumbnail_name(path)
            if not os.path.isfile(os.path.join(folder, name)):
                _write_thumbnail(path, os.path.join(folder, name), size)
        except (OSError, ValueError, Image.DecompressionBombError):
            name = None
        names.append(name)
    keep = set(names)
    for stale in os.listdir(folder):
        if stale.endswith((".jpg", ".tmp")) and stale not in keep:
            os.remove(os.path.join(folder, stale))
    return names
