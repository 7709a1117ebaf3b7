"""Review suggestions over arrays (outputs/report/suggestions.py), the remembered rejections in the review file and
the campaign store (schema 2, migrated from 1), and the forest following the individuals a review split."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from crop_cluster.campaign import CampaignError
from crop_cluster.campaign.review import read_review
from crop_cluster.campaign.store import MIGRATIONS, SCHEMA_VERSION, CampaignStore
from crop_cluster.clustering.forest import Forest, partition_at, renumbered, spanning_forest
from crop_cluster.outputs.report.review_order import review_order
from crop_cluster.outputs.report.suggestions import suggest


def unit(*values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def case():
    """Four groups in 3-d: A (3) and A' (2) close below the threshold; B (4) a chain with one weak link; a lone
    individual near C (3)."""
    rows = [unit(1, 0.02 * k, 0) for k in range(3)] + [unit(1, 0.4 + 0.02 * k, 0.02) for k in range(2)]
    rows += [unit(0.02 * k, 1, 0.0) for k in range(2)] + [unit(0.02 * k, 1, 0.3) for k in range(2)]
    rows += [unit(0, 0.02 * k, 1) for k in range(3)] + [unit(0.5, 0.1, 1)]
    x = np.stack(rows)
    threshold = 0.95
    forest = spanning_forest(x, threshold - 0.15)
    cluster = partition_at(forest, threshold)
    sizes = np.bincount(cluster)
    cluster = np.where(sizes[cluster] > 1, cluster, -1)
    _, cluster[cluster >= 0] = np.unique(cluster[cluster >= 0], return_inverse=True)
    return x, cluster, threshold, forest


def run(x, cluster, threshold, forest, **kwargs):
    order = review_order(x, cluster)
    return suggest(x, cluster, np.ones(len(x), dtype=np.int64), threshold, forest, order.misplaced,
                   order.nearest_other, order.nearest_similarity, **kwargs)


def pick(found, kind, test):
    return next(s for s in found.suggestions if s.kind == kind and test(s))


def test_each_kind_is_proposed_and_ordered_by_expected_gain():
    x, cluster, threshold, forest = case()
    found = run(x, cluster, threshold, forest)
    assert {s.kind for s in found.suggestions} == {"merge", "split", "move"}
    merge = pick(found, "merge", lambda s: {int(cluster[i]) for i in s.items} == {0, 1})       # A and A'
    assert merge.pairs == 3 * 2 and merge.similarity < threshold
    split = pick(found, "split", lambda s: cluster[s.items[0]] == 2)                           # the chain B
    assert sorted(split.items.tolist()) in ([5, 6], [7, 8]) and split.anchor in (5, 6, 7, 8)
    assert split.similarity >= threshold and cluster[split.anchor] == cluster[split.items[0]] and split.pairs == 4
    move = pick(found, "move", lambda s: s.items.tolist() == [12])       # the lone one, not clustered, to C
    assert cluster[move.anchor] == 3 and cluster[12] == -1 and move.similarity < threshold
    gains = [s.gain for s in found.suggestions]
    assert gains == sorted(gains, reverse=True)


def test_remembered_rejections_are_not_proposed_again():
    x, cluster, threshold, forest = case()
    first = run(x, cluster, threshold, forest)
    merge = pick(first, "merge", lambda s: {int(cluster[i]) for i in s.items} == {0, 1})
    split = pick(first, "split", lambda s: cluster[s.items[0]] == 2)
    move = pick(first, "move", lambda s: s.items.tolist() == [12])
    again = run(x, cluster, threshold, forest, apart=np.array([[merge.items[1], merge.items[0]],
                                                                [move.items[0], move.anchor]]),
                together=np.array([[split.items[0], split.anchor]]))
    assert not [s for s in again.suggestions if s.kind == "merge" and {int(cluster[i]) for i in s.items} >= {0, 1}]
    assert not [s for s in again.suggestions if 12 in s.items.tolist() and s.kind in ("merge", "move")]
    assert not [s for s in again.suggestions if s.kind == "split" and cluster[s.items[0]] == 2]
    assert again.counts["blocked_by_rejections"] >= 3
    # a reviewed cluster is never proposed for a split
    assert not [s for s in run(x, cluster, threshold, forest, reviewed={2}).suggestions if s.kind == "split"]


def test_no_forest_no_merge_or_split_and_empty_input():
    x, cluster, threshold, _ = case()
    found = run(x, cluster, threshold, None)
    assert {s.kind for s in found.suggestions} <= {"merge", "move"}     # centre links still propose merges
    empty = run(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), threshold, None)
    assert empty.suggestions == [] and empty.counts["merge"] == 0
    alone = run(x, np.full(len(x), -1, dtype=np.int64), threshold, None)        # nothing clustered, no forest
    assert alone.suggestions == []
    linked = run(x, np.full(len(x), -1, dtype=np.int64), threshold, spanning_forest(x, 0.9))
    assert {s.kind for s in linked.suggestions} <= {"merge"}                   # individuals alone, merged together


def test_review_file_rejections_and_their_errors(tmp_path):
    files = [str(tmp_path / f"c{k}.png") for k in range(3)]
    digests = [f"{k:032x}" for k in range(3)]
    path = tmp_path / "review.csv"
    path.write_text("filename,group,crop,reviewer,time,note,rejected,other\n"
                    f"{files[0]},moths,{digests[0]},ana,2026-01-01T00:00:00Z,,,\n"
                    f"{files[1]},,{digests[1]},ana,2026-01-01T00:00:01Z,,move,{digests[0]}\n"
                    f"{files[1]},,{digests[1]},ana,2026-01-01T00:00:01Z,,split,{digests[2]}\n")
    review = read_review(str(path), files, digests)
    assert review.decisions["group"].tolist() == ["moths"]            # a rejection records no decision
    assert review.rejections[["digest", "other", "kind"]].to_numpy().tolist() == \
        [[digests[1], digests[0], "move"], [digests[1], digests[2], "split"]]
    path.write_text("filename,group,rejected,other\n" f"{files[1]},,maybe,{digests[0]}\n")
    with pytest.raises(CampaignError, match="line 2: rejected 'maybe' is not a suggestion kind"):
        read_review(str(path), files, digests)
    path.write_text("filename,group,rejected,other\n" f"{files[1]},,merge,\n")
    with pytest.raises(CampaignError, match="needs the other crop's digest"):
        read_review(str(path), files, digests)


def test_store_of_schema_1_is_migrated_and_keeps_its_rows(tmp_path):
    connection = sqlite3.connect(tmp_path / "campaign.sqlite")
    for statement in MIGRATIONS[0]:
        connection.execute(statement)
    connection.execute("INSERT INTO schema_version VALUES (1)")
    connection.execute("INSERT INTO runs VALUES (0, 'a', 'b', 'full', '{}', '{}', '{}')")
    connection.commit()
    connection.close()
    with CampaignStore(str(tmp_path)) as store:
        assert len(store.runs()) == 1 and store.rejections().empty
    version = sqlite3.connect(tmp_path / "campaign.sqlite").execute("SELECT version FROM schema_version").fetchone()
    assert version[0] == SCHEMA_VERSION == 4


def test_forest_follows_individuals_split_by_a_review():
    # rows: individual 0 = rows 0, 1; individual 1 = row 2; individual 2 = row 3; row 1 was kept out by a review
    forest = Forest(3, np.array([0, 1]), np.array([1, 2]), np.array([0.9, 0.8], np.float32), 0.5)
    old = np.array([0, 0, 1, 2])
    new = np.array([0, 3, 1, 2])                     # the excluded crop is an individual of its own, appended
    after = renumbered(forest, old, new)
    assert after.n == 4 and sorted(zip(after.rows.tolist(), after.cols.tolist())) == [(0, 1), (1, 2)]
    assert renumbered(None, old, new) is None


def test_worth_an_action_against_the_cards():
    from crop_cluster.outputs.report.suggestions import LEAST, card_actions

    p = LEAST["merge"][1]                                      # margin -0.2: the bin -0.25..-0.15
    assert card_actions("merge", -0.2, [1] * 16 + [0]) == pytest.approx(16 * p - 1)
    assert card_actions("merge", -0.2, [1, 1, 0]) <= 1         # two clusters: one merge of two cards too
    assert card_actions("merge", -0.2, [1, 1, 3]) > card_actions("merge", -0.2, [1, 1, 0])
    assert card_actions("merge", -0.2, [5]) <= 1               # individuals not clustered only: one move
    assert card_actions("split", 0.05, [40]) <= 1              # a split is one action on the cards too
    q = LEAST["move"][4]
    assert card_actions("move", -0.02, [1, 2, 3]) == pytest.approx(sum(1 - (1 - q) ** m for m in (1, 2, 3)))
    x, cluster, threshold, forest = case()
    found = run(x, cluster, threshold, forest).suggestions
    worth = [s.worth for s in found]
    assert worth == sorted(worth, reverse=True)                # those worth an action first
    assert all(s.worth == (s.card_actions > 1) for s in found)


def test_a_chained_cluster_is_no_merge_unit_nor_move_target():
    # a chain of 9 along an arc (neighbours at similarity 0.96, the ends far apart: cohesion below the threshold),
    # a pair next to its first end, and a lone individual near its last end
    angles = np.arange(9) * 0.28
    chain = np.stack([unit(np.cos(a), np.sin(a), 0) for a in angles])
    pair = np.stack([unit(np.cos(-0.3), np.sin(-0.3), 0.05), unit(np.cos(-0.3), np.sin(-0.3), 0.08)])
    lone = unit(np.cos(1.3), np.sin(1.3), 0.5)[None]
    x = np.concatenate([chain, pair, lone]).astype(np.float32)
    threshold = 0.95
    forest = spanning_forest(x, threshold - 0.15)
    cluster = np.array([0] * 9 + [1, 1, -1], dtype=np.int64)
    centre = x[:9].mean(0) / np.linalg.norm(x[:9].mean(0))
    assert float((x[:9] @ centre).mean()) < threshold          # chained
    found = run(x, cluster, threshold, forest).suggestions
    assert not [s for s in found if s.kind == "merge" and 0 in {int(cluster[i]) for i in s.items}]
    assert not [s for s in found if s.kind == "move" and (cluster[s.anchor] == 0 or (cluster[s.items] == 0).any())]
    assert [s for s in found if s.kind == "split" and cluster[s.items[0]] == 0]    # the cards' work: a split
