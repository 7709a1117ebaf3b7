"""Embedding cache: hit, miss, changed file, new file, shared --cache_dir, damaged chunks, resume after SIGKILL, and
the out-of-memory back-off of embed_files (simulated)."""
from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crop_cluster.cli import main
from crop_cluster import embed
from conftest import PALETTE, REPO, draw_crop, draw_views
from crop_cluster.embed.base import EmbeddingBackend, embed_files
from crop_cluster.embed.cache import CACHE_FOLDER, EmbeddingCache
from crop_cluster.embed.data import Preprocess


@pytest.fixture
def crops(tmp_path) -> Path:
    """3 colours x 4 views, a byte-identical copy and a corrupt file."""
    root = tmp_path / "crops"
    draw_views(root, 3, 4)
    (root / "copy.png").write_bytes((root / "c0_v0.png").read_bytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def run_cli(*args) -> dict:
    assert main([str(a) for a in args]) == 0
    out = Path(args[args.index("-o") + 1])
    return json.loads((out / "run.json").read_text())


def no_model(*args, **kwargs):
    raise AssertionError("the model was loaded although every embedding was cached")


def test_rerun_with_another_threshold_or_algorithm_loads_no_model(crops, tmp_path, fake_backend, monkeypatch):
    out = tmp_path / "out"
    first = run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q")
    assert first["counts"]["embeddings_computed"] == 12 and first["counts"]["embeddings_reused"] == 0
    assert first["embedding_cache"]["folder"].startswith(str(out / CACHE_FOLDER))
    table = pd.read_csv(out / "clusters.csv")
    monkeypatch.setattr(embed, "load_backend", no_model)
    again = run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q", "-th", "0.95")
    assert again["counts"]["embeddings_computed"] == 0 and again["counts"]["embeddings_reused"] == 12
    assert again["device"].startswith("none") and again["model"] == first["model"]
    assert again["counts"]["skipped"] == 1  # the corrupt file is remembered as undecodable, not retried
    assert pd.read_csv(out / "skipped.csv").reason.str.startswith("cannot decode image").all()
    run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q", "-c", "kmeans", "--n_clusters", "3")
    same = run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q")
    # the same clusters under the same campaign ids; only cluster_status says they were made by an earlier run
    pd.testing.assert_frame_equal(pd.read_csv(out / "clusters.csv").drop(columns="cluster_status"),
                                  table.drop(columns="cluster_status"))
    assert same["counts"]["embeddings_reused"] == 12


def test_new_and_changed_files_are_the_only_ones_embedded(crops, tmp_path, fake_backend):
    out = tmp_path / "out"
    run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q")
    draw_crop(crops / "new.png", PALETTE[3], seed=5)
    draw_crop(crops / "c1_v1.png", PALETTE[4], seed=6)  # same name, new content
    manifest = run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q")
    assert manifest["counts"]["embeddings_computed"] == 2 and manifest["counts"]["embeddings_reused"] == 11
    table = pd.read_csv(out / "clusters.csv")
    changed = table[table.filename.str.endswith("c1_v1.png")].cluster.iloc[0]
    assert changed != table[table.filename.str.endswith("c1_v0.png")].cluster.iloc[0]


def test_cache_dir_is_shared_between_output_folders_and_keyed_by_model(crops, tmp_path, fake_backend, monkeypatch):
    cache = tmp_path / "shared-cache"
    run_cli("-i", crops, "-o", tmp_path / "a", "-e", fake_backend, "-q", "--cache-dir", cache)
    assert not (tmp_path / "a" / CACHE_FOLDER).exists()
    assert run_cli("-i", crops, "-o", tmp_path / "b", "-e", fake_backend, "-q",
                   "--cache_dir", cache)["counts"]["embeddings_reused"] == 12
    other = run_cli("-i", crops, "-o", tmp_path / "c", "-e", fake_backend, "-fp", "other-model", "-q",
                    "--cache_dir", cache)
    assert other["counts"]["embeddings_computed"] == 12  # another model never reads these vectors
    assert len([p for p in cache.iterdir() if p.name.startswith("fake-")]) == 2   # one namespace per model


def test_cache_dir_misuse_exits_2(crops, tmp_path, fake_backend, caplog):
    (tmp_path / "file").write_text("x")
    assert main(["-i", str(crops), "-o", str(tmp_path / "o"), "-e", fake_backend, "--cache_dir",
                         str(tmp_path / "file")]) == 2
    assert "--cache_dir" in caplog.text and "give a folder" in caplog.text
    assert main(["--embeddings", "x.pkl", "-o", str(tmp_path / "o"), "--cache_dir", "c"]) == 2


def test_cache_round_trip_damaged_chunks_and_compaction(tmp_path, monkeypatch):
    cache = EmbeddingCache(str(tmp_path), "fake", "m")
    vectors = np.eye(4, dtype=np.float32)
    digests = [f"{k:032x}" for k in range(4)]
    cache.write(digests[:2], vectors[:2], [("f" * 32, "cannot decode image (X)")])
    cache.write(digests[2:3], vectors[2:3], [])
    with open(os.path.join(cache.folder, "chunk-99-damaged.npz"), "wb") as handle:
        handle.write(b"PK\x03\x04 truncated")   # what a disk error could leave; a kill cannot (atomic rename)
    lookup = cache.lookup([digests[2], "f" * 32, digests[0], digests[3], digests[2]])
    assert lookup.found.tolist() == [True, False, True, False, True]
    np.testing.assert_array_equal(lookup.vectors[[0, 2, 4]], vectors[[2, 0, 2]])
    assert lookup.failed == {1: "cannot decode image (X)"} and lookup.missing.tolist() == [3]
    os.remove(os.path.join(cache.folder, "chunk-99-damaged.npz"))
    monkeypatch.setattr("crop_cluster.embed.cache.COMPACT_CHUNKS", 1)
    cache.compact()
    assert len(list(Path(cache.folder).glob("chunk-*.npz"))) == 1
    again = cache.lookup(digests + ["f" * 32])
    assert again.found.tolist() == [True, True, True, False, False] and again.failed == {4: "cannot decode image (X)"}
    assert EmbeddingCache(str(tmp_path), "fake", "other").lookup(digests).found.sum() == 0


# --- resume after SIGKILL -------------------------------------------------------------------------------------------

SLOW_RUN = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
import fake_backend
from crop_cluster import embed
from crop_cluster.cli import main
import crop_cluster.embed.cache as embed_cache

class Slow(fake_backend.MeanColourBackend):
    def embed_batch(self, batch):
        time.sleep(0.15)
        return super().embed_batch(batch)

fake_backend.Slow = Slow
embed.BACKENDS["fake"] = embed.BackendInfo("fake_backend", "Slow", "mean-colour", 0.9, "slow test backend")
embed.cache.CHECKPOINT_SECONDS = 0.0
sys.exit(main(sys.argv[1:]))
"""


def test_run_killed_with_sigkill_resumes_and_gives_the_same_clusters(tmp_path, fake_backend):
    crops = tmp_path / "crops"
    for k in range(40):
        draw_crop(crops / f"c{k % 4}_{k:02d}.png", PALETTE[k % 4], seed=k)
    out, clean = tmp_path / "out", tmp_path / "clean"
    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN.format(repo=str(REPO), tests=str(REPO / "tests")))
    child = subprocess.Popen([sys.executable, str(script), "-i", str(crops), "-o", str(out), "-e", "fake",
                              "--batch_size", "2", "-q"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(out.glob(f"{CACHE_FOLDER}/*/chunk-*.npz"))) < 3:  # three checkpoints of 2 images written
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read().decode(errors="replace")
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert not (out / "clusters.csv").exists()   # it really was killed part-way
    resumed = run_cli("-i", crops, "-o", out, "-e", fake_backend, "-q", "--batch_size", "2")
    counts = resumed["counts"]
    assert 0 < counts["embeddings_reused"] < 40 and counts["embeddings_computed"] + counts["embeddings_reused"] == 40
    run_cli("-i", crops, "-o", clean, "-e", fake_backend, "-q", "--batch_size", "2")
    assert (out / "clusters.csv").read_bytes() == (clean / "clusters.csv").read_bytes()
    assert not list(out.glob(f"{CACHE_FOLDER}/*/.*.tmp"))


# --- out-of-memory back-off (simulated) -----------------------------------------------------------------------------

class OomBackend(EmbeddingBackend):
    """Raises CUDA's out-of-memory error for batches larger than `fits`; records the batch sizes it ran."""

    name = "oom"

    def __init__(self, fits: int):
        super().__init__("cpu", "oom-model")
        self.preprocess = Preprocess(8, mean=(127.0,) * 3, std=(128.0,) * 3)
        self.fits, self.sizes = fits, []

    def embed_batch(self, batch):
        import torch

        if batch.shape[0] > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        self.sizes.append(int(batch.shape[0]))
        return batch.mean(dim=(2, 3)) + 2


def test_out_of_memory_halves_the_batch_and_continues(crops, caplog):
    files = sorted(str(p) for p in crops.glob("c?_v?.png"))
    reference = embed_files(OomBackend(fits=64), files, batch_size=8, num_workers=0, progress=False)
    backend = OomBackend(fits=2)
    result = embed_files(backend, files, batch_size=8, num_workers=0, progress=False)
    assert backend.sizes == [2] * 6        # 8 -> 4 -> 2, and it stays at 2 for the next batches
    np.testing.assert_allclose(result.embeddings, reference.embeddings, atol=1e-6)
    assert result.ok_index.tolist() == list(range(12))
    assert "continuing with batches of 2" in caplog.text


def test_out_of_memory_with_one_image_is_a_clear_error(crops):
    with pytest.raises(embed.EmbedError, match="batch of one image.*-d cpu"):
        embed_files(OomBackend(fits=0), [str(crops / "c0_v0.png")], batch_size=4, num_workers=0, progress=False)


def test_extras_are_cached_beside_the_vectors_and_survive_compaction(tmp_path, monkeypatch):
    """A backend's extras (the hierarchical model's predictions) come back with the vectors, row for row."""
    cache = EmbeddingCache(str(tmp_path), "fake", "m")
    vectors, extras = np.eye(3, dtype=np.float32), np.arange(6, dtype=np.float32).reshape(3, 2)
    digests = [f"{k:032x}" for k in range(3)]
    cache.write(digests[:2], vectors[:2], [], extras[:2])
    cache.write(digests[2:], vectors[2:], [], extras[2:])
    lookup = cache.lookup([digests[2], digests[0], "e" * 32])
    np.testing.assert_array_equal(lookup.extras[:2], extras[[2, 0]])
    assert lookup.found.tolist() == [True, True, False]
    monkeypatch.setattr("crop_cluster.embed.cache.COMPACT_CHUNKS", 1)
    cache.compact()
    np.testing.assert_array_equal(cache.lookup(digests).extras, extras)
    assert EmbeddingCache(str(tmp_path / "plain"), "fake", "m").lookup(digests).extras is None


def test_chunks_are_memory_mapped_and_a_truncated_one_is_ignored(tmp_path, caplog):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    cache = EmbeddingCache(str(tmp_path), "fake", "model-a")
    cache.write([f"{k:032x}" for k in range(50)], vectors, [])
    path, = cache._chunks()
    chunk = cache._read(path)
    owner = chunk["embedding"]
    while isinstance(owner, (np.ndarray, memoryview)):     # the array's memory comes from a read-only map
        owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
    assert isinstance(owner, mmap.mmap) and not chunk["embedding"].flags.writeable
    found = cache.lookup([f"{k:032x}" for k in (7, 3, 49)])
    assert type(found.vectors) is np.ndarray and np.array_equal(found.vectors, vectors[[7, 3, 49]])
    with open(path, "r+b") as handle:                      # cut the file inside the embedding's data
        handle.truncate(os.path.getsize(path) - 900)
    assert not cache.lookup([f"{k:032x}" for k in range(50)]).found.any()
    assert "damaged cache file" in caplog.text


def test_a_uint8_cache_keeps_its_dtype_and_ignores_float_chunks(tmp_path, caplog):
    pixels = np.arange(3 * 16, dtype=np.uint8).reshape(3, 16)
    digests = [f"{k:032x}" for k in range(3)]
    cache = EmbeddingCache(str(tmp_path), "thumbs", "grey", dtype=np.uint8)
    cache.write(digests, pixels, [])
    found = cache.lookup(digests[::-1])
    assert found.vectors.dtype == np.uint8 and np.array_equal(found.vectors, pixels[::-1])
    for _ in range(17):                                    # compaction keeps the dtype too
        cache.write(digests[:1], pixels[:1], [])
    cache.compact()
    assert len(cache._chunks()) == 1 and cache.lookup(digests).vectors.dtype == np.uint8
    float_cache = EmbeddingCache(str(tmp_path), "thumbs", "grey")          # same folder, float32 expected
    assert float_cache.folder == cache.folder
    with caplog.at_level("WARNING"):
        assert not float_cache.lookup(digests).found.any()
    assert "malformed" in caplog.text
