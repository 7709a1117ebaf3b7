"""Human decisions over an algorithm's partition: a human decision always wins.

`latest_decisions` keeps, for every crop, its latest decision (by time, then by the order recorded) and reports
the crops whose decisions disagree. `apply_decisions` then changes the algorithm's partition of the individuals:

1. an excluded crop (group -1) is split off its individual and kept out of every cluster;
2. an individual takes the name of its named crops (the latest decided, when they disagree);
3. every individual of a name forms one group, wherever the algorithm put it: one name across clusters merges
   them, two names inside one cluster split it;
4. an unnamed individual in an algorithm cluster that holds named ones joins the name whose named members there
   have the closest centroid (all of them when the cluster holds one name), so a reviewed group keeps the new
   material the algorithm puts with it; with a match threshold S, only when its best cosine to that name's members
   there reaches S (the others stay together as an unnamed cluster); unnamed clusters stay as the algorithm made
   them. An algorithm cluster that holds two or more names and unnamed individuals is a *bridge*: new material
   links reviewed groups, which are kept apart (each unnamed individual goes to the closer name) and reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from crop_cluster.campaign import EXCLUDED
from crop_cluster.campaign.groups import group_value


@dataclass(frozen=True)
class Latest:
    """group: digest -> group name or EXCLUDED; time: digest -> ISO time of that decision; reviewer: digest -> who
    made it; disagreements: digests whose decisions named different groups (the latest won), with the groups in
    time order."""

    group: Dict[str, str]
    time: Dict[str, str]
    reviewer: Dict[str, str] = field(default_factory=dict)
    disagreements: List[Tuple[str, List[str]]] = field(default_factory=list)


def latest_decisions(decisions: pd.DataFrame) -> Latest:
    """decisions: DataFrame with digest, group, time (ISO, UTC) and optionally reviewer, oldest recorded first
    (campaign.store order). Groups are read in one spelling (campaign.groups: a store written before that
    keeps -1.0 or −1 as exclusions too)."""
    if decisions.empty:
        return Latest({}, {})
    frame = decisions.assign(order=np.arange(len(decisions)), group=decisions["group"].map(group_value))
    frame = frame.sort_values(["time", "order"], kind="stable")
    last = frame.drop_duplicates("digest", keep="last")
    disagreements = [(digest, list(dict.fromkeys(groups))) for digest, groups in
                     frame.groupby("digest", sort=False)["group"] if groups.nunique() > 1]
    reviewer = dict(zip(last["digest"], last["reviewer"])) if "reviewer" in last.columns else {}
    return Latest(dict(zip(last["digest"], last["group"])), dict(zip(last["digest"], last["time"])), reviewer,
                  disagreements)


@dataclass(frozen=True)
class Applied:
    """The partition after the decisions, over the (possibly more) individuals once excluded crops are split off.

    individual: int64 (n,) per row, 0..I'-1 (the first I as given, split-off crops appended); representative:
    bool (n,); label: int64 (I',) group label per individual (an algorithm label, or a named group's label
    >= first_named_label), -1 not clustered; names: label -> group name for the named groups; excluded: bool (n,);
    counts: for run.json; bridges: per bridge (rule 4) its names, their labels and the unnamed individuals in it.
    """

    individual: np.ndarray
    representative: np.ndarray
    label: np.ndarray
    names: Dict[int, str]
    excluded: np.ndarray
    counts: Dict[str, int]
    bridges: List[Dict] = field(default_factory=list)


def apply_decisions(latest: Latest, digests: Sequence[str], individual: np.ndarray, representative: np.ndarray,
                    label: np.ndarray, embedding: np.ndarray, match_threshold: Optional[float] = None) -> Applied:
    """Apply `latest` over the partition `label` (int64 (I,), any ids, -1 none) of the rows' individuals.

    digests: (n,) per row; individual: int64 (n,) 0..I-1; representative: bool (n,); embedding: float32 (n, d)
    L2-normalised rows (for rule 4); match_threshold: rule 4's gate (None: none).
    """
    n = len(digests)
    individual = np.asarray(individual, dtype=np.int64).copy()
    representative = np.asarray(representative, dtype=bool).copy()
    label = np.asarray(label, dtype=np.int64)
    group, when = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    if latest.group:                                    # a campaign without decisions skips the per-crop lookups
        group[:] = [latest.group.get(d, "") for d in digests]
        when[:] = [latest.time.get(d, "") for d in digests]
    excluded = group == EXCLUDED
    # 1. excluded crops become individuals of their own, not clustered; ids closed up (0..I'-1, first seen order
    #    kept), an individual that lost its representative gets its first remaining crop
    rows = np.flatnonzero(excluded)
    individual[rows] = label.size + np.arange(rows.size)
    representative[rows] = True
    label = np.concatenate([label, np.full(rows.size, -1, dtype=np.int64)])
    present, individual = np.unique(individual, return_inverse=True)
    label = label[present]
    has_rep = np.zeros(present.size, dtype=bool)
    has_rep[individual[representative]] = True
    if not has_rep.all():
        first = pd.Series(np.arange(n)).groupby(individual).first()
        representative[first.loc[np.flatnonzero(~has_rep)].to_numpy()] = True
    # 2. the name of each individual: the latest-decided of its named crops
    named_rows = np.flatnonzero((group != "") & ~excluded)
    order = named_rows[np.argsort(when[named_rows], kind="stable")]
    name_of: Dict[int, str] = {}
    for row in order:
        name_of[int(individual[row])] = group[row]
    if not name_of:
        return Applied(individual, representative, label, {}, excluded, {"excluded_crops": int(excluded.sum()),
                                                                            "named_groups": 0})
    # 3. one label per name, after the algorithm's labels
    names = sorted(set(name_of.values()))
    first_named = int(max(label.max(initial=-1), -1)) + 1
    label_of_name = {name: first_named + k for k, name in enumerate(names)}
    algorithm = label.copy()
    final = label.copy()
    for ind, name in name_of.items():
        final[ind] = label_of_name[name]
    # 4. unnamed members of clusters holding names
    reps = np.full(final.size, -1, dtype=np.int64)
    reps[individual[representative]] = np.flatnonzero(representative)
    split = 0
    origins: Dict[str, set] = {}
    for ind, name in name_of.items():
        origins.setdefault(name, set()).add(int(algorithm[ind]))
    merged_from = sum(1 for labels in origins.values() if len({x for x in labels if x >= 0}) > 1)
    by_cluster: Dict[int, Dict[str, List[int]]] = {}
    for ind, name in name_of.items():
        if algorithm[ind] >= 0:
            by_cluster.setdefault(int(algorithm[ind]), {}).setdefault(name, []).append(ind)
    bridges: List[Dict] = []
    held_back = 0
    for cluster, parts in by_cluster.items():
        unnamed = [int(i) for i in np.flatnonzero(algorithm == cluster) if int(i) not in name_of]
        if len(parts) > 1:
            split += 1
        if not unnamed:
            continue
        part_names = sorted(parts)
        if len(parts) == 1:
            closest = np.zeros(len(unnamed), dtype=np.int64)
        else:
            centroids = np.stack([embedding[reps[parts[name]]].mean(axis=0) for name in part_names])
            closest = np.argmax(embedding[reps[unnamed]] @ centroids.T, axis=1)
            bridges.append({"names": part_names, "labels": [label_of_name[name] for name in part_names],
                            "individuals": unnamed})
        for ind, k in zip(unnamed, closest.tolist()):
            members = reps[parts[part_names[k]]]
            if match_threshold is not None and float((embedding[members] @ embedding[reps[ind]]).max()) < \
                    match_threshold:
                held_back += 1                    # stays with the cluster's unnamed rest
                continue
            final[ind] = label_of_name[part_names[k]]
    counts = {"excluded_crops": int(excluded.sum()), "named_groups": len(names),
              "clusters_merged_by_name": int(merged_from), "clusters_split_by_names": int(split)}
    if match_threshold is not None:
        counts["held_back_by_match_threshold"] = held_back
    return Applied(individual, representative, final, {v: k for k, v in label_of_name.items()}, excluded, counts,
                   bridges)
