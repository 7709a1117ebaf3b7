"""report.html (data document, escaping, thumbnails, default on/off) and the cluster-keyed --review through the CLI
(review files themselves: tests/test_campaign.py)."""
from __future__ import annotations

import hashlib
import json
import re
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crop_cluster.cli import main
from conftest import PALETTE, draw_crop, draw_views
from crop_cluster.outputs.report.html import script_json


@pytest.fixture
def crops(tmp_path) -> Path:
    """3 colours x 4 views, a byte-identical copy, a lone crop, and a crop whose name is markup."""
    root = tmp_path / "crops"
    draw_views(root, 3, 4)
    (root / "copy_of_c0_v0.png").write_bytes((root / "c0_v0.png").read_bytes())
    draw_crop(root / "<b>x.png", PALETTE[5], seed=99)
    return root


def report_data(out: Path) -> dict:
    page = (out / "report.html").read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(block)


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_script_json_cannot_close_the_block():
    text = script_json({"f": "</script><b>x</b>&\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"f": "</script><b>x</b>&\u2028"}


def test_report_is_written_by_default_and_self_contained(crops, tmp_path, fake_backend):
    before = digests(crops)
    out = tmp_path / "out"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<b>x.png" not in page and "<b>" not in page           # the markup name is escaped in the JSON block
    assert not re.search(r'(src|href)="https?:', page) and "http://" not in page.replace("http-equiv", "")
    data = report_data(out)
    table = pd.read_csv(out / "clusters.csv")
    # one item per individual; the copy is collapsed onto its representative with a count of 2
    assert len(data["items"]) == table.representative.sum() == len(table) - 1
    assert sorted(item["n"] for item in data["items"])[-1] == 2
    assert any(item["f"].endswith("<b>x.png") for item in data["items"])
    # clusters largest first, -1 last, members by decreasing similarity to the centroid
    ids = [c["id"] for c in data["clusters"]]
    assert ids == sorted(i for i in ids if i >= 0) + [-1]
    sizes = [c["size"] for c in data["clusters"] if c["id"] >= 0]
    assert sizes == sorted(sizes, reverse=True)
    for block in data["clusters"]:
        sims = [data["items"][i]["s"] for i in block["members"]]
        if block["id"] >= 0:
            assert sims == sorted(sims, reverse=True) and block["cohesion"] == pytest.approx(np.mean(sims), abs=1e-3)
        assert all(data["items"][i]["c"] == block["id"] for i in block["members"])
    # thumbnails: small JPEGs under OUT/report/, one per individual; originals untouched
    thumbs = [item["t"] for item in data["items"]]
    assert all(t and t.startswith("report/") for t in thumbs) and len(set(thumbs)) == len(thumbs)
    from PIL import Image

    with Image.open(out / thumbs[0]) as image:
        assert image.format == "JPEG" and max(image.size) <= 128
    jpegs = sorted(p.name for p in (out / "report").iterdir() if p.suffix == ".jpg")
    assert jpegs == sorted(Path(t).name for t in thumbs)
    assert (out / "report" / "map.npz").is_file()                 # the map, kept by the vectors it was made from
    assert len(data["map"]["x"]) == len(data["items"]) and data["run"]["map_method"] in ("pca", "umap")
    assert digests(crops) == before


def test_no_report_flag_and_thumbnails_reused(crops, tmp_path, fake_backend):
    out = tmp_path / "out"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "--no-report"]) == 0
    assert not (out / "report.html").exists()
    assert main(["--embeddings", str(out / "embeddings.pkl"), "-o", str(out), "-q", "--report"]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in (out / "report").iterdir()}
    assert main(["--embeddings", str(out / "embeddings.pkl"), "-o", str(out), "-q", "-th", "0.999"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "report").iterdir()} == first


# ---------------------------------------------------------------- a hierarchical classifier's columns

GEOMETRID = '<i>Geometridae</i> sp. 37 ("genus" uncertain) & co'
LEVELS = ("order", "family", "genus", "species")


