"""--engine ray: the same outputs as --engine local, lost workers retried, a stopped driver resumed.

Every test here is marked `ray`; conftest.py runs them only inside a loopback-only network namespace
(tests/test_ray_netns.py starts one with `unshare -n`) and skips them without Ray. One local Ray
(`ray.init(num_cpus=2)`) serves the tests that need no second node; the fault tests build a two-node
`ray.cluster_utils.Cluster` whose nodes inherit the fault-injection pause.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crop_cluster.cli import main
from conftest import REPO, draw_views

pytestmark = pytest.mark.ray

THRESHOLD = 0.8
PAUSE = 0.6          # seconds each attempt waits after its marker in the fault tests: the kill lands inside it


def grouped(n: int, d: int, groups: int, noise: float, seed: int) -> np.ndarray:
    """float32 (n, d) unit rows scattered around `groups` random centres."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups, d))[rng.integers(0, groups, n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def local_ray():
    """This session's local Ray (started on first use: 2 CPUs, no dashboard, usage statistics off)."""
    import ray

    if not ray.is_initialized():
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture
def two_nodes():
    """A Cluster of a head without CPUs (the driver's node) and two one-CPU worker nodes, whose tasks and actors
    pause PAUSE seconds after announcing each attempt; yields (cluster, [worker nodes])."""
    import ray
    from ray.cluster_utils import Cluster

    from crop_cluster.engines.ray_engine import FAULT_PAUSE_ENV

    ray.shutdown()
    os.environ[FAULT_PAUSE_ENV] = str(PAUSE)
    fast_failure = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                    "health_check_failure_threshold": 2}
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                          "_system_config": fast_failure})
    workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
    try:
        ray.init(address=nodes.address, log_to_driver=False)
        nodes.wait_for_nodes()
        yield nodes, workers
    finally:
        del os.environ[FAULT_PAUSE_ENV]
        ray.shutdown()
        nodes.shutdown()


def run_cli(*args) -> int:
    return main([str(a) for a in args] + ["-q", "--no_report"])


def same_table(a: Path, b: Path) -> None:
    """The same rows, clusters and individuals; cluster_status says whether the run was the folder's first."""
    pd.testing.assert_frame_equal(pd.read_csv(a / "clusters.csv").drop(columns="cluster_status"),
                                  pd.read_csv(b / "clusters.csv").drop(columns="cluster_status"))


def partition(forest, threshold=THRESHOLD) -> np.ndarray:
    """Canonical labels of a forest's partition: each node labelled by the smallest node of its component."""
    from crop_cluster.clustering.forest import partition_at

    labels = partition_at(forest, threshold)
    first = np.full(labels.max() + 1, labels.size)
    np.minimum.at(first, labels, np.arange(labels.size))
    return first[labels]


def local_forest(x: np.ndarray):
    from crop_cluster.engines import Engine, forest

    return forest(Engine("local"), x, THRESHOLD)


def attempts_of(folder: Path, fresher_than: float = 1e9):
    """(unit or shard name, pid, node id) of every attempt marker under folder/**/attempts written less than
    `fresher_than` seconds ago (so that the attempt is still in its fault-injection pause)."""
    found = []
    for path in glob.glob(str(folder / "**" / "attempts" / "*.json"), recursive=True):
        if time.time() - os.path.getmtime(path) < fresher_than:
            with open(path) as handle:
                marker = json.load(handle)
            found.append((Path(path).name.split(".")[1], marker["pid"], marker["node"]))
    return found


# ---------------------------------------------------------------------------------------------------------------
# Same results as the local engine

def test_reclustering_saved_embeddings_gives_the_local_clusters(local_ray, tmp_path):
    from crop_cluster.outputs.embeddings import write_embeddings

    x = grouped(30_000, 16, 3000, 0.3, seed=1)
    saved = tmp_path / "embeddings.pkl"
    write_embeddings(str(saved), [f"crop_{k:05d}.jpg" for k in range(len(x))], x, "lite0:bundled")
    assert run_cli("--embeddings", saved, "-o", tmp_path / "local", "-th", THRESHOLD) == 0
    assert run_cli("--embeddings", saved, "-o", tmp_path / "ray", "-th", THRESHOLD, "--engine", "ray") == 0
    same_table(tmp_path / "local", tmp_path / "ray")
    manifest = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert manifest["engine"]["name"] == "ray" and manifest["parameters"]["engine"] == "ray"
    units = manifest["graph"]["units"]
    assert units["total"] > 1 and units["run"] == units["total"] and units["reused"] == 0
    assert json.loads((tmp_path / "local" / "run.json").read_text())["engine"] == {"name": "local"}


