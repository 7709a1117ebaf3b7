"""The clustering flags through main([...]): every algorithm writes the same outputs; options are validated."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crop_cluster.cli import main
from conftest import PALETTE, draw_crop, draw_views


@pytest.fixture
def crops(tmp_path) -> Path:
    """4 colours x 6 views plus 2 lone crops (black, and a colour far from the palette)."""
    root = tmp_path / "crops"
    draw_views(root, 4, 6)
    draw_crop(root / "lone_black.png", PALETTE[5], seed=1)
    draw_crop(root / "lone_grey.png", (128, 128, 128), seed=2)
    return root


@pytest.fixture
def embeddings(crops, tmp_path, fake_backend) -> Path:
    first = tmp_path / "first"
    assert main([str(a) for a in ("-i", crops, "-o", first, "-e", fake_backend, "-q")]) == 0
    return first / "embeddings.pkl"


def run(embeddings: Path, out: Path, *args) -> tuple:
    code = main([str(a) for a in ("--embeddings", embeddings, "-o", out, "-q", *args)])
    assert code == 0
    return pd.read_csv(out / "clusters.csv"), json.loads((out / "run.json").read_text())


def colour_of(filenames) -> np.ndarray:
    return np.array([Path(name).name[:2] for name in filenames])


def assert_colours_are_clusters(table: pd.DataFrame) -> None:
    views = table[table.filename.str.contains("/c\\d_v", regex=True)]
    by_colour = views.groupby(colour_of(views.filename)).cluster
    assert (by_colour.nunique() == 1).all() and views.cluster.nunique() == 4 and (views.cluster >= 0).all()


@pytest.mark.parametrize("args", [
    ["-c", "cosine"],
    ["-c", "kmeans", "--n_clusters", "6"],
    ["-c", "kmeans", "-x", "6"],
    ["-c", "agglomerative", "--linkage", "average", "--distance_threshold", "0.05"],
    ["-c", "agglomerative", "--n_clusters", "6", "--standardize", "--pca", "2"],
    ["-c", "hdbscan", "--min_cluster_size", "3"],
])
def test_every_algorithm_writes_the_same_outputs(embeddings, tmp_path, args):
    table, manifest = run(embeddings, tmp_path / "out", *args)
    assert list(table.columns[:7]) == ["filename", "cluster", "cluster_size", "sim_to_centroid", "individual",
                                       "representative", "dist_to_centroid"]
    assert_colours_are_clusters(table)
    if args[1] != "hdbscan":   # on 26 points HDBSCAN attaches the lone crops to a colour; the others leave them out
        assert sorted(table.cluster.unique()) == [-1, 0, 1, 2, 3]
    sizes = table[table.cluster >= 0].groupby("cluster").size()
    assert sizes.is_monotonic_decreasing
    np.testing.assert_allclose(table.dist_to_centroid, 1 - table.sim_to_centroid, atol=1e-6)
    clustering = manifest["clustering"]
    assert clustering["algorithm"] == args[1]
    assert set(manifest["counts"]["cluster_size_histogram"]) == {"5-9"}


def test_cosine_records_the_graph_and_the_histogram(embeddings, tmp_path):
    _, manifest = run(embeddings, tmp_path / "out", "-th", "0.95", "-d", "cpu")  # -d auto is the GPU where one is
    graph = manifest["graph"]                                   # the run's one similarity-graph pass
    assert graph["precision"] == "float32"                      # 26 crops: bf16 would not pay for importing torch
    assert graph["device"] == "cpu" and graph["forest_threshold"] == 0.95 and graph["rows"] == 26
    assert graph["edges"] >= graph["forest_edges"] == 4 * 5
    assert manifest["clustering"]["graph"] == {"shared": True, "forest_threshold": 0.95, "forest_edges": 4 * 5}
    assert manifest["clustering"]["parameters"] == {"threshold": 0.95, "max_cluster_size": 0}


def test_chaining_guard_caps_cluster_size(embeddings, tmp_path, caplog):
    loose, manifest = run(embeddings, tmp_path / "loose", "-th", "0.0")
    assert manifest["counts"]["largest_cluster"] == 26 and "--max_cluster_size" in caplog.text
    capped, manifest = run(embeddings, tmp_path / "capped", "-th", "0.0", "--max_cluster_size", "6")
    assert capped[capped.cluster >= 0].groupby("cluster").size().max() <= 6
    assert_colours_are_clusters(capped)
    guard = manifest["clustering"]["chaining_guard"]
    assert guard["max_cluster_size"] == 6 and guard["components_split"] == 1 and guard["parts"] >= 4


def test_post_filters_min_size_and_min_similarity(embeddings, tmp_path):
    table, manifest = run(embeddings, tmp_path / "big", "--min_cluster_size", "7")
    assert (table.cluster == -1).all() and manifest["clustering"]["min_cluster_size"] == 7
    table, _ = run(embeddings, tmp_path / "near", "-c", "kmeans", "--n_clusters", "4", "--min_sim_to_centroid",
                   "0.99")
    lone = table[table.filename.str.contains("lone")]
    assert (lone.cluster == -1).all()                 # far from the centroid they were assigned to
    assert (table[table.cluster >= 0].sim_to_centroid >= 0.98).all()


@pytest.mark.parametrize("args,message", [
    (["--linkage", "average"], "--linkage applies to -c agglomerative, not to -c cosine"),
    (["-c", "kmeans", "-x", "2", "--max_cluster_size", "5"], "--max_cluster_size applies to -c cosine"),
    (["--min_cluster_size", "1"], "at least 2 members"),
    (["-c", "agglomerative", "--linkage", "single"], "--linkage single: choose one of ward, average, complete"),
    (["-c", "kmeans"], "--n_clusters K (or -x K)"),
    (["-c", "kmeans", "--n_clusters", "1000"], "1 <= k <= the 26"),
    (["-c", "agglomerative"], "needs --distance_threshold D"),
    (["--min_sim_to_centroid", "2"], "[-1, 1]"),
    (["-c", "hdbscan", "--pca", "5"], "--pca applies to -c agglomerative"),
])
def test_bad_clustering_options_exit_2_naming_the_flag(embeddings, tmp_path, caplog, args, message):
    code = main([str(a) for a in ("--embeddings", embeddings, "-o", tmp_path / "bad", *args)])
    assert code == 2
    assert message in caplog.text


def test_near_duplicates_sweep_and_clustering_share_one_graph_pass(embeddings, tmp_path, monkeypatch):
    import crop_cluster.clustering.cosine as cosine
    import crop_cluster.clustering.forest as forest
    import crop_cluster.dedup.near as near

    built = []
    original = forest.spanning_forest

    def counted(x, t, *args, **kwargs):
        built.append(t)
        return original(x, t, *args, **kwargs)

    monkeypatch.setattr(forest, "spanning_forest", counted)
    monkeypatch.setattr(cosine, "spanning_forest", counted)
    monkeypatch.setattr(near, "near_duplicate_edges", lambda *a, **k: pytest.fail("second graph pass"))
    _, manifest = run(embeddings, tmp_path / "out", "-th", "0.95", "--sweep", "0.80:0.99:0.01",
                      "--dedup_threshold", "0.999")
    assert built == [0.8]
    assert manifest["graph"]["forest_threshold"] == 0.8 and manifest["sweep"]["thresholds"] == 20
    assert manifest["individuals"]["linked_near"] > 0


@pytest.mark.parametrize("algorithm", [["-c", "cosine"], ["-c", "kmeans", "--n_clusters", "2"]])
def test_individuals_whose_representative_is_not_their_first_crop_keep_their_own_cluster(tmp_path, fake_backend,
                                                                                        algorithm):
    """Near-duplicates make one individual whose best crop comes after another individual's crops."""
    root = tmp_path / "crops"
    draw_crop(root / "a_red_tiny.png", PALETTE[0], seed=1, size=(30, 26))
    for view in range(3):
        draw_crop(root / f"b_green_{view}.png", PALETTE[1], seed=20 + view)
    draw_crop(root / "c_red_big.png", PALETTE[0], seed=1, size=(96, 80))   # same colour: near-duplicate of a
    for view in range(2):
        draw_crop(root / f"d_red_{view}.png", PALETTE[0], seed=40 + view)
    out = tmp_path / "out"
    assert main([str(a) for a in ("-i", root, "-o", out, "-e", fake_backend, "--dedup_threshold",
                                          "0.999", "--no_report", "-q", *algorithm)]) == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    name = table.filename.map(lambda f: Path(f).name)
    tiny, big = table[name == "a_red_tiny.png"].iloc[0], table[name == "c_red_big.png"].iloc[0]
    assert tiny.individual == big.individual and big.representative and not tiny.representative
    red = table[name.str.contains("red")]
    green = table[name.str.contains("green")]
    assert red.cluster.nunique() == green.cluster.nunique() == 1
    assert red.cluster.iloc[0] != green.cluster.iloc[0] and (table.cluster >= 0).all()
    assert (table.sim_to_centroid > 0.99).all()


def test_missing_cluster_count_is_refused_before_embedding(tmp_path, caplog, monkeypatch):
    from crop_cluster import embed

    monkeypatch.setattr(embed, "load_backend", lambda *a, **k: pytest.fail("must not embed first"))
    (tmp_path / "crops").mkdir()
    draw_crop(tmp_path / "crops" / "a.png", PALETTE[0], seed=0)
    for algorithm in ("kmeans", "agglomerative"):
        assert main(["-i", str(tmp_path / "crops"), "-o", str(tmp_path / "out"), "-c", algorithm]) == 2
        assert f"-c {algorithm} needs" in caplog.text
