"""`--species_list FILE`: the taxa that may occur (a regional checklist), applied to references and to a
hierarchical model's predictions.

The file is a GBIF checklist or species-list download (tab- or comma-separated with a header holding one of
NAME_COLUMNS; its higher-rank columns kingdom .. genus are read too) or plain text with one name a line (`#`
comments and blank lines allowed). Names are compared without authorship and case: "Agrotis exclamationis
(Linnaeus, 1758)" is "agrotis exclamationis".

A name is on the list when it is listed, or its taxonomy's species is; a name above species ("Agrotis sp.", a genus
or family, "Geometridae sp. 37") when that taxon holds a listed taxon (a listed binomial's genus, a value of the
list's rank columns, or the taxon itself).
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from typing import FrozenSet, Optional, Sequence, Tuple

import numpy as np

from crop_cluster.naming import RANKS, NamingError

NAME_COLUMNS = ("canonicalName", "species", "scientificName", "acceptedScientificName", "verbatimScientificName",
                "name", "taxon")
EPITHET = re.compile(r"^[a-z][a-z-]*$")
RANK_MARKERS = {"subsp.", "ssp.", "var.", "f.", "forma", "subvar."}


@dataclass(frozen=True)
class SpeciesList:
    """names: canonical listed names; above: canonical taxa that hold a listed name (genera of listed binomials,
    the list's rank columns); source: the file."""

    names: FrozenSet[str]
    above: FrozenSet[str]
    source: str

    def holds(self, name: str, lineage: Optional[Tuple[str, ...]] = None) -> bool:
        """Whether `name` (with its (7,) taxonomy tuple kingdom .. species, or None) is on the list."""
        canonical = canonical_name(name)
        if canonical in self.names:
            return True
        if lineage is not None and lineage[-1] and canonical_name(lineage[-1]) in self.names:
            return True
        words = canonical.split(" ")
        above_species = len(words) == 1 or (lineage is not None and not lineage[-1] and any(lineage))
        return above_species and words[0] in self.names | self.above


def canonical_name(name: str) -> str:
    """Lower-case name without authorship or rank markers: the first word and the lower-case epithets after it."""
    words = str(name).replace("\u00a0", " ").split()
    if not words:
        return ""
    kept = [words[0].casefold()]
    for word in words[1:]:
        if word in RANK_MARKERS:
            continue
        if not EPITHET.match(word):
            break
        kept.append(word)
    return " ".join(kept)


def read_species_list(path: str) -> SpeciesList:
    """Read the list (module docstring); NamingError naming the file when it is missing, unreadable or empty."""
    if not os.path.isfile(path):
        raise NamingError(f"--species_list {path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise NamingError(f"--species_list {path}: not readable UTF-8 text ({error})") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise NamingError(f"--species_list {path}: lists no name")
    delimiter = "\t" if "\t" in lines[0] else "," if "," in lines[0] else None
    header = [cell.strip() for cell in lines[0].split(delimiter)] if delimiter else []
    column = next((c for c in NAME_COLUMNS if c in header), None)
    names, above = set(), set()
    if column is None:                                  # one name a line (authorships may hold commas)
        if delimiter is not None and len(header) > 1 and all(re.match(r"^\w+$", cell) for cell in header):
            raise NamingError(f"--species_list {path}: a table without a name column; give one of "
                              f"{', '.join(NAME_COLUMNS)} (a GBIF checklist has scientificName), or one name a line")
        names = {canonical_name(line) for line in lines}
    else:
        rows = csv.DictReader(lines, delimiter=delimiter)
        for row in rows:
            value = row.get(column) or ""
            if value.strip():
                names.add(canonical_name(value))
            for rank in RANKS[:-1]:
                if (row.get(rank) or "").strip():
                    above.add(canonical_name(row[rank]))
    names.discard("")
    above |= {name.split(" ")[0] for name in names if " " in name}
    if not names:
        raise NamingError(f"--species_list {path}: lists no name in its {column} column")
    return SpeciesList(frozenset(names), frozenset(above), path)


def on_list(species: SpeciesList, names: Sequence[str], taxonomy) -> np.ndarray:
    """bool (R,): which of `names` (with their taxonomy dict name -> (7,) tuple) are on the list."""
    return np.fromiter((species.holds(name, taxonomy.get(name)) for name in names), dtype=bool, count=len(names))


def mask_predictions(probabilities: Sequence[np.ndarray], ancestor: np.ndarray,
                     allowed: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A hierarchical model's predictions restricted to the allowed finest-level classes.

    probabilities: per level, finest first, float (n, C_l) softmax probabilities; ancestor: int64 (L, C0), the
    class at level l on the path of each finest class; allowed: bool (C0,). The excluded classes are zeroed at every
    level (a coarser class stays when it holds an allowed finest class) and each level renormalised; the predicted
    path is the allowed finest class with the highest joint score (sum over levels of the log of the renormalised
    probability of its path's class), as embed/taxonomy.py decodes. Returns (index int64 (n, L), probability
    float32 (n, L)), the path's classes and their renormalised probabilities; ValueError when nothing is allowed.
    """
    allowed = np.asarray(allowed, dtype=bool)
    if not allowed.any():
        raise ValueError("no finest-level class is allowed")
    levels = len(probabilities)
    n = probabilities[0].shape[0]
    joint = np.zeros((n, int(allowed.sum())), dtype=np.float64)
    leaves = np.flatnonzero(allowed)
    renormalised = []
    for level in range(levels):
        keep = np.zeros(probabilities[level].shape[1], dtype=bool)
        keep[ancestor[level, leaves]] = True
        masked = np.where(keep[None, :], np.asarray(probabilities[level], dtype=np.float64), 0.0)
        masked /= np.maximum(masked.sum(axis=1, keepdims=True), 1e-300)
        renormalised.append(masked)
        joint += np.log(np.maximum(masked[:, ancestor[level, leaves]], 1e-300))
    leaf = leaves[np.argmax(joint, axis=1)]
    index = ancestor[:, leaf].T.astype(np.int64)
    probability = np.stack([renormalised[level][np.arange(n), index[:, level]] for level in range(levels)], axis=1)
    return index, probability.astype(np.float32)
