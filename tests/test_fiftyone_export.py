"""outputs/fiftyone_export.py: the FiftyOne samples JSON, checked without FiftyOne installed."""
from __future__ import annotations

import json

import pandas as pd

from conftest import PALETTE, draw_crop
from crop_cluster import cli
from crop_cluster.outputs import fiftyone_export
from crop_cluster.outputs.fiftyone_export import field_name


def test_fiftyone_json_has_one_sample_per_crop_with_cluster_fields(tmp_path, fake_backend, monkeypatch):
    crops = tmp_path / "crops"
    for colour in range(2):
        for view in range(3):
            draw_crop(crops / f"c{colour}_v{view}.png", PALETTE[colour], seed=view)
    draw_crop(crops / "lone.png", PALETTE[5], seed=1)
    out = tmp_path / "out"
    assert cli.main(["-i", str(crops), "-o", str(out), "-e", fake_backend, "-q", "--no-report"]) == 0
    monkeypatch.chdir(tmp_path)
    assert fiftyone_export.main([str(out), "--name", "trap 1"]) == 0
    document = json.loads((out / "fiftyone.json").read_text())
    table = pd.read_csv(out / "clusters.csv")
    assert document["name"] == "trap 1" and document["media_type"] == "image"
    assert len(document["samples"]) == len(table)
    for sample, row in zip(document["samples"], table.itertuples()):
        assert sample["filepath"] == row.filename and sample["filepath"].startswith("/")
        assert sample["cluster"] == row.cluster and isinstance(sample["cluster"], int)
        assert sample["representative"] == row.representative
        assert sample["tags"] == ([f"cluster-{row.cluster}"] if row.cluster >= 0 else ["not-clustered"])
        assert sample["sim_to_centroid"] is None if row.cluster < 0 else abs(sample["sim_to_centroid"] - row.sim_to_centroid) < 1e-6
    assert fiftyone_export.main([str(tmp_path / "nowhere")]) == 2


def test_field_names_are_valid_and_not_reserved():
    assert [field_name(c) for c in ["box x1", "metadata", "id", "2nd", "_private", "label"]] == \
        ["box_x1", "metadata_", "id_", "f_2nd", "f_private", "label"]
