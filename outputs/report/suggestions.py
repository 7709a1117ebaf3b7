"""Review suggestions: the fixes report.html proposes first, each accepted or rejected with one key.

Three kinds, all over the individuals of the report (one row each: its representative's embedding):
- merge  "merge these?": clusters (and individuals not clustered) joined by their strongest links below the
         threshold: the run's spanning forest's edges between them, and between clusters their centres'
         similarity down to threshold - CENTRE_SPAN (Kruskal order, at most MAX_MERGE per suggestion, never
         across a rejected pair);
- split  "split this cluster?": an unreviewed cluster whose internal spanning tree has a weak edge with a
         substantial part on each side: the smaller side, the other side's end of the edge, the edge's similarity;
- move   "move these crops to B?": individuals likely misplaced (closer to B's centre than to their own, the
         report's misplaced score > 0), and individuals not clustered or in a cluster of at most SMALL whose
         nearest other centre is a larger B at a similarity of at least threshold - CENTRE_SPAN, grouped by B (at
         most MAX_MOVE per suggestion).
Each suggestion is a pre-selection: the page shows its individuals ticked, the reviewer unticks those that do not
belong and accepts (one action, through the undo log) or rejects it (one key). What is rejected or unticked is
remembered as crop pairs (campaign store): "apart" (a merge or move rejected: the two crops' groups are not one)
and "together" (a split rejected: the edge's two ends belong together); a later run proposes nothing that a
remembered pair contradicts.

Order: by expected gain per action, `precision(kind, similarity - threshold) x pairs`, where pairs is the number of
crop pairs the suggestion puts right when it is right (a merge or move: the pairs it joins, plus for a move the
pairs it takes out of the sources; a split: the pairs it separates) and precision the share of the suggestion's
individuals that the label-knowing reviewer of bench/review_effort.py kept, measured per kind and similarity bin on
its labelled sets (PRECISION; bench/results/review_effort.json -> calibration).

Worth an action: the same fix on the cards (clusters in the page's order, crop by crop) puts right the same pairs
in `card_actions` actions: a merge of k kept clusters takes k - 1 merges of two cards (individuals not clustered:
one move from the "Not clustered" card), a move one move per source card, a split one action. A suggestion gains
more per action than the cards only when card_actions > 1 (its own accept or reject is one action); card_actions
is taken in expectation at the LEAST share kept measured on any labelled set in its bin (LEAST), so that what is
shown first saves actions on every set measured. The page shows the suggestions worth an action first, best gain
first; the others (every split among them: the cards split a cluster in one action too) only when asked for.

Cost: merges and splits read the forest's edges (at most I - 1) and the K x K centre similarities (in row
chunks); moves read the report's misplaced scores (review_order.py); no pair of individuals is compared here.
The parameters (MAX_MERGE, CENTRE_SPAN) were chosen on bench/review_effort.py's trap sets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

KINDS = ("merge", "split", "move")
MAX_MERGE = 16         # clusters in one merge suggestion
MAX_MOVE = 60          # individuals in one move suggestion (the page's first screen of a card)
MAX_SPLITS = 3         # split suggestions per cluster
MIN_SPLIT_SIDE = 0.05  # the smaller side of a split holds at least this share of the cluster's crops (and 2 crops)
SMALL = 2              # a cluster of at most this many individuals may move whole into a larger one
CENTRE_SPAN = 0.35     # merge links between centres, and moves of crops not clustered, down to threshold - this
SHOWN = 4              # thumbnails of a cluster shown beside a suggestion (its most central members)
# precision by kind over bins of (similarity - threshold): upper bin edges, then the share kept in each bin
# (bench/results/review_effort.json -> calibration: the sets' averages; a bin without suggestions takes its
# neighbour's value; a split's edge lies at or above the threshold, so only its last bin was measured)
BIN_EDGES = (-0.25, -0.15, -0.10, -0.05, 0.0, np.inf)
PRECISION = {"merge": (0.59, 0.84, 0.61, 0.88, 0.96, 0.96), "split": (0.74,) * 6,
             "move": (0.25, 0.38, 0.59, 0.71, 0.97, 0.97)}
# the least share kept in each bin on any of the labelled sets, never more than in a stronger bin
# (bench/results/review_effort.json -> calibration_least): what the worth-an-action test assumes
LEAST = {"merge": (0.20, 0.20, 0.20, 0.81, 0.90, 0.90), "split": (0.71,) * 6,
         "move": (0.0, 0.0, 0.13, 0.13, 0.96, 0.96)}


@dataclass(frozen=True)
class Suggestion:
    """kind: 'merge' | 'split' | 'move'. items: int64, the pre-selected individuals (merge: one anchor per cluster,
    its most central member, clusters largest first, then the individuals not clustered; split: the side to split
    off, the edge's end on that side first; move: the individuals to move). anchor: merge -1; split: the
    individual at the other end of the edge; move: the target cluster's most central member. shown: per entry of
    `items` for a merge (the cluster's SHOWN most central members), else [SHOWN members of the other side or the
    target, the anchor first]. similarity: merge: the weakest link used; split: the edge; move: the median
    similarity to the target's centre. pairs: crop pairs put right when it is
    right; gain: expected gain (precision x pairs); card_actions: the actions the same fix takes on the cards, in
    expectation at the least measured precision (worth showing first when > 1)."""

    kind: str
    items: np.ndarray
    anchor: int
    shown: List[List[int]]
    similarity: float
    pairs: int
    gain: float
    card_actions: float = 0.0

    @property
    def worth(self) -> bool:
        """It saves actions against the cards: the same fix takes more than its one action there."""
        return self.card_actions > 1.0


@dataclass(frozen=True)
class Suggestions:
    """The suggestions, those worth an action first, each part best expected gain first, and their counts per kind
    (plus the number worth an action, and the number left out because a remembered rejection contradicts them)
    for run.json."""

    suggestions: List[Suggestion]
    counts: Dict[str, int] = field(default_factory=dict)


def precision(kind: str, margin: float, table: Optional[Dict] = None) -> float:
    """The measured share of a suggestion's individuals kept, for kind at similarity - threshold = margin (table:
    PRECISION, the sets' average, or LEAST, their least)."""
    return (PRECISION if table is None else table)[kind][int(np.searchsorted(BIN_EDGES, margin))]


def card_actions(kind: str, margin: float, per_source: Sequence[int]) -> float:
    """The actions the cards take for the part of a suggestion the reviewer keeps, in expectation at the least
    measured precision p: per_source is the number of pre-selected individuals per card they come from (merge:
    1 per cluster, then one entry for all the individuals not clustered; move: per source card, "Not clustered"
    one card; split: its one cluster). A card keeps something with probability 1 - (1 - p)^m. merge: the kept
    clusters take one merge each after the first, the kept individuals not clustered one move; move: one move
    per card; split: one action."""
    p = precision(kind, margin, LEAST)
    kept = [1.0 - (1.0 - p) ** m for m in per_source]
    if kind == "merge":
        clusters, alone = kept[:-1], kept[-1]
        return max(sum(clusters) - 1.0, 0.0) + alone
    if kind == "move":
        return float(sum(kept))
    return float(kept[0]) if kept else 0.0


def suggest(embedding: np.ndarray, cluster: np.ndarray, crops: np.ndarray, threshold: float, forest,
            misplaced: np.ndarray, nearest_other: np.ndarray, nearest_similarity: np.ndarray,
            reviewed: Optional[Set[int]] = None, apart: Optional[np.ndarray] = None,
            together: Optional[np.ndarray] = None) -> Suggestions:
    """Suggestions for the report's individuals.

    embedding: float32 (I, d) L2-normalised; cluster: int64 (I,) cluster per individual (-1 not clustered, < -1
    shown elsewhere and never suggested); crops: int64 (I,) crops per individual; forest: clustering.forest.Forest
    over the I individuals (edges down to forest.threshold); misplaced, nearest_other, nearest_similarity: from
    review_order (I,); reviewed: cluster ids a person decided on (never proposed for a split); apart, together:
    int64 (P, 2) remembered pairs of individuals (rejected merges and moves; rejected splits).
    """
    cluster = np.asarray(cluster, dtype=np.int64)
    crops = np.asarray(crops, dtype=np.int64)
    apart = np.zeros((0, 2), np.int64) if apart is None else np.asarray(apart, np.int64).reshape(-1, 2)
    together = np.zeros((0, 2), np.int64) if together is None else np.asarray(together, np.int64).reshape(-1, 2)
    n_clusters = int(cluster.max(initial=-1)) + 1
    size = np.bincount(cluster[cluster >= 0], weights=crops[cluster >= 0], minlength=n_clusters).astype(np.int64)
    central, centre, cohesion = _central_members(embedding, cluster, n_clusters)
    chained = cohesion < threshold
    counts: Dict[str, int] = {"blocked_by_rejections": 0}
    found: List[Suggestion] = []
    for part in (_merges(cluster, crops, size, central, centre, threshold, forest, apart, chained, counts),
                 _splits(cluster, crops, size, central, threshold, forest, reviewed or set(), together, counts),
                 _moves(cluster, crops, size, central, threshold, forest, misplaced, nearest_other,
                        nearest_similarity, apart, chained, counts)):
        found.extend(part)
    found.sort(key=lambda s: (not s.worth, -s.gain, KINDS.index(s.kind), int(s.items[0])))
    for kind in KINDS:
        counts[kind] = sum(1 for s in found if s.kind == kind)
    counts["worth_an_action"] = sum(1 for s in found if s.worth)
    return Suggestions(found, {k: counts[k] for k in (*KINDS, "worth_an_action", "blocked_by_rejections")})


def _central_members(embedding: np.ndarray, cluster: np.ndarray, n_clusters: int):
    """(per cluster 0..K-1 its members (int64) by decreasing similarity to its centre (the first is its anchor),
    the centres float32 (K, d), the cohesion float64 (K,): the members' mean similarity to their centre)."""
    from crop_cluster.outputs.report.review_order import centres

    centre = centres(embedding, cluster, n_clusters)
    inside = np.flatnonzero(cluster >= 0)
    sims = np.einsum("ij,ij->i", embedding[inside], centre[cluster[inside]])
    order = inside[np.lexsort((-sims, cluster[inside]))]
    bounds = np.searchsorted(cluster[order], np.arange(n_clusters + 1))
    cohesion = np.bincount(cluster[inside], weights=sims, minlength=n_clusters) / \
        np.maximum(np.bincount(cluster[inside], minlength=n_clusters), 1)
    return [order[bounds[c]:bounds[c + 1]] for c in range(n_clusters)], centre, cohesion


def _pair_sets(pairs: np.ndarray, cluster: np.ndarray) -> Set[Tuple[int, int]]:
    """The cluster pairs (low, high) that remembered individual pairs span."""
    a, b = cluster[pairs[:, 0]], cluster[pairs[:, 1]]
    keep = (a >= 0) & (b >= 0) & (a != b)
    return set(zip(np.minimum(a, b)[keep].tolist(), np.maximum(a, b)[keep].tolist()))


def _links(unit: np.ndarray, n_units: int, centre: np.ndarray, threshold: float, forest,
           nearest: int = 4) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate merge links between units (low, high, similarity), strongest first, one per pair: the forest's
    strongest edge between them, or, between clusters (units 0..K-1), their centres' similarity when higher, for
    each cluster's `nearest` nearest centres at threshold - CENTRE_SPAN or above (K x K x d multiply-adds, in row
    chunks)."""
    n_clusters = centre.shape[0]
    parts = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))]
    if forest is not None and forest.sims.size:
        a, b = unit[forest.rows], unit[forest.cols]
        cross = (a >= 0) & (b >= 0) & (a != b)
        parts.append((np.minimum(a, b)[cross], np.maximum(a, b)[cross], forest.sims[cross]))
    take = min(nearest, n_clusters - 1)
    for start in range(0, n_clusters if take > 0 else 0, 2048):
        rows = np.arange(start, min(start + 2048, n_clusters))
        sims = centre[rows] @ centre.T
        sims[np.arange(rows.size), rows] = -np.inf
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(sims, top, axis=1)
        keep = top_sims >= threshold - CENTRE_SPAN
        low = np.minimum(rows[:, None], top)[keep]
        parts.append((low, np.maximum(rows[:, None], top)[keep], top_sims[keep].astype(np.float32)))
    low, high, sims = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(-sims, kind="stable")
    low, high, sims = low[order], high[order], sims[order]
    _, first = np.unique(low * np.int64(n_units + 1) + high, return_index=True)
    first = np.sort(first)
    return low[first], high[first], sims[first]


def _merges(cluster, crops, size, central, centre, threshold, forest, apart, chained, counts) -> List[Suggestion]:
    """Units (the clusters, and each individual not clustered) joined strongest link first while a group stays
    within MAX_MERGE units and half of all units, and spans no rejected pair; every group of two or more is one
    suggestion. A chained cluster (chained: bool (K,), its members' mean similarity to its centre below the
    threshold: single linkage joined kinds through a chain) is no unit: its centre stands for no one kind."""
    n_clusters = len(size)
    single = np.flatnonzero(cluster == -1)
    unit = cluster.copy()                           # units 0..K-1 the clusters, then one per individual alone
    unit[single] = n_clusters + np.arange(single.size)
    size = np.concatenate([size, crops[single]])
    central = list(central) + [np.asarray([i]) for i in single.tolist()]
    low, high, sims = _links(unit, size.size, centre, threshold, forest)
    joinable = np.concatenate([~np.asarray(chained, dtype=bool), np.ones(single.size, dtype=bool)])
    keep = joinable[low] & joinable[high]
    low, high, sims = low[keep], high[keep], sims[keep]
    largest = min(MAX_MERGE, max(2, len(size) // 2))
    forbidden = _pair_sets(apart, unit)
    parent = list(range(len(size)))
    groups: Dict[int, List[int]] = {c: [c] for c in range(len(size))}
    weakest: Dict[int, float] = {}

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for k in range(sims.size):
        u, v = find(int(low[k])), find(int(high[k]))
        if u == v or len(groups[u]) + len(groups[v]) > largest:
            continue
        if any((min(x, y), max(x, y)) in forbidden for x in groups[u] for y in groups[v]):
            counts["blocked_by_rejections"] += 1
            continue
        parent[v] = u
        groups[u] += groups.pop(v)
        weakest[u] = min(float(sims[k]), weakest.get(u, 1.0), weakest.pop(v, 1.0))
    found = []
    for root, members in groups.items():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda c: (c >= n_clusters, -size[c], c))
        n = size[members]
        pairs = int((n.sum() ** 2 - (n ** 2).sum()) // 2)
        similarity = weakest[root]
        alone = sum(1 for c in members if c >= n_clusters)
        per_source = [1] * (len(members) - alone) + [alone]
        found.append(Suggestion("merge", np.asarray([central[c][0] for c in members], dtype=np.int64), -1,
                                [central[c][:SHOWN].tolist() for c in members], round(similarity, 4), pairs,
                                precision("merge", similarity - threshold) * pairs,
                                card_actions("merge", similarity - threshold, per_source)))
    return found


def _splits(cluster, crops, size, central, threshold, forest, reviewed, together, counts) -> List[Suggestion]:
    """Per unreviewed cluster, up to MAX_SPLITS of its internal tree's weakest edges whose smaller side holds at
    least MIN_SPLIT_SIDE of its crops (and two), unless a remembered "together" pair crosses the edge."""
    if forest is None or forest.sims.size == 0:
        return []
    a, b = cluster[forest.rows], cluster[forest.cols]
    inside = np.flatnonzero((a == b) & (a >= 0))
    by_cluster: Dict[int, List[int]] = {}
    for k in inside.tolist():
        by_cluster.setdefault(int(a[k]), []).append(k)
    pinned: Dict[int, List[Tuple[int, int]]] = {}
    for x, y in together.tolist():
        if cluster[x] == cluster[y] and cluster[x] >= 0:
            pinned.setdefault(int(cluster[x]), []).append((x, y))
    found = []
    for c, edges in by_cluster.items():
        if c in reviewed or len(edges) < 3:
            continue
        total = int(size[c])
        smallest = max(2, int(np.ceil(MIN_SPLIT_SIDE * total)))
        rows, cols, sims = forest.rows[edges], forest.cols[edges], forest.sims[edges]
        side_of = _subtree_sides(rows, cols, crops)
        taken = 0
        for k in np.argsort(sims, kind="stable").tolist():
            side, weight = side_of[k]
            m = min(weight, total - weight)
            if m < smallest:
                continue
            if weight > total - weight:          # the smaller side is split off; the anchor is on the other
                side = _complement(side, rows, cols)
            end, other = (int(rows[k]), int(cols[k])) if int(rows[k]) in side else (int(cols[k]), int(rows[k]))
            if any((x in side) != (y in side) for x, y in pinned.get(c, ())):
                counts["blocked_by_rejections"] += 1
                continue
            pairs = int(m) * int(total - m)
            rest = [other] + [i for i in central[c].tolist() if i not in side and i != other][:SHOWN - 1]
            found.append(Suggestion("split", np.asarray([end] + sorted(side - {end}), dtype=np.int64), other,
                                    [rest], round(float(sims[k]), 4), pairs,
                                    precision("split", float(sims[k]) - threshold) * pairs,
                                    card_actions("split", float(sims[k]) - threshold, [len(side)])))
            taken += 1
            if taken == MAX_SPLITS:
                break
    return found


def _subtree_sides(rows: np.ndarray, cols: np.ndarray, crops: np.ndarray) -> List[Tuple[Set[int], int]]:
    """For each edge of a tree (rows[k], cols[k]): the nodes on its child side (rooted at rows[0]) and their crops."""
    adjacent: Dict[int, List[Tuple[int, int]]] = {}
    for k, (x, y) in enumerate(zip(rows.tolist(), cols.tolist())):
        adjacent.setdefault(x, []).append((y, k))
        adjacent.setdefault(y, []).append((x, k))
    root = int(rows[0])
    order, parent_edge, stack, seen = [], {root: -1}, [root], {root}
    while stack:
        node = stack.pop()
        order.append(node)
        for other, k in adjacent[node]:
            if other not in seen:
                seen.add(other)
                parent_edge[other] = k
                stack.append(other)
    below: Dict[int, Set[int]] = {}
    sides: List[Tuple[Set[int], int]] = [(set(), 0)] * rows.size
    for node in reversed(order):
        below.setdefault(node, set()).add(node)
        k = parent_edge[node]
        if k >= 0:
            sides[k] = (below[node], int(crops[list(below[node])].sum()))
            up = int(rows[k]) if int(cols[k]) == node else int(cols[k])
            below.setdefault(up, set()).update(below[node])
    return sides


def _complement(side: Set[int], rows: np.ndarray, cols: np.ndarray) -> Set[int]:
    return (set(rows.tolist()) | set(cols.tolist())) - side


def _moves(cluster, crops, size, central, threshold, forest, misplaced, nearest_other, nearest_similarity, apart,
           chained, counts) -> List[Suggestion]:
    """Individuals closer to another cluster's centre than to their own, and individuals not clustered whose
    nearest centre is at least the forest's floor, grouped by that cluster, best first, MAX_MOVE per suggestion;
    never into or out of a chained cluster (see _merges: its members' misplaced scores compare them with a centre
    that stands for no one kind; the cards sort such a cluster)."""
    if len(size) == 0:                  # no cluster to move crops to
        return []
    floor = threshold - CENTRE_SPAN
    target = np.asarray(nearest_other, dtype=np.int64)
    sims = np.asarray(nearest_similarity, dtype=np.float64)
    score = np.where(cluster >= 0, np.asarray(misplaced, dtype=np.float64), sims - threshold)
    members = np.bincount(cluster[cluster >= 0], minlength=len(size))
    own = np.where(cluster >= 0, members[np.maximum(cluster, 0)], 0)
    bigger = np.where(target >= 0, members[np.maximum(target, 0)], 0) > own
    small = (cluster == -1) | ((cluster >= 0) & (own <= SMALL) & bigger)
    candidate = (target >= 0) & np.isfinite(score) & (
        ((cluster >= 0) & (score > 0)) | (small & (sims >= floor)))
    chained = np.asarray(chained, dtype=bool)
    candidate &= ~chained[np.maximum(target, 0)] & ~((cluster >= 0) & chained[np.maximum(cluster, 0)])
    blocked = {(int(x), int(cluster[y])) for x, y in apart.tolist()} | \
        {(int(y), int(cluster[x])) for x, y in apart.tolist()}
    found = []
    rows = np.flatnonzero(candidate)
    for b in np.unique(target[rows]).tolist():
        moving = [i for i in rows[target[rows] == b].tolist() if (i, b) not in blocked]
        counts["blocked_by_rejections"] += int((target[rows] == b).sum()) - len(moving)
        moving.sort(key=lambda i: -sims[i])
        for start in range(0, len(moving), MAX_MOVE):
            chunk = np.asarray(moving[start:start + MAX_MOVE], dtype=np.int64)
            moved = int(crops[chunk].sum())
            sources = np.unique(cluster[chunk][cluster[chunk] >= 0], return_counts=False)
            out_pairs = sum(int(crops[chunk][cluster[chunk] == s].sum()) *
                            int(size[s] - crops[chunk][cluster[chunk] == s].sum()) for s in sources.tolist())
            pairs = moved * int(size[b]) + out_pairs
            similarity = float(np.median(sims[chunk]))
            per_source = np.unique(cluster[chunk], return_counts=True)[1].tolist()
            found.append(Suggestion("move", chunk, int(central[b][0]), [central[b][:SHOWN].tolist()],
                                    round(similarity, 4), pairs, precision("move", similarity - threshold) * pairs,
                                    card_actions("move", similarity - threshold, per_source)))
    return found


MERGE_SPAN = 0.15      # merge links and not-clustered moves are looked for down to threshold - MERGE_SPAN


def suggest_for_report(table, embedding: np.ndarray, reps: np.ndarray, order, threshold: float, forest=None,
                       individual: Optional[np.ndarray] = None, digests: Optional[Sequence[str]] = None,
                       rejections=None) -> Suggestions:
    """suggest() for the representative rows `reps` of clusters.csv's `table` (embedding: float32 (n, d) per row;
    order: review_order of the representatives). forest/individual: the run's forest over its individuals and each
    row's node (see write_report); without them a forest over the representatives is built here at
    threshold - MERGE_SPAN. digests: per row; rejections: DataFrame digest, other, kind."""
    from crop_cluster.clustering.forest import Forest, spanning_forest
    from crop_cluster.outputs.report.taxonomy import identified_mask

    cluster = table["cluster"].to_numpy(dtype=np.int64)[reps].copy()
    cluster[identified_mask(table)[reps] & (cluster < 0)] = -2
    ids = table["individual"].to_numpy(dtype=np.int64)
    position = np.full(int(ids.max(initial=-1)) + 1, -1, dtype=np.int64)
    position[ids[reps]] = np.arange(reps.size)
    item_of_row = position[ids]
    crops = np.bincount(item_of_row, minlength=reps.size).astype(np.int64)
    floor = threshold - MERGE_SPAN
    vectors = np.ascontiguousarray(embedding[reps], dtype=np.float32)
    if forest is not None and individual is not None and reps.size and reps.max() < len(individual):
        item_of_node = np.full(forest.n, -1, dtype=np.int64)
        item_of_node[np.asarray(individual, dtype=np.int64)[reps]] = np.arange(reps.size)
        rows, cols = item_of_node[forest.rows], item_of_node[forest.cols]
        keep = (rows >= 0) & (cols >= 0)
        items_forest = Forest(reps.size, rows[keep], cols[keep], forest.sims[keep], forest.threshold)
    else:
        items_forest = spanning_forest(vectors, floor) if reps.size else None
    reviewed = set()
    if "cluster_status" in table.columns:
        status = table["cluster_status"].fillna("").astype(str).to_numpy()[reps]
        reviewed = set(cluster[(status == "reviewed") & (cluster >= 0)].tolist())
    apart, together = _remembered(rejections, digests, item_of_row)
    return suggest(vectors, cluster, crops, threshold, items_forest, order.misplaced, order.nearest_other,
                   order.nearest_similarity, reviewed, apart, together)


APART = ("merge", "move")   # a rejected merge or move: the two crops' groups are not one; a rejected split: together


def _remembered(rejections, digests: Optional[Sequence[str]], item_of_row: np.ndarray):
    """(apart, together): int64 (P, 2) pairs of items from the remembered rejections whose both crops are here."""
    empty = np.zeros((0, 2), dtype=np.int64)
    if rejections is None or len(rejections) == 0 or digests is None:
        return empty, empty
    row_of = {digest: k for k, digest in enumerate(digests) if digest}
    a = np.asarray([row_of.get(d, -1) for d in rejections["digest"]], dtype=np.int64)
    b = np.asarray([row_of.get(d, -1) for d in rejections["other"]], dtype=np.int64)
    found = (a >= 0) & (b >= 0)
    pairs = np.stack([item_of_row[a[found]], item_of_row[b[found]]], axis=1) if found.any() else empty
    apart = rejections["kind"].isin(APART).to_numpy()[found]
    return pairs[apart], pairs[~apart]
