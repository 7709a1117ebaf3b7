"""report.html: a self-contained, offline review page of one run (thumbnails in OUT/report/)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

FOLDER = "report"


@dataclass(frozen=True)
class Written:
    """What writing the report did, for run.json: seconds per step (thumbnails, map, order, digests, suggestions,
    html) and the suggestions' counts per kind (suggestions.Suggestions.counts)."""

    seconds: Dict[str, float]
    suggestions: Dict[str, int]


def write_report(out_folder: str, table: pd.DataFrame, embedding: np.ndarray, threshold: float,
                 model: str, digests: Optional[Sequence[str]] = None, forest=None,
                 individual: Optional[np.ndarray] = None, rejections: Optional[pd.DataFrame] = None) -> Written:
    """Write OUT/report.html and its thumbnails OUT/report/*.jpg for the rows of clusters.csv.

    table: clusters.csv's rows (a classifier's optional columns: see taxonomy.py; the campaign's: campaign.py);
    embedding: float32 (n, d), row i = table row i. digests: content digest per row (the embedding cache's key);
    None: the table's `crop` column, else each file is hashed. forest: the run's clustering.forest.Forest over its
    individuals, with individual: int64 (m <= n,) the forest's node of table rows 0..m-1 (None: the suggestions
    build their own forest over the representatives). rejections: remembered rejections of earlier suggestions
    (DataFrame digest, other, kind; campaign store), so they are not proposed again.
    """
    from crop_cluster.outputs.report.html import report_document, write_html
    from crop_cluster.outputs.report.projection import kept_projection
    from crop_cluster.outputs.report.review_order import review_order
    from crop_cluster.outputs.report.suggestions import suggest_for_report
    from crop_cluster.outputs.report.thumbnails import make_thumbnails

    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    reps = np.flatnonzero(table["representative"].to_numpy(dtype=bool))
    names = make_thumbnails(table["filename"].astype(str).to_numpy()[reps].tolist(), os.path.join(out_folder, FOLDER))
    thumbnails = [None if name is None else f"{FOLDER}/{name}" for name in names]
    seconds["thumbnails"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    coordinates, method = kept_projection(embedding[reps], os.path.join(out_folder, FOLDER))
    seconds["map"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    order = review_order(embedding[reps], table["cluster"].to_numpy(dtype=np.int64)[reps])
    seconds["order"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    if digests is None:
        digests = table["crop"].astype(str).tolist() if "crop" in table.columns else \
            [_digest(name) for name in table["filename"].astype(str)]
    seconds["digests"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    suggestions = suggest_for_report(table, embedding, reps, order, threshold, forest, individual, digests,
                                     rejections)
    seconds["suggestions"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    title = os.path.basename(os.path.normpath(os.path.abspath(out_folder)))
    document = report_document(table, thumbnails, coordinates,
                               {"title": title, "threshold": round(float(threshold), 6), "model": model,
                                "map_method": method}, digests, order, suggestions)
    from crop_cluster.outputs.report.naming import add_suggestions   # names from references: evidence, accept

    add_suggestions(document["clusters"], table, reps, os.path.join(out_folder, FOLDER), FOLDER)
    write_html(os.path.join(out_folder, "report.html"), document)
    seconds["html"] = round(time.perf_counter() - start, 3)
    return Written(seconds, suggestions.counts)


def _digest(path: str) -> str:
    """The crop's content digest (as the embedding cache keys it), '' when it can no longer be read."""
    from crop_cluster.dedup.exact import file_digest

    try:
        return file_digest(path)
    except OSError:
        return ""
