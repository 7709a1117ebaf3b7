"""Evaluation against labels: reading labels (evaluate/labels.py) and metrics (evaluate/metrics.py)."""
import itertools
import json

import numpy as np
import pytest
from sklearn import metrics as skm

from crop_cluster.evaluate.labels import LabelsError, read_labels
from crop_cluster.evaluate.metrics import NoLabelsError, evaluate_run, partition_metrics
from crop_cluster.inputs.table import TableError


# ---------------------------------------------------------------- labels

def test_labels_from_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = [str(tmp_path / "bee" / "1.jpg"), "fly/2.jpg", "3.jpg"]
    assert read_labels("folders", files) == ["bee", "fly", tmp_path.name]


def test_labels_from_csv(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label,note\na.jpg, bee ,x\nb.jpg,,y\nc.jpg,NA,z\nd.jpg,7,w\nunused.jpg,fly,v\n")
    files = [str(tmp_path / name) for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")]
    assert read_labels(str(csv), files) == ["bee", None, None, "7", None]


def test_labels_csv_without_label_column(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,species\na.jpg,bee\n")
    with pytest.raises(TableError, match=r"labels\.csv: missing column\(s\) label \(found: filename, species\)"):
        read_labels(str(csv), ["a.jpg"])


def test_labels_spec_not_a_file(tmp_path):
    with pytest.raises(LabelsError, match=r"no such file.*'folders'"):
        read_labels(str(tmp_path / "folder"), ["a.jpg"])


# ---------------------------------------------------------------- metrics, hand-computed

ALL_SINGLETONS = {
    "purity": 1.0, "pairwise_precision": 1.0, "pairwise_recall": 0.0, "pairwise_f1": 0.0,
    "n_clusters": 0, "singleton_fraction": 1.0, "n_rows": 4,
}


def subset(result, keys):
    return {key: result[key] for key in keys}


def test_all_singletons():
    result = partition_metrics(["a", "a", "b", "b"], np.array([0, 1, 2, 3]))
    assert subset(result, ALL_SINGLETONS) == ALL_SINGLETONS


def test_not_clustered_rows_are_singletons_not_one_cluster():
    noise = partition_metrics(["a", "a", "b", "b"], np.array([-1, -1, -1, -1]))
    assert noise == partition_metrics(["a", "a", "b", "b"], np.array([0, 1, 2, 3]))
    assert subset(noise, ALL_SINGLETONS) == ALL_SINGLETONS


def test_one_giant_cluster():
    result = partition_metrics(["a", "a", "b", "b"], np.zeros(4, dtype=int))
    # 6 predicted pairs, 2 true pairs, both true pairs inside the cluster
    assert result["purity"] == 0.5
    assert result["pairwise_precision"] == round(1 / 3, 6)
    assert result["pairwise_recall"] == 1.0
    assert result["pairwise_f1"] == 0.5
    assert result["ari"] == 0.0
    assert (result["n_clusters"], result["singleton_fraction"]) == (1, 0.0)


def test_perfect_partition_with_renamed_ids():
    result = partition_metrics(["a", "a", "b", "c", "c"], np.array([7, 7, 3, 0, 0]))
    for key in ("ari", "ami", "nmi", "v_measure", "purity", "pairwise_precision", "pairwise_recall", "pairwise_f1"):
        assert result[key] == 1.0, key
    assert (result["n_clusters"], result["singleton_fraction"]) == (2, 0.2)


def test_mixed_case_by_hand():
    # clusters {a,a}, {a,b,b}, and c not clustered
    result = partition_metrics(["a", "a", "a", "b", "b", "c"], np.array([0, 0, 1, 1, 1, -1]))
    # same-both pairs: 1 (a,a in 0) + 1 (b,b in 1) = 2; predicted pairs 1 + 3 = 4; true pairs 3 + 1 = 4
    assert result["pairwise_precision"] == 0.5
    assert result["pairwise_recall"] == 0.5
    assert result["pairwise_f1"] == 0.5
    assert result["purity"] == round(5 / 6, 6)
    assert (result["n_clusters"], result["singleton_fraction"], result["n_rows"]) == (2, round(1 / 6, 6), 6)


def test_unlabelled_rows_are_ignored():
    with_none = partition_metrics(["a", None, "a", "b", None], np.array([0, 0, 0, 1, 1]))
    without = partition_metrics(["a", "a", "b"], np.array([0, 0, 1]))
    assert with_none == without
    # b's cluster mate is unlabelled, so among labelled rows b is alone
    assert with_none["singleton_fraction"] == round(1 / 3, 6)


def test_single_labelled_row():
    result = partition_metrics(["a"], np.array([-1]))
    assert result["n_rows"] == 1 and result["pairwise_f1"] == 1.0 and result["purity"] == 1.0


# ---------------------------------------------------------------- metrics vs scikit-learn and brute force

def brute_pairwise(true, pred):
    same_true = same_pred = both = 0
    for i, j in itertools.combinations(range(len(true)), 2):
        t, p = true[i] == true[j], pred[i] == pred[j]
        same_true += t
        same_pred += p
        both += t and p
    precision = both / same_pred if same_pred else 1.0
    recall = both / same_true if same_true else 1.0
    return precision, recall


def test_matches_sklearn_and_brute_force():
    rng = np.random.default_rng(0)
    n = 150
    true = [f"class{c}" for c in rng.integers(0, 6, n)]
    pred = rng.integers(-1, 12, n)
    pred[rng.random(n) < 0.2] = -1
    result = partition_metrics(true, pred)

    explicit = pred.copy()
    explicit[pred < 0] = 1000 + np.arange((pred < 0).sum())  # each -1 its own cluster
    assert result["ari"] == round(skm.adjusted_rand_score(true, explicit), 6)
    assert result["ami"] == round(skm.adjusted_mutual_info_score(true, explicit), 6)
    assert result["nmi"] == round(skm.normalized_mutual_info_score(true, explicit), 6)
    assert result["v_measure"] == round(skm.v_measure_score(true, explicit), 6)

    precision, recall = brute_pairwise(true, explicit)
    assert result["pairwise_precision"] == round(precision, 6)
    assert result["pairwise_recall"] == round(recall, 6)
    assert result["pairwise_f1"] == round(2 * precision * recall / (precision + recall), 6)

    purity = sum(max(np.unique(np.array(true)[explicit == c], return_counts=True)[1]) for c in set(explicit)) / n
    assert result["purity"] == round(purity, 6)
    sizes = {c: int((explicit == c).sum()) for c in set(explicit)}
    assert result["n_clusters"] == sum(size >= 2 for size in sizes.values())
    assert result["singleton_fraction"] == round(sum(size == 1 for size in sizes.values()) / n, 6)


def test_result_is_plain_json():
    result = partition_metrics(["a", "b", "b"], np.array([0, 0, -1], dtype=np.int32))
    assert json.loads(json.dumps(result)) == result
    assert all(type(v) in (int, float) for v in result.values())


def test_bad_pred_is_rejected():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        partition_metrics(["a", "b", "c"], np.array([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        partition_metrics(["a", "b"], np.array([0.0, 1.0]))


# ---------------------------------------------------------------- evaluate_run

def test_evaluate_run_structure():
    true = ["a", "a", None, "b"]
    report = evaluate_run(true, np.array([0, 0, 0, -1]), np.array([0, 1, 2, 3]), num_classes=2)
    assert report["n_labelled"] == 3 and report["n_unlabelled"] == 1
    assert report["n_label_classes"] == 2 and report["num_classes_given"] == 2
    assert report["cluster"] == partition_metrics(true, np.array([0, 0, 0, -1]))
    assert report["individual"]["pairwise_recall"] == 0.0  # every individual is a singleton
    assert report["individual"]["singleton_fraction"] == 1.0
    assert evaluate_run(true, np.zeros(4, int), np.zeros(4, int), None)["num_classes_given"] is None
    json.dumps(report)


def test_evaluate_run_without_any_label():
    with pytest.raises(NoLabelsError, match=r"matched none of the 2 input files.*exact filename.*basename"):
        evaluate_run([None, None], np.array([0, 0]), np.array([0, 1]), None)


# ---------------------------------------------------------------- label-free silhouette

def test_silhouette_matches_sklearn_and_ignores_unclustered_rows():
    from crop_cluster.evaluate.metrics import silhouette

    rng = np.random.default_rng(1)
    points = rng.normal(size=(60, 5)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    clusters = rng.integers(-1, 3, 60)
    result = silhouette(points, clusters)
    kept = clusters >= 0
    assert result["silhouette"] == round(skm.silhouette_score(points[kept], clusters[kept], metric="cosine"), 6)
    assert result["rows_scored"] == result["clustered_rows"] == int(kept.sum())
    sampled = silhouette(points, clusters, sample=20, seed=3)
    assert sampled["rows_scored"] == 20 and sampled == silhouette(points, clusters, sample=20, seed=3)
    assert -1 <= sampled["silhouette"] <= 1


def test_silhouette_undefined_with_one_cluster():
    from crop_cluster.evaluate.metrics import silhouette

    points = np.eye(4, dtype=np.float32)
    assert silhouette(points, np.array([0, 0, -1, -1]))["silhouette"] is None
    assert silhouette(points, np.full(4, -1))["silhouette"] is None