def classified_table(tmp_path: Path, identified: bool = True) -> pd.DataFrame:
    """clusters.csv's frame with a classifier's columns: cluster 0 (a family, named with markup; rows 1 and 2 are one
    individual), cluster 1 (a species), one crop not clustered, and three crops identified by the classifier (two
    Agrotis ipsilon, one Noctua pronuba) unless `identified` is False (then the column is absent)."""
    cluster = [0, 0, 0, 1, 1, -1, -1, -1, -1]
    predicted = [("Lepidoptera", .99, "Geometridae", .91, "Idaea", .42, "Idaea aversata", .30)] * 3 + \
        [("Lepidoptera", .99, "Noctuidae", .95, "Agrotis", .9, "Agrotis ipsilon", .8)] * 2 + \
        [("Diptera", .7, "", np.nan, "", np.nan, "", np.nan),
         ("Lepidoptera", 1.0, "Noctuidae", .99, "Agrotis", .98, "Agrotis ipsilon", .93),
         ("Lepidoptera", 1.0, "Noctuidae", .99, "Agrotis", .99, "Agrotis ipsilon", .97),
         ("Lepidoptera", 1.0, "Noctuidae", .99, "Noctua", .99, "Noctua pronuba", .96)]
    naming = [("Geometridae", "family", GEOMETRID)] * 3 + \
        [("Agrotis ipsilon", "species", "Agrotis ipsilon (cluster 1)")] * 2 + \
        [("", "", ""), ("Agrotis ipsilon", "species", "Agrotis ipsilon (identified, p=0.93)"),
         ("Agrotis ipsilon", "species", "Agrotis ipsilon (identified, p=0.97)"),
         ("Noctua pronuba", "species", "Noctua pronuba (identified, p=0.96)")]
    table = pd.DataFrame({
        "filename": [str(tmp_path / f"crop{k}.png") for k in range(9)], "cluster": cluster,
        "cluster_size": [3, 3, 3, 2, 2, 1, 1, 1, 1], "sim_to_centroid": [.99, .97, .97, .98, .96] + [np.nan] * 4,
        "individual": [0, 1, 1, 2, 3, 4, 5, 6, 7], "representative": [True, True, False] + [True] * 6,
        "timestamp": [f"2024-06-0{k + 1}" for k in range(9)]})
    for k, level in enumerate(LEVELS):
        table[f"pred_{level}"] = [row[2 * k] for row in predicted]
        table[f"prob_{level}"] = [row[2 * k + 1] for row in predicted]
    for k, column in enumerate(("cluster_taxon", "cluster_taxon_level", "cluster_name")):
        table[column] = [row[k] for row in naming]
    if identified:
        table["identified"] = [False] * 6 + [True] * 3
    return table


def write_classified_report(tmp_path: Path, table: pd.DataFrame) -> Path:
    """OUT/report.html of `table` (no image files: the thumbnails read 'no preview')."""
    from crop_cluster.outputs.report import write_report

    out = tmp_path / "out"
    out.mkdir()
    write_report(str(out), table, np.eye(len(table), 4, dtype=np.float32), 0.9, "fake")
    return out


def tooltip_predictions(data: dict, item: dict) -> str:
    """The prediction line the page puts in a thumbnail's tooltip (as predictionText in template.html)."""
    taxonomy = data["taxonomy"]
    return " \u00b7 ".join(f"{level} {taxonomy['names'][pair[0]]}" + ("" if pair[1] is None else f" {pair[1]:.2f}")
                           for level, pair in zip(taxonomy["levels"], item["p"]) if pair)


def test_report_shows_cluster_names_predictions_and_identified_crops(tmp_path):
    out = write_classified_report(tmp_path, classified_table(tmp_path))
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<i>" not in page and "Geometridae</i>" not in page and "& co" not in page   # only escaped in the JSON
    data = report_data(out)
    assert data["columns"] == ["timestamp"]                       # classifier columns are not plain tooltip lines
    named = {c["id"]: (c.get("name"), c.get("taxon"), c.get("level")) for c in data["clusters"]}
    assert named == {0: (GEOMETRID, "Geometridae", "family"), 1: ("Agrotis ipsilon (cluster 1)", "Agrotis ipsilon",
                                                                  "species"), -1: (None, None, None)}
    by_file = {Path(item["f"]).name: item for item in data["items"]}
    assert tooltip_predictions(data, by_file["crop0.png"]) == " \u00b7 ".join(
        ["order Lepidoptera 0.99", "family Geometridae 0.91", "genus Idaea 0.42", "species Idaea aversata 0.30"])
    assert tooltip_predictions(data, by_file["crop5.png"]) == "order Diptera 0.70"
    # identified crops: their own groups by predicted taxon, not among the 'not clustered' singletons
    not_clustered = next(c for c in data["clusters"] if c["id"] == -1)
    assert [data["items"][i]["f"] for i in not_clustered["members"]] == [str(tmp_path / "crop5.png")]
    assert data["run"]["not_clustered"] == 1 and data["run"]["identified"] == 3
    groups = [(g["name"], g["level"], g["size"], [Path(data["items"][i]["f"]).name for i in g["members"]])
              for g in data["identified"]]
    assert groups == [("Agrotis ipsilon", "species", 2, ["crop7.png", "crop6.png"]),   # most probable first
                      ("Noctua pronuba", "species", 1, ["crop8.png"])]
    assert 'id="filter"' in page and "Identified by the classifier (not clustered)" in page


