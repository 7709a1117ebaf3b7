"""Names from references in report.html: the machine's suggestion beside a cluster, with its evidence crop.

Reads the optional ref_* columns of clusters.csv (naming/run.py). Each cluster block whose most central member has a
suggestion (`ref_status` named, rolled_up, or conflict: another name than the review's) gets `ref`: the name, its
rank, cosine, margin, the runner-up, the status and the evidence crop's thumbnail (OUT/report/evidence/) and path.
A cluster whose members carry two or more different suggestions (a cluster that mixes names, named individual by
individual; or --name_level individual or crop) gets none: accepting one would name all of it; its rows keep their
names in clusters.csv.
The page shows it with Accept (the name becomes the group's name, exported like a typed name) and Reject (hidden on
this page, nothing exported). Without the columns the document has no `ref` keys.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List

import numpy as np
import pandas as pd

from crop_cluster.naming import COLUMNS
from crop_cluster.outputs.report.thumbnails import make_thumbnails

SUGGESTED = ("named", "rolled_up", "conflict")
EVIDENCE_FOLDER = "evidence"


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if not math.isfinite(value) else round(value, 4)


def add_suggestions(blocks: List[Dict], table: pd.DataFrame, reps: np.ndarray, report_folder: str,
                    page_folder: str) -> int:
    """Add `ref` to the cluster blocks (id >= 0; members index `reps`, most central first) in place and write the
    evidence thumbnails into `report_folder`/evidence (`page_folder`: that folder as the page names it). Returns the
    number of suggestions."""
    evidence_folder = os.path.join(report_folder, EVIDENCE_FOLDER)
    if "ref_status" not in table.columns:
        if os.path.isdir(evidence_folder):
            make_thumbnails([], evidence_folder)                  # an earlier run's evidence, stale now
        return 0
    text = {name: table[name].astype(object).where(table[name].notna(), "").astype(str).to_numpy()
            for name in COLUMNS if name in table.columns}
    chosen = []
    for block in blocks:
        if block["id"] < 0 or not block["members"]:
            continue
        rows = reps[np.asarray(block["members"], dtype=np.int64)]
        suggested = {text["ref_name"][r] for r in rows.tolist() if text["ref_status"][r] in SUGGESTED}
        row = int(rows[0])
        if text["ref_status"][row] in SUGGESTED and text["ref_name"][row] and len(suggested) == 1:
            chosen.append((block, row))
    files = sorted({text["ref_nearest"][row] for _, row in chosen if text["ref_nearest"][row]})
    thumbnails = dict(zip(files, make_thumbnails(files, evidence_folder)))
    for block, row in chosen:
        evidence = text["ref_nearest"][row]
        thumbnail = thumbnails.get(evidence)
        block["ref"] = {"name": text["ref_name"][row], "rank": text["ref_rank"][row],
                        "score": _number(table["ref_score"].iloc[row]),
                        "margin": _number(table["ref_margin"].iloc[row]), "second": text["ref_second"][row],
                        "status": text["ref_status"][row], "file": evidence,
                        "evidence": f"{page_folder}/{EVIDENCE_FOLDER}/{thumbnail}" if thumbnail else None}
    return len(chosen)
