"""--sweep: parsing, partitions equal to a clustering run at each threshold, recommendation, CLI outputs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crop_cluster.cli import main
from crop_cluster.clustering import ClusterParams, run_algorithm
from conftest import PALETTE, draw_crop
from crop_cluster.evaluate.sweep import SweepError, parse_sweep, recommend, sweep_partitions, sweep_table


def blobs(n_groups=12, per_group=8, d=16, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    points = np.repeat(rng.normal(size=(n_groups, d)), per_group, axis=0) + noise * rng.normal(size=(n_groups * per_group, d))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), [f"k{i // per_group}" for i in range(n_groups * per_group)]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming, with every -1 its own singleton in both."""
    def canonical(labels):
        labels = labels.copy()
        noise = labels < 0
        labels[noise] = labels.max(initial=0) + 1 + np.arange(noise.sum())
        return pd.factorize(labels)[0]
    return np.array_equal(canonical(a), canonical(b))


def test_parse_sweep():
    assert parse_sweep("0.70:0.95:0.05").tolist() == [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert parse_sweep("0.7:0.72:0.01").tolist() == [0.7, 0.71, 0.72]
    assert parse_sweep("0.8:0.8:0.1").tolist() == [0.8]
    for bad, message in [("0.9:0.8:0.01", "out of range"), ("a:b:c", "not three numbers"),
                         ("0.7:0.9", "not three numbers"), ("0.7:0.9:0", "out of range"),
                         ("0.5:1.5:0.1", "out of range"), ("0:1:1e-6", "1000001 thresholds, more than 1000")]:
        with pytest.raises(SweepError, match=f"--sweep {bad}: {message}"):
            parse_sweep(bad)


def test_sweep_partitions_equal_a_clustering_run_at_each_threshold():
    points, _ = blobs()
    thresholds = parse_sweep("0.30:0.95:0.05")
    seen = 0
    for threshold, labels in sweep_partitions(points, thresholds):
        run = run_algorithm("cosine", points, ClusterParams(threshold=threshold)).groups
        single = np.bincount(run)[run] < 2
        assert same_partition(labels, np.where(single, -1, run)), threshold
        seen += 1
    assert seen == len(thresholds)


def test_sweep_table_and_recommendation():
    points, labels = blobs()
    table = sweep_table(points, parse_sweep("0.30:0.95:0.01"), np.arange(len(labels)), labels)
    assert list(table.columns) == ["threshold", "n_clusters", "singleton_fraction", "largest_cluster_share", "ari",
                                   "ami", "pairwise_precision", "pairwise_recall", "pairwise_f1"]
    assert table.singleton_fraction.is_monotonic_increasing and table.largest_cluster_share.is_monotonic_decreasing
    threshold, rule = recommend(table)
    assert table.set_index("threshold").ari[threshold] == table.ari.max() and "ARI" in rule
    assert threshold == table.threshold[table.ari == table.ari.max()].max()
    unlabelled = table[["threshold", "n_clusters", "singleton_fraction", "largest_cluster_share"]]
    guess, rule = recommend(unlabelled)
    assert "no labels" in rule and table.set_index("threshold").ari[guess] >= 0.85 * table.ari.max()


def test_recommend_without_labels_avoids_one_giant_cluster():
    table = pd.DataFrame({"threshold": [0.5, 0.6, 0.7, 0.8, 0.9], "n_clusters": [1, 1, 4, 4, 2],
                          "singleton_fraction": [0, 0, 0.1, 0.2, 0.8], "largest_cluster_share": [1, 1, .2, .2, .1]})
    assert recommend(table)[0] == 0.7   # 4 clusters, 90 % clustered; not the 1-cluster thresholds
    table["n_clusters"] = 1
    assert recommend(table)[0] == 0.9   # nothing usable: the highest threshold


def test_cli_sweep_writes_csv_png_and_recommendation(tmp_path, fake_backend):
    crops = tmp_path / "crops"
    for colour in range(3):
        for view in range(4):
            draw_crop(crops / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)
    pd.DataFrame({"filename": [f"c{c}_v{v}.png" for c in range(3) for v in range(4)],
                  "label": [f"c{c}" for c in range(3) for v in range(4)]}).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "out"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "--no-report", "-th", "0.9",
                         "--labels", str(tmp_path / "labels.csv"), "--sweep", "0.50:0.99:0.01"]) == 0
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 50 and table.threshold.iloc[0] == 0.5 and table.threshold.iloc[-1] == 0.99
    metrics = json.loads((out / "metrics.json").read_text())["cluster"]
    row = table[np.isclose(table.threshold, 0.9)].iloc[0]
    for key in ("ari", "ami", "pairwise_precision", "pairwise_recall", "pairwise_f1"):
        assert row[key] == pytest.approx(metrics[key], abs=1e-6), key
    sweep = json.loads((out / "run.json").read_text())["sweep"]
    assert sweep["recommended_threshold"] in table.threshold.tolist() and "ARI" in sweep["rule"]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "--sweep", "0.9:0.5:0.1"]) == 2


def test_an_individual_seen_in_two_crops_is_a_cluster_in_the_sweep_as_in_the_run():
    points = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)   # three far-apart individuals
    crops = np.array([2, 1, 1])                                                # the first seen twice
    (_, labels), = sweep_partitions(points, [0.99], crops=crops)
    assert labels[0] >= 0 and (labels[1:] == -1).all()
    table = sweep_table(points, [0.99], individual=np.array([0, 0, 1, 2]))
    assert table.n_clusters.tolist() == [1] and table.singleton_fraction.tolist() == [pytest.approx(2 / 3)]
