"""report.html: the page's data document and the self-contained page built from template.html.

All data travels in one JSON `<script type="application/json">` block, escaped so that no value can close the
block or inject markup; the page's script builds the DOM with textContent/properties only (never innerHTML).
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from crop_cluster.naming import COLUMNS as REFERENCE_COLUMNS
from crop_cluster.outputs.atomic import atomic_open
from crop_cluster.outputs.report import campaign
from crop_cluster.outputs.report.review_order import ReviewOrder
from crop_cluster.outputs.report.suggestions import Suggestions
from crop_cluster.outputs.report.taxonomy import (IDENTIFIED, KEYS, handled_columns, identified_groups, identified_mask,
                                     namings, prediction_levels, predictions)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template.html")
CONTRACT = ("filename", "cluster", "cluster_size", "sim_to_centroid", "individual", "representative")


def script_json(document) -> str:
    """JSON text safe inside a <script> element: '<', '>', '&' and the JS line separators are \\u-escaped."""
    text = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _number(value) -> Optional[float]:
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 4)


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def run_key(filenames: Sequence[str], clusters: np.ndarray) -> str:
    """Identity of a partition (16 hex): the review state in the browser is stored under it, so reopening a report
    of the same clusters finds its review again and a report of other clusters starts empty."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update("\0".join(filenames).encode("utf-8", "surrogateescape"))
    digest.update(np.ascontiguousarray(clusters, dtype=np.int64).tobytes())
    return digest.hexdigest()


def report_document(table: pd.DataFrame, thumbnails: Sequence[Optional[str]], coordinates: np.ndarray,
                    info: Dict, digests: Optional[Sequence[str]] = None, order: Optional[ReviewOrder] = None,
                    suggestions: Optional[Suggestions] = None) -> Dict:
    """The page's data: one item per individual (its representative row), clusters largest first, the map.

    table: clusters.csv's rows (contract columns first, then metadata columns shown as tooltips; a classifier's
    columns, see taxonomy.py, add per-item predictions, cluster names and the identified crops' groups; the
    campaign's group, cluster_status and first_run columns add names, review states and what is new).
    thumbnails: per representative row (in table order), path relative to the page or None.
    coordinates: int (I, 2), 0..1000, per representative row. info: title, threshold, model, map_method.
    digests: content digest per table row ('' unknown), exported as the review file's `crop` column.
    order: review_order() of the representative rows (misplaced score, "more like this"); None leaves them out.
    suggestions: suggestions.suggest() over the representative rows (item indices), shown first; None: none.
    """
    reps = np.flatnonzero(table["representative"].to_numpy(dtype=bool))
    individual = table["individual"].to_numpy(dtype=np.int64)
    counts = np.bincount(individual, minlength=int(individual.max(initial=-1)) + 1)
    crops = counts[individual[reps]]
    handled = set(handled_columns(list(table.columns)))
    columns: List[str] = [c for c in table.columns
                          if c not in CONTRACT and c not in handled and c not in campaign.COLUMNS
                          and c not in REFERENCE_COLUMNS]          # names from references: shown by their own block
    meta = table[columns].iloc[reps].astype(object).to_numpy()
    filenames = table["filename"].astype(str).to_numpy()
    cluster = table["cluster"].to_numpy(dtype=np.int64)
    similarity = table["sim_to_centroid"].to_numpy(dtype=np.float64)
    digests = [""] * len(table) if digests is None else list(digests)
    others = _other_crops(individual, reps, filenames, digests)
    fresh = campaign.new_rows(table)
    items = []
    for k, row in enumerate(reps):
        item = {"f": filenames[row], "h": digests[row], "t": thumbnails[k], "s": _number(similarity[row]),
                "n": int(crops[k]), "c": int(cluster[row]), "m": [_text(v) for v in meta[k]]}
        url = file_url(filenames[row])
        if url is not None:
            item["u"] = url
        if k in others:
            item["x"] = others[k]
        if order is not None:
            item.update(q=_number(order.misplaced[k]), o=int(order.nearest_other[k]),
                        l=[int(j) for j in order.like[k] if j >= 0])
        if fresh is not None and fresh[row]:
            item["w"] = 1
        items.append(item)
    rep_cluster = cluster[reps]
    identified = identified_mask(table)[reps] & (rep_cluster < 0)   # shown in their own section, by taxon
    naming = namings(table)
    document = {"run": {"id": run_key(list(filenames), cluster), "title": info["title"], "rows": int(len(table)),
                        "individuals": int(reps.size), "clusters": int(np.unique(rep_cluster[rep_cluster >= 0]).size),
                        "not_clustered": int(((rep_cluster < 0) & ~identified).sum()),
                        "threshold": info["threshold"], "model": info["model"], "map_method": info["map_method"]},
                "columns": columns, "items": items,
                "clusters": _cluster_blocks(np.where(identified, -2, rep_cluster), similarity[reps], filenames[reps],
                                            crops, None if naming is None else naming[reps]),
                "map": {"x": coordinates[:, 0].tolist(), "y": coordinates[:, 1].tolist()}}
    levels = prediction_levels(list(table.columns))
    if levels:
        document["taxonomy"] = predictions(table, reps, levels)
        for item, predicted in zip(items, document["taxonomy"].pop("rows")):
            item["p"] = predicted
    campaign.annotate_blocks(document["clusters"], table, reps, fresh)
    if suggestions is not None:
        document["suggestions"] = [suggestion_entry(s) for s in suggestions.suggestions]
        document["run"]["suggestions"] = suggestions.counts
    if IDENTIFIED in table.columns:
        document["run"]["identified"] = int(identified.sum())
        document["identified"] = identified_groups(table, naming, reps, np.flatnonzero(identified), crops)
    return document


