"""The package as a library: one import name in the wheel, the Python API, and one set of options with the CLI."""
from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

import crop_cluster
from conftest import REPO, draw_views
from crop_cluster.cli import build_parser
from crop_cluster.options import Options

STAGES = ("inputs", "embed", "dedup", "clustering", "outputs", "evaluate", "engines", "campaign", "naming")


def test_wheel_adds_exactly_one_import_name_and_the_console_script(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("crop_cluster-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"crop_cluster"}
    assert "crop_cluster/outputs/report/template.html" in names
    assert {f"crop_cluster/{stage}/__init__.py" for stage in STAGES} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "crop-cluster = crop_cluster.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_no_module_imports_a_stage_by_its_bare_name():
    """`import embed` from the checkout would load a second copy of the stage beside crop_cluster.embed."""
    offenders = []
    for path in [REPO / "cluster.py", *REPO.glob("crop_cluster/*.py"),
                 *(p for stage in STAGES for p in (REPO / stage).rglob("*.py")),
                 *REPO.glob("tests/*.py"), *REPO.glob("bench/*.py"), *REPO.glob("example/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            offenders += [f"{path.relative_to(REPO)}: {name}" for name in names
                          if name.split(".")[0] in (*STAGES, "cluster")]
    assert offenders == []


def test_stages_import_neither_the_pipeline_nor_the_cli():
    offenders = []
    for stage in STAGES:
        for path in (REPO / stage).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            offenders += [str(path.relative_to(REPO)) for needle in ("crop_cluster.pipeline", "crop_cluster.cli",
                                                                     "crop_cluster.api") if needle in text]
    assert offenders == []


def test_importing_the_package_is_light():
    code = ("import sys, crop_cluster\n"
            "heavy = [m for m in ('numpy', 'pandas', 'torch', 'scipy') if m in sys.modules]\n"
            "sys.exit(str(heavy) if heavy else 0)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stdout + child.stderr


def test_every_flag_is_an_options_field_of_the_same_name():
    """One set of option names: each flag's destination is the Options field the API takes as a keyword."""
    option_fields = {f.name for f in fields(Options)}
    destinations = {action.dest for action in build_parser()._actions} - {"help", "quiet", "verbose"}
    assert destinations <= option_fields, destinations - option_fields


def test_cli_and_api_share_the_defaults():
    from crop_cluster.cli import options_from_args

    args = build_parser().parse_args(["-i", "crops", "-o", "out"])
    assert options_from_args(args, []) == Options(out_folder="out", inputs=("crops",), progress=True)


def test_cluster_returns_table_embeddings_and_manifest(tmp_path, fake_backend):
    draw_views(tmp_path / "crops", colours=3, views=3)
    result = crop_cluster.cluster([str(tmp_path / "crops")], str(tmp_path / "out"), embed=fake_backend,
                                  report=False)
    on_disk = pd.read_csv(tmp_path / "out" / "clusters.csv")
    assert list(result.table["filename"]) == list(on_disk["filename"])
    assert (result.table["cluster"].to_numpy() == on_disk["cluster"].to_numpy()).all()
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (len(on_disk), 3)
    assert result.manifest["counts"]["rows"] == 9 and result.manifest["counts"]["clusters"] == 3
    assert (tmp_path / "out" / "run.json").is_file()


def test_cluster_on_real_crops_with_the_bundled_model(tmp_path, shared_crops):
    result = crop_cluster.cluster(str(shared_crops), str(tmp_path / "out"), embed="lite0", threshold=0.82,
                                  time_format="%Y%m%d%H%M%S", report=False)
    assert len(result.table) == 26 and result.embeddings.shape == (26, 1280)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    stored = pd.read_pickle(tmp_path / "out" / "embeddings.pkl")
    row = {name: k for k, name in enumerate(stored["filename"])}
    np.testing.assert_array_equal(result.embeddings, stored["embedding"][[row[f] for f in result.table.filename]])
    assert result.manifest["parameters"]["threshold"] == 0.82 and result.manifest["model"].startswith("lite0")


@pytest.mark.parametrize("options,message", [
    ({"embed": "clip"}, "unknown embed 'clip'; available: dino, lite0, hierarchical"),
    ({"treshold": 0.8}, "unknown option 'treshold'; did you mean threshold"),
    ({"threshold": 3.0}, "-th 3.0"),
    ({"cluster": "kmeans"}, "needs the number of clusters"),
])
def test_bad_options_raise_a_typed_error_naming_them(tmp_path, options, message):
    with pytest.raises(crop_cluster.OptionsError, match=message.replace("(", r"\(")):
        crop_cluster.cluster([str(tmp_path)], str(tmp_path / "out"), **options)


def test_unusable_input_raises_a_crop_cluster_error_not_system_exit(tmp_path):
    with pytest.raises(crop_cluster.CropClusterError, match="nowhere"):
        crop_cluster.cluster([str(tmp_path / "nowhere")], str(tmp_path / "out"), embed="lite0")


def test_the_api_configures_no_logging(tmp_path, fake_backend):
    import logging

    draw_views(tmp_path / "crops", colours=2, views=2)
    before = (list(logging.getLogger().handlers), logging.getLogger().level)
    crop_cluster.cluster(str(tmp_path / "crops"), str(tmp_path / "out"), embed=fake_backend, report=False)
    assert (list(logging.getLogger().handlers), logging.getLogger().level) == before


def _scipy_components(x: np.ndarray, threshold: float) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return connected_components(csr_matrix(unit @ unit.T >= threshold), directed=False)[1]


@pytest.mark.parametrize("seed,threshold", [(0, 0.9), (1, 0.5), (2, 0.97)])
def test_threshold_clusters_equals_scipy_components(seed, threshold):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 16))
    x = (centres[rng.integers(0, 12, 600)] + rng.normal(scale=0.25, size=(600, 16))) * rng.uniform(0.5, 3, (600, 1))
    labels = crop_cluster.threshold_clusters(x.astype(np.float64), threshold)
    expected = _scipy_components(x, threshold)
    assert labels.dtype == np.int64 and labels.shape == (600,)
    sizes = np.bincount(expected)
    assert ((labels == -1) == (sizes[expected] == 1)).all()
    linked = labels >= 0
    pairs = set(zip(labels[linked], expected[linked]))
    assert len(pairs) == len(set(labels[linked])) == len(set(expected[linked]))   # the same partition
    assert set(labels[linked]) == set(range(len(pairs)))
    counts = np.bincount(labels[linked])
    assert (np.diff(counts) <= 0).all()                                               # numbered by size


def test_threshold_clusters_edge_cases():
    assert crop_cluster.threshold_clusters(np.zeros((0, 4)), 0.9).shape == (0,)
    x = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(crop_cluster.threshold_clusters(x, 0.99), [0, 0, -1, -1])
    with pytest.raises(crop_cluster.OptionsError, match="2-d"):
        crop_cluster.threshold_clusters(np.zeros(5), 0.9)


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    """The README's Python API block, run as written from a folder holding the example's crops."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", readme.split("## Python API", 1)[1].split("\n## ", 1)[0], re.S)
    subprocess.run([sys.executable, str(REPO / "example" / "make_example.py"), "--out",
                    str(tmp_path / "example" / "crops"), "--labels", str(tmp_path / "example" / "labels.csv")],
                   check=True, capture_output=True, timeout=300)
    child = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr
    assert "clusters;" in child.stdout
    assert (tmp_path / "example" / "out-api" / "clusters.csv").is_file()