def test_graph_does_not_depend_on_units_tiles_or_workers(local_ray, tmp_path):
    from crop_cluster.engines import Engine
    from crop_cluster.engines.ray_engine import ray_forest

    x = grouped(3000, 24, 200, 0.35, seed=2)
    expected = local_forest(x)
    for tile in [(256, 512), (512, 256), (1024, 2048)]:
        stats = {}
        found = ray_forest(Engine("ray", None, str(tmp_path / f"shared{tile[0]}")), x, THRESHOLD, stats=stats,
                           tile_rows=tile[0], tile_cols=tile[1])
        assert np.array_equal(partition(found), partition(expected)), tile
        np.testing.assert_allclose(np.sort(found.sims), np.sort(expected.sims), rtol=0, atol=1e-6)
    assert stats["units"]["total"] == stats["units"]["run"] == stats["units"]["attempts"]


@pytest.fixture(scope="module")
def crops_and_local_run(tmp_path_factory):
    """42 drawn crops (7 colours x 6 views) and one broken file, clustered by the local engine with lite0."""
    folder = tmp_path_factory.mktemp("ray-crops")
    draw_views(folder / "crops", colours=6, views=7)
    (folder / "crops" / "broken.png").write_bytes(b"not an image")
    assert run_cli("-i", folder / "crops", "-o", folder / "local", "-e", "lite0", "-d", "cpu") == 0
    return folder / "crops", folder / "local"


def embeddings_by_name(out: Path) -> dict:
    import pickle

    stored = pickle.loads((out / "embeddings.pkl").read_bytes())
    return dict(zip(stored["filename"], stored["embedding"]))


def same_embedding_run(local: Path, other: Path) -> None:
    same_table(local, other)
    assert (local / "skipped.csv").read_text() == (other / "skipped.csv").read_text()
    ours, theirs = embeddings_by_name(local), embeddings_by_name(other)
    assert ours.keys() == theirs.keys()
    cosines = [float(ours[name] @ theirs[name]) for name in ours]
    assert min(cosines) >= 0.9999


def test_embedding_on_ray_gives_the_local_run_and_fills_the_cache(local_ray, crops_and_local_run, tmp_path):
    crops, local = crops_and_local_run
    out = tmp_path / "ray"
    assert run_cli("-i", crops, "-o", out, "-e", "lite0", "-d", "cpu", "--engine", "ray") == 0
    same_embedding_run(local, out)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["embed_engine"]["shards"] >= 1 and manifest["counts"]["embeddings_computed"] == 42
    assert run_cli("-i", crops, "-o", out, "-e", "lite0", "-d", "cpu", "--engine", "ray") == 0   # all cached now
    again = json.loads((out / "run.json").read_text())
    assert again["counts"]["embeddings_computed"] == 0 and again["counts"]["embeddings_reused"] == 42
    same_embedding_run(local, out)


# ---------------------------------------------------------------------------------------------------------------
# A stopped driver resumes

DRIVER = """
import json, sys
import numpy as np
import ray
from crop_cluster.engines import Engine
from crop_cluster.engines.ray_engine import FAULT_PAUSE_ENV, ray_forest
ray.init(address=sys.argv[1], runtime_env={"env_vars": {FAULT_PAUSE_ENV: "0.4"}}, log_to_driver=False)
stats = {}
ray_forest(Engine("ray", None, sys.argv[3]), np.load(sys.argv[2]), 0.8, stats=stats, tile_rows=256, tile_cols=512)
print(json.dumps(stats["units"]))
"""


def test_a_stopped_driver_resumes_with_the_missing_units_only(local_ray, tmp_path):
    from crop_cluster.engines import Engine
    from crop_cluster.engines.ray_engine import ray_forest

    x = grouped(2500, 16, 150, 0.35, seed=3)
    np.save(tmp_path / "x.npy", x)
    shared = tmp_path / "shared"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, local_ray.get_runtime_context().gcs_address,
                               str(tmp_path / "x.npy"), str(shared)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    finished = lambda: glob.glob(str(shared / "graph-*" / "unit-*.npz"))  # noqa: E731
    deadline = time.monotonic() + 120
    while len(finished()) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    count = -1
    while count != len(finished()):  # the dead driver's tasks are stopped by Ray; wait until no file appears
        count = len(finished())
        time.sleep(1.0)
    stats = {}
    resumed = ray_forest(Engine("ray", None, str(shared)), x, THRESHOLD, stats=stats, tile_rows=256,
                         tile_cols=512)
    units = stats["units"]
    assert 3 <= count < units["total"], "the driver was not stopped part-way"
    assert units["reused"] == count and units["run"] == units["total"] - count == units["attempts"]
    assert np.array_equal(partition(resumed), partition(local_forest(x)))


