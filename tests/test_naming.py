"""Names from references (naming/): the rule over arrays, the reference sources, the species list, the open-set
measures, and end to end through the command line with the fast fake backend."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import PALETTE, draw_crop
from crop_cluster.cli import main
from crop_cluster.naming import NamingError
from crop_cluster.naming.evaluate import auroc, open_set_metrics, unit_truth
from crop_cluster.naming.prototypes import decide, name_codes, name_scores, nearest_references, prototypes, top_names
from crop_cluster.naming.references import read_csv, read_references, read_tree
from crop_cluster.naming.species_list import canonical_name, mask_predictions, on_list, read_species_list
from crop_cluster.naming.taxonomy import ancestor_name, common_ancestor, consistent
from crop_cluster.naming.units import naming_units, unit_vectors


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def read_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "clusters.csv", keep_default_na=False)


# --- the rule over arrays ---------------------------------------------------------------------------------------

def test_prototypes_are_normalised_means_and_the_rules_score_as_documented():
    refs = unit([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.9, 0.1]])
    names, codes = name_codes(["a", "a", "b", "b"])
    assert names == ["a", "b"] and codes.tolist() == [0, 0, 1, 1]
    protos = prototypes(refs, codes, 2)
    np.testing.assert_allclose(protos[0], unit(refs[0] + refs[1]), atol=1e-6)
    query = unit([[0.9, 0.3, 0.0]])
    np.testing.assert_allclose(name_scores(query, refs, codes, 2, "prototype"), query @ protos.T, atol=1e-6)
    np.testing.assert_allclose(name_scores(query, refs, codes, 2, "max"),
                               [[max(query[0] @ refs[0], query[0] @ refs[1]), max(query[0] @ refs[2],
                                                                                   query[0] @ refs[3])]], atol=1e-6)
    knn = name_scores(query, refs, codes, 2, "knn", knn=1)
    np.testing.assert_allclose(knn, name_scores(query, refs, codes, 2, "max"), atol=1e-6)
    with pytest.raises(ValueError, match="unknown naming rule"):
        name_scores(query, refs, codes, 2, "softmax")


def test_top_names_matches_a_full_sort_in_small_blocks(monkeypatch):
    import crop_cluster.naming.prototypes as prototypes_module

    rng = np.random.default_rng(0)
    refs, queries = unit(rng.normal(size=(60, 8))), unit(rng.normal(size=(37, 8)))
    codes = rng.integers(0, 12, 60)
    codes[:12] = np.arange(12)
    monkeypatch.setattr(prototypes_module, "BLOCK_FLOATS", 50)        # blocks of 4 queries
    for rule in ("prototype", "max", "knn"):
        index, score = top_names(queries, refs, codes, 12, rule, top=5)
        full = name_scores(queries, refs, codes, 12, rule)
        np.testing.assert_array_equal(index, np.argsort(-full, axis=1, kind="stable")[:, :5])
        np.testing.assert_allclose(score, -np.sort(-full, axis=1)[:, :5], atol=1e-6)
    index, score = top_names(queries, refs, np.zeros(60, dtype=np.int64), 1)   # one name: padded
    assert (index[:, 1:] == -1).all() and np.isinf(score[:, 1:]).all()


def test_decide_applies_threshold_then_margin():
    index = np.array([[0, 1], [1, 0], [0, 1], [0, -1]])
    score = np.array([[0.9, 0.5], [0.8, 0.79], [0.6, 0.1], [0.95, -np.inf]], dtype=np.float32)
    decision = decide(index, score, threshold=0.7, margin=0.05)
    assert decision.status.tolist() == ["named", "ambiguous", "unknown", "named"]
    assert decision.close[1].tolist() == [1, 0]
    np.testing.assert_allclose(decision.margin[:3], [0.4, 0.01, 0.5], atol=1e-6)
    assert np.isnan(decision.margin[3]) and np.isnan(decision.second_score[3]) and decision.second[3] == -1


def test_the_evidence_is_the_nearest_reference_of_the_chosen_name():
    refs = unit([[1, 0], [0.7, 0.7], [0, 1]])
    codes = np.array([0, 0, 1])
    queries = unit([[0.6, 0.8], [0.6, 0.8], [1, 0.1]])
    assert nearest_references(queries, refs, codes, np.array([0, 1, -1])).tolist() == [1, 2, -1]


def test_common_ancestor_and_the_roll_up_name():
    taxonomy = {"Agrotis ipsilon": ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Noctuidae", "Agrotis",
                                    "Agrotis ipsilon"),
                "Noctua pronuba": ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Noctuidae", "Noctua",
                                   "Noctua pronuba"),
                "Biston betularia": ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Geometridae", "Biston",
                                     "Biston betularia")}
    assert common_ancestor(["Agrotis ipsilon", "Noctua pronuba"], taxonomy) == ("Noctuidae", "family")
    assert common_ancestor(["Agrotis ipsilon", "Biston betularia"], taxonomy) == ("Lepidoptera", "order")
    assert common_ancestor(["Agrotis ipsilon", "no taxonomy"], taxonomy) is None
    assert ancestor_name("Noctuidae", "family") == "Noctuidae sp."
    assert consistent("Noctua pronuba", "Noctuidae sp.", "family", taxonomy)
    assert consistent("Noctuidae sp. 3", "Noctuidae sp.", "family", taxonomy)
    assert not consistent("Biston betularia", "Noctuidae sp.", "family", taxonomy)
    assert not consistent("moth B", "moth A", "", taxonomy)


def test_units_at_each_level_and_their_vectors():
    cluster = np.array([5, 5, -1, -1, 2, 5])
    individual = np.array([0, 0, 1, 2, 3, 4])
    units, kind = naming_units("cluster", cluster, individual)
    assert units.tolist() == [0, 0, 1, 2, 3, 0] and kind.tolist() == ["cluster", "individual", "individual",
                                                                       "cluster"]
    assert naming_units("individual", cluster, individual)[0].tolist() == [0, 0, 1, 2, 3, 4]
    assert naming_units("crop", cluster, individual)[0].tolist() == list(range(6))
    embedding = unit([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [0, 1]])
    vectors = unit_vectors(embedding, individual, units, 4)
    np.testing.assert_allclose(vectors[0], unit([1, 1]), atol=1e-6)      # individual 0 (two crops) counts once
    np.testing.assert_allclose(vectors[3], unit([1, 1]), atol=1e-6)


# --- reference sources and the species list ---------------------------------------------------------------------

def test_folder_tree_references_and_loose_images_reported(tmp_path):
    draw_crop(tmp_path / "ref" / "moth A" / "a1.png", PALETTE[0], seed=0)
    draw_crop(tmp_path / "ref" / "moth A" / "deeper" / "a2.jpg", PALETTE[0], seed=1)
    draw_crop(tmp_path / "ref" / "moth B" / "b1.png", PALETTE[1], seed=2)
    draw_crop(tmp_path / "ref" / "loose.png", PALETTE[2], seed=3)
    (tmp_path / "ref" / "moth B" / "notes.txt").write_text("not an image")
    refs = read_tree(str(tmp_path / "ref"))
    assert refs.names == ["moth A", "moth A", "moth B"] and len(refs) == 3
    assert refs.skipped[0][0].endswith("loose.png") and "no name" in refs.skipped[0][1]


def test_csv_references_with_taxonomy_and_problems_named(tmp_path):
    draw_crop(tmp_path / "img" / "a.png", PALETTE[0], seed=0)
    draw_crop(tmp_path / "img" / "b.png", PALETTE[1], seed=1)
    (tmp_path / "refs.csv").write_text(
        "filename,name,family,genus,species,taxonID\n"
        "img/a.png,Agrotis ipsilon,Noctuidae,Agrotis,Agrotis ipsilon,123\n"
        "img/b.png,Noctua pronuba,Noctuidae,Noctua,Noctua pronuba,\n"
        "img/gone.png,Noctua pronuba,Noctuidae,Noctua,Noctua pronuba,\n")
    refs = read_csv(str(tmp_path / "refs.csv"))
    assert refs.names == ["Agrotis ipsilon", "Noctua pronuba"] and refs.taxon_ids == {"Agrotis ipsilon": "123"}
    assert refs.taxonomy["Noctua pronuba"][4:] == ("Noctuidae", "Noctua", "Noctua pronuba")
    assert refs.skipped[0][0].endswith("gone.png") and "line 4" in refs.skipped[0][1]
    (tmp_path / "bad.csv").write_text("file,label\nimg/a.png,x\n")
    with pytest.raises(NamingError, match="needs the column.*filename, name"):
        read_csv(str(tmp_path / "bad.csv"))
    (tmp_path / "clash.csv").write_text("filename,name,family\nimg/a.png,X,Noctuidae\nimg/b.png,X,Erebidae\n")
    with pytest.raises(NamingError, match="line 3: 'X' has the taxonomy Erebidae"):
        read_csv(str(tmp_path / "clash.csv"))
    (tmp_path / "none.csv").write_text("filename,name\nimg/gone.png,X\n")
    with pytest.raises(NamingError, match="no usable reference crop"):
        read_references([str(tmp_path / "none.csv")])


def test_species_list_formats_and_which_names_are_on_it(tmp_path):
    assert canonical_name("Agrotis exclamationis (Linnaeus, 1758)") == "agrotis exclamationis"
    assert canonical_name("Xestia c-nigrum subsp. c-nigrum L.") == "xestia c-nigrum c-nigrum"
    (tmp_path / "gbif.tsv").write_text("taxonKey\tscientificName\ttaxonRank\tfamily\tgenus\n"
                                       "1\tAgrotis exclamationis (Linnaeus, 1758)\tSPECIES\tNoctuidae\tAgrotis\n"
                                       "2\tBiston betularia (Linnaeus, 1758)\tSPECIES\tGeometridae\tBiston\n")
    listed = read_species_list(str(tmp_path / "gbif.tsv"))
    taxonomy = {"X": ("", "", "", "", "Noctuidae", "Agrotis", "Agrotis exclamationis")}
    names = ["Agrotis exclamationis", "agrotis  EXCLAMATIONIS", "Noctua pronuba", "X", "Geometridae sp. 37",
             "Erebidae sp. 2", "Biston"]
    assert on_list(listed, names, taxonomy).tolist() == [True, True, False, True, True, False, True]
    (tmp_path / "plain.txt").write_text("# my trap\nNoctua pronuba\n\nAgrotis ipsilon\n")
    assert read_species_list(str(tmp_path / "plain.txt")).names == {"noctua pronuba", "agrotis ipsilon"}
    (tmp_path / "table.csv").write_text("id,rank\n1,SPECIES\n")
    with pytest.raises(NamingError, match="without a name column"):
        read_species_list(str(tmp_path / "table.csv"))


def test_masked_predictions_equal_a_brute_force_over_allowed_paths():
    rng = np.random.default_rng(3)
    ancestor = np.array([[0, 1, 2, 3, 4], [0, 0, 1, 1, 2], [0, 0, 0, 0, 1]])       # 5 species, 3 genera, 2 families
    probabilities = [rng.dirichlet(np.ones(c), size=20) for c in (5, 3, 2)]
    allowed = np.array([False, True, False, True, True])
    index, probability = mask_predictions(probabilities, ancestor, allowed)
    for row in range(20):
        masked = []
        for level, p in enumerate(probabilities):
            keep = np.isin(np.arange(p.shape[1]), ancestor[level, allowed])
            masked.append(np.where(keep, p[row], 0) / p[row][keep].sum())
        joint = [sum(np.log(masked[l][ancestor[l, leaf]]) for l in range(3)) if allowed[leaf] else -np.inf
                 for leaf in range(5)]
        leaf = int(np.argmax(joint))
        assert index[row].tolist() == ancestor[:, leaf].tolist()
        np.testing.assert_allclose(probability[row], [masked[l][ancestor[l, leaf]] for l in range(3)], rtol=1e-5)
    assert allowed[index[:, 0]].all()


# --- open-set measures ------------------------------------------------------------------------------------------

def test_auroc_and_the_open_set_measures():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    positive, negative = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    expected = roc_auc_score(np.r_[np.ones(50), np.zeros(40)], np.r_[positive, negative])
    assert auroc(positive, negative) == pytest.approx(expected)
    assert auroc(positive, negative[:0]) is None
    truth = unit_truth(["a", "a", "b", None, "c", "c"], np.array([0, 0, 0, 1, 2, 2]), 3)
    assert truth == ["a", None, "c"]
    metrics = open_set_metrics(np.array([0.9, 0.8, 0.85, 0.4]), np.array([0.2, 0.2, 0.01, 0.3]),
                               ["a", "b", "c", "a"], ["named", "named", "unknown", "unknown"],
                               ["a", "a", "b", "z"], ["a", "b", "c"], np.array([1, 2, 3, 4]), margin=0.05)
    assert metrics["known_units"] == 3 and metrics["unknown_units"] == 1
    assert metrics["precision"] == 0.5 and metrics["coverage"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["unknown_left_unknown"] == 1.0 and metrics["unknown_named"] == 0.0
    assert metrics["auroc"] == 1.0
    at = {row["threshold"]: row for row in metrics["sweep"]}
    assert at[0.3]["named"] == 3 and at[0.3]["unknown_named"] == 1.0 and at[0.85]["named"] == 1


# --- end to end -------------------------------------------------------------------------------------------------

def draw_set(folder: Path, colours, views: int, seed: int) -> None:
    for colour in colours:
        for view in range(views):
            draw_crop(folder / f"c{colour}_v{view}.png", PALETTE[colour], seed=seed + 10 * colour + view)


def gallery(folder: Path, names) -> Path:
    for colour, name in names.items():
        for view in range(3):
            draw_crop(folder / name / f"r{view}.png", PALETTE[colour], seed=500 + 10 * colour + view)
    return folder


def colour_of(filenames) -> np.ndarray:
    return np.asarray([int(os.path.basename(f)[1]) for f in filenames])


def test_a_gallery_names_matching_clusters_and_leaves_new_ones_unknown(tmp_path, fake_backend):
    draw_set(tmp_path / "crops", [0, 1, 2, 3], views=4, seed=0)
    refs = gallery(tmp_path / "gallery", {0: "red moth", 1: "green moth"})
    out = tmp_path / "out"
    assert run_cli("-i", tmp_path / "crops", "-o", out, "-e", fake_backend, "--reference", refs, "-q") == 0
    table = read_table(out)
    colour = colour_of(table["filename"])
    assert list(table.columns[-7:]) == ["ref_name", "ref_rank", "ref_score", "ref_margin", "ref_second",
                                        "ref_nearest", "ref_status"]
    assert (table.loc[colour == 0, "ref_name"] == "red moth").all()
    assert (table.loc[colour == 1, "ref_name"] == "green moth").all()
    assert (table.loc[colour < 2, "ref_status"] == "named").all()
    assert (table.loc[colour >= 2, "ref_status"] == "unknown").all()
    assert (table.loc[colour >= 2, "ref_name"] == "").all() and (table.loc[colour >= 2, "ref_nearest"] == "").all()
    evidence = table.loc[colour == 0, "ref_nearest"]
    assert evidence.str.contains("red moth").all() and all(os.path.isfile(p) for p in evidence)
    assert (table.loc[colour == 0, "ref_second"] == "green moth").all()
    assert (table["ref_score"] >= -1).all() and (table.loc[colour < 2, "ref_score"] >= 0.9).all()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["naming"]["statuses"]["named"] == 2 and manifest["naming"]["names"] == 2
    assert manifest["naming"]["references"] == 6 and manifest["parameters"]["reference"] == [str(refs)]
    assert run_cli("-i", tmp_path / "crops", "-o", tmp_path / "again", "-e", fake_backend, "--reference", refs,
                   "--cache_dir", out / "embed_cache", "-q") == 0
    again = json.loads((tmp_path / "again" / "run.json").read_text())
    assert again["naming"]["embeddings_computed"] == 0                 # the gallery came from the cache


def test_crop_level_and_labels_give_the_naming_metrics(tmp_path, fake_backend):
    draw_set(tmp_path / "crops", [0, 1, 2], views=3, seed=0)
    refs = gallery(tmp_path / "gallery", {0: "red moth", 1: "green moth"})
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"filename": [f"c{c}_v{v}.png" for c in range(3) for v in range(3)],
                  "label": [["red moth", "green moth", "blue thing"][c] for c in range(3) for _ in range(3)]}) \
        .to_csv(labels, index=False)
    out = tmp_path / "out"
    assert run_cli("-i", tmp_path / "crops", "-o", out, "-e", fake_backend, "--reference", refs, "--name_level",
                   "crop", "--labels", labels, "-q") == 0
    metrics = json.loads((out / "metrics.json").read_text())["naming"]
    assert metrics["level"] == "crop" and metrics["units"] == 9 and metrics["known_units"] == 6
    assert metrics["precision"] == 1.0 and metrics["coverage"] == 1.0 and metrics["unknown_left_unknown"] == 1.0
    assert metrics["auroc"] == 1.0 and len(metrics["sweep"]) > 10
    assert json.loads((out / "run.json").read_text())["naming"]["units"] == 9


def test_ties_roll_up_to_the_common_ancestor_else_unknown(tmp_path, fake_backend):
    draw_set(tmp_path / "crops", [0], views=3, seed=0)
    for name in ("Agrotis ipsilon", "Noctua pronuba"):          # two names with the same (red) references
        for view in range(2):
            draw_crop(tmp_path / "img" / f"{name}{view}.png", PALETTE[0], seed=700 + view)
    rows = [f"img/{name}{view}.png,{name},Noctuidae,{name.split()[0]},{name}"
            for name in ("Agrotis ipsilon", "Noctua pronuba") for view in range(2)]
    (tmp_path / "refs.csv").write_text("filename,name,family,genus,species\n" + "\n".join(rows) + "\n")
    assert run_cli("-i", tmp_path / "crops", "-o", tmp_path / "out", "-e", fake_backend, "--reference",
                   tmp_path / "refs.csv", "-q") == 0
    table = read_table(tmp_path / "out")
    assert (table["ref_status"] == "rolled_up").all() and (table["ref_name"] == "Noctuidae sp.").all()
    assert (table["ref_rank"] == "family").all() and (table["ref_margin"] < 0.02).all()
    (tmp_path / "plain.csv").write_text("filename,name\n" + "\n".join(
        f"img/{name}{view}.png,{name}" for name in ("Agrotis ipsilon", "Noctua pronuba") for view in range(2)) + "\n")
    assert run_cli("-i", tmp_path / "crops", "-o", tmp_path / "out2", "-e", fake_backend, "--reference",
                   tmp_path / "plain.csv", "-q") == 0
    assert (read_table(tmp_path / "out2")["ref_status"] == "unknown").all()      # no taxonomy: no roll-up


def review(out: Path, rows, path: Path) -> None:
    pd.DataFrame(rows, columns=["filename", "group"]).assign(reviewer="ana", time="2026-06-02T09:00:00Z") \
        .to_csv(path, index=False)
    assert run_cli("-o", out, "--review", path, "-q") == 0


@pytest.fixture
def first_campaign(tmp_path, fake_backend):
    """Night A clustered (colours 0, 1, 2) and reviewed: colour 0 named 'red moth', colour 1 'green moth';
    colour 2 left as the algorithm made it. Returns OUT_A."""
    out = tmp_path / "night_a"
    draw_set(tmp_path / "a", [0, 1, 2], views=4, seed=0)
    assert run_cli("-i", tmp_path / "a", "-o", out, "-e", fake_backend, "-q") == 0
    table = read_table(out)
    colour = colour_of(table["filename"])
    names = {0: "red moth", 1: "green moth"}
    review(out, [(f, names[c]) for f, c in zip(table["filename"], colour) if c in names], tmp_path / "review_a.csv")
    return out


def test_reviewed_groups_of_one_run_name_the_matching_clusters_of_another(tmp_path, fake_backend, first_campaign):
    """The issue's test: references from run A's reviewed groups name the matching clusters of run B, and a group
    run A never saw (colour 3), like one it saw but nobody reviewed (colour 2), stays unknown."""
    draw_set(tmp_path / "b", [0, 1, 2, 3], views=3, seed=300)
    out = tmp_path / "night_b"
    assert run_cli("-i", tmp_path / "b", "-o", out, "-e", fake_backend, "--reference", first_campaign, "-q") == 0
    table = read_table(out)
    colour = colour_of(table["filename"])
    assert table.groupby(colour)["cluster"].nunique().tolist() == [1, 1, 1, 1]
    assert (table.loc[colour == 0, ["ref_name", "ref_status"]].values == ["red moth", "named"]).all()
    assert (table.loc[colour == 1, ["ref_name", "ref_status"]].values == ["green moth", "named"]).all()
    assert (table.loc[colour >= 2, "ref_status"] == "unknown").all()
    assert table.loc[colour == 0, "ref_nearest"].map(lambda p: Path(p).parent.name).eq("a").all()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["naming"]["references"] == 8 and manifest["naming"]["embeddings_computed"] == 0  # A's cache


def test_human_names_win_reviewed_and_conflict(tmp_path, fake_backend):
    draw_set(tmp_path / "crops", [0, 1], views=3, seed=0)
    refs = gallery(tmp_path / "gallery", {0: "red moth", 1: "green moth"})
    out = tmp_path / "out"
    assert run_cli("-i", tmp_path / "crops", "-o", out, "-e", fake_backend, "--reference", refs, "-q") == 0
    table = read_table(out)
    colour = colour_of(table["filename"])
    rows = [(f, "red moth" if c == 0 else "blue moth") for f, c in zip(table["filename"], colour)]
    pd.DataFrame(rows, columns=["filename", "group"]).to_csv(tmp_path / "review.csv", index=False)
    assert run_cli("-o", out, "--review", tmp_path / "review.csv", "--reference", refs, "-q") == 0
    table = read_table(out)
    assert (table.loc[colour == 0, "ref_status"] == "reviewed").all()
    assert (table.loc[colour == 1, "ref_status"] == "conflict").all()
    assert (table.loc[colour == 1, "ref_name"] == "green moth").all()       # the machine's answer stays beside


def test_a_reference_embedded_with_another_model_is_refused_when_its_crops_are_gone(tmp_path, fake_backend,
                                                                                   first_campaign, monkeypatch,
                                                                                   caplog):
    from crop_cluster import embed

    monkeypatch.setitem(embed.BACKENDS, "fake2", embed.BackendInfo(
        "fake_backend", "MeanColourBackend", "mean-colour-2", 0.9, "a second test model"))
    draw_set(tmp_path / "b", [0, 3], views=3, seed=300)
    assert run_cli("-i", tmp_path / "b", "-o", tmp_path / "ok", "-e", "fake2", "--reference", first_campaign,
                   "-q") == 0                                                 # files there: embedded with fake2
    assert (read_table(tmp_path / "ok")["ref_status"] != "conflict").all()
    shutil.rmtree(tmp_path / "a")
    assert run_cli("-i", tmp_path / "b", "-o", tmp_path / "refused", "-e", "fake2", "--reference", first_campaign,
                   "-q") == 2
    assert "embedded them with 'fake:mean-colour', not this run's 'fake2:mean-colour-2'" in caplog.text
    assert "Restore the crops" in caplog.text and "-e fake" in caplog.text
    assert run_cli("-i", tmp_path / "b", "-o", tmp_path / "same", "-e", fake_backend, "--reference",
                   first_campaign, "-q") == 0                   # the same model: the crops' vectors from A's cache
    assert json.loads((tmp_path / "same" / "run.json").read_text())["naming"]["references"] == 8


def test_only_human_decisions_of_a_campaign_become_references(tmp_path, fake_backend, first_campaign):
    draw_set(tmp_path / "more", [0], views=2, seed=900)                        # joins 'red moth' by machine
    assert run_cli("-i", tmp_path / "more", "-o", first_campaign, "--add", "-e", fake_backend, "-q") == 0
    assert (read_table(first_campaign).query("group == 'red moth'").shape[0]) == 6
    refs = read_references([str(first_campaign)])
    assert sorted(set(refs.names)) == ["green moth", "red moth"] and refs.names.count("red moth") == 4
    assert all(len(d) == 32 for d in refs.digests)


@pytest.mark.parametrize("args,message", [
    (["--species_list", "{tmp}/list.txt"], "--species_list {tmp}/list.txt: restricts the names of --reference"),
    (["--name_threshold", "0.8"], "tune naming from references; give --reference REF"),
    (["--reference", "{tmp}/nowhere"], "--reference {tmp}/nowhere: no such file or folder"),
    (["--reference", "{tmp}/g", "--name_margin", "-0.1"], "--name_margin -0.1"),
    (["--reference", "{tmp}/g", "--name_level", "species"], "invalid choice"),
    (["--reference", "{tmp}/out"], "is this run's own output folder"),
])
def test_bad_naming_usage_exits_2_with_the_way_out(tmp_path, caplog, capsys, fake_backend, args, message):
    draw_set(tmp_path / "crops", [0], views=2, seed=0)
    (tmp_path / "list.txt").write_text("Noctua pronuba\n")
    (tmp_path / "g").mkdir()
    (tmp_path / "out").mkdir()
    code = run_cli("-i", tmp_path / "crops", "-o", tmp_path / "out", "-e", fake_backend,
                   *[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    assert message.format(tmp=tmp_path) in caplog.text + capsys.readouterr().err


def test_a_species_list_drops_off_list_references(tmp_path, fake_backend):
    draw_set(tmp_path / "crops", [0, 1], views=3, seed=0)
    refs = gallery(tmp_path / "gallery", {0: "Agrotis ipsilon", 1: "Noctua pronuba"})
    (tmp_path / "list.txt").write_text("Agrotis ipsilon (Hufnagel, 1766)\n")
    out = tmp_path / "out"
    assert run_cli("-i", tmp_path / "crops", "-o", out, "-e", fake_backend, "--reference", refs, "--species_list",
                   tmp_path / "list.txt", "-q") == 0
    table = read_table(out)
    colour = colour_of(table["filename"])
    assert (table.loc[colour == 0, "ref_name"] == "Agrotis ipsilon").all()
    assert (table.loc[colour == 1, "ref_status"] == "unknown").all()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["naming"]["species_list"]["names_dropped"] == 1
    (tmp_path / "other.txt").write_text("Biston betularia\n")
    assert run_cli("-i", tmp_path / "crops", "-o", tmp_path / "none", "-e", fake_backend, "--reference", refs,
                   "--species_list", tmp_path / "other.txt", "-q") == 2


def test_the_gallery_check_finds_references_nearer_another_name():
    from crop_cluster.naming.prototypes import gallery_overlap

    apart = unit([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0.1, 0.99, 0], [0, 0, 1]])
    assert not gallery_overlap(apart, np.array([0, 0, 1, 1, 2]), 3).any()     # one reference: never flagged
    mixed = unit([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0.1, 0.9, 0]])
    assert gallery_overlap(mixed, np.array([0, 1, 1, 0]), 2).all()


def test_defaults_follow_the_backend_and_the_level():
    from crop_cluster.naming import BACKEND_DEFAULTS
    from crop_cluster.naming.rule import resolve_settings

    settings, source = resolve_settings("lite0", None, None, None, 0.82)
    assert (settings.level, settings.threshold, settings.margin) == \
        ("cluster", BACKEND_DEFAULTS["lite0"]["cluster"].threshold, BACKEND_DEFAULTS["lite0"]["cluster"].margin)
    assert "calibrated" in source
    crop, _ = resolve_settings("lite0", "crop", None, 0.3, 0.82)
    assert crop.threshold == BACKEND_DEFAULTS["lite0"]["crop"].threshold and crop.margin == 0.3
    other, source = resolve_settings("dino", None, None, None, 0.9)
    assert other.threshold == 0.9 and "not calibrated" in source


def test_the_campaign_remembers_its_references_and_add_names_new_clusters_with_them(tmp_path, fake_backend):
    from crop_cluster.campaign.store import CampaignStore

    draw_set(tmp_path / "night1", [0, 2], views=3, seed=0)
    refs = gallery(tmp_path / "gallery", {0: "red moth", 1: "green moth"})
    out = tmp_path / "out"
    assert run_cli("-i", tmp_path / "night1", "-o", out, "-e", fake_backend, "--reference", refs, "-q") == 0
    with CampaignStore(str(out)) as store:
        remembered = store.name_references()
        assert sorted(set(remembered["name"])) == ["green moth", "red moth"] and len(remembered) == 6
        assert json.loads(remembered["taxonomy"].iloc[0]) == {}
        names = store._frame("SELECT level, unit, name, status, reference FROM unit_names", list("lunsr"))
    assert sorted(names["s"]) == ["named", "unknown"] and names["l"].eq("cluster:cluster").all()
    assert set(names.loc[names["s"] == "named", "r"]) <= set(remembered["digest"])
    shutil.rmtree(refs)                                    # the gallery is gone: its vectors come from the cache
    draw_set(tmp_path / "night2", [1], views=3, seed=40)
    assert run_cli("-i", tmp_path / "night2", "-o", out, "--add", "-e", fake_backend, "-q") == 0
    table = read_table(out)
    colour = colour_of(table["filename"])
    assert (table.loc[colour == 1, ["ref_name", "ref_status"]].values == ["green moth", "named"]).all()
    assert (table.loc[colour == 0, "ref_name"] == "red moth").all()
    assert (table.loc[colour == 2, "ref_status"] == "unknown").all()
    naming = json.loads((out / "run.json").read_text())["naming"]
    assert naming["remembered"] and naming["embeddings_computed"] == 0


def test_a_version_1_store_is_migrated_for_the_naming_tables(tmp_path):
    import sqlite3

    from crop_cluster.campaign.store import MIGRATIONS, SCHEMA_VERSION, CampaignStore

    connection = sqlite3.connect(tmp_path / "campaign.sqlite")
    for statement in MIGRATIONS[0]:
        connection.execute(statement)
    connection.execute("INSERT INTO schema_version VALUES (1)")
    connection.commit()
    connection.close()
    with CampaignStore(str(tmp_path)) as store:
        assert store.name_references().empty
        assert store._connection.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_a_species_list_masks_a_hierarchical_models_predictions_and_keeps_the_unmasked(tmp_path):
    from test_hierarchical import export, solid

    model = export(tmp_path / "model", sharpness=12.0)
    for k in range(3):
        solid(tmp_path / "crops" / f"red_{k}.png", (255, 0, 0), k)
        solid(tmp_path / "crops" / f"blue_{k}.png", (0, 0, 255), 20 + k)
    (tmp_path / "list.txt").write_text("Agrotis segetum\nNoctua pronuba\n")       # no Agrotis ipsilon here
    out = tmp_path / "out"
    args = ["-i", tmp_path / "crops", "-o", out, "-e", "hierarchical", "-fp", model, "-th", "0.98",
            "--species_list", tmp_path / "list.txt", "-q"]
    assert run_cli(*args) == 0
    table = read_table(out)
    red = table["filename"].str.contains("red_")
    assert (table.loc[red, "pred_species"] == "Agrotis segetum").all()
    assert (table.loc[red, "unmasked_pred_species"] == "Agrotis ipsilon").all()
    assert (table.loc[red, "pred_genus"] == "Agrotis").all()
    assert table.loc[red, "prob_species"].between(0, 1).all() and (table.loc[red, "prob_genus"] > 0.9).all()
    assert (table.loc[~red, ["pred_species", "unmasked_pred_species"]] == "Noctua pronuba").all().all()
    assert table.loc[red, "cluster_name"].str.startswith("Agrotis sp.").all()    # segetum is not sure enough
    info = json.loads((out / "run.json").read_text())["species_list"]
    assert (info["classes"], info["classes_on_list"], info["crops_changed"]) == (4, 2, 3)
    assert info["probabilities_computed"] == 6
    assert run_cli(*args) == 0                                            # again: the probabilities are cached
    assert json.loads((out / "run.json").read_text())["species_list"]["probabilities_computed"] == 0
    (tmp_path / "none.txt").write_text("Biston betularia\n")
    assert run_cli(*args[:-3], "--species_list", tmp_path / "none.txt", "-q") == 2


# --- the gallery's self-test and clusters that mix names ----------------------------------------------------------

def test_the_self_test_finds_where_the_gallery_misnames_its_own_references():
    from crop_cluster.naming.prototypes import self_test_threshold

    apart = unit([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0.1, 0.99, 0], [0, 0, 1], [0.1, 0, 0.99]])
    codes = np.array([0, 0, 1, 1, 2, 2])
    assert self_test_threshold(apart, codes, 3, margin=0.0) == float("-inf")
    assert self_test_threshold(apart[[0, 2, 4]], np.array([0, 1, 2]), 3, margin=0.0) == float("-inf")  # untested
    confused = unit([[1, 0, 0], [0.2, 1, 0], [0, 1, 0], [0, 0.98, 0.2], [0, 0, 1], [0.1, 0, 0.99]])
    threshold = self_test_threshold(confused, codes, 3, margin=0.0)     # a's second reference lies among b's
    b = unit(confused[2] + confused[3])
    assert threshold == pytest.approx(float(confused[1] @ b), abs=1e-6)
    assert self_test_threshold(confused, codes, 3, margin=0.9) == float("-inf")   # not a confident wrong name


def test_look_alike_names_are_left_to_a_margin_and_one_mislabel_in_many_does_not_count():
    from crop_cluster.naming.prototypes import self_test_threshold

    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(40, 16)))
    refs = unit(np.repeat(centres, 3, axis=0) + 0.05 * rng.normal(size=(120, 16)))
    codes = np.repeat(np.arange(40), 3)
    assert self_test_threshold(refs, codes, 40, margin=0.0) == float("-inf")
    wrong = codes.copy()
    wrong[0] = 1                                         # one mislabelled reference of 120: within the allowance
    assert self_test_threshold(refs, wrong, 40, margin=0.0) == float("-inf")
    wrong[[3, 6, 9, 12]] = [2, 3, 4, 5]                  # five of 120: beyond 3 %, counted from the highest
    assert 0.5 < self_test_threshold(refs, wrong, 40, margin=0.0) < 1.0
    twins = unit(np.repeat(centres[:1], 6, axis=0) + 0.05 * rng.normal(size=(6, 16)))   # two look-alike names
    assert self_test_threshold(twins, np.array([0, 0, 0, 1, 1, 1]), 2, margin=0.05) == float("-inf")  # ties
    assert self_test_threshold(twins, np.array([0, 0, 0, 1, 1, 1]), 2, margin=0.0) > 0.9       # without a margin


def test_clusters_whose_individuals_match_two_names_are_named_individual_by_individual():
    from crop_cluster.naming.units import split_mixed_clusters

    cluster = np.array([0, 0, 0, 1, 1, -1, 0])
    individual = np.array([0, 0, 1, 2, 3, 4, 5])
    unit_, kind, split = split_mixed_clusters(cluster, individual, np.array([0, 1, -1, 0, -1, 2]))
    assert split == 1                                    # cluster 0 holds names 0 and 1; cluster 1 only name 0
    assert unit_.tolist() == [0, 0, 1, 2, 2, 3, 4] and kind.tolist() == ["individual", "individual", "cluster",
                                                                         "individual", "individual"]
    same, _, none = split_mixed_clusters(cluster, individual, np.array([0, 0, -1, 1, -1, 0]))
    assert none == 0 and same.tolist() == naming_units("cluster", cluster, individual)[0].tolist()


def test_the_threshold_used_and_the_members_rule_follow_the_defaults_or_the_given_values():
    from crop_cluster.naming import BACKEND_DEFAULTS
    from crop_cluster.naming.rule import resolve_settings, threshold_used

    settings, _ = resolve_settings("lite0", None, None, None, 0.82)
    defaults = BACKEND_DEFAULTS["lite0"]
    assert settings.gallery_offset == defaults["cluster"].gallery_offset
    assert (settings.members.level, settings.members.threshold, settings.members.margin,
            settings.members.gallery_offset) == ("individual", defaults["individual"].threshold,
                                                 defaults["individual"].margin, defaults["individual"].gallery_offset)
    assert resolve_settings("lite0", "crop", None, None, 0.82)[0].members is None
    given, _ = resolve_settings("lite0", None, 0.7, 0.1, 0.82)
    assert given.gallery_offset is None and (given.members.threshold, given.members.margin) == (0.7, 0.1)
    confused = unit([[1, 0, 0], [0.2, 1, 0], [0, 1, 0], [0, 0.98, 0.2]])
    codes = np.array([0, 0, 1, 1])
    used, gallery = threshold_used(settings, confused, codes, 2)
    assert gallery > 0.9 and used == pytest.approx(gallery + settings.gallery_offset)
    assert threshold_used(given, confused, codes, 2) == (0.7, gallery)          # a given threshold stays
    apart = unit([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0.1, 0.99, 0]])
    assert threshold_used(settings, apart, codes, 2) == (settings.threshold, float("-inf"))


MIXED = {"a": (220, 40, 40), "m": (220, 75, 40), "b": (220, 110, 40)}   # a-m-b chain into one cluster at 0.9


def test_a_cluster_mixing_two_gallery_names_is_named_member_by_member(tmp_path, fake_backend):
    for key, colour in MIXED.items():
        for view in range(3):
            draw_crop(tmp_path / "crops" / f"{key}{view}.png", colour, seed=view + 10 * ord(key))
    for key, name in (("a", "moth A"), ("b", "moth B")):
        for view in range(3):
            draw_crop(tmp_path / "gallery" / name / f"r{view}.png", MIXED[key], seed=500 + view + 10 * ord(key))
    out = tmp_path / "out"
    assert run_cli("-i", tmp_path / "crops", "-o", out, "-e", fake_backend, "--reference", tmp_path / "gallery",
                   "-q") == 0
    table = read_table(out)
    key = table["filename"].map(lambda f: os.path.basename(f)[0])
    assert table["cluster"].nunique() == 1 and (table["cluster"] >= 0).all()
    assert (table.loc[key == "a", ["ref_name", "ref_status"]].values == ["moth A", "named"]).all()
    assert (table.loc[key == "b", ["ref_name", "ref_status"]].values == ["moth B", "named"]).all()
    assert (table.loc[key == "m", "ref_status"] == "unknown").all()        # between the two: neither
    naming = json.loads((out / "run.json").read_text())["naming"]
    assert naming["clusters_named_by_individual"] == 1 and naming["statuses"]["named"] >= 2
    report = (out / "report.html").read_text(encoding="utf-8")
    start = report.index('id="report-data">') + len('id="report-data">')
    blocks = json.loads(report[start:report.index("</script>", start)])["clusters"]
    assert not any("ref" in block for block in blocks)   # accepting one name would name all of the cluster


def test_a_gallery_whose_names_the_model_confuses_raises_the_threshold_and_says_so(tmp_path, fake_backend, caplog):
    draw_set(tmp_path / "crops", [0, 1], views=3, seed=0)
    refs = gallery(tmp_path / "gallery", {0: "red moth", 1: "green moth"})
    for view in range(3):                                 # 'brown moth': red references but one green
        draw_crop(refs / "brown moth" / f"r{view}.png", PALETTE[0 if view else 1], seed=900 + view)
    out = tmp_path / "out"
    assert run_cli("-i", tmp_path / "crops", "-o", out, "-e", fake_backend, "--reference", refs, "-q") == 0
    naming = json.loads((out / "run.json").read_text())["naming"]
    gallery_check = naming["gallery"]
    assert gallery_check["self_test_threshold"] > 0.9 and gallery_check["raised_threshold"]
    assert naming["threshold"] == pytest.approx(max(0.9, gallery_check["self_test_threshold"]), abs=1e-4)
    assert "confuses this gallery's own names" in caplog.text
    assert run_cli("-i", tmp_path / "crops", "-o", tmp_path / "given", "-e", fake_backend, "--reference", refs,
                   "--name_threshold", "0.9", "-q") == 0
    given = json.loads((tmp_path / "given" / "run.json").read_text())["naming"]
    assert given["threshold"] == 0.9 and not given["gallery"]["raised_threshold"]

