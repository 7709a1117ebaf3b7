"""The campaign package on tiny data: store (versions, damage, transactions), lock, review files, decisions,
stable ids, growing the similarity graph for --add, and the collection passing over output folders."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from crop_cluster.campaign import EXCLUDED, CampaignError, StoreDamagedError, StoreLockedError, StoreVersionError
from crop_cluster.campaign.decisions import apply_decisions, latest_decisions
from crop_cluster.campaign.ids import max_overlap, stable_ids
from crop_cluster.campaign.lock import RunLock
from crop_cluster.campaign.review import read_review
from crop_cluster.campaign.store import CampaignStore, RunRecord, read_campaign, store_path
from crop_cluster.inputs.collect import collect_images


def unit(rows) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def record(digests, clusters, names=None, individuals=None) -> RunRecord:
    n = len(digests)
    crops = pd.DataFrame({"digest": digests, "path": [f"/x/{d}.png" for d in digests],
                          "individual": individuals if individuals is not None else list(range(n)),
                          "cluster": clusters, "representative": True, "seconds": np.nan, "night": None,
                          "site": None})
    ids = sorted({c for c in clusters if c >= 0})
    names = names or {}
    table = pd.DataFrame({"id": ids, "name": [names.get(i, "") for i in ids],
                          "status": ["reviewed" if i in names else "new" for i in ids]})
    return RunRecord("2026-06-01T00:00:00+00:00", "2026-06-01T00:00:01+00:00", "full", {"threshold": 0.9}, {},
                     {"rows": n}, crops, table)


# ---------------------------------------------------------------- store

def test_store_round_trip_and_read_only_view(tmp_path):
    with CampaignStore(str(tmp_path)) as store:
        assert not store.exists and store.crops().empty and store.next_cluster_id() == 0
        assert store.commit_run(record(["a", "b", "c"], [0, 0, -1], names={0: "moth"})) == 0
        assert store.commit_run(record(["a", "d"], [1, 1])) == 1
        assert store.next_cluster_id() == 2 and store.next_individual_id() == 3
    view = read_campaign(str(tmp_path))
    crops = view.crops.set_index("digest")
    assert crops.loc["a", "first_run"] == 0 and crops.loc["a", "last_run"] == 1 and crops.loc["a", "cluster"] == 1
    assert crops.loc["c", "cluster"] == -1 and crops.loc["d", "first_run"] == 1
    clusters = view.clusters.set_index("id")
    assert clusters.loc[0, "name"] == "moth" and clusters.loc[0, "reviewed_run"] == 0   # never deleted
    assert clusters.loc[0, "size"] == 1 and clusters.loc[1, "size"] == 2
    assert list(view.runs["mode"]) == ["full", "full"] and json.loads(view.runs["counts"][1]) == {"rows": 2}
    assert sqlite3.connect(store_path(str(tmp_path))).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failed_commit_leaves_the_store_as_before(tmp_path):
    with CampaignStore(str(tmp_path)) as store:
        store.commit_run(record(["a", "b"], [0, 0]))
    bad = record(["a", "e"], [3, 3])
    bad.crops.loc[1, "path"] = None                  # NOT NULL: fails after the run row and the first crop
    with CampaignStore(str(tmp_path)) as store, pytest.raises(sqlite3.IntegrityError):
        store.commit_run(bad)
    view = read_campaign(str(tmp_path))
    assert len(view.runs) == 1 and view.crops["digest"].tolist() == ["a", "b"] and view.crops["cluster"].eq(0).all()


def test_a_first_commit_that_fails_leaves_an_empty_campaign(tmp_path):
    bad = record(["a"], [-1])
    bad.crops.loc[0, "path"] = None
    with CampaignStore(str(tmp_path)) as store, pytest.raises(sqlite3.IntegrityError):
        store.commit_run(bad)
    with CampaignStore(str(tmp_path)) as store:
        assert store.crops().empty and store.commit_run(record(["a"], [-1])) == 0


def test_a_newer_or_damaged_store_raises_a_typed_error_naming_the_file(tmp_path):
    with CampaignStore(str(tmp_path)) as store:
        store.commit_run(record(["a"], [-1]))
    connection = sqlite3.connect(store_path(str(tmp_path)))
    connection.execute("UPDATE schema_version SET version = 99")
    connection.commit()
    connection.close()
    with pytest.raises(StoreVersionError, match=r"campaign.sqlite: written by a newer crop-cluster .*upgrade"):
        CampaignStore(str(tmp_path))
    damaged = tmp_path / "other"
    damaged.mkdir()
    (damaged / "campaign.sqlite").write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreDamagedError, match=r"other/campaign.sqlite: .*move .* away"):
        CampaignStore(str(damaged))


def test_a_second_run_waits_then_stops_with_a_clear_message(tmp_path):
    with RunLock(str(tmp_path), 1.0):
        with pytest.raises(StoreLockedError, match="another crop-cluster run is writing to this output folder"):
            RunLock(str(tmp_path), 0.3).acquire()
    with RunLock(str(tmp_path), 0.3):         # released: the next run gets it at once
        pass


# ---------------------------------------------------------------- review files

def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_crop_keyed_review_matches_like_labels_and_by_content(tmp_path):
    files = ["night1/a.png", "night1/b.png", "night2/c.png"]
    path = write(tmp_path / "review.csv", "filename,group,crop,reviewer,time,note\n"
                                          "a.png,moth A,,ana,2026-06-02T08:00:00Z,\n"
                                          "renamed.png,moth A,dc,ana,,\n"      # matched by its digest
                                          "night2/c.png,-1,,,,blurred\n"
                                          "elsewhere/z.png,moth B,,,,\n"         # not in this run
                                          "night1/b.png,,,,,note only\n")
    review = read_review(path, files, ["da", "db", "dc"])
    assert review.rows == 4 and review.matched == 3 and review.kind == "crop"
    assert review.decisions["digest"].tolist() == ["da", "dc", "dc"]
    assert review.decisions["group"].tolist() == ["moth A", "moth A", EXCLUDED]
    assert review.decisions["time"][0] == "2026-06-02T08:00:00+00:00" and review.decisions["reviewer"][0] == "ana"


@pytest.mark.parametrize("text, message", [
    ("name,group\nx,1\n", r"needs the columns filename,group"),
    ("filename,group\nz.png,moths\n", r"none of its 1 decisions names a crop of this run \(matched 0 of 1\)"),
    ("filename,group,time\na.png,moths,yesterday\n", r"line 2: time 'yesterday' is not an ISO 8601 time"),
])
def test_review_errors_name_the_file_and_the_fix(tmp_path, text, message):
    path = write(tmp_path / "review.csv", text)
    with pytest.raises(CampaignError, match=str(tmp_path / "review.csv") + ".*" + message):
        read_review(path, ["a.png"], ["da"])


def test_cluster_keyed_review_applies_to_the_run_that_wrote_it(tmp_path):
    write(tmp_path / "clusters.csv", "filename,cluster\na.png,0\nb.png,0\nc.png,1\nd.png,-1\n")
    path = write(tmp_path / "review.csv", "cluster,group,note\n0,moths,\n1,-1,bad\n")
    review = read_review(path, ["a.png", "b.png", "c.png", "d.png"], ["da", "db", "dc", "dd"],
                         str(tmp_path / "clusters.csv"))
    assert review.kind == "cluster" and review.rows == 2
    assert dict(zip(review.decisions["digest"], review.decisions["group"])) == {"da": "moths", "db": "moths",
                                                                                  "dc": EXCLUDED}
    bad = write(tmp_path / "bad.csv", "cluster,group\n7,x\n")
    with pytest.raises(CampaignError, match="cluster 7 does not exist"):
        read_review(bad, ["a.png"], ["da"], str(tmp_path / "clusters.csv"))


# ---------------------------------------------------------------- decisions

def decisions(rows):
    return pd.DataFrame(rows, columns=["digest", "group", "time"])


def test_the_latest_decision_wins_and_disagreements_are_reported():
    latest = latest_decisions(decisions([("a", "moth", "2026-06-02T00:00:00+00:00"),
                                         ("a", "fly", "2026-06-01T00:00:00+00:00"),
                                         ("b", "fly", "2026-06-01T00:00:00+00:00"),
                                         ("b", "fly", "2026-06-03T00:00:00+00:00")]))
    assert latest.group == {"a": "moth", "b": "fly"}
    assert latest.disagreements == [("a", ["fly", "moth"])]


def test_names_merge_and_split_clusters_and_exclusions_leave_every_cluster():
    # individuals 0..5, one crop each except individual 1 (crops 1 and 2); algorithm clusters: {0,1} {2,3} {4,5}
    digests = ["d0", "d1", "d1x", "d3", "d4", "d5", "d6"]
    individual = np.array([0, 1, 1, 2, 3, 4, 5])
    representative = np.array([1, 1, 0, 1, 1, 1, 1], dtype=bool)
    label = np.array([0, 0, 1, 1, 2, 2])
    embedding = unit([[1, 0], [1, .1], [1, .1], [0, 1], [.1, 1], [-1, 0], [-1, .2]])
    t = "2026-06-01T00:00:00+00:00"
    latest = latest_decisions(decisions([("d0", "G", t), ("d3", "G", t),       # G across clusters 0 and 1: merge
                                         ("d5", "A", t), ("d6", "B", t),       # two names in cluster 2: split
                                         ("d1x", EXCLUDED, t)]))               # one crop of individual 1 out
    applied = apply_decisions(latest, digests, individual, representative, label, embedding)
    row_label = applied.label[applied.individual]
    names = applied.names
    assert names[row_label[0]] == "G" and row_label[0] == row_label[3]          # merged under G
    assert row_label[1] == row_label[0] and row_label[4] == row_label[0]       # their unnamed members follow G
    assert names[row_label[5]] == "A" and names[row_label[6]] == "B"          # split
    assert row_label[2] == -1 and applied.excluded.tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert applied.individual[2] != applied.individual[1] and applied.representative[2]
    assert applied.counts["clusters_merged_by_name"] == 1 and applied.counts["clusters_split_by_names"] == 1


# ---------------------------------------------------------------- ids

def test_max_overlap_is_exact_where_greedy_is_not():
    # new A shares 5 crops with old X and 4 with old Y; new B shares 4 with X only: greedy gives A->X and leaves B
    new = np.array([0] * 9 + [1] * 4)
    old = np.array([10] * 5 + [11] * 4 + [10] * 4)
    assert max_overlap(new, old) == {0: 11, 1: 10}


def test_stable_ids_keep_matches_fix_names_and_never_reuse():
    new = np.array([0, 0, 1, 1, 2, 2, -1])
    old = np.array([4, 4, 7, 7, -1, -1, 4])
    ids = stable_ids(new, old, next_id=9, fixed={2: 3})
    assert ids == {0: 4, 1: 7, 2: 3}
    assert stable_ids(np.array([0, 0, 1]), np.array([-1, -1, -1]), next_id=9) == {0: 9, 1: 10}


# ---------------------------------------------------------------- growing the graph (--add)

def _clustered(rng, n, d, centres=30, spread=0.25, lone=0.2):
    middle = unit(rng.normal(size=(centres, d)))
    grouped = unit(middle[rng.integers(0, centres, int(n * (1 - lone)))] +
                   spread * rng.normal(size=(int(n * (1 - lone)), d)))
    return np.concatenate([grouped, unit(rng.normal(size=(n - len(grouped), d)))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_grown_forest_is_the_forest_of_all_the_crops(seed):
    from crop_cluster.clustering.forest import grow_forest, partition_at, spanning_forest

    rng = np.random.default_rng(seed)
    x = _clustered(rng, 1500, 16)
    old = np.sort(rng.permutation(len(x))[:1000])
    stats = {}
    grown = grow_forest(spanning_forest(x[old], 0.7), old, x, 0.75, stats)
    full = spanning_forest(x, 0.75)
    edges = lambda f: set(zip(np.minimum(f.rows, f.cols).tolist(), np.maximum(f.rows, f.cols).tolist()))
    assert edges(grown) == edges(full) and grown.threshold == 0.75
    assert np.array_equal(partition_at(grown, 0.8), partition_at(full, 0.8))
    assert stats["new_rows"] == 500 and stats["groups"] > 10 and stats["lone_old_rows"] > 100
    assert stats["member_products"] < 500 * 1000 / 2          # the centroid bound skipped most old rows


def test_a_forest_cannot_grow_below_its_threshold():
    from crop_cluster.clustering.forest import grow_forest, spanning_forest

    x = unit(np.random.default_rng(0).normal(size=(20, 4)))
    with pytest.raises(ValueError, match="lower threshold"):
        grow_forest(spanning_forest(x[:10], 0.8), np.arange(10), x, 0.7)


def test_cross_edges_in_bf16_give_the_float32_answer(monkeypatch):
    import crop_cluster.clustering.graph as graph

    rng = np.random.default_rng(5)
    base = unit(rng.normal(size=(3000, 64)))
    queries = unit(base[:40] + 0.02 * rng.normal(size=(40, 64)))
    exact = queries @ base.T
    threshold = float(np.sort(exact.ravel())[-60] + 1e-6)
    answers = {}
    for fast in (False, True):
        monkeypatch.setattr(graph, "bf16_pays", lambda products, fast=fast: fast)
        q, b, sims = graph.cross_edges(queries, base, threshold)
        answers[fast] = set(zip(q.tolist(), b.tolist()))
    wanted = set(zip(*np.nonzero(exact >= threshold)))
    assert answers[True] == answers[False] == {(int(i), int(j)) for i, j in wanted} and 0 < len(wanted) < 100


# ---------------------------------------------------------------- inputs

def test_the_collection_passes_over_output_folders(tmp_path):
    for name in ("crops/a.png", "crops/out/clusters/0/a.png", "crops/old/report/t.png", "crops/b.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "crops/old/run.json").write_text('{"parameters": {}, "counts": {}}')
    (tmp_path / "crops/out").mkdir(exist_ok=True)
    result = collect_images([str(tmp_path / "crops")], exclude=[str(tmp_path / "crops/out")])
    assert result.files == [str(tmp_path / "crops/a.png"), str(tmp_path / "crops/b.png")]
    assert result.passed_over_outputs == 2 and len(result.output_folders) == 2
    (tmp_path / "crops/old/run.json").write_text('{"someone": "else"}')          # not a crop-cluster run.json
    assert len(collect_images([str(tmp_path / "crops")]).files) == 4


def test_group_values_in_one_spelling():
    from crop_cluster.campaign import EXCLUDED
    from crop_cluster.campaign.groups import group_value

    for spelling in ("-1", " -1 ", "-1.0", "-1,0", "-01", "- 1", "\u22121", "\u2013 1", "\uff0d\uff11", "-1."):
        assert group_value(spelling) == EXCLUDED, spelling
    for name in ("-2", "1", "-10", "-1 moth", "moth", "-1.5", "+1"):
        assert group_value(name) == name.strip(), name
    assert group_value("  Noctuid\u00e6 ") == "Noctuid\u00e6"
    assert group_value("cafe\u0301") == "caf\u00e9"                      # NFD (macOS) -> NFC


def test_stored_spellings_of_minus_one_exclude_too():
    """A store written before the spellings were normalised still keeps those crops out."""
    from crop_cluster.campaign.decisions import latest_decisions

    latest = latest_decisions(pd.DataFrame({"digest": ["a", "b"], "group": ["-1.0", "\u22121"],
                                            "time": ["2026-01-01T00:00:00+00:00"] * 2}))
    assert latest.group == {"a": "-1", "b": "-1"}
