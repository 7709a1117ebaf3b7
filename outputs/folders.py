"""`-gs`: copy each image into OUT/clusters/<cluster>/ (or not-clustered/); originals are never moved or changed."""
from __future__ import annotations

import os
import shutil
import tempfile
import re
from typing import Dict, Optional, Sequence, Set

import numpy as np

from crop_cluster.outputs.atomic import replace_folder

NOT_CLUSTERED = "not-clustered"
IDENTIFIED = "identified"
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def safe_folder_name(name: str) -> str:
    """`name` usable as one folder name on every OS: separators and reserved characters become '_'."""
    return _UNSAFE.sub("_", name).strip(" .") or "_"


def _free_name(name: str, used: Set[str]) -> str:
    """`name` if unused in its folder, else 'stem__2.ext', 'stem__3.ext', ... (case-insensitive, for every OS)."""
    stem, ext = os.path.splitext(name)
    candidate, number = name, 1
    while candidate.lower() in used:
        number += 1
        candidate = f"{stem}__{number}{ext}"
    used.add(candidate.lower())
    return candidate


def write_cluster_folders(out_folder: str, filenames: Sequence[str], clusters: np.ndarray,
                          keep: np.ndarray, identified: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Copy filenames[i] for every i with keep[i] into OUT/clusters/<clusters[i]>/ (-1 -> not-clustered/).

    Builds the tree beside the target and swaps it in, so a previous run's folders are replaced whole.
    Returns {folder name: files copied}. keep: bool (n,), e.g. representatives only for `-kp`. identified: per row
    the taxon a classifier identified it as ('' for none); such rows go to identified/<taxon>/ instead.
    """
    target = os.path.join(out_folder, "clusters")
    staging = tempfile.mkdtemp(prefix=".clusters.", dir=out_folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the folder users browse follows their umask
    used: Dict[str, Set[str]] = {}
    counts: Dict[str, int] = {}
    try:
        for index in np.flatnonzero(keep):
            folder = NOT_CLUSTERED if clusters[index] < 0 else str(int(clusters[index]))
            if identified is not None and identified[index]:
                folder = os.path.join(IDENTIFIED, safe_folder_name(identified[index]))
            if folder not in used:
                os.makedirs(os.path.join(staging, folder))
                used[folder] = set()
            name = _free_name(os.path.basename(filenames[index]), used[folder])
            shutil.copy2(filenames[index], os.path.join(staging, folder, name))
            counts[folder] = counts.get(folder, 0) + 1
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts
