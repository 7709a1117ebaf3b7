"""The naming rule over arrays: scores of every name for every query, the best names, threshold and margin.

A name's score for a query (an L2-normalised vector: a cluster centroid, an individual, a crop) is, by `rule`:

- `prototype` (the default, chosen by measurement: bench/results/naming.json): the cosine to the name's prototype,
  the L2-normalised mean of its reference embeddings (nearest class mean, as SimpleShot);
- `max`: the cosine to the name's nearest reference (1-NN);
- `knn`: the mean cosine to the name's `k` nearest references (all of them when it has fewer).

A query is given its best name when that score reaches `threshold` and beats the second name's by at least
`margin`; scores are cosines, never turned into probabilities (no softmax over names: a softmax always sums to one,
so it names new material as confidently as known material).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

RULES = ("prototype", "max", "knn")
TOP = 8                  # names kept per query: the best, the second and those within the margin (for the roll-up)
BLOCK_FLOATS = 1 << 24   # queries x names (or references) scored at once: 64 MiB of float32


def name_codes(names: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    """(the distinct names in order of first appearance (K,), int64 (R,) the index of each reference's name)."""
    order = {}
    codes = np.fromiter((order.setdefault(name, len(order)) for name in names), dtype=np.int64, count=len(names))
    return list(order), codes


def prototypes(vectors: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """float32 (K, d): the L2-normalised mean of each name's reference vectors (float32 (R, d), codes int64 (R,))."""
    sums = np.zeros((k, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, vectors.astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def name_scores(queries: np.ndarray, vectors: np.ndarray, codes: np.ndarray, k: int, rule: str = "prototype",
                knn: int = 3, protos: np.ndarray = None) -> np.ndarray:
    """float32 (Q, K): the score of each of the K names for each query (float32 (Q, d), L2-normalised rows).

    vectors: float32 (R, d) the references, codes: int64 (R,) their names 0..K-1; rule: one of RULES; knn: k of
    the `knn` rule; protos: prototypes(vectors, codes, k) when already computed. For a few queries at a time
    (see `top_names` for any number)."""
    if rule == "prototype":
        return queries @ (prototypes(vectors, codes, k) if protos is None else protos).T
    similarity = queries @ vectors.T                                   # (Q, R)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1]])
    if rule == "max":
        return np.maximum.reduceat(similarity[:, order], starts, axis=1)
    if rule == "knn":
        ends = np.r_[starts[1:], order.size]
        scores = np.empty((queries.shape[0], k), dtype=np.float32)
        for name, (start, end) in enumerate(zip(starts, ends)):
            part = similarity[:, order[start:end]]
            take = min(knn, part.shape[1])
            scores[:, codes[order[start]]] = np.partition(part, part.shape[1] - take, axis=1)[:, -take:].mean(1)
        return scores
    raise ValueError(f"unknown naming rule '{rule}'; available: {', '.join(RULES)}")


def top_names(queries: np.ndarray, vectors: np.ndarray, codes: np.ndarray, k: int, rule: str = "prototype",
              knn: int = 3, top: int = TOP) -> Tuple[np.ndarray, np.ndarray]:
    """The `top` best names of every query, best first: (index int64 (Q, top), score float32 (Q, top)); -1 and
    -inf where there are fewer names. Scored in blocks of queries, so memory stays at BLOCK_FLOATS whatever Q."""
    q = queries.shape[0]
    index = np.full((q, top), -1, dtype=np.int64)
    score = np.full((q, top), -np.inf, dtype=np.float32)
    width = k if rule == "prototype" else max(k, vectors.shape[0])
    step = max(1, BLOCK_FLOATS // max(width, 1))
    protos = prototypes(vectors, codes, k) if rule == "prototype" else None
    keep = min(top, k)
    for start in range(0, q, step):
        block = name_scores(queries[start:start + step], vectors, codes, k, rule, knn, protos)
        best = np.argpartition(-block, keep - 1, axis=1)[:, :keep] if keep < k else \
            np.broadcast_to(np.arange(k), (block.shape[0], k))
        values = np.take_along_axis(block, best, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        index[start:start + step, :keep] = np.take_along_axis(best, order, axis=1)
        score[start:start + step, :keep] = np.take_along_axis(values, order, axis=1)
    return index, score


def nearest_references(queries: np.ndarray, vectors: np.ndarray, codes: np.ndarray, name: np.ndarray) -> np.ndarray:
    """int64 (Q,): the reference row nearest to each query among the references of `name` (int64 (Q,), -1: none,
    then -1); the evidence shown beside a named cluster."""
    q = queries.shape[0]
    nearest = np.full(q, -1, dtype=np.int64)
    step = max(1, BLOCK_FLOATS // max(vectors.shape[0], 1))
    for start in range(0, q, step):
        similarity = queries[start:start + step] @ vectors.T
        similarity[codes[None, :] != name[start:start + step, None]] = -np.inf
        nearest[start:start + step] = np.argmax(similarity, axis=1)
    nearest[name < 0] = -1
    return nearest


@dataclass(frozen=True)
class Decision:
    """Per query (Q,): status 'named' (best >= threshold and beats the second by >= margin), 'ambiguous' (best >=
    threshold, margin failed: close[q] holds the names within the margin, best first, for the roll-up) or 'unknown'
    (best < threshold); best, second: int64 name index (-1 none); score, second_score float32; margin float32 (NaN
    when there is one name only)."""

    status: np.ndarray
    best: np.ndarray
    second: np.ndarray
    score: np.ndarray
    second_score: np.ndarray
    margin: np.ndarray
    close: Dict[int, np.ndarray]


def decide(index: np.ndarray, score: np.ndarray, threshold: float, margin: float) -> Decision:
    """Apply threshold and margin to top_names' answer (index int64 (Q, T), score float32 (Q, T), best first)."""
    best, first = index[:, 0], score[:, 0]
    second = index[:, 1] if index.shape[1] > 1 else np.full(index.shape[0], -1, dtype=np.int64)
    second_score = score[:, 1] if index.shape[1] > 1 else np.full(index.shape[0], -np.inf, dtype=np.float32)
    gap = np.where(second >= 0, first - second_score, np.nan).astype(np.float32)
    confident = (second < 0) | (gap >= margin - 1e-7)
    status = np.where(first < threshold, "unknown", np.where(confident, "named", "ambiguous")).astype(object)
    within = (score > first[:, None] - margin + 1e-7) & (index >= 0)
    close = {int(q): index[q, within[q]] for q in np.flatnonzero(status == "ambiguous")}
    return Decision(status, best, second, first.astype(np.float32),
                    np.where(second >= 0, second_score, np.nan).astype(np.float32), gap, close)


def leave_one_out(vectors: np.ndarray, codes: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """The gallery named by itself: each reference against every name's prototype, its own name's made without it.

    vectors: float32 (R, d) L2-normalised, codes: int64 (R,) their names 0..K-1. Returns (own float64 (R,): the
    cosine to its own name's prototype without it, NaN for a name with one reference; other, runner float64 (R,):
    the best and second-best cosines to the other names' prototypes, -inf where there are none; tested bool (R,):
    its name has two references or more, so the test means something)."""
    sums = np.zeros((k, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, vectors.astype(np.float64))
    counts = np.bincount(codes, minlength=k)
    rest = sums[codes] - vectors
    tested = counts[codes] > 1
    own = np.where(tested, (vectors * rest).sum(axis=1) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12), np.nan)
    index, score = top_names(vectors, vectors, codes, k, "prototype", top=3)
    score = np.where(index == codes[:, None], -np.inf, score.astype(np.float64))   # the others, best first
    score = -np.sort(-score, axis=1)
    return own, score[:, 0], score[:, 1], tested


def gallery_overlap(vectors: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """bool (R,): the references closer to another name's prototype than to their own name's prototype made
    without them (leave one out); False for names with one reference. A gallery where many are True does not
    separate its names with this model: its names will be unreliable whatever the threshold."""
    own, other, _, tested = leave_one_out(vectors, codes, k)
    return tested & (other > np.nan_to_num(own, nan=np.inf))


SELF_TEST_ERRORS = 0.03   # the share of the gallery's tested references it may misname before the self-test counts


def self_test_threshold(vectors: np.ndarray, codes: np.ndarray, k: int, margin: float,
                        errors: float = SELF_TEST_ERRORS) -> float:
    """The gallery's self-test: the cosine up to which the rule gives the gallery's own references a wrong name;
    -inf when it does not (or no name has two references to test).

    Each tested reference (leave_one_out) is named by the rule: its best name among its own name's prototype made
    without it and the other names', when that beats the runner-up by `margin` (a closer call is left to the
    margin and the roll-up, not counted). A wrong name counts at its cosine. Allowing `errors` of the tested
    references (a mislabelled reference or two in a large gallery), the answer is the cosine of the next wrong one,
    the highest first: with 15 tested references, the highest cosine of any; with 1 000, the 31st highest. A model
    that confuses the gallery's names up to that cosine confuses names the gallery does not hold there too.

    The test is conservative: a prototype of one reference fewer matches its own name's crops a little less well
    (with 3 references per name 0.01-0.04 of cosine on the bench's galleries), so two look-alike names whose
    references are as close to each other as to their own count as confused unless the margin exceeds that; a
    debiased own cosine (scaled to a whole prototype) was measured too: it counts fewer of Fashion-MNIST's
    confusions, and calibrated it needs higher thresholds everywhere (bench/results/naming.json, gallery_debiased).
    """
    own, other, runner, tested = leave_one_out(vectors, codes, k)
    own = np.nan_to_num(own, nan=np.inf)
    wrong = tested & (other > own) & (other - np.maximum(own, runner) >= margin - 1e-7)
    allowed = int(np.floor(errors * tested.sum() + 1e-9))
    if wrong.sum() <= allowed:
        return float("-inf")
    return float(np.sort(other[wrong])[::-1][allowed])