def test_report_without_classifier_columns_is_unchanged(tmp_path):
    full = classified_table(tmp_path)
    plain = full.drop(columns=[c for c in full.columns if c.startswith(("pred_", "prob_", "cluster_t", "cluster_n"))]
                      + ["identified"])
    data = report_data(write_classified_report(tmp_path, plain))
    assert set(data) == {"run", "columns", "items", "clusters", "map", "suggestions"} and \
        data["columns"] == ["timestamp"]
    assert set(data["run"]) == {"id", "title", "rows", "individuals", "clusters", "not_clustered", "threshold",
                                "model", "map_method", "suggestions"} and data["run"]["not_clustered"] == 4
    assert all(set(item) - {"x", "u"} == {"f", "h", "t", "s", "n", "c", "m", "q", "o", "l"} for item in data["items"])
    assert all(set(c) == {"id", "size", "rows", "cohesion", "members"} for c in data["clusters"])


def test_report_names_without_identified_column(tmp_path):
    """Without the confidence filter (no `identified` column) the unclustered crops stay in 'Not clustered'."""
    data = report_data(write_classified_report(tmp_path, classified_table(tmp_path, identified=False)))
    assert "identified" not in data and "identified" not in data["run"] and data["run"]["not_clustered"] == 4
    assert data["clusters"][0]["name"] == GEOMETRID and len(data["clusters"][-1]["members"]) == 4


# ---------------------------------------------------------------- review.csv

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_review_round_trip_through_the_cli(crops, tmp_path, fake_backend):
    out = tmp_path / "out"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "-th", "0.95"]) == 0
    before = pd.read_csv(out / "clusters.csv")
    assert sorted(before.cluster.unique()) == [-1, 0, 1, 2]
    review = write(tmp_path / "review.csv", 'cluster,group,note\n0,"red, and green",x\n1,"red, and green",\n2,-1,bad\n')
    # the reviewed run's folder: its embeddings and its threshold (0.95) are reused, nothing is embedded
    assert main(["-o", str(out), "--review", str(review), "-q"]) == 0
    after = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["parameters"]["threshold"] == 0.95 and manifest["counts"]["embedded"] == 0
    assert list(after.columns[:9]) == [*before.columns[:8], "group"]  # contract, dist_to_centroid, linked_by, group
    merged = before.cluster.isin([0, 1]).to_numpy()
    assert after.cluster[merged].nunique() == 1 and (after.group[merged] == "red, and green").all()
    assert (after.cluster[merged] == 0).all() and (after.cluster_size[merged] == 8).all()
    assert (after.cluster[(before.cluster == 2).to_numpy()] == -1).all()
    assert (after.group[~merged] == "").all()


def test_review_errors_exit_2(crops, tmp_path, fake_backend, caplog):
    out = tmp_path / "out"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q"]) == 0
    bad = write(tmp_path / "review.csv", "cluster,group,note\n99,x,\n")
    assert main(["-o", str(out), "--review", str(bad), "-q"]) == 2
    assert "cluster 99 does not exist" in caplog.text and "Traceback" not in caplog.text
    assert main(["-o", str(tmp_path / "empty"), "--review", str(bad), "-q"]) == 2
    assert "holds no campaign crops and no embeddings.pkl" in caplog.text


def test_silhouette_recorded_with_and_without_labels(crops, tmp_path, fake_backend):
    out = tmp_path / "out"
    assert main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "--no-report"]) == 0
    quality = json.loads((out / "run.json").read_text())["quality"]
    assert -1 <= quality["silhouette"] <= 1 and quality["rows_scored"] == quality["clustered_rows"] == 12
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\n" + "".join(f"c{c}_v{v}.png,c{c}\n" for c in range(3) for v in range(4)))
    assert main(["--embeddings", str(out / "embeddings.pkl"), "-o", str(out), "-q", "--labels", str(labels),
                         "--no-report"]) == 0
    assert json.loads((out / "metrics.json").read_text())["label_free"] == quality


# ---------------------------------------------------------------- the needs-review order and the campaign's columns