EMBED_DRIVER = """
import json, sys
import ray
from crop_cluster.embed.cache import EmbeddingCache
from crop_cluster.engines import Engine
from crop_cluster.engines.ray_engine import FAULT_PAUSE_ENV, ray_embed
ray.init(address=sys.argv[1], runtime_env={"env_vars": {FAULT_PAUSE_ENV: "0.5"}}, log_to_driver=False)
files, digests = json.loads(open(sys.argv[2]).read())
ray_embed(Engine("ray", None, sys.argv[4]), EmbeddingCache(sys.argv[3], "lite0", "efficientnet-lite0"), files,
          digests, "lite0", None, "cpu", progress=False, actors=1, shard_images=6)
"""


def test_a_stopped_embedding_driver_resumes_with_the_missing_shards_only(local_ray, crops_and_local_run, tmp_path):
    from crop_cluster.dedup.exact import file_digest
    from crop_cluster.embed.cache import EmbeddingCache
    from crop_cluster.engines import Engine
    from crop_cluster.engines.ray_engine import ray_embed

    crops, local = crops_and_local_run
    files = sorted(str(path) for path in crops.glob("c*.png"))
    digests = [file_digest(path) for path in files]
    (tmp_path / "job.json").write_text(json.dumps([files, digests]))
    cache = EmbeddingCache(str(tmp_path / "cache"), "lite0", "efficientnet-lite0")
    driver = subprocess.Popen([sys.executable, "-c", EMBED_DRIVER, local_ray.get_runtime_context().gcs_address,
                               str(tmp_path / "job.json"), str(tmp_path / "cache"), str(tmp_path / "shared")],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    chunks = lambda: glob.glob(os.path.join(cache.folder, "chunk-*.npz"))  # noqa: E731
    deadline = time.monotonic() + 180
    while len(chunks()) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    count = -1
    while count != len(chunks()):
        count = len(chunks())
        time.sleep(1.0)
    before = int(cache.lookup(digests).found.sum())
    resumed = ray_embed(Engine("ray", None, str(tmp_path / "shared")), cache, files, digests, "lite0", None, "cpu",
                        progress=False, actors=1, shard_images=6)
    assert 12 <= before < len(files), "the driver was not stopped part-way"
    assert resumed.reused == before and resumed.computed == len(files) - before
    ours = embeddings_by_name(local)
    assert min(float(ours[name] @ vector) for name, vector in zip(files, resumed.result.embeddings)) >= 0.9999


# ---------------------------------------------------------------------------------------------------------------
# Lost workers (two nodes)

def _stop_node_during_its_attempt(nodes, node, folder: Path, done) -> bool:
    """Remove `node` while it runs an attempt of a unit (its marker written, its unit file not yet)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not done.is_set():
        for name, _, node_id in attempts_of(folder, fresher_than=PAUSE / 3):
            if node_id == node.node_id and not glob.glob(str(folder / "graph-*" / f"{name}.npz")):
                nodes.remove_node(node, allow_graceful=False)
                return True
        time.sleep(0.02)
    return False


def test_a_lost_node_during_the_tiles_is_retried_with_the_same_partition(two_nodes, tmp_path):
    from crop_cluster.engines import Engine
    from crop_cluster.engines.ray_engine import ray_forest

    nodes, workers = two_nodes
    x = grouped(2500, 16, 150, 0.35, seed=4)
    shared = tmp_path / "shared"
    stats, result, done = {}, {}, threading.Event()

    def drive():
        try:
            result["forest"] = ray_forest(Engine("ray", None, str(shared)), x, THRESHOLD, stats=stats,
                                          tile_rows=512, tile_cols=512)
        finally:
            done.set()

    thread = threading.Thread(target=drive)
    thread.start()
    stopped = _stop_node_during_its_attempt(nodes, workers[0], shared, done)
    thread.join(timeout=300)
    assert stopped and "forest" in result
    units = stats["units"]
    assert units["attempts"] > units["run"] == units["total"]        # the lost attempt was retried
    assert np.array_equal(partition(result["forest"]), partition(local_forest(x)))


def test_a_killed_embedding_actor_is_restarted_with_the_same_clusters(two_nodes, crops_and_local_run, tmp_path):
    crops, local = crops_and_local_run
    out = tmp_path / "ray"
    codes = []
    thread = threading.Thread(target=lambda: codes.append(run_cli(
        "-i", crops, "-o", out, "-e", "lite0", "-d", "cpu", "--engine", "ray")))
    thread.start()
    deadline, killed = time.monotonic() + 180, None
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        markers = attempts_of(out / "ray_shared", fresher_than=PAUSE / 3)
        if markers:
            killed = markers[0][1]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=300)
    assert killed is not None and codes == [0]
    same_embedding_run(local, out)
    engine = json.loads((out / "run.json").read_text())["embed_engine"]
    assert engine["attempts"] > engine["shards"]                     # the killed shard ran again
