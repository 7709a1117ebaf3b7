"""engines/ without Ray: the units of the Ray graph hold exactly the whole graph's edges, and the flags' errors."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from crop_cluster.cli import main
from crop_cluster.engines.ray_engine import graph_units, read_shard, unit_rows, write_manifest


def unit_vectors(n: int, d: int, groups: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups, d))[rng.integers(0, groups, n)] + 0.4 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def edge_set(blocks) -> dict:
    return {(int(r), int(c)): float(s) for rows, cols, sims in blocks for r, c, s in zip(rows, cols, sims)}


@pytest.mark.parametrize("n, tile", [(1000, (128, 256)), (1000, (256, 128)), (777, (100, 300)), (50, (64, 64))])
def test_units_hold_every_edge_of_the_whole_graph_once(n, tile):
    from crop_cluster.clustering.graph import threshold_edges

    x = unit_vectors(n, 16, max(2, n // 25), seed=n)
    whole = edge_set(threshold_edges(x, 0.7, tile_rows=tile[0], tile_cols=tile[1]))
    found: dict = {}
    units = graph_units(n, *tile)
    for block in units:
        y, local, row_offset, col_offset = unit_rows(x, block, tile)
        for (r, c), s in edge_set(threshold_edges(y, 0.7, tile_rows=tile[0], tile_cols=tile[1],
                                                  block=local)).items():
            key = (r + row_offset, c + col_offset)
            assert key not in found and block[0] <= key[0] < block[1] and block[2] <= key[1] < block[3]
            found[key] = s
    assert found == whole and len(whole) > n     # same pairs, same float32 similarities, bit for bit
    assert len(units) > 1 or n <= tile[0]


def test_units_partition_the_tile_starts():
    n, rows, cols = 10_000, 512, 1024
    units = graph_units(n, rows, cols, col_tiles=3)
    starts = [(r0, c0) for r0 in range(0, n, rows) for c0 in range(r0, n, cols)]
    owners = [[u for u in units if u[0] <= r < u[1] and u[2] <= c < u[3]] for r, c in starts]
    assert all(len(owner) == 1 for owner in owners)
    assert all(c0 >= r1 for r0, r1, c0, _ in units if c0 != r0)      # only a row's first unit meets the diagonal


def test_manifest_shards_keep_any_file_name(tmp_path):
    names = ["plain.jpg", "tab\there.jpg", "new\nline.png", "caf\u00e9.jpg", "bad-\udcff.jpg"] * 3
    digests = [f"{k:032x}" for k in range(len(names))]
    shards = write_manifest(str(tmp_path / "manifest"), digests, names, size=4)
    assert len(shards) == 4 and write_manifest(str(tmp_path / "manifest"), digests, names, size=4) == shards
    read = [read_shard(path) for path in shards]
    assert [d for part, _ in read for d in part] == digests and [p for _, part in read for p in part] == names


@pytest.fixture
def saved(tmp_path):
    from crop_cluster.outputs.embeddings import write_embeddings

    path = tmp_path / "embeddings.pkl"
    write_embeddings(str(path), [f"c{k}.jpg" for k in range(20)], unit_vectors(20, 8, 4, seed=0), "lite0:bundled")
    return path


def test_engine_ray_without_ray_exits_2_with_the_install_command(saved, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ray", None)       # `import ray` raises ImportError
    assert main(["--embeddings", str(saved), "-o", str(tmp_path / "out"), "--engine", "ray", "-q"]) == 2
    assert "bash install.sh --ray" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["--ray_address", "127.0.0.1:6379"], "--ray_address applies to --engine ray"),
    (["--shared_dir", "somewhere"], "--shared_dir applies to --engine ray"),
    (["--engine", "spark"], "invalid choice"),
])
def test_engine_flags_that_do_not_fit_exit_2(saved, tmp_path, caplog, capsys, args, message):
    assert main(["--embeddings", str(saved), "-o", str(tmp_path / "out"), "-q", *args]) == 2
    assert message in caplog.text + capsys.readouterr().err


def test_local_engine_is_recorded_in_run_json(saved, tmp_path):
    import json

    assert main(["--embeddings", str(saved), "-o", str(tmp_path / "out"), "-q", "--no_report"]) == 0
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["engine"] == {"name": "local"} and manifest["parameters"]["engine"] == "local"
