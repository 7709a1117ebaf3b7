"""The hierarchical taxonomic backend: sidecar checks, tree-consistent decoding, model loading and its errors, the
cluster-naming rules, and the CLI end to end with a tiny classifier built and exported inside the test."""
from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from crop_cluster.cli import main
from crop_cluster.clustering.naming import cluster_taxa, name_columns
from conftest import REPO
from crop_cluster.embed import EmbedError
from crop_cluster.embed.taxonomy import parse_taxonomy

LEVELS = ["species", "genus", "family", "order"]
CLASSES = {"species": ["Agrotis ipsilon", "Agrotis segetum", "Noctua pronuba", "Tipula paludosa"],
           "genus": ["Agrotis", "Noctua", "Tipula"],
           "family": ["Noctuidae", "Tipulidae"],
           "order": ["Lepidoptera", "Diptera"]}
PARENTS = {"species": ["Agrotis", "Agrotis", "Noctua", "Tipula"],
           "genus": ["Noctuidae", "Noctuidae", "Tipulidae"],
           "family": [0, 1]}                                    # indices work as well as names
SIDECAR = {"levels": LEVELS, "classes": CLASSES, "parents": PARENTS,
           "input": {"size": 32, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}
# The colour of each species for the tiny model: red, green, blue, cyan.
SPECIES_RGB = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])


class ColourClassifier(torch.nn.Module):
    """Embedding = mean colour; species logits = -sharpness * squared distance to each species' colour; each coarser
    level's logits = log-sum-exp of its children's, so the heads agree with the tree (like a trained model)."""

    def __init__(self, sharpness: float = 40.0, drop_level: bool = False, wrong_count: bool = False):
        super().__init__()
        self.sharpness, self.drop_level, self.wrong_count = sharpness, drop_level, wrong_count
        ancestor = torch.as_tensor(parse_taxonomy(copy.deepcopy(SIDECAR), "sidecar").ancestor)
        for level in (1, 2, 3):    # mask (C_level, 4 species): 0 where the species descends from the class
            mask = torch.full((len(CLASSES[LEVELS[level]]), 4), float("-inf"))
            mask[ancestor[level], torch.arange(4)] = 0.0
            self.register_buffer(f"mask{level}", mask)
        self.register_buffer("colours", SPECIES_RGB)

    def forward(self, pixels):
        embedding = pixels.mean(dim=(2, 3)) + 0.05
        species = -self.sharpness * ((embedding.unsqueeze(1) - 0.05 - self.colours) ** 2).sum(dim=2)
        coarser = [torch.logsumexp(species.unsqueeze(1) + mask, dim=2) for mask in (self.mask1, self.mask2,
                                                                                     self.mask3)]
        outputs = [embedding, species, *coarser]
        if self.wrong_count:
            outputs[2] = torch.cat([outputs[2], outputs[2][:, :1]], dim=1)
        return tuple(outputs[:-1]) if self.drop_level else tuple(outputs)


def export(folder: Path, stem: str = "insects", sidecar=None, kind: str = "pt", **model_options) -> Path:
    """ColourClassifier exported as `kind` (pt: TorchScript, pt2: torch.export, onnx) with its sidecar in `folder`;
    returns the model path."""
    folder.mkdir(parents=True, exist_ok=True)
    model = ColourClassifier(**model_options).eval()
    example = torch.rand(2, 3, 32, 32)
    path = folder / f"{stem}.{kind}"
    with torch.no_grad():
        if kind == "pt2":
            torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                              str(path))
        elif kind == "onnx":
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["pixels"],
                              output_names=["embedding", *LEVELS],
                              dynamic_axes={name: {0: "batch"} for name in ["pixels", "embedding", *LEVELS]})
        else:
            torch.jit.trace(model, example).save(str(path))
    (folder / f"{stem}.json").write_text(json.dumps(SIDECAR if sidecar is None else sidecar))
    return path


