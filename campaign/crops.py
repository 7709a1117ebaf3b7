"""The crops a run works on: the campaign's current crops and this run's inputs, in an order fixed by content.

Every run computes its answer over the whole current crop set of the campaign: a full run's set is its inputs (the
update of an empty campaign), `--add` keeps the campaign's current crops and adds the inputs, `--review` alone
works on the campaign's current crops. So that the answer depends on the set only, never on the order in which
crops arrived, the stages see the rows sorted by content digest, then by path (`canonical`); clusters.csv lists
them in the campaign's order (stored crops first, in the order they were first stored, then the inputs in input
order).

A file read again with another content than the campaign stored for it is a new crop version: the run uses the new
content, the old one leaves the current set (its decisions stay in the store, keyed by that content) and the log
says so.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from crop_cluster.crops import Crops

log = logging.getLogger("crop-cluster")


def shown(path: str, here: Optional[str] = None) -> str:
    """A stored (absolute) path as clusters.csv shows it: relative to the working folder (`here`, default the
    current one) when it lies under it."""
    here = here or os.getcwd()
    inside = os.path.join(here, "")
    return path[len(inside):] if path.startswith(inside) else path


@dataclass(frozen=True)
class RunCrops:
    """The run's crops in canonical order (absolute filenames, individuals = identical contents). shown: the
    filename clusters.csv shows per row; rank: int64 (n,) each row's position in clusters.csv's order; seen: bool
    (n,) read from this run's inputs; changed: (path, stored digest, digest now) of files whose content changed."""

    crops: Crops
    shown: List[str]
    rank: np.ndarray
    seen: np.ndarray
    changed: List[Tuple[str, str, str]]

    @property
    def order(self) -> np.ndarray:
        """int64 (n,): the rows in clusters.csv's order."""
        return np.argsort(self.rank, kind="stable")

    def keep(self, mask: np.ndarray) -> "RunCrops":
        """The rows where `mask` (bool (n,)) holds, still in canonical order."""
        return RunCrops(self.crops.keep(mask), [name for name, k in zip(self.shown, mask) if k], self.rank[mask],
                        self.seen[mask], self.changed)


def kept_stored(files: pd.DataFrame, inputs: Sequence[str], digests: Sequence[str]
                ) -> Tuple[pd.DataFrame, List[Tuple[str, str, str]]]:
    """The campaign's current files (DataFrame path (absolute), digest) that this run's inputs do not read again,
    and the (path, stored digest, digest now) of input files whose content changed since the campaign stored them.
    inputs: the run's input files (absolute), digests: their contents."""
    given = dict(zip(inputs, digests))
    again = files["path"].isin(list(given)).to_numpy()
    changed = [(path, old, given[path]) for path, old in zip(files["path"][again], files["digest"][again])
               if given[path] and given[path] != old]
    return files[~again].reset_index(drop=True), changed


def canonical(filenames: Sequence[str], digests: Sequence[str], embedding: np.ndarray, model: str,
              predictions: Optional[np.ndarray], shown_names: Sequence[str], rank: np.ndarray,
              seen: np.ndarray, changed: List[Tuple[str, str, str]]) -> RunCrops:
    """Sort the rows by (digest, path) and group identical contents (one individual, the first row of each content
    its representative and the row the stages embed). Per row (n,): filenames absolute, digests (never ''),
    embedding float32 (n, d), predictions float32 (n, 2L) or None, shown_names, rank: int64 output position, seen.
    A row without a digest ('': its file could not be read) is a content of its own."""
    n = len(filenames)
    keys = [d or "path:" + f for d, f in zip(digests, filenames)] if not all(digests) else list(digests)
    try:
        keys = np.asarray(keys, dtype="S")         # bytes compare fastest; digests are hex
    except UnicodeEncodeError:                     # a path key with other characters
        keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable") if n else np.zeros(0, np.int64)
    first = np.r_[True, keys[order][1:] != keys[order][:-1]] if n else np.zeros(0, dtype=bool)
    if n and not first.all():                 # identical contents: by path among themselves
        group = np.cumsum(first) - 1
        paths = np.asarray(filenames)[order]
        order = order[np.lexsort((paths, group))]
    sorted_digests = [digests[k] for k in order.tolist()]
    individual = np.cumsum(first) - 1
    crops = Crops(filenames=[filenames[k] for k in order.tolist()], embedding=embedding[order],
                  individual=individual.astype(np.int64), representative=first.copy(), distinct=first.copy(),
                  model=model, predictions=None if predictions is None else predictions[order],
                  digests=sorted_digests)
    return RunCrops(crops, [shown_names[k] for k in order.tolist()], np.asarray(rank, dtype=np.int64)[order],
                    np.asarray(seen, dtype=bool)[order], changed)


def report_changed(changed: List[Tuple[str, str, str]]) -> None:
    """Say which files now hold another content than the campaign stored for them."""
    if changed:
        log.warning("%d input files changed content since the campaign stored them (e.g. %s): each is a new crop "
                    "version; the old content leaves the current crops (its decisions stay in the store)",
                    len(changed), shown(changed[0][0]))