def test_misplaced_score_and_more_like_this_match_brute_force():
    from crop_cluster.outputs.report.review_order import centres, review_order

    rng = np.random.default_rng(3)
    axes = np.eye(8, dtype=np.float32)[:3]
    cluster = np.repeat([0, 1, 2], 6)
    vectors = axes[cluster] + 0.2 * rng.normal(size=(18, 8)).astype(np.float32)
    vectors[5] = axes[1] + 0.05 * axes[0]               # filed under cluster 0, but it looks like cluster 1
    vectors = np.vstack([vectors, axes[2] + 0.3]).astype(np.float32)     # one individual not clustered
    cluster = np.append(cluster, -1)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = review_order(vectors, cluster, k=4, candidates=2, member_cap=100)
    centre = centres(vectors, cluster, 3)
    sims = vectors @ centre.T
    for i in range(18):
        others = [c for c in range(3) if c != cluster[i]]
        assert order.misplaced[i] == pytest.approx(sims[i, others].max() - sims[i, cluster[i]], abs=1e-5)
        assert order.nearest_other[i] == others[int(np.argmax(sims[i, others]))]
        exact = np.argsort(-(vectors[:18] @ vectors[i])[cluster[:18] != cluster[i]], kind="stable")[:4]
        assert order.like[i].tolist() == np.flatnonzero(cluster[:18] != cluster[i])[exact].tolist()
    assert np.argmax(order.misplaced[:18]) == 5 and order.misplaced[5] > 0 and order.nearest_other[5] == 1
    assert np.isnan(order.misplaced[18]) and set(order.like[18]) <= set(np.flatnonzero(cluster >= 0))
    # a cluster larger than member_cap is stood for by its most central members
    capped = review_order(vectors, cluster, k=2, candidates=1, member_cap=3)
    assert all(set(capped.like[i]) <= set(np.flatnonzero(cluster == capped.nearest_other[i])) for i in range(18))


def test_report_digests_other_crops_and_campaign_columns(tmp_path):
    from crop_cluster.outputs.report import write_report

    table = classified_table(tmp_path, identified=False).drop(columns=["cluster_name"])
    table["group"] = ["moths", "moths", "moths", "", "", "-1", "", "", ""]
    table["cluster_status"] = ["reviewed"] * 3 + ["new"] * 2 + ["unreviewed"] * 4
    table["first_run"] = ["2024-06-01T00:00:00"] * 4 + ["2024-06-02T00:00:00"] * 5
    table["crop"] = [f"{k:032x}" for k in range(9)]
    out = tmp_path / "out"
    out.mkdir()
    write_report(str(out), table, np.eye(9, 4, dtype=np.float32), 0.9, "fake")
    data = report_data(out)
    assert data["columns"] == ["timestamp"]              # the campaign's columns are not tooltip lines
    blocks = {c["id"]: c for c in data["clusters"]}
    assert (blocks[0]["group"], blocks[0]["status"], blocks[0]["changed"]) == ("moths", "reviewed", False)
    assert "group" not in blocks[1] and (blocks[1]["status"], blocks[1]["changed"]) == ("new", True)
    by_file = {Path(item["f"]).name: item for item in data["items"]}
    assert by_file["crop1.png"]["h"] == f"{1:032x}" and by_file["crop1.png"]["x"] == \
        [[str(tmp_path / "crop2.png"), f"{2:032x}"]]                 # the individual's other crop, for the export
    assert "w" not in by_file["crop3.png"] and by_file["crop4.png"]["w"] == 1     # new in the latest run


def test_first_run_of_a_campaign_has_nothing_changed_since_a_review(tmp_path):
    """On a campaign's first run every cluster is new, but there was no review: no "changed" badge or filter."""
    from crop_cluster.outputs.report import write_report

    table = classified_table(tmp_path, identified=False).drop(columns=["cluster_name"])
    table["group"] = ""
    table["cluster_status"] = ["new"] * 5 + [""] * 4
    table["first_run"] = 0
    out = tmp_path / "out"
    out.mkdir()
    write_report(str(out), table, np.eye(9, 4, dtype=np.float32), 0.9, "fake")
    blocks = report_data(out)["clusters"]
    assert all("changed" not in block for block in blocks) and {b.get("status") for b in blocks} >= {"new"}
    table["cluster_status"] = ["unreviewed"] + ["new"] * 4 + [""] * 4         # a later run: new means changed
    write_report(str(out), table, np.eye(9, 4, dtype=np.float32), 0.9, "fake")
    assert [b["changed"] for b in report_data(out)["clusters"] if b["id"] >= 0] == [False, True]


def test_file_url_is_left_to_the_page_only_when_it_derives_the_same():
    from urllib.parse import quote

    from crop_cluster.outputs.report.html import file_url

    def derived(name):      # the page's rule: "file://" + the parts through encodeURIComponent
        return "file://" + "/".join(quote(part, safe="!'()*~") for part in name.split("/"))

    for name in ("/data/night1/crop_0001.jpg", "/data/a b/<img src=x>#1%.png"):
        assert file_url(name) is None and derived(name) == Path(name).as_uri()
    for name in ("relative/crop.jpg", "/data/nuit/été.jpg", "/d/it's (1)!.png"):   # Python writes these otherwise
        assert file_url(name) == Path(os.path.abspath(name)).as_uri()
