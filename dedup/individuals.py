"""Individuals: crops of one physical insect, linked by three rules applied in order, each recorded in `linked_by`.

1. exact: byte-identical files (dedup/exact.py; they share one embedding);
2. near:  cosine >= the near-duplicate threshold (dedup/near.py), most similar pairs first;
   near-verified: cosine in the uncertain band [verify_from, threshold) and the same picture by the pixel check
   of dedup/verify.py (aligned grey thumbnails), most similar pairs first. With verification on, a pair whose
   neighbourhood is dense (dedup/density.py: its cosine stands out by less than DENSE_MARGIN from what unrelated
   crops reach around its ends) is held to the strict pixel check, near-duplicates below DENSE_CERTAIN included:
   they are then linked as near-verified, or not at all;
3. track: the same insect across nearby frames of one folder (dedup/track.py), when timestamps are known.

Crops cut from one source frame are never one individual (`dedup/union.py` refuses such links; exact copies
excepted). A crop's frame is its source-image id (`crop_<image>_CROPNUMBER_<n>_...` names, as in the sidecars);
for other names, crops with the same timestamp in the same folder count as one frame; without either, a crop's
frame is unknown and never conflicts. Near-duplicate links come from the spanning forest of the similarity graph:
where a same-frame conflict refuses a forest edge, a weaker non-forest pair between the two sides is not tried.

The representative is the best crop of each individual (dedup/representative.py); `linked_by` is the rule of the
link by which a crop joins the tree of accepted links rooted at its representative ('' for representatives).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from crop_cluster.dedup import TRACK_MAX_DISTANCE, TRACK_MAX_SECONDS, VERIFY_MIN_DETAIL, VERIFY_MIN_SCORE
from crop_cluster.dedup.density import Background
from crop_cluster.dedup.union import RULES, FrameUnion

VERIFY_ALTERNATIVES = 3   # other pairs tried between two individuals whose spanning-forest pair was refused
VERIFY_MEMBERS = 8        # crops of each individual considered for them
VERIFY_SIBLINGS = 4       # band neighbours of one individual whose individuals are tried against each other
VERIFY_EXTRA_PER_CROP = 1.0   # alternative and sibling pairs checked, at most, per distinct crop (a cost bound)


@dataclass(frozen=True)
class LinkParams:
    """dedup_threshold: near-duplicate cosine, None = no near-duplicate linking; track_max_seconds: time gate in
    seconds, 0 = no tracking; track_max_distance: box-centre gate in box sizes; track_min_similarity: cosine gate;
    verify_from: lower cosine bound of the band whose pairs are checked by dedup/verify.py, None = no verification;
    verify_min_score, verify_min_detail: the verification's grey and detail NCC thresholds (dedup/verify.py)."""

    dedup_threshold: Optional[float]
    track_max_seconds: float = TRACK_MAX_SECONDS
    track_max_distance: float = TRACK_MAX_DISTANCE
    track_min_similarity: float = 0.5
    device: str = "cpu"
    verify_from: Optional[float] = None
    verify_min_score: float = VERIFY_MIN_SCORE
    verify_min_detail: float = VERIFY_MIN_DETAIL


@dataclass(frozen=True)
class Individuals:
    """individual: int64 (n,) ids 0..I-1 in order of first appearance; representative: bool (n,), one per
    individual; linked_by: n strings ('', 'exact', 'near', 'near-verified', 'track'); counts: for run.json."""

    individual: np.ndarray
    representative: np.ndarray
    linked_by: List[str]
    counts: Dict[str, int] = field(default_factory=dict)


def frame_ids(filenames: Sequence[str], frames: Sequence[Optional[str]], seconds: np.ndarray) -> np.ndarray:
    """int64 (n,) source-frame id per crop (equal ids = one frame), -1 unknown; rules in the module docstring."""
    keys = []
    for name, frame, second in zip(filenames, frames, seconds):
        if frame is not None:
            keys.append(("image", frame))
        elif np.isfinite(second):
            keys.append(("time", os.path.dirname(name), float(second)))
        else:
            keys.append(None)
    ids: Dict[tuple, int] = {}
    return np.fromiter((-1 if key is None else ids.setdefault(key, len(ids)) for key in keys), dtype=np.int64,
                       count=len(keys))


