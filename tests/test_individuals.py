"""Individuals: exact, near-duplicate and track links, the same-frame rule, representatives, linked_by."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from crop_cluster.dedup.individuals import LinkParams, frame_ids, link_individuals
from crop_cluster.dedup.representative import choose_representatives, crop_quality
from crop_cluster.dedup.union import FrameUnion
from crop_cluster.inputs.sidecars import parse_crop_name


def unit(*vectors):
    x = np.asarray(vectors, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(v, eps, axis):
    """`v` tilted by eps towards coordinate `axis` (cosine ~ 1 - eps^2 / 2)."""
    w = np.asarray(v, dtype=np.float64).copy()
    w[axis] += eps
    return w


def run(emb, names, seconds=None, boxes=None, exact_first=None, **params):
    n = len(names)
    params = {"dedup_threshold": None, "track_max_seconds": 0.0, "track_min_similarity": 0.6, **params}
    return link_individuals(
        unit(*emb) if not isinstance(emb, np.ndarray) else emb,
        np.arange(n) if exact_first is None else np.asarray(exact_first),
        names, [(parse_crop_name(name) or (None,))[0] for name in names],
        np.full(n, np.nan) if seconds is None else np.asarray(seconds, dtype=np.float64),
        np.full((n, 4), np.nan) if boxes is None else np.asarray(boxes, dtype=np.float64), LinkParams(**params))


def crop_name(stamp: int, number: int) -> str:
    return f"cam/crop_20230908{stamp:06d}-00-06_CROPNUMBER_{number}_UUID_x.png"


# --- near-duplicates ---------------------------------------------------------------------------------------------

def test_near_duplicates_are_linked_at_the_threshold_only():
    base = [1.0, 0.0, 0.0, 0.0]
    emb = [base, near(base, 0.2, 1), [0.0, 0.0, 1.0, 0.0]]         # cos(0, 1) ~ 0.98
    names = ["a.png", "b.png", "c.png"]
    found = run(emb, names, dedup_threshold=0.95)
    assert found.individual.tolist() == [0, 0, 1]
    assert sorted(found.linked_by) == ["", "", "near"]
    assert found.counts["linked_near"] == 1 and found.counts["individuals"] == 2
    assert run(emb, names, dedup_threshold=0.99).individual.tolist() == [0, 1, 2]
    assert run(emb, names).individual.tolist() == [0, 1, 2]           # None: near-duplicate linking off


def test_near_duplicates_chain_most_similar_first_and_never_join_one_frame():
    base = [1.0, 0.0, 0.0]
    # two crops of frame f1 (one insect detected twice) and a near-identical crop in frame f2
    emb = [base, near(base, 0.1, 1), near(base, 0.05, 2)]
    names = ["crop_f1_CROPNUMBER_0_UUID_x.png", "crop_f1_CROPNUMBER_1_UUID_x.png", "crop_f2_CROPNUMBER_0_UUID_x.png"]
    found = run(emb, names, dedup_threshold=0.9)
    assert found.individual[0] != found.individual[1]                 # same frame: never one individual
    assert found.individual[2] == found.individual[0]                 # the more similar one wins the f2 crop
    assert found.counts["refused_same_frame_near"] == 1


def test_exact_copies_are_linked_even_within_one_frame():
    emb = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    names = ["crop_f1_CROPNUMBER_0_UUID_x.png", "crop_f1_CROPNUMBER_1_UUID_x.png", "other.png"]
    found = run(emb, names, exact_first=[0, 0, 2], dedup_threshold=0.9)
    assert found.individual.tolist() == [0, 0, 1]
    assert found.linked_by.count("exact") == 1 and found.counts["linked_exact"] == 1


# --- tracks ------------------------------------------------------------------------------------------------------

def two_insects(frames=(0, 2, 4)):
    """Two insects A and B in each frame; A-A' cos 0.8, B-B' 0.8, A-B' 0.72 (above the 0.6 gate, so plain
    thresholding would merge them all): each frame tilts every crop towards its own axis."""
    a, b = np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.9, np.sqrt(1 - 0.81), 0.0, 0.0])
    emb, names, seconds, truth = [], [], [], []
    for k, t in enumerate(frames):
        tilt = np.zeros(4)
        tilt[2 + k % 2] = 0.5
        for number, (centre, label) in enumerate(((a, "A"), (b, "B"))):
            emb.append(centre + tilt)
            names.append(crop_name(t, number))
            seconds.append(float(t))
            truth.append(label)
    return unit(*emb), names, seconds, truth


def test_track_assignment_follows_each_insect_where_thresholding_would_merge():
    emb, names, seconds, truth = two_insects()
    sims = emb @ emb.T
    assert sims[0, 3] > 0.6 and sims[1, 2] > 0.6                       # cross pairs pass the similarity gate
    found = run(emb, names, seconds, track_max_seconds=30.0)
    groups = {label: set(found.individual[[i for i, t in enumerate(truth) if t == label]]) for label in "AB"}
    assert all(len(g) == 1 for g in groups.values()) and groups["A"] != groups["B"]
    assert found.linked_by.count("track") == 4 and found.counts["linked_track"] == 4


def test_track_time_gate():
    emb, names, seconds, _ = two_insects(frames=(0, 100))
    assert run(emb, names, seconds, track_max_seconds=30.0).counts["individuals"] == 4
    assert run(emb, names, seconds, track_max_seconds=120.0).counts["individuals"] == 2
    assert run(emb, names, seconds, track_max_seconds=0.0).counts["individuals"] == 4   # 0 = off


def test_track_similarity_gate_leaves_a_newcomer_alone():
    emb = [[1.0, 0.0, 0.0], [0.9, 0.3, 0.0], [0.0, 0.0, 1.0]]          # frame 2 adds an unrelated insect
    names = [crop_name(0, 0), crop_name(2, 0), crop_name(2, 1)]
    found = run(emb, names, [0, 2, 2], track_max_seconds=30.0, track_min_similarity=0.6)
    assert found.individual.tolist() == [0, 0, 1] and found.linked_by[2] == ""


def test_track_distance_gate_in_box_sizes():
    emb = [[1.0, 0.0], [1.0, 0.05]]
    names = [crop_name(0, 0), crop_name(2, 0)]
    close = [[0, 0, 10, 10], [15, 0, 25, 10]]                        # 1.5 box sizes apart
    far = [[0, 0, 10, 10], [40, 0, 50, 10]]                          # 4 box sizes apart
    kwargs = {"track_max_seconds": 30.0, "track_max_distance": 2.0}
    assert run(emb, names, [0, 2], close, **kwargs).counts["individuals"] == 1
    assert run(emb, names, [0, 2], far, **kwargs).counts["individuals"] == 2
    assert run(emb, names, [0, 2], far, track_max_seconds=30.0, track_max_distance=5.0).counts["individuals"] == 1


def test_track_never_links_one_frame_nor_across_folders():
    emb = [[1.0, 0.0], [1.0, 0.01], [1.0, 0.02]]
    # names without the crop pattern: the same timestamp in one folder is one frame
    same_time = ["cam/a_20230908001617.png", "cam/b_20230908001617.png", "other/c_20230908001619.png"]
    found = run(emb, same_time, [0, 0, 2], track_max_seconds=30.0)
    assert found.counts["individuals"] == 3                            # one frame; c is in another folder
    moved = ["cam/a_20230908001617.png", "cam/b_20230908001617.png", "cam/c_20230908001619.png"]
    assert run(emb, moved, [0, 0, 2], track_max_seconds=30.0).counts["individuals"] == 2


def test_frame_ids():
    names = ["x/crop_img1_CROPNUMBER_0_UUID_a.png", "y/crop_img1_CROPNUMBER_3_UUID_a.png", "x/p.png", "x/q.png",
             "y/r.png", "x/s.png"]
    sources = [(parse_crop_name(name) or (None,))[0] for name in names]
    ids = frame_ids(names, sources, np.array([np.nan, np.nan, 5.0, 5.0, 5.0, np.nan]))
    assert ids[0] == ids[1] and ids[2] == ids[3] != ids[4] and ids[5] == -1
    assert len({ids[0], ids[2], ids[4]}) == 3


def test_frame_union_refuses_and_counts():
    union = FrameUnion(np.array([0, 0, 1, -1]))
    assert union.link(0, 2, "near") and not union.link(1, 2, "track")
    assert union.refused["track"] == 1 and union.link(1, 3, "near") and union.link(1, 0, "exact", force=True)
    assert union.labels().tolist().count(union.find(0)) == 4


# --- representatives ---------------------------------------------------------------------------------------------

def test_representative_is_the_largest_sharpest_crop(tmp_path):
    rng = np.random.default_rng(1)
    texture = Image.fromarray(rng.integers(0, 255, size=(60, 60, 3), dtype=np.uint8))
    paths = {}
    for name, image in {"small": texture.resize((30, 30)), "sharp": texture,
                        "blurred": texture.filter(ImageFilter.GaussianBlur(3))}.items():
        paths[name] = str(tmp_path / f"{name}.png")
        image.save(paths[name])
    quality = {name: crop_quality(path) for name, path in paths.items()}
    assert quality["sharp"] > quality["blurred"] and quality["sharp"] > quality["small"]
    assert crop_quality(str(tmp_path / "gone.png")) == 0.0
    emb = unit([1.0, 0.0], [1.0, 0.01], [1.0, 0.02])
    found = run(emb, [paths["small"], paths["sharp"], paths["blurred"]], dedup_threshold=0.9)
    assert found.representative.tolist() == [False, True, False] and found.linked_by[1] == ""
    assert found.individual.tolist() == [0, 0, 0]


def test_choose_representatives_ties_go_to_the_first():
    chosen = choose_representatives(np.array([0, 1, 0, 1, 2]), np.array([1.0, 2.0, 1.0, 3.0, -np.inf]))
    assert chosen.tolist() == [True, False, False, True, True]


@pytest.mark.parametrize("threshold", [0.5, 0.99])
def test_every_individual_has_one_representative_and_linked_by_is_consistent(threshold):
    rng = np.random.default_rng(3)
    emb = unit(*rng.normal(size=(40, 8)))
    names = [crop_name(2 * (k // 4), k % 4) for k in range(40)]
    found = run(emb, names, np.array([2.0 * (k // 4) for k in range(40)]), dedup_threshold=threshold,
                track_max_seconds=30.0, track_min_similarity=0.3)
    assert np.bincount(found.individual[found.representative]).tolist() == [1] * found.counts["individuals"]
    assert (np.array(found.linked_by) == "").tolist() == found.representative.tolist()
    frames = np.array([k // 4 for k in range(40)])
    for ind in range(found.counts["individuals"]):                    # never two crops of one frame
        members = frames[found.individual == ind]
        assert len(members) == len(set(members))