def solid(path: Path, rgb, seed: int) -> Path:
    """A 40x40 image of colour `rgb` (0..255) with a little noise."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(rgb, float) + rng.normal(0, 3, (40, 40, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# sidecar

def test_sidecar_builds_the_ancestor_table():
    taxonomy = parse_taxonomy(copy.deepcopy(SIDECAR), "insects.json")
    assert taxonomy.levels == tuple(LEVELS) and taxonomy.counts == [4, 3, 2, 2]
    # Agrotis segetum -> Agrotis -> Noctuidae -> Lepidoptera; Tipula paludosa -> Tipula -> Tipulidae -> Diptera
    assert taxonomy.ancestor[:, 1].tolist() == [1, 0, 0, 0]
    assert taxonomy.ancestor[:, 3].tolist() == [3, 2, 1, 1]
    assert (taxonomy.size, taxonomy.geometry) == (32, "pad")


def _broken(edit):
    document = copy.deepcopy(SIDECAR)
    edit(document)
    return document


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("levels"), "missing key(s) levels"),
    (lambda d: d.update(levels=[]), "'levels' must be a non-empty list"),
    (lambda d: d.update(levels=["species", "genus name", "family", "order"]), "level names must be unique words"),
    (lambda d: d["classes"].pop("family"), "level 'family' a non-empty list"),
    (lambda d: d["classes"]["genus"].append("Agrotis"), "level 'genus' lists class names more than once: Agrotis"),
    (lambda d: d["parents"].update(species=["Agrotis"]), "a list of 4 parents"),
    (lambda d: d["parents"].pop("genus"), "'parents' must give level 'genus' a list of 3 parents"),
    (lambda d: d["parents"]["species"].__setitem__(2, "Noctuaa"),
     "the parent of species 'Noctua pronuba' is 'Noctuaa', which is not a class of level 'genus'"),
    (lambda d: d["parents"]["family"].__setitem__(0, 7), "is 7, which is not a class of level 'order'"),
    (lambda d: d["parents"].update(order=["x", "y"]), "'parents' has entries for order"),
    (lambda d: d["input"].update(size=0), "'input.size' must be the model's square input side"),
    (lambda d: d["input"].update(mean=[0.5, 0.5]), "'input.mean' must be three numbers"),
    (lambda d: d["input"].update(std=[1, 0, 1]), "'input.std' must be positive"),
    (lambda d: d["input"].update(geometry="stretch"), "'input.geometry' must be \"pad\" or \"crop\""),
])
def test_sidecar_errors_say_what_is_wrong(edit, message):
    with pytest.raises(EmbedError) as error:
        parse_taxonomy(_broken(edit), "insects.json")
    assert message in str(error.value) and "insects.json" in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# decoding

def test_decoding_follows_the_tree_and_maximises_the_joint_score():
    taxonomy = parse_taxonomy(copy.deepcopy(SIDECAR), "insects.json")
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(500, count, generator=generator) * 3 for count in taxonomy.counts]
    index, probability = taxonomy.decode(logits)
    index, probability = index.numpy(), probability.numpy()
    for level in range(1, 4):   # parent and child at every level
        assert (index[:, level] == taxonomy.ancestor[level][index[:, 0]]).all()
    log_probs = [torch.log_softmax(values, dim=1).numpy() for values in logits]
    joint = sum(log_probs[level][:, taxonomy.ancestor[level]] for level in range(4))   # (500, 4) per path
    assert (index[:, 0] == joint.argmax(axis=1)).all()
    expected = np.stack([np.exp(log_probs[level][np.arange(500), index[:, level]]) for level in range(4)], axis=1)
    np.testing.assert_allclose(probability, expected, rtol=1e-5)
    # independent argmaxes would disagree with the tree on some rows: the decoding is doing real work
    independent = np.stack([values.argmax(dim=1).numpy() for values in logits], axis=1)
    assert (independent[:, 1] != taxonomy.ancestor[1][independent[:, 0]]).any()


# ---------------------------------------------------------------------------------------------------------------
# loading the model

def _backend(path, device="cpu"):
    from crop_cluster.embed.hierarchical import HierarchicalBackend

    return HierarchicalBackend(device, str(path))


def _embed(path, files):
    from crop_cluster.embed.base import embed_files

    return embed_files(_backend(path), [str(f) for f in files], batch_size=4, num_workers=0, progress=False)


@pytest.mark.parametrize("kind", ["pt", "pt2", "onnx"])
def test_exported_model_embeds_and_predicts(tmp_path, kind):
    from crop_cluster.embed.hierarchical import split_predictions

    files = [solid(tmp_path / "img" / f"{k}.png", rgb, k) for k, rgb in
             enumerate([(255, 0, 0), (0, 250, 0), (0, 0, 255), (0, 250, 250), (128, 128, 0)])]
    result = _embed(export(tmp_path / "model", kind=kind), files)
    assert result.embeddings.shape == (5, 3) and result.extras.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, rtol=1e-5)
    index, probability = split_predictions(result.extras, 4)
    assert index[:4, 0].tolist() == [0, 1, 2, 3] and (probability[:4, 0] > 0.95).all()
    assert index[3].tolist() == [3, 2, 1, 1]                 # cyan: Tipula paludosa, Tipula, Tipulidae, Diptera
    assert probability[4, 0] < 0.9                            # olive sits between the species colours


def test_the_three_formats_agree(tmp_path):
    files = [solid(tmp_path / "img" / f"{k}.png", (40 * k, 200 - 30 * k, 90), k) for k in range(6)]
    script = _embed(export(tmp_path / "a"), files)
    for kind in ("pt2", "onnx"):
        other = _embed(export(tmp_path / kind, kind=kind), files)
        np.testing.assert_allclose(script.embeddings, other.embeddings, atol=1e-5)
        np.testing.assert_allclose(script.extras, other.extras, atol=1e-4)


def test_model_errors_are_clear(tmp_path):
    cases = []
    state_dict = tmp_path / "weights" / "model.pt"
    state_dict.parent.mkdir()
    torch.save(ColourClassifier().state_dict(), state_dict)
    (tmp_path / "weights" / "model.json").write_text(json.dumps(SIDECAR))
    cases.append((state_dict, "not a TorchScript model"))
    cases.append((tmp_path / "nowhere.pt", "no such model file"))
    lonely = export(tmp_path / "lonely")
    (tmp_path / "lonely" / "insects.json").unlink()
    cases.append((lonely, "no taxonomy sidecar"))
    cases.append((export(tmp_path / "short", drop_level=True), "returns 4 tensor(s), but"))
    cases.append((export(tmp_path / "count", wrong_count=True),
                  "the logits of level 'genus' have shape (2, 4) for 2 images, but"))
    sized = copy.deepcopy(SIDECAR)
    sized["input"]["size"] = 8
    cases.append((export(tmp_path / "ok", sidecar=sized), None))   # any size works for this model: no error
    garbage = tmp_path / "garbage" / "model.onnx"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a model")
    (tmp_path / "garbage" / "model.json").write_text(json.dumps(SIDECAR))
    cases.append((garbage, "not a usable ONNX model"))
    fake_program = tmp_path / "garbage" / "model.pt2"
    fake_program.write_bytes(b"not a program either")
    (tmp_path / "garbage" / "model.json").write_text(json.dumps(SIDECAR))
    cases.append((fake_program, "not a torch.export program"))
    for path, message in cases:
        if message is None:
            _backend(path)
            continue
        with pytest.raises(EmbedError) as error:
            _backend(path)
        assert message in str(error.value), (path, str(error.value))


# ---------------------------------------------------------------------------------------------------------------
# naming rules

def _rows(paths, probability=0.95):
    """index/probability arrays from species paths (species, genus, family, order indices) per row."""
    index = np.asarray(paths, dtype=np.int64)
    return index, np.full(index.shape, probability, dtype=np.float32)


RED, GREEN, BLUE, CYAN = [0, 0, 0, 0], [1, 0, 0, 0], [2, 1, 0, 0], [3, 2, 1, 1]


@pytest.mark.parametrize("paths, level, taxon", [
    ([RED] * 5, 0, 0),                                   # unanimous: the species
    ([RED, GREEN, RED, GREEN], 1, 0),                    # split at species: the genus they share (Agrotis)
    ([RED, BLUE, GREEN, BLUE], 2, 0),                    # split at genus: the family (Noctuidae)
    ([RED, CYAN, RED, CYAN], -1, -1),                # split at family and order: nothing agreed
    ([RED] * 9 + [GREEN], 0, 0),                          # 90 % agree at species
])
def test_deepest_agreed_taxon(paths, level, taxon):
    index, probability = _rows(paths, probability=1.0)
    found = cluster_taxa(np.zeros(len(paths), np.int64), np.arange(len(paths)), index, probability, 0.8)
    assert (found.level[0], found.taxon[0]) == (level, taxon)


def test_probability_weighting_and_individual_weighting():
    index, probability = _rows([RED] * 4)
    probability[:, 0] = 0.6                               # unanimous but unsure species: named at genus
    found = cluster_taxa(np.zeros(4, np.int64), np.arange(4), index, probability, 0.8)
    assert (found.level[0], found.taxon[0]) == (1, 0) and found.share[0] == pytest.approx(0.95)
    # one individual seen in 8 frames votes once: 8 red crops of individual 0 against 2 green individuals
    index, probability = _rows([RED] * 8 + [GREEN] * 2, probability=1.0)
    individual = np.asarray([0] * 8 + [1, 2])
    found = cluster_taxa(np.zeros(10, np.int64), individual, index, probability, 0.8)
    assert found.level[0] == 1                            # red 1/3, green 2/3: no species reaches 0.8
    found = cluster_taxa(np.zeros(10, np.int64), np.arange(10), index, probability, 0.8)
    assert found.level[0] == 0                            # as 10 individuals, 80 % red


def test_name_columns_for_several_clusters_and_unclustered_rows():
    index, probability = _rows([RED, RED, BLUE, GREEN, CYAN, CYAN], probability=1.0)
    cluster_ids = np.asarray([1, 1, 0, 0, -1, 2])
    columns = name_columns(cluster_ids, np.arange(6), index, probability, LEVELS,
                           [CLASSES[level] for level in LEVELS], 0.8)
    assert columns["cluster_name"].tolist() == ["Agrotis ipsilon (cluster 1)"] * 2 + \
        ["Noctuidae sp. 0 (genus uncertain)"] * 2 + ["", "Tipula paludosa (cluster 2)"]
    assert columns["cluster_taxon_level"].tolist() == ["species", "species", "family", "family", "", "species"]
    assert columns["cluster_taxon"][4] == "" and np.isnan(columns["cluster_taxon_share"][4])
    empty = name_columns(np.full(3, -1), np.arange(3), index[:3], probability[:3], LEVELS,
                         [CLASSES[level] for level in LEVELS], 0.8)
    assert empty["cluster_name"].tolist() == ["", "", ""]
    split = name_columns(np.zeros(2, np.int64), np.arange(2), *_rows([RED, CYAN], 1.0), LEVELS,
                         [CLASSES[level] for level in LEVELS], 0.8)
    assert split["cluster_name"].tolist() == ["unplaced sp. 0 (order uncertain)"] * 2


# ---------------------------------------------------------------------------------------------------------------
# the CLI

@pytest.fixture
def colour_crops(tmp_path) -> Path:
    """Four red, three blue and three olive crops (olive: between Agrotis ipsilon and A. segetum, unsure)."""
    folder = tmp_path / "crops"
    for k in range(4):
        solid(folder / f"red_{k}.png", (255, 0, 0), k)
        solid(folder / f"olive_{k}.png", (128, 128, 0), 10 + k) if k < 3 else None
        solid(folder / f"blue_{k}.png", (0, 0, 255), 20 + k) if k < 3 else None
    return folder


def _run(*args) -> int:
    return main([str(a) for a in args])


def test_cli_writes_predictions_and_cluster_names(colour_crops, tmp_path):
    model = export(tmp_path / "model", sharpness=12.0)
    out = tmp_path / "out"
    broken = tmp_path / "more" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    assert _run("-i", colour_crops, broken.parent, "-o", out, "-e", "hierarchical", "-fp", model, "-th", "0.98",
                "-q") == 0
    assert "broken.jpg" in (out / "skipped.csv").read_text()
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    assert [c for c in table.columns if c.startswith(("pred_", "prob_"))] == [
        "pred_order", "prob_order", "pred_family", "prob_family", "pred_genus", "prob_genus", "pred_species",
        "prob_species"]
    kind = table["filename"].map(lambda name: Path(name).stem.split("_")[0])
    names = table.groupby(kind)["cluster_name"].unique()
    cluster_of = table.groupby(kind)["cluster"].unique()
    assert names["red"].tolist() == [f"Agrotis ipsilon (cluster {cluster_of['red'][0]})"]
    assert names["blue"].tolist() == [f"Noctua pronuba (cluster {cluster_of['blue'][0]})"]
    assert names["olive"].tolist() == [f"Agrotis sp. {cluster_of['olive'][0]} (species uncertain)"]
    assert (table.loc[kind == "blue", "pred_family"] == "Noctuidae").all()
    run = json.loads((out / "run.json").read_text())
    assert run["taxonomy"]["clusters_named_at"] == {"species": 2, "genus": 1}
    assert "Agrotis ipsilon (cluster" in (out / "report.html").read_text()

    # a second run embeds nothing and still has the predictions (from the cache), as does --embeddings
    again = tmp_path / "again"
    assert _run("-i", colour_crops, broken.parent, "-o", out, "-e", "hierarchical", "-fp", model, "-th", "0.98",
                "-q") == 0
    assert json.loads((out / "run.json").read_text())["counts"]["embeddings_computed"] == 0
    assert _run("--embeddings", out / "embeddings.pkl", "-o", again, "-th", "0.98", "-q") == 0
    reused = pd.read_csv(again / "clusters.csv", keep_default_na=False).set_index("filename")
    pd.testing.assert_series_equal(reused["cluster_name"], table.set_index("filename")["cluster_name"])


def test_cli_clusters_only_the_unknowns(colour_crops, tmp_path):
    model = export(tmp_path / "model", sharpness=12.0)
    out = tmp_path / "out"
    assert _run("-i", colour_crops, "-o", out, "-e", "hierarchical", "-fp", model, "-th", "0.98",
                "--unknown_below", "0.9", "-c", "agglomerative", "--n_clusters", "1", "-gs", "-q") == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    kind = table["filename"].map(lambda name: Path(name).stem.split("_")[0])
    identified = table[table["identified"]]
    assert sorted(set(kind[table["identified"]])) == ["blue", "red"] and (identified["cluster"] == -1).all()
    assert identified.loc[kind == "red", "cluster_name"].str.startswith("Agrotis ipsilon (identified, p=").all()
    unknown = table[~table["identified"]]
    assert set(kind[~table["identified"]]) == {"olive"} and (unknown["cluster"] == 0).all()
    assert (unknown["cluster_name"] == "Agrotis sp. 0 (species uncertain)").all()
    assert table["individual"].is_unique and len(table) == 10
    assert sorted(p.name for p in (out / "clusters" / "identified").iterdir()) == ["Agrotis ipsilon", "Noctua pronuba"]
    assert len(list((out / "clusters" / "0").iterdir())) == 3
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["identified"] == 7 and run["identified"]["level"] == "species"


@pytest.mark.parametrize("args, message", [
    (["-e", "hierarchical"], "-e hierarchical needs -fp MODEL.pt"),
    (["--unknown_level", "genus"], "--unknown_level chooses the level"),
    (["--taxon_share", "1.5"], "--taxon_share 1.5"),
    (["--unknown_below", "0"], "--unknown_below 0.0"),
])
def test_cli_option_errors(tmp_path, caplog, args, message):
    with caplog.at_level(logging.ERROR):
        assert _run("-i", tmp_path, "-o", tmp_path / "out", *args) == 2
    assert message in caplog.text


def test_cli_bad_model_and_level_exit_2(colour_crops, tmp_path, caplog):
    model = export(tmp_path / "model")
    with caplog.at_level(logging.ERROR):
        assert _run("-i", colour_crops, "-o", tmp_path / "o0", "-e", "hierarchical", "-fp", tmp_path / "no.pt2") == 2
        assert "no.pt2: no such model file" in caplog.text
        assert _run("-i", colour_crops, "-o", tmp_path / "o1", "-e", "hierarchical", "-fp", model,
                    "--unknown_below", "0.9", "--unknown_level", "tribe") == 2
        assert "level 'tribe' is not in" in caplog.text and "species, genus, family, order" in caplog.text
        broken = tmp_path / "model" / "insects.json"
        broken.write_text("{not json")
        assert _run("-i", colour_crops, "-o", tmp_path / "o2", "-e", "hierarchical", "-fp", model) == 2
    assert "not readable JSON" in caplog.text
    assert not (tmp_path / "o2" / "clusters.csv").exists()
    broken.write_text(json.dumps(SIDECAR))
    table = tmp_path / "meta.csv"
    table.write_text("filename,pred_genus\n" + "".join(f"{p},x\n" for p in sorted(colour_crops.iterdir())))
    with caplog.at_level(logging.ERROR):
        assert _run("-i", colour_crops, "-o", tmp_path / "o3", "-e", "hierarchical", "-fp", model, "--metadata",
                    table, "-q") == 2
    assert "pred_genus" in caplog.text


def test_readme_recipe_exports_a_model_that_the_cli_runs(colour_crops, tmp_path):
    """The worked example in the README: example/export_hierarchical.py, then cluster.py on its model."""
    readme = (REPO / "README.md").read_text()
    assert "example/export_hierarchical.py" in readme and "-e hierarchical -fp models/insects.pt2" in readme
    subprocess.run([sys.executable, str(REPO / "example" / "export_hierarchical.py"), "--out", str(tmp_path / "m"),
                    "--size", "64"], check=True, capture_output=True)
    for model in ("insects.pt2", "insects.pt", "insects.onnx"):
        out = tmp_path / f"out-{model}"
        assert _run("-i", colour_crops, "-o", out, "-e", "hierarchical", "-fp", tmp_path / "m" / model, "-q") == 0
        table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
        assert {"pred_species", "prob_order", "cluster_name", "cluster_taxon"} <= set(table.columns)
        assert table["pred_species"].isin(["Agrotis ipsilon", "Agrotis segetum", "Noctua pronuba",
                                           "Geometra papilionaria", "Campaea margaritaria",
                                           "Tipula paludosa"]).all()


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["pt", "pt2"])
def test_cuda_bf16_predictions_match_the_cpu(tmp_path, kind):
    """On CUDA the model runs in bf16 autocast: the same top-1 paths as float32 on the CPU, probabilities close."""
    from crop_cluster.embed.base import embed_files
    from crop_cluster.embed.hierarchical import HierarchicalBackend

    files = [str(solid(tmp_path / "img" / f"{k}.png", (60 * (k % 5), 40 * (k % 7), 200 - 20 * k), k))
             for k in range(10)]
    model = export(tmp_path / "model", kind=kind)
    cpu = embed_files(HierarchicalBackend("cpu", str(model)), files, 4, 0, False)
    gpu = embed_files(HierarchicalBackend("cuda:0", str(model)), files, 4, 0, False)
    np.testing.assert_array_equal(gpu.extras[:, :4], cpu.extras[:, :4])
    np.testing.assert_allclose(gpu.extras[:, 4:], cpu.extras[:, 4:], atol=0.05)
    np.testing.assert_allclose(gpu.embeddings, cpu.embeddings, atol=0.02)