def link_individuals(embeddings: np.ndarray, exact_first: np.ndarray, filenames: Sequence[str],
                     frames: Sequence[Optional[str]], seconds: np.ndarray, boxes: np.ndarray,
                     params: LinkParams, forest=None, thumbnails=None, memo=None) -> Individuals:
    """Link the n crops into individuals.

    embeddings: float32 (n, d) L2-normalised, row i = filenames[i]; exact_first: int64 (n,) the first row with the
    same file content (exact_first[i] == i for distinct contents); frames: source-image id per crop or None;
    seconds: float64 (n,) POSIX seconds, NaN unknown; boxes: float64 (n, 4) x1, y1, x2, y2, NaN rows unknown.
    forest: the run's spanning forest over the distinct rows (clustering.forest.Forest, built at or below
    params.dedup_threshold); its links at or above the threshold are the near-duplicate pairs, so similarities are
    not computed twice. Without it, `near_duplicate_edges` builds one.
    thumbnails: dedup.verify.Thumbnails (e.g. a ThumbnailSource over `filenames`) for the band's pixel check; None
    (or params.verify_from None) = no verification.
    memo: dedup.memo.LinkMemo: the rows' content digests and where pixel-check decisions, backgrounds and qualities
    are kept across runs (None: computed every time). Every rule reads the crops in row order; a caller that wants
    the answer to depend on the set of crops only passes them in an order fixed by content (crop_cluster.crops).
    """
    from crop_cluster.dedup.near import near_duplicate_edges
    from crop_cluster.dedup.representative import choose_representatives
    from crop_cluster.dedup.track import TrackGates, track_links

    n = len(filenames)
    frame = frame_ids(filenames, frames, seconds)
    union = FrameUnion(frame)
    for row in np.flatnonzero(exact_first != np.arange(n)):
        union.link(int(row), int(exact_first[row]), "exact", force=True)
    distinct = np.flatnonzero(exact_first == np.arange(n))
    verifying = params.dedup_threshold is not None and params.verify_from is not None and thumbnails is not None \
        and params.verify_from < params.dedup_threshold
    digests = memo.digests if memo is not None else None
    background = Background(embeddings, distinct, digests=digests, memo=memo) if verifying else None
    verify = _pixel_check(thumbnails, params, memo)
    verify_counts = {}
    if params.dedup_threshold is not None:
        if forest is not None and forest.threshold <= params.dedup_threshold:
            strong = forest.sims >= params.dedup_threshold           # sorted by decreasing similarity
            rows, cols, sims = forest.rows[strong], forest.cols[strong], forest.sims[strong]
        else:
            rows, cols, sims = near_duplicate_edges(embeddings[distinct], params.dedup_threshold, params.device)
        verify_counts = _link_near(distinct[rows], distinct[cols], sims, union, background, verify)
    if verifying:
        verify_counts.update(_link_verified(embeddings, distinct, union, params, forest, verify, background))
    proposed = 0
    if params.track_max_seconds > 0 and np.isfinite(seconds).any():
        _, sequence = np.unique(np.asarray([os.path.dirname(name) for name in filenames], dtype=object),
                                return_inverse=True)
        gates = TrackGates(params.track_max_seconds, params.track_max_distance, params.track_min_similarity)
        proposed = track_links(embeddings, seconds, frame, sequence.astype(np.int64), boxes, gates,
                               lambda a, b: union.link(a, b, "track") or union.same(a, b))

    root = union.labels()
    _, first_seen = np.unique(root, return_index=True)
    rank = np.empty(first_seen.size, dtype=np.int64)
    rank[np.argsort(first_seen)] = np.arange(first_seen.size)
    individual = rank[np.unique(root, return_inverse=True)[1]]
    sizes = np.bincount(individual)
    scored = distinct[sizes[individual[distinct]] > 1]
    representative = choose_representatives(individual, _quality(filenames, scored, memo))
    linked_by = _linked_by(n, union.edges, representative)
    counts = {f"linked_{rule.replace('-', '_')}": linked_by.count(rule) for rule in RULES}
    counts.update(verify_counts)
    counts.update({f"refused_same_frame_{rule.replace('-', '_')}": union.refused[rule]
                   for rule in ("near", "near-verified", "track")},
                  track_assignments=proposed, individuals=int(first_seen.size))
    return Individuals(individual, representative, linked_by, counts)


def _pixel_check(thumbnails, params: LinkParams, memo):
    """verify(a, b, strict) -> bool (k,): dedup/verify.py's decision on the pairs (a[i], b[i]) (int64 rows; strict
    bool (k,)), kept per pair of contents in the memo when there is one."""
    from crop_cluster.dedup.memo import pair_key
    from crop_cluster.dedup.verify import THUMB_NAMESPACE, verify_pairs

    def check(a: np.ndarray, b: np.ndarray, strict: np.ndarray) -> np.ndarray:
        return verify_pairs(a, b, thumbnails, params.verify_min_score, params.verify_min_detail, strict)

    if memo is None:
        return check
    from crop_cluster.dedup import VERIFY_STRICT_DETAIL, VERIFY_STRICT_SCORE

    kept = memo.memo("verify", {"thumbs": THUMB_NAMESPACE, "score": params.verify_min_score,
                                "detail": params.verify_min_detail,
                                "strict": [VERIFY_STRICT_SCORE, VERIFY_STRICT_DETAIL]})
    digests = memo.digests

    def remembered(a: np.ndarray, b: np.ndarray, strict: np.ndarray) -> np.ndarray:
        keys = [pair_key(digests[x], digests[y], "strict" if s else "") if digests[x] and digests[y] else ""
                for x, y, s in zip(a.tolist(), b.tolist(), np.asarray(strict, dtype=bool).tolist())]
        return kept.values(keys, lambda at: check(a[at], b[at], np.asarray(strict, dtype=bool)[at]))[:, 0] > 0.5

    return remembered


