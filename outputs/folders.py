"""`-gs`: copy each image into OUT/clusters/<cluster>/ (or not-clustered/); originals are never moved or changed.

Names in one folder never collide (case-blind, for every OS): equal basenames get 'stem__2.ext', 'stem__3.ext'.
Every name fits the file system's limit on one name (PC_NAME_MAX, 255 bytes on ext4, XFS, APFS and NTFS): a longer
one keeps the head of its stem, the suffix and the extension. An original that cannot be read (deleted or moved
since a campaign recorded it, unreadable) is left out of the folders and reported; the run goes on.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from crop_cluster.outputs.atomic import output_error, replace_folder

NOT_CLUSTERED = "not-clustered"
IDENTIFIED = "identified"
NAME_MAX = 255            # bytes in one file name where the file system does not say (os.pathconf)
MISSING_EXAMPLES = 20     # originals that could not be read, listed in run.json (all are counted)
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')

log = logging.getLogger("crop-cluster")


@dataclass(frozen=True)
class ClusterFolders:
    """What `write_cluster_folders` did. counts: files copied per folder name; missing: (original, reason) of every
    kept row whose original could not be read."""

    counts: Dict[str, int]
    missing: List[Tuple[str, str]]

    def manifest(self) -> Dict:
        """The run.json entry: folders, files copied, originals missing (a count, and the first few paths)."""
        return {"folders": len(self.counts), "copied": sum(self.counts.values()), "missing": len(self.missing),
                "missing_examples": [path for path, _ in self.missing[:MISSING_EXAMPLES]]}


def name_limit(folder: str) -> int:
    """The longest file name, in bytes, that the file system holding `folder` accepts (NAME_MAX when unknown)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):     # no pathconf (Windows), or the file system does not say
        return NAME_MAX


def _fitted(stem: str, suffix: str, limit: int) -> str:
    """stem + suffix, the stem cut (at a character) until the name takes at most `limit` bytes."""
    budget = limit - len(os.fsencode(suffix))
    while stem and len(os.fsencode(stem)) > budget:
        stem = stem[:-1]
    return stem + suffix


def safe_folder_name(name: str, limit: int = NAME_MAX) -> str:
    """`name` usable as one folder name on every OS: separators and reserved characters become '_', at most
    `limit` bytes."""
    return _fitted(_UNSAFE.sub("_", name).strip(" ."), "", limit) or "_"


def _free_name(name: str, used: Set[str], limit: int = NAME_MAX) -> str:
    """`name` if unused in its folder, else 'stem__2.ext', 'stem__3.ext', ... (case-insensitive, for every OS);
    each at most `limit` bytes (the stem cut short)."""
    stem, ext = os.path.splitext(name)
    number = 1
    candidate = _fitted(stem, ext, limit)
    while candidate.lower() in used:
        number += 1
        candidate = _fitted(stem, f"__{number}{ext}", limit)
    used.add(candidate.lower())
    return candidate


def write_cluster_folders(out_folder: str, filenames: Sequence[str], clusters: np.ndarray,
                          keep: np.ndarray, identified: Optional[Sequence[str]] = None) -> ClusterFolders:
    """Copy filenames[i] for every i with keep[i] into OUT/clusters/<clusters[i]>/ (-1 -> not-clustered/).

    Builds the tree beside the target and swaps it in, so a previous run's folders are replaced whole. keep: bool
    (n,), e.g. representatives only for `-kp`. identified: per row the taxon a classifier identified it as ('' for
    none); such rows go to identified/<taxon>/ instead. An original that cannot be read is left out, logged and
    listed in the result; an error writing a copy raises OutputError naming it (the previous tree stays).
    """
    target = os.path.join(out_folder, "clusters")
    staging = tempfile.mkdtemp(prefix=".clusters.", dir=out_folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the folder users browse follows their umask
    limit = name_limit(staging)
    used: Dict[str, Set[str]] = {}
    counts: Dict[str, int] = {}
    missing: List[Tuple[str, str]] = []
    try:
        for index in np.flatnonzero(keep):
            source = filenames[index]
            folder = NOT_CLUSTERED if clusters[index] < 0 else str(int(clusters[index]))
            if identified is not None and identified[index]:
                folder = os.path.join(IDENTIFIED, safe_folder_name(identified[index], limit))
            if folder not in used:
                os.makedirs(os.path.join(staging, folder))
                used[folder] = set()
            name = _free_name(os.path.basename(source), used[folder], limit)
            try:
                shutil.copy2(source, os.path.join(staging, folder, name))
            except OSError as error:
                if error.filename != source:          # the copy's side (disk full, ...): stop, naming it
                    raise output_error(error, os.path.join(target, folder, name)) from error
                used[folder].discard(name.lower())
                missing.append((source, error.strerror or str(error)))
                continue
            counts[folder] = counts.get(folder, 0) + 1
        for folder in set(used) - set(counts):       # made for originals that all turned out missing
            os.rmdir(os.path.join(staging, folder))
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if missing:
        path, reason = missing[0]
        log.warning("-gs: %d originals could not be read and are not in %s (e.g. %s: %s); they stay in the "
                    "campaign: put them back at those paths to have them copied again", len(missing), target, path,
                    reason)
    return ClusterFolders(counts, missing)
