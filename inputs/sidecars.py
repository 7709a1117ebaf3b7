"""Read each crop's detection box from BiodivX JSON sidecars (``-mf/--meta_folder``).

Schema (BiodivX XPRIZE pipeline, as read by ``get_crop_features`` in ``cluster.py`` of
github.com/asgersvenning/BiodivX-XPRIZE-Clustering, and described in that repository's
``example/metadata/metadata_<image>_UUID_<uuid>.md``):

* a crop file is named ``crop_<image>_CROPNUMBER_<n>_UUID_<uuid>.<ext>`` (``IMAGENAME_<image>``
  may stand in for ``crop_<image>``), e.g. ``crop_20230908001617-00-06_CROPNUMBER_0_UUID_x.png``:
  crop ``n`` of source image ``20230908001617-00-06``;
* the meta folder holds one JSON file per source image, named ``metadata_<image>_UUID_<uuid>.json``;
  the original picks the first ``.json`` file in the folder whose name contains ``<image>``;
* that JSON object's ``boxes`` is a list with one ``[x1, y1, x2, y2]`` per crop number, in pixels of
  the source image (origin top left). Other keys (``contours``, ``confs``, ``classes``, ``scales``,
  ``identifier``, ``image_path``, ``image_width``, ``image_height``, ``mask_width``,
  ``mask_height``) are not used here.

Differences from the original, chosen to fail loudly instead of silently:

* ``<image>`` is everything between ``crop_`` (or ``IMAGENAME_``) and ``_CROPNUMBER_``, so image
  names containing ``_`` (e.g. ``2023-09-08_00-16-17``) stay whole;
* a sidecar matches when ``<image>`` occurs in its file stem as whole ``_``-separated parts
  (``img1`` does not match ``metadata_img10_UUID_x.json``); only ``*.json`` files directly in the
  folder are considered (any case of the suffix);
* when several sidecars match, or anything else is wrong, the crop keeps an unknown box and the
  problem is reported; nothing is ever fatal except a meta folder that is not a folder.

Problems are ``(path, reason)`` pairs. A sidecar that cannot be used at all (unreadable, not JSON,
no ``boxes`` list) is reported once under its own path; per-crop problems (name not in the crop
pattern, no sidecar, several sidecars, crop number out of range, malformed box) are reported under
the crop's path as given.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from crop_cluster.errors import CropClusterError


CROP_PATTERN = "crop_<image>_CROPNUMBER_<n>_UUID_<uuid>.<ext>"
_NUMBER = re.compile(r"[0-9]+")


class SidecarError(CropClusterError, ValueError):
    """The meta folder does not exist, is not a folder, or cannot be listed."""


@dataclass(frozen=True, eq=False)
class SidecarResult:
    """Detection boxes of n crops.

    frame: source image id per crop (the ``<image>`` part of its name); crops cut from the same
        frame share it; None when the name does not follow the crop pattern.
    crop_number: int64 array of shape (n,), the crop's index into its frame's boxes; -1 unknown.
    boxes: float64 array of shape (n, 4), ``x1, y1, x2, y2`` in source-image pixels with
        x1 <= x2 and y1 <= y2; NaN rows where unknown.
    problems: (path, reason) pairs, see the module docstring.
    """

    frame: List[Optional[str]]
    crop_number: np.ndarray
    boxes: np.ndarray
    problems: List[Tuple[str, str]]


def parse_crop_name(filename: str) -> Optional[Tuple[str, int]]:
    """Return (image id, crop number) from a crop file's basename, or None when it does not follow
    ``crop_<image>_CROPNUMBER_<n>[_...].<ext>`` (or ``IMAGENAME_<image>_CROPNUMBER_<n>...``)."""
    filename = os.fspath(filename)
    if "CROPNUMBER" not in filename:             # most names: no split needed
        return None
    stem = os.path.splitext(os.path.basename(filename))[0]
    parts = stem.split("_")
    if "CROPNUMBER" not in parts:
        return None
    k = parts.index("CROPNUMBER")
    if k + 1 >= len(parts) or not _NUMBER.fullmatch(parts[k + 1]):
        return None
    before = parts[:k]
    marker = "IMAGENAME" if "IMAGENAME" in before else "crop"
    if marker not in before:
        return None
    image = "_".join(before[before.index(marker) + 1:])
    if not image:
        return None
    return image, int(parts[k + 1])


class _SidecarIndex:
    """The ``*.json`` files of one folder, found by the image id their stem contains."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._by_part: Dict[str, Dict[str, str]] = {}  # stem part -> {path: "_stem_"}
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() != ".json" or not entry.is_file():
                    continue
                for part in set(stem.split("_")):
                    self._by_part.setdefault(part, {})[entry.path] = f"_{stem}_"

    def find(self, image: str) -> Tuple[Optional[str], str]:
        """(the one sidecar path for ``image``, "") or (None, why there is none)."""
        # Only sidecars holding the image's rarest part can match; this keeps the lookup short even
        # when every sidecar shares a part such as the day in 2023-09-08_00-16-17.
        candidates = min((self._by_part.get(part, {}) for part in image.split("_")), key=len)
        needle = f"_{image}_"
        matches = sorted(path for path, wrapped in candidates.items() if needle in wrapped)
        if len(matches) == 1:
            return matches[0], ""
        if not matches:
            return None, (
                f"no sidecar for image '{image}' in {self.folder}: expected a .json file named like "
                f"metadata_{image}_UUID_<uuid>.json; add it or drop -mf/--meta_folder"
            )
        names = ", ".join(os.path.basename(p) for p in matches[:3]) + (", ..." if len(matches) > 3 else "")
        return None, (
            f"{len(matches)} sidecars in {self.folder} match image '{image}' ({names}); "
            "keep one .json file per source image"
        )


def _load_boxes(path: str) -> Tuple[Optional[list], str]:
    """(the ``boxes`` list of one sidecar, "") or (None, why it cannot be used)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as error:
        return None, f"cannot read the sidecar ({error.strerror or error}); check its permissions"
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        return None, f"not valid UTF-8 JSON ({error}); rewrite it with the detector or remove it"
    if not isinstance(data, dict) or "boxes" not in data:
        return None, "has no 'boxes' key; expected a JSON object with 'boxes': [[x1, y1, x2, y2], ...]"
    if not isinstance(data["boxes"], list):
        return None, f"'boxes' is a {type(data['boxes']).__name__}, not a list of [x1, y1, x2, y2]"
    return data["boxes"], ""


def _box(value: object) -> Optional[np.ndarray]:
    """``[x1, y1, x2, y2]`` as float64 with x1 <= x2, y1 <= y2, or None when malformed."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except OverflowError:  # an integer too large for a float
        return None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None
    return np.array([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], dtype=np.float64)


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_boxes(filenames: Sequence[str], meta_folder: str) -> SidecarResult:
    """Read the detection box of each crop from the sidecars in ``meta_folder``.

    filenames: n crop paths; only their basenames are parsed.
    meta_folder: folder holding the ``.json`` sidecars (not searched recursively).
    Each sidecar is read at most once however many crops share it. Raises SidecarError when
    ``meta_folder`` does not exist or is not a folder; every other problem is reported in the result.
    """
    folder = os.fspath(meta_folder)
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise SidecarError(
            f"-mf/--meta_folder {folder} {what}; give the folder that holds the detector's "
            "metadata_<image>_UUID_<uuid>.json files, or leave the option out."
        )
    try:
        index = _SidecarIndex(folder)
    except OSError as error:
        raise SidecarError(
            f"-mf/--meta_folder {folder} cannot be listed ({error.strerror or error}); check its permissions."
        ) from error
    n = len(filenames)
    frame: List[Optional[str]] = [None] * n
    crop_number = np.full(n, -1, dtype=np.int64)
    boxes = np.full((n, 4), np.nan, dtype=np.float64)
    problems: List[Tuple[str, str]] = []
    sidecar_of: Dict[str, Tuple[Optional[str], str]] = {}  # image id -> (path, why none)
    boxes_of: Dict[str, Tuple[Optional[list], str]] = {}  # sidecar path -> (boxes, why none)
    for i, name in enumerate(filenames):
        name = os.fspath(name)
        parsed = parse_crop_name(name)
        if parsed is None:
            problems.append((name, f"name does not follow {CROP_PATTERN}; no frame or box for it"))
            continue
        image, number = parsed
        frame[i] = image
        crop_number[i] = number
        if image not in sidecar_of:
            sidecar_of[image] = index.find(image)
        path, reason = sidecar_of[image]
        if path is None:
            problems.append((name, reason))
            continue
        if path not in boxes_of:
            boxes_of[path] = _load_boxes(path)
            if boxes_of[path][0] is None:
                problems.append((path, boxes_of[path][1]))
        listed = boxes_of[path][0]
        if listed is None:
            continue
        if number >= len(listed):
            problems.append((name, f"crop number {number} is out of range: {path} lists {len(listed)} boxes"))
            continue
        box = _box(listed[number])
        if box is None:
            problems.append((name, f"box {number} in {path} is malformed ({_short(listed[number])}); "
                                   "expected [x1, y1, x2, y2] as four finite numbers"))
            continue
        boxes[i] = box
    return SidecarResult(frame=frame, crop_number=crop_number, boxes=boxes, problems=problems)