def file_url(filename: str) -> Optional[str]:
    """The original's file: URL when the page cannot derive it from the name itself, else None. The page derives
    "file://" + the name's parts through encodeURIComponent, which is right for an absolute ASCII POSIX path whose
    URL Python writes the same way (most names: a fifth of the page's data saved at 20 000 crops)."""
    url = Path(os.path.abspath(filename)).as_uri()
    if filename.isascii() and filename.startswith("/") and \
            url == "file://" + "/".join(quote(part, safe="!'()*~") for part in filename.split("/")):
        return None
    return url


def suggestion_entry(suggestion) -> Dict:
    """One suggestion in the page's data: k kind, i its pre-selected items, a anchor item (-1 none), v the items shown
    beside it (per entry of i for a merge), s similarity, p crop pairs, g expected gain, c the actions the same fix
    takes on the cards, w 1 when it is worth an action (c > 1: shown first), else 0."""
    return {"k": suggestion.kind, "i": suggestion.items.tolist(), "a": int(suggestion.anchor),
            "v": [list(map(int, shown)) for shown in suggestion.shown], "s": _number(suggestion.similarity),
            "p": int(suggestion.pairs), "g": round(float(suggestion.gain), 1),
            "c": round(float(suggestion.card_actions), 2), "w": int(suggestion.worth)}


def _other_crops(individual: np.ndarray, reps: np.ndarray, filenames: np.ndarray,
                 digests: Sequence[str]) -> Dict[int, List[List[str]]]:
    """Per individual with more than one crop (index into `reps`), its other crops as [filename, digest] pairs: the
    review file names every crop of a moved individual."""
    position = np.full(int(individual.max(initial=-1)) + 1, -1, dtype=np.int64)
    position[individual[reps]] = np.arange(reps.size)
    others: Dict[int, List[List[str]]] = {}
    is_rep = np.zeros(individual.size, dtype=bool)
    is_rep[reps] = True
    for row in np.flatnonzero(~is_rep).tolist():
        others.setdefault(int(position[individual[row]]), []).append([str(filenames[row]), digests[row]])
    return others


def _cluster_blocks(rep_cluster: np.ndarray, similarity: np.ndarray, filenames: np.ndarray, crops: np.ndarray,
                    naming: Optional[np.ndarray]) -> List[Dict]:
    """One block per cluster 0..K-1 (largest first, members by decreasing similarity), then -1 (not clustered,
    members by filename); all arrays per individual. rep_cluster: -2 for individuals shown elsewhere (identified).
    naming: str (I, 3) from taxonomy.namings, adds a cluster's name, taxon and level; None leaves them out."""
    blocks = []
    for cid in [*range(int(rep_cluster.max(initial=-1)) + 1), -1]:
        members = np.flatnonzero(rep_cluster == cid)
        if members.size == 0:
            continue
        if cid >= 0:
            members = members[np.argsort(-similarity[members], kind="stable")]
        else:
            members = members[np.argsort(filenames[members], kind="stable")]
        block = {"id": cid, "size": int(members.size), "rows": int(crops[members].sum()),
                 "cohesion": _number(similarity[members].mean()) if cid >= 0 else None, "members": members.tolist()}
        if naming is not None and cid >= 0:
            block.update(zip(KEYS, naming[members[0]].tolist()))
        blocks.append(block)
    return blocks


def write_html(path: str, document: Dict) -> None:
    """Fill template.html with the (escaped) title and data document and write it atomically."""
    with open(TEMPLATE, encoding="utf-8") as handle:
        page = handle.read()
    page = page.replace("{{TITLE}}", html.escape(document["run"]["title"]))
    page = page.replace("{{DATA}}", script_json(document))
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
