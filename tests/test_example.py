"""The offline example generator (example/make_example.py): counts, labels, the corrupt file, determinism."""
from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "example" / "make_example.py"


def _load_module():
    spec = importlib.util.spec_from_file_location("example_make_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


make_example = _load_module()
EXPECTED_READABLE = sum(s.views for s in make_example.SPECIMENS) + 1  # + the byte-identical copy


def _files(root: Path):
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two generations with the default seed, in separate folders: [(crops, labels_csv, rows), ...]."""
    runs = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(name)
        crops, labels_csv = root / "crops", root / "labels.csv"
        rows = make_example.make_example(crops, labels_csv)
        runs.append((crops, labels_csv, rows))
    return runs


def test_file_count_and_kinds(generated):
    crops, _, _ = generated[0]
    files = _files(crops)
    assert len(files) == EXPECTED_READABLE + 1  # + broken.jpg
    assert 55 <= len(files) <= 70
    pngs = [p for p in files if p.suffix == ".png"]
    assert len(pngs) == len(make_example.PNG_VIEWS)
    for png in pngs:
        with Image.open(png) as image:
            assert image.mode == "RGBA"
            assert image.getextrema()[3][0] == 0  # some pixels fully transparent


def test_labels_cover_every_readable_file(generated):
    crops, labels_csv, rows = generated[0]
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["filename"], r["label"]) for r in table] == rows
    labelled = {(labels_csv.parent / r["filename"]).resolve() for r in table}
    readable = {p.resolve() for p in _files(crops) if p.name != make_example.CORRUPT_NAME}
    assert labelled == readable
    assert len(table) == EXPECTED_READABLE
    assert {r["label"] for r in table} == {s.label for s in make_example.SPECIMENS}
    # Each file sits in its specimen's folder, so `--labels folders` gives the same labels.
    assert all(Path(r["filename"]).parent.name == r["label"] for r in table)


def test_one_exact_duplicate(generated):
    crops, _, _ = generated[0]
    contents = [p.read_bytes() for p in _files(crops)]
    assert len(contents) - len(set(contents)) == 1
    label, view = make_example.COPIED_VIEW
    original = crops / label / f"{label}_{view:02d}.jpg"
    assert (crops / label / f"{label}_{view:02d}_copy.jpg").read_bytes() == original.read_bytes()


def test_readable_files_decode_and_corrupt_one_does_not(generated):
    crops, _, _ = generated[0]
    for path in _files(crops):
        if path.name == make_example.CORRUPT_NAME:
            with pytest.raises(OSError):
                with Image.open(path) as image:
                    image.load()
        else:
            with Image.open(path) as image:
                image.load()
                assert min(image.size) >= 24


def test_deterministic(generated):
    (crops_a, labels_a, rows_a), (crops_b, labels_b, rows_b) = generated
    files_a, files_b = _files(crops_a), _files(crops_b)
    assert [p.relative_to(crops_a) for p in files_a] == [p.relative_to(crops_b) for p in files_b]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(files_a, files_b))
    assert labels_a.read_bytes() == labels_b.read_bytes()
    assert rows_a == rows_b


def test_cli_writes_labels_next_to_out(tmp_path):
    out = tmp_path / "nested" / "crops"
    assert make_example.main(["--out", str(out), "--seed", "3"]) == 0
    assert (tmp_path / "nested" / "labels.csv").is_file()
    assert len(_files(out)) == EXPECTED_READABLE + 1
