"""The campaign package on tiny data: store (versions, damage, transactions), lock, review files, decisions,
stable ids, --add placement and linking, and the collection passing over output folders."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from crop_cluster.campaign import EXCLUDED, CampaignError, StoreDamagedError, StoreLockedError, StoreVersionError
from crop_cluster.campaign.add import add_to_campaign
from crop_cluster.campaign.decisions import apply_decisions, latest_decisions
from crop_cluster.campaign.ids import max_overlap, stable_ids
from crop_cluster.campaign.link import link_across
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


# ---------------------------------------------------------------- --add

def test_new_individuals_join_at_the_match_threshold_and_conflicts_go_to_the_closer_group():
    old = unit([[1, 0, 0], [1, .05, 0], [0, 1, 0], [0, 1, .05], [0, 0, 1]])
    old_item = np.arange(5)
    old_label = np.array([3, 3, 8, 8, -1])                  # individual 4 is not clustered
    new = unit([[1, .02, 0],                                # joins 3
                [.75, .66, 0],                              # reaches 3 and 8 at 0.6: both reviewed, conflict
                [0, .02, 1],                                # pulls the old singleton 4 into a new cluster
                [-1, -1, 0], [-1, -1.02, 0]])               # a new cluster of two
    result = add_to_campaign(old, old_item, old_label, new, np.arange(5), threshold=0.9, match_threshold=0.6,
                             reviewed={3, 8})
    label = result.label
    assert label[:4].tolist() == [3, 3, 8, 8] and label[5] == 3 and label[6] == 3
    assert result.conflicts == [{"individual": 1, "clusters": [3, 8],
                                 "similarities": pytest.approx([.78, .66], abs=0.01), "chosen": 3}]
    assert label[4] == label[7] >= result.first_new_label and label[8] == label[9] >= result.first_new_label
    assert label[4] != label[8] and result.counts == {"joined": 2, "new_clusters": 2, "conflicts": 1,
                                                      "ambiguous": 1}


def test_the_centroid_bound_finds_what_brute_force_finds():
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(30, 16)))
    old = unit(np.repeat(centres, 20, axis=0) + 0.25 * rng.normal(size=(600, 16)))
    old_label = np.repeat(np.arange(30), 20)
    new = unit(centres[rng.integers(0, 30, 200)] + 0.3 * rng.normal(size=(200, 16)))
    result = add_to_campaign(old, np.arange(600), old_label, new, np.arange(200), 0.95, 0.7, set())
    sims = new @ old.T
    best = np.full(200, -1)
    reach = sims.max(axis=1) >= 0.7
    per_cluster = np.stack([sims[:, old_label == k].max(axis=1) for k in range(30)], axis=1)
    best[reach] = per_cluster[reach].argmax(axis=1)
    assert reach.sum() > 50 and np.array_equal(result.label[600:][reach], best[reach])


def test_a_new_crop_continues_a_campaign_individual_across_the_batch_boundary():
    embedding = unit([[1, 0], [0, 1], [1, .01], [1, .02]])
    is_old = np.array([True, True, False, False])
    item = np.array([0, 1, 2, 3])
    seconds = np.array([100.0, 100.0 - 500, 110.0, 400.0])   # new crop 2 is 10 s after old crop 0; crop 3 too late
    found = link_across(embedding, is_old, item, ["cam/a.png", "cam/b.png", "cam/c.png", "cam/d.png"],
                        [None] * 4, seconds, np.full((4, 4), np.nan), n_old=2, max_seconds=30, max_distance=2,
                        min_similarity=0.9)
    assert found.new_to_old.tolist() == [0, -1] and found.links == 1


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


def test_reached_in_bf16_gives_the_float32_answer(monkeypatch):
    import crop_cluster.campaign.add as add

    rng = np.random.default_rng(5)
    old = rng.normal(size=(3000, 64)).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    new = old[:40] + 0.02 * rng.normal(size=(40, 64)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    exact = (old @ new.T).max(axis=1)
    threshold = float(np.sort(exact)[-20] + 1e-6)          # about 20 old rows at or just past it, the rest below
    rows = np.arange(old.shape[0])
    answers = {}
    for fast in (False, True):
        monkeypatch.setattr(add, "_fast_product", lambda n_rows, n_cols, fast=fast: fast)
        answers[fast] = add._reached(new, old, rows, threshold)
    assert np.array_equal(answers[True], answers[False])
    assert np.array_equal(answers[False], exact >= threshold) and 0 < answers[False].sum() < 40


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