def _quality(filenames: Sequence[str], rows: np.ndarray, memo) -> np.ndarray:
    """float64 (n,): the representative quality of `rows` (dedup/representative.py), -inf elsewhere; kept per
    content in the memo when there is one."""
    from crop_cluster.dedup.representative import SHARPNESS_SIDE, quality_of

    if memo is None or not rows.size:
        return quality_of(filenames, rows)
    quality = np.full(len(filenames), -np.inf)
    kept = memo.memo("quality", {"side": SHARPNESS_SIDE, "version": 1})
    quality[rows] = kept.values([memo.digests[k] for k in rows.tolist()],
                                lambda at: quality_of(filenames, rows[at])[rows[at]].astype(np.float32))[:, 0]
    return quality


def _link_near(a: np.ndarray, b: np.ndarray, sims: np.ndarray, union: FrameUnion,
               background: Optional[Background], verify) -> Dict[str, int]:
    """Link the near-duplicate pairs (a[i], b[i]) of cosine sims[i] (int64, float32 (k,), most similar first).
    With a background (verification on), the dense ones are linked only where the strict pixel check (`verify`,
    see _pixel_check) accepts them (as near-verified). Returns run.json counts."""
    dense = np.zeros(a.size, dtype=bool) if background is None else background.dense(a, b, sims)
    accepted = np.ones(a.size, dtype=bool)
    accepted[dense] = verify(a[dense], b[dense], np.ones(int(dense.sum()), dtype=bool))
    for x, y, crowded, same in zip(a.tolist(), b.tolist(), dense.tolist(), accepted.tolist()):
        if not crowded:
            union.link(x, y, "near")
        elif same:
            union.link(x, y, "near-verified")
    if background is None:
        return {}
    return {"near_dense": int(dense.sum()), "near_dense_accepted": int((dense & accepted).sum())}


def _link_verified(embeddings: np.ndarray, distinct: np.ndarray, union: FrameUnion, params: LinkParams, forest,
                   verify, background: Background) -> Dict[str, int]:
    """Link the band's pairs (cosine in [verify_from, dedup_threshold)) that dedup/verify.py accepts, most similar
    first, in three rounds: the spanning-forest pairs; then, for each forest pair refused whose two individuals are
    still apart, up to VERIFY_ALTERNATIVES other pairs between their crops (the most similar ones in the band:
    another cut may align where the forest's pair, blurred or occluded, did not); then the same for the pairs of
    individuals that are band neighbours of one third individual (`_siblings`); the last two rounds check
    VERIFY_EXTRA_PER_CROP pairs per distinct crop at most, the most similar first. Dense pairs (`background`) are
    held to the strict check. Only pairs of two different individuals with no frame in common are checked, so only
    their crops are decoded. Returns run.json counts."""
    from crop_cluster.dedup.near import near_duplicate_edges

    if forest is not None and forest.threshold <= params.verify_from:
        rows, cols, sims = forest.rows, forest.cols, forest.sims
    else:
        rows, cols, sims = near_duplicate_edges(embeddings[distinct], params.verify_from, params.device)
    band = (sims >= params.verify_from) & (sims < params.dedup_threshold)
    checked = {"strict": 0}

    def check(pairs: np.ndarray) -> np.ndarray:
        """bool (k,): the pixel check of int64 (k, 2) pairs, the dense ones strictly; the accepted ones linked."""
        strict = background.dense(pairs[:, 0], pairs[:, 1],
                                  np.einsum("ij,ij->i", embeddings[pairs[:, 0]], embeddings[pairs[:, 1]]))
        same = verify(pairs[:, 0], pairs[:, 1], strict)
        for a, b in pairs[same]:
            union.link(int(a), int(b), "near-verified")
        checked["strict"] += int(strict.sum())
        return same

    first = _open_pairs(distinct[rows[band]], distinct[cols[band]], union)
    accepted = check(first)
    budget = int(VERIFY_EXTRA_PER_CROP * distinct.size)
    second = _open_pairs(*_alternatives(embeddings, distinct, union, first[~accepted], params).T, union)[:budget]
    again = check(second)
    siblings = _siblings(distinct[rows[band]], distinct[cols[band]], sims[band], union)
    third = _open_pairs(*_alternatives(embeddings, distinct, union, siblings, params, tried=False).T,
                        union)[:budget - len(second)]
    last = check(third)
    return {"verify_candidates": int(len(first) + len(second) + len(third)),
            "verify_strict": checked["strict"],
            "verify_accepted": int(accepted.sum() + again.sum() + last.sum())}


