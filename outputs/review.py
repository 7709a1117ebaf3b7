"""Apply an expert's review (review.csv exported from report.html) to a run's clusters.

review.csv has the columns cluster,group,note, one row per reviewed cluster:
- group = a name: the cluster belongs to that group; all clusters with the same name are merged into one;
- group = -1: the cluster is "not a group" and is dissolved (its individuals become -1, not clustered);
- group empty: only a note (the cluster is kept as it is).
Other columns are ignored (report.html adds cluster_name, for the reader, when the run has a classifier's names).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from crop_cluster.errors import CropClusterError


NOT_A_GROUP = "-1"
COLUMNS = ("cluster", "group", "note")


class ReviewError(CropClusterError, ValueError):
    """A review.csv that cannot be applied; the message names the file and how to fix it."""


@dataclass(frozen=True)
class Review:
    """groups: cluster id -> group name; dissolved: cluster ids marked "not a group"; notes: cluster id -> note."""

    groups: Dict[int, str]
    dissolved: Tuple[int, ...]
    notes: Dict[int, str]


def read_review(path: str, n_clusters: int) -> Review:
    """Read and validate review.csv against a run with clusters 0..n_clusters-1.

    Raises ReviewError for a missing or unreadable file, missing columns, non-integer or unknown cluster ids and
    clusters listed twice.
    """
    fix = ("export it again with the 'Export review' button of report.html from the same run, or write a CSV with "
           "the columns cluster,group,note (group -1 = not a group)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise ReviewError(f"--review {path}: no such file; {fix}") from None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise ReviewError(f"--review {path}: not a readable CSV ({error}); {fix}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("cluster", "group") if c not in frame.columns]
    if missing:
        raise ReviewError(f"--review {path}: missing column(s) {', '.join(missing)} (found: "
                          f"{', '.join(frame.columns) or 'none'}); {fix}")
    notes_column = frame["note"] if "note" in frame.columns else pd.Series([""] * len(frame), dtype=str)
    groups: Dict[int, str] = {}
    dissolved: List[int] = []
    notes: Dict[int, str] = {}
    seen = set()
    for line, (raw, group, note) in enumerate(zip(frame["cluster"], frame["group"], notes_column), start=2):
        text = raw.strip()
        if not text.lstrip("-").isdigit():
            raise ReviewError(f"--review {path}, line {line}: cluster '{raw}' is not a cluster number; {fix}")
        cluster = int(text)
        if not 0 <= cluster < n_clusters:
            raise ReviewError(f"--review {path}, line {line}: cluster {cluster} does not exist in this run "
                              f"(clusters 0..{n_clusters - 1}); was the review made on a report of another run or "
                              f"threshold? Re-run with the same embeddings and -th as the reviewed report")
        if cluster in seen:
            raise ReviewError(f"--review {path}, line {line}: cluster {cluster} is listed twice; keep one row")
        seen.add(cluster)
        group = group.strip()
        if group == NOT_A_GROUP:
            dissolved.append(cluster)
        elif group:
            groups[cluster] = group
        if note.strip():
            notes[cluster] = note.strip()
    return Review(groups=groups, dissolved=tuple(sorted(dissolved)), notes=notes)


def apply_review(review: Review, clusters: np.ndarray) -> Tuple[np.ndarray, List[str]]:
    """Merge and dissolve clusters as reviewed.

    clusters: int64 (I,), one per individual, 0..K-1 or -1. Returns (group id per individual int64 (I,): the
    smallest cluster id of its group, its own cluster id when unreviewed, -1 when dissolved or not clustered — not
    renumbered; group name per individual, '' when none).
    """
    target = np.arange(int(clusters.max(initial=-1)) + 1, dtype=np.int64)
    first_of_group: Dict[str, int] = {}
    for cluster in sorted(review.groups):
        target[cluster] = first_of_group.setdefault(review.groups[cluster], cluster)
    target[list(review.dissolved)] = -1
    merged = np.where(clusters >= 0, target[np.maximum(clusters, 0)], -1)
    names = np.array([""] + [review.groups.get(c, "") for c in range(target.size)], dtype=object)
    group = names[np.where(merged >= 0, clusters + 1, 0)]
    return merged, group.tolist()


def reviewed_threshold(folder: str) -> Optional[float]:
    """The threshold recorded in `folder`/run.json (the run whose report was reviewed), None when unavailable."""
    try:
        with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
            value = json.load(handle)["parameters"]["threshold"]
        return float(value)
    except (OSError, ValueError, KeyError, TypeError):
        return None
