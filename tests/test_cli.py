"""The command line end to end through main([...]): output contract, exit codes, bad inputs, flags, reuse."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crop_cluster.cli import build_parser, main
from conftest import PALETTE, REPO, draw_crop

CONTRACT_COLUMNS = ["filename", "cluster", "cluster_size", "sim_to_centroid", "individual", "representative"]


@pytest.fixture
def crops(tmp_path) -> Path:
    """18 crops: 3 colours x 5 views in two sub-folders, a byte-identical copy, a lone black crop, a corrupt file,
    a text file and the same basename in two folders."""
    root = tmp_path / "crops"
    for colour_index in range(3):
        for view in range(5):
            folder = root / ("night1" if view % 2 else "night2")
            draw_crop(folder / f"c{colour_index}_v{view}.png", PALETTE[colour_index], seed=10 * colour_index + view)
    shutil.copyfile(root / "night1" / "c0_v1.png", root / "night2" / "copy_of_c0_v1.png")
    draw_crop(root / "lone.jpg", PALETTE[5], seed=99)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "notes.txt.bak").write_text("not an image")
    return root


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def read_outputs(out: Path):
    return pd.read_csv(out / "clusters.csv"), json.loads((out / "run.json").read_text())


def test_end_to_end_writes_the_contracted_outputs(crops, tmp_path, fake_backend):
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q") == 0
    table, manifest = read_outputs(out)
    assert list(table.columns) == CONTRACT_COLUMNS + ["dist_to_centroid", "linked_by", "group", "cluster_status",
                                                    "first_run", "merged_from"]
    assert len(table) == 17  # 15 views + copy + lone; broken.jpg is skipped
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped.columns) == ["filename", "reason"]
    assert skipped.filename.str.endswith("broken.jpg").tolist() == [True]
    assert "cannot decode" in skipped.reason[0]
    # three colours -> three clusters of 5 individuals each (the copy is not a new individual); the lone crop is -1
    assert sorted(table.cluster.unique().tolist()) == [-1, 0, 1, 2]
    clustered = table[table.cluster >= 0]
    assert clustered.groupby("cluster").individual.nunique().tolist() == [5, 5, 5]
    assert (clustered.cluster_size == 5).all()
    lone = table[table.filename.str.endswith("lone.jpg")].iloc[0]
    assert lone.cluster == -1 and lone.cluster_size == 1 and np.isnan(lone.sim_to_centroid)
    assert clustered.sim_to_centroid.between(0.5, 1.0001).all()
    # the exact copy shares the individual and the cluster of its original, and is not the representative
    original = table[table.filename.str.endswith("night1/c0_v1.png")].iloc[0]
    copy = table[table.filename.str.endswith("copy_of_c0_v1.png")].iloc[0]
    assert (copy.individual, copy.cluster) == (original.individual, original.cluster)
    assert original.representative and not copy.representative
    assert table.representative.sum() == table.individual.nunique() == 16
    assert table.linked_by.fillna("").tolist().count("exact") == 1 and copy.linked_by == "exact"
    embeddings = pickle.loads((out / "embeddings.pkl").read_bytes())
    assert embeddings["filename"] == table.filename.tolist()
    assert embeddings["embedding"].dtype == np.float32 and embeddings["embedding"].shape == (17, embeddings["dim"])
    np.testing.assert_allclose(np.linalg.norm(embeddings["embedding"], axis=1), 1.0, rtol=1e-5)
    assert embeddings["model"].startswith("fake:")
    counts = manifest["counts"]
    assert (counts["inputs"], counts["embedded"], counts["skipped"], counts["individuals"]) == (18, 16, 1, 16)
    assert (counts["clusters"], counts["singletons"], counts["largest_cluster"]) == (3, 1, 5)
    from crop_cluster.embed.device import resolve_device

    assert manifest["parameters"]["threshold"] == 0.9 and manifest["device"] == resolve_device("auto")
    assert {"collect", "embed", "cluster", "write", "total"} <= set(manifest["timings_s"])
    assert "torch" in manifest["versions"]
    assert not (out / "clusters").exists() and not (out / "clusters.pkl").exists()


def test_cluster_folders_copy_with_collision_safe_names(crops, tmp_path, fake_backend):
    # the same basename in two folders must give two files, never one overwriting the other
    draw_crop(crops / "night2" / "c0_v1.png", PALETTE[0], seed=1234)
    before = {p: p.read_bytes() for p in crops.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-gs", "-q") == 0
    table, _ = read_outputs(out)
    copied = sorted(p.relative_to(out / "clusters").as_posix() for p in (out / "clusters").rglob("*") if p.is_file())
    assert len(copied) == len(table)
    assert "not-clustered/lone.jpg" in copied
    c0 = [name for name in copied if name.split("/")[1].startswith("c0_v1")]
    assert len(c0) == 2 and len(set(c0)) == 2
    assert {p: p.read_bytes() for p in crops.rglob("*") if p.is_file()} == before  # originals untouched


def test_dedup_keeps_one_representative_per_individual_in_folders(crops, tmp_path, fake_backend):
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-kp", "-q") == 0  # -kp implies -gs
    copied = [p.name for p in (out / "clusters").rglob("*") if p.is_file()]
    assert len(copied) == 16 and "copy_of_c0_v1.png" not in copied


def test_save_embs_writes_rows_with_embeddings(crops, tmp_path, fake_backend):
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-se", "-kp", "-q") == 0
    frame = pd.read_pickle(out / "clusters.pkl")
    table, _ = read_outputs(out)
    assert frame.filename.tolist() == table.filename.tolist()
    assert frame.embedding.iloc[0].shape == (3,)


def test_reusing_embeddings_with_another_threshold_embeds_nothing(crops, tmp_path, fake_backend, monkeypatch):
    first = tmp_path / "first"
    assert run_cli("-i", crops, "-o", first, "-e", fake_backend, "-q") == 0
    from crop_cluster import embed

    monkeypatch.setattr(embed, "load_backend", lambda *a, **k: pytest.fail("must not load a model"))
    second = tmp_path / "second"
    assert run_cli("--embeddings", first / "embeddings.pkl", "-o", second, "-th", "0.999", "-q") == 0
    table, manifest = read_outputs(second)
    assert manifest["counts"]["embedded"] == 0 and manifest["parameters"]["threshold"] == 0.999
    assert len(table) == 17
    same = tmp_path / "same"
    assert run_cli("--embeddings", first / "embeddings.pkl", "-o", same, "-q") == 0  # default from the model name
    assert read_outputs(same)[0].equals(read_outputs(first)[0])
    subset = tmp_path / "subset"
    assert run_cli("--embeddings", first / "embeddings.pkl", "-i", crops / "night1", "-o", subset, "-q") == 0
    assert len(read_outputs(subset)[0]) == 6  # views 1 and 3 of each colour


def test_labels_write_metrics_and_label_column(crops, tmp_path, fake_backend):
    labels = pd.DataFrame({"filename": [p.name for p in crops.rglob("*.png")]})
    labels["label"] = labels.filename.str.slice(0, 2).replace({"co": "c0"})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "--labels", tmp_path / "labels.csv", "-sl",
                   "-x", "3", "-q") == 0
    table, manifest = read_outputs(out)
    assert table.set_index("filename").label.to_dict()[str(crops / "night2" / "copy_of_c0_v1.png")] == "c0"
    assert table[table.filename.str.endswith("lone.jpg")].label.isna().all()  # not in the labels file
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cluster"]["ari"] == pytest.approx(1.0)
    assert metrics["num_classes_given"] == 3 and metrics["cluster"]["n_clusters"] == 3
    assert manifest["metrics"]["cluster"]["ari"] == pytest.approx(1.0)


def test_timestamps_and_metadata_columns_are_merged(tmp_path, fake_backend):
    crops = tmp_path / "crops"
    names = ["crop_20230908001617-00-06_CROPNUMBER_0_UUID_x.png", "crop_20230908001619-00-06_CROPNUMBER_0_UUID_x.png"]
    for k, name in enumerate(names):
        draw_crop(crops / name, PALETTE[0], seed=k)
    pd.DataFrame({"filename": names, "ood_score": [0.1, 0.7]}).to_csv(tmp_path / "meta.csv", index=False)
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "--time_format", "%Y%m%d%H%M%S",
                   "--metadata", tmp_path / "meta.csv", "-q") == 0
    table, _ = read_outputs(out)
    assert table.timestamp.tolist() == ["2023-09-08T00:16:17", "2023-09-08T00:16:19"]
    assert table.ood_score.tolist() == [0.1, 0.7]
    assert list(table.columns[:6]) == CONTRACT_COLUMNS


@pytest.mark.parametrize("args,message", [
    (["-i", "{tmp}/missing_folder"], "missing_folder"),
    (["-i", "{tmp}/empty"], "supported extensions"),
    (["-i", "{tmp}/nothing*.png"], "matches no file"),
    (["-i", "{tmp}/empty", "-th", "1.5"], "[-1, 1]"),
    (["-i", "{tmp}/empty", "-sl"], "--labels"),
    (["--embeddings", "{tmp}/nope.pkl"], "no such file"),
    (["-i", "{tmp}/empty", "-d", "tpu"], "unknown device"),
    (["-i", "{tmp}/empty", "--verify_from", "0.8", "--no_verify"], "contradict"),
    (["-i", "{tmp}/empty", "--verify_from", "1.5"], "--verify_from 1.5"),
    ([], "nothing to cluster"),
])
def test_bad_usage_exits_2_with_a_message_naming_the_problem(tmp_path, caplog, args, message, fake_backend):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    if "-d" in args:
        draw_crop(tmp_path / "empty" / "a.png", PALETTE[0], seed=0)
    code = run_cli(*[a.format(tmp=tmp_path) for a in args], "-o", tmp_path / "out", "-e", fake_backend)
    assert code == 2
    assert message in caplog.text


def test_all_inputs_unreadable_exits_2_and_lists_them(tmp_path, caplog, fake_backend):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"garbage")
    assert run_cli("-i", tmp_path / "bad", "-o", tmp_path / "out", "-e", fake_backend, "-q") == 2
    assert "skipped.csv" in caplog.text
    assert pd.read_csv(tmp_path / "out" / "skipped.csv").shape[0] == 1


def test_argparse_errors_return_2_without_traceback(capsys):
    assert main(["-i", "x"]) == 2  # -o missing
    assert "-o/--out_folder" in capsys.readouterr().err
    assert main(["-i", "x", "-o", "y", "-e", "nope"]) == 2


def test_every_flag_is_in_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    missing = sorted(flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", readme))
    assert not missing, f"flags missing from README.md: {missing}"


def test_help_is_instant_and_lists_the_biodivx_flags():
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO / "cluster.py"), "-h"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and time.perf_counter() - started < 3
    for flag in ["-i", "-o", "-mf", "--time_format", "-d", "-e", "-fp", "-kp", "-gs", "-c", "-th", "-se", "-sl", "-x"]:
        assert re.search(re.escape(flag) + r"\b", result.stdout), flag
    modules = subprocess.run(
        [sys.executable, "-c", "import sys; from crop_cluster.cli import build_parser; build_parser(); "
                               "print(sorted(sys.modules))"], capture_output=True, text=True, cwd=REPO)
    assert modules.returncode == 0 and "crop_cluster.cli" in modules.stdout, modules.stderr
    assert not {"torch", "numpy", "pandas"} & set(eval(modules.stdout))


@pytest.mark.slow
def test_real_crops_with_lite0(shared_crops, tmp_path):
    out = tmp_path / "out"
    assert run_cli("-i", shared_crops, "-o", out, "-e", "lite0", "-q") == 0
    table, manifest = read_outputs(out)
    assert len(table) == 26 and manifest["dim"] == 1280
    assert manifest["counts"]["clusters"] >= 2


def test_sidecar_boxes_are_merged_and_problems_reported_not_fatal(tmp_path, caplog, fake_backend):
    crops, meta = tmp_path / "crops", tmp_path / "meta"
    meta.mkdir()
    names = ["crop_img1_CROPNUMBER_0_UUID_a.png", "crop_img1_CROPNUMBER_1_UUID_a.png", "crop_img2_CROPNUMBER_0_UUID_a.png"]
    for k, name in enumerate(names):
        draw_crop(crops / name, PALETTE[k], seed=k)
    (meta / "metadata_img1_UUID_a.json").write_text(json.dumps({"boxes": [[1, 2, 11, 22], [5, 5, 9, 9]]}))
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "-mf", meta, "-q") == 0
    table, manifest = read_outputs(out)
    assert table.frame.tolist() == ["img1", "img1", "img2"]
    assert table.loc[0, ["box_x1", "box_y1", "box_x2", "box_y2"]].tolist() == [1, 2, 11, 22]
    assert np.isnan(table.loc[2, "box_x1"]) and manifest["sidecar_problems"] == 1
    assert "sidecar" in caplog.text


def test_metadata_column_clashing_with_a_contract_column_exits_2(tmp_path, caplog, fake_backend):
    draw_crop(tmp_path / "crops" / "a.png", PALETTE[0], seed=0)
    pd.DataFrame({"filename": ["a.png"], "cluster": [3]}).to_csv(tmp_path / "meta.csv", index=False)
    code = run_cli("-i", tmp_path / "crops", "-o", tmp_path / "out", "-e", fake_backend, "--metadata",
                   tmp_path / "meta.csv", "-q")
    assert code == 2 and "clash" in caplog.text