def _siblings(a: np.ndarray, b: np.ndarray, sims: np.ndarray, union: FrameUnion) -> np.ndarray:
    """int64 (k, 2): pairs of crops of two individuals that are both band neighbours of one third individual in
    the spanning forest (A - X - B) but not neighbours of each other: the forest keeps one edge per cut, so two cuts
    of one picture whose strongest link goes to another picture never meet there. For each X, its VERIFY_SIBLINGS
    most similar neighbour individuals are paired; each pair is given by the crops of its two forest edges."""
    best: Dict[int, Dict[int, tuple]] = {}          # individual X -> neighbour individual -> (sim, its crop)
    for x, y, sim in zip(a, b, sims):
        rx, ry = union.find(int(x)), union.find(int(y))
        if rx == ry:
            continue
        for here, there, crop in ((rx, ry, int(y)), (ry, rx, int(x))):
            known = best.setdefault(here, {}).get(there)
            if known is None or sim > known[0]:
                best[here][there] = (float(sim), crop)
    pairs = set()
    for neighbours in best.values():
        crops = [crop for _, crop in sorted(neighbours.values(), reverse=True)[:VERIFY_SIBLINGS]]
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                pairs.add((min(crops[i], crops[j]), max(crops[i], crops[j])))
    return np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _open_pairs(a: np.ndarray, b: np.ndarray, union: FrameUnion) -> np.ndarray:
    """int64 (k, 2): the pairs (a[i], b[i]) of two different individuals with no frame in common, in order."""
    keep = [(int(x), int(y)) for x, y in zip(a, b) if not union.same(int(x), int(y)) and union.may_link(int(x), int(y))]
    return np.asarray(keep, dtype=np.int64).reshape(-1, 2)


def _alternatives(embeddings: np.ndarray, distinct: np.ndarray, union: FrameUnion, refused: np.ndarray,
                  params: LinkParams, tried: bool = True) -> np.ndarray:
    """int64 (k, 2): for each refused pair, the VERIFY_ALTERNATIVES most similar other band pairs between the
    distinct crops of its two individuals (VERIFY_MEMBERS crops of each at most), sorted by decreasing cosine.
    tried False: the given pairs were not checked yet, so they may be among them."""
    members: Dict[int, List[int]] = {}
    for row in distinct:
        members.setdefault(union.find(int(row)), []).append(int(row))
    found: Dict[tuple, float] = {}
    for a, b in refused:
        if union.same(int(a), int(b)):
            continue
        side_a = members[union.find(int(a))][:VERIFY_MEMBERS]
        side_b = members[union.find(int(b))][:VERIFY_MEMBERS]
        sims = embeddings[side_a] @ embeddings[side_b].T
        order = np.argsort(-sims, axis=None)
        taken = 0
        for flat in order:
            i, j = divmod(int(flat), len(side_b))
            if taken == VERIFY_ALTERNATIVES or sims[i, j] < params.verify_from:
                break
            pair = (side_a[i], side_b[j])
            if (not tried or pair != (int(a), int(b))) and sims[i, j] < params.dedup_threshold:
                found.setdefault(pair, float(sims[i, j]))
                taken += 1
    pairs = sorted(found, key=found.get, reverse=True)
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _linked_by(n: int, edges: List[tuple], representative: np.ndarray) -> List[str]:
    """Rule of the accepted link by which each crop is reached from its representative ('' for representatives).

    The accepted links form a forest; a virtual node n joined to every representative makes it one tree, and one
    breadth-first search from n gives every crop its predecessor."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    labels = [""] * n
    if not edges:
        return labels
    a, b, code = (np.asarray(column, dtype=np.int64) for column in zip(*edges))
    reps = np.flatnonzero(representative)
    rows = np.concatenate([a, reps])
    cols = np.concatenate([b, np.full(reps.size, n)])
    data = np.concatenate([code + 1, np.zeros(reps.size, dtype=np.int64)])   # 0 = the virtual link
    graph = coo_matrix((data + 1, (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    graph = graph + graph.T
    _, predecessor = breadth_first_order(graph, n, directed=False, return_predecessors=True)
    crops = np.flatnonzero(predecessor[:n] != n)
    rule_codes = np.asarray(graph[crops, predecessor[crops]]).ravel() - 2
    for crop, rule in zip(crops, rule_codes):
        labels[crop] = RULES[rule]
    return labels
