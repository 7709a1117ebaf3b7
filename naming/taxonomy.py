"""The common ancestor of names too close to choose between: `Noctuidae sp.` when two noctuid species tie.

A name's taxonomy is its (7,) tuple of rank values, kingdom .. species ('' unknown), from the reference CSV's
columns (naming/references.py). Names without one have no ancestor: a tie between them stays `unknown`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from crop_cluster.naming import RANKS


def common_ancestor(names: Sequence[str], taxonomy: Dict[str, Tuple[str, ...]]) -> Optional[Tuple[str, str]]:
    """(taxon, rank) of the deepest rank at which every name's taxonomy has the same non-empty value; None when a
    name has no taxonomy or they share nothing."""
    lineages = [taxonomy.get(name) for name in names]
    if not lineages or any(lineage is None for lineage in lineages):
        return None
    found = None
    for depth, rank in enumerate(RANKS):
        values = {lineage[depth] for lineage in lineages}
        if len(values) == 1 and "" not in values:
            found = (values.pop(), rank)
        elif len(values) > 1:
            break
    return found


def ancestor_name(taxon: str, rank: str) -> str:
    """The name a roll-up gives: 'Noctuidae sp.' above species, the species itself at species rank."""
    return taxon if rank == "species" else f"{taxon} sp."


def rank_of(name: str, taxonomy: Dict[str, Tuple[str, ...]]) -> str:
    """The deepest rank the name's taxonomy gives ('' without one)."""
    lineage = taxonomy.get(name)
    if not lineage:
        return ""
    return next((rank for rank, value in zip(reversed(RANKS), reversed(lineage)) if value), "")


def consistent(human: str, machine: str, rank: str, taxonomy: Dict[str, Tuple[str, ...]]) -> bool:
    """Whether a reviewer's name agrees with a machine name: the same name (any case), or for a roll-up to `rank`,
    a name whose taxonomy holds that taxon there or that begins with it ('Noctuidae sp. 3', 'Agrotis ipsilon')."""
    if human.casefold() == machine.casefold():
        return True
    if not rank or rank == "species":
        return False
    taxon = machine[:-len(" sp.")] if machine.endswith(" sp.") else machine
    lineage = taxonomy.get(human)
    if lineage is not None and lineage[RANKS.index(rank)].casefold() == taxon.casefold():
        return True
    return human.casefold().split(" ")[0] == taxon.casefold()
