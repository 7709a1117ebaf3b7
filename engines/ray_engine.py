"""The Ray engine: every Ray call of the project lives here.

Graph (`ray_forest`): the upper triangle of the similarity matrix is cut into work units, each a set of whole tiles of
the local engine's grid (clustering.graph.threshold_edges with `block`), so every unit runs the same kernels and
float32 re-scoring as `--engine local` and the edges do not depend on the unit size or the number of workers. A unit
task reads only its rows (`unit_rows`) from SHARED/graph-<key>/vectors.npy, which the driver writes once, folds its edges into a maximum spanning forest (at most rows + cols - 1 edges) and writes it atomically to
SHARED/graph-<key>/unit-<r0>-<c0>.npz; the driver folds the union of the unit forests into the forest of the whole
graph (one Kruskal/union-find pass: an edge dropped by its unit's forest is the weakest of a cycle, so no forest
needs it). The key covers the vectors' bytes, the threshold, precision and tile grid, so a re-run (or a run whose
driver was stopped) computes only the units without a file. Ray retries a unit whose worker or node died.

Embedding (`ray_embed`): the contents missing from the embedding cache are written as a sharded manifest
(SHARED/embed-<cache>/shard-<hash>.jsonl: one [digest, path] per line); a CPU task per shard decodes it with the
backend's own `Preprocess` (embed/data.py), a pool of actors (one per GPU, or CPU actors) runs the model through
embed/base.py's batch runner, and each shard's vectors are written atomically as one chunk of the embedding cache
(embed/cache.py, keyed by content digest), so a re-run or a resumed run embeds only what is still missing. An actor
that dies is restarted by Ray and its shard retried. The cache folder must be on storage every node can write.

Every unit or shard attempt writes a small marker (SHARED/.../attempts/) before it starts: the driver counts
retries from them (run.json). FAULT_PAUSE_ENV makes each attempt wait that many seconds after its marker, so that
fault-injection tests can stop a node, an actor or the driver at a known point.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from crop_cluster.engines import EngineError

log = logging.getLogger(__name__)

FAULT_PAUSE_ENV = "CROP_CLUSTER_FAULT_PAUSE"
# a graph unit: one tile row of the grid x this many tile widths (a GPU unit copies its rows to the device once)
UNIT_COL_TILES = {"cpu": 2, "cuda": 8}
SHARD_IMAGES = {"cpu": 512, "cuda": 4096}   # images per manifest shard (one decode task, one actor call)
IN_FLIGHT_PER_ACTOR = 2       # decoded shards queued per actor: the next one decodes while one is embedded
RETRIES = 3                   # Ray retries of a unit task / restarts of an embedding actor


# ---------------------------------------------------------------------------------------------------------------
# Connection

def connect(address: Optional[str]) -> Dict:
    """Join the Ray cluster at `address` (else RAY_ADDRESS, else start a local Ray for this process), unless this
    process is already connected; returns {'nodes', 'cpus', 'gpus'} of the cluster for run.json."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:   # "local": a new Ray for this run, never a cluster Ray finds by itself (/tmp/ray/ray_current_cluster)
            ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise EngineError(f"cannot connect to the Ray cluster at {address}: {error}; start one with "
                              f"`ray start --head` (see docs/scale-out.md) or drop --ray_address and RAY_ADDRESS "
                              f"to start a local Ray") from None
    resources = ray.cluster_resources()
    return {"nodes": sum(1 for node in ray.nodes() if node.get("Alive")), "cpus": int(resources.get("CPU", 0)),
            "gpus": int(resources.get("GPU", 0))}


def _announce(folder: str, name: str, run_id: str) -> None:
    """Marker of one attempt at unit/shard `name` of driver run `run_id` (pid and node, for tests and retries);
    then the fault-injection pause, if any."""
    import ray

    from crop_cluster.outputs.atomic import atomic_open

    attempts = os.path.join(folder, "attempts")
    os.makedirs(attempts, exist_ok=True)
    with atomic_open(os.path.join(attempts, f"{run_id}.{name}.{uuid.uuid4().hex[:8]}.json"), "w") as handle:
        json.dump({"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}, handle)
    pause = float(os.environ.get(FAULT_PAUSE_ENV) or 0)
    if pause > 0:
        time.sleep(pause)


def _attempts(folder: str, run_id: str) -> int:
    return len(glob.glob(os.path.join(glob.escape(folder), "attempts", f"{run_id}.*.json")))


def _run_all(count: int, submit, what: str, progress: bool, slots: int = 1, window: int = 0) -> List:
    """Results of submit(k, slot) -> ObjectRef for k in range(count), in order. At most `window` refs (0: all) are
    in flight per slot (an actor); a slot gets its next item when one of its refs finishes. A failure after Ray's
    retries becomes EngineError."""
    import ray
    from tqdm import tqdm

    results: Dict[int, object] = {}
    pending: Dict = {}
    following = iter(range(count))

    def refill(slot: int) -> None:
        k = next(following, None)
        if k is not None:
            pending[submit(k, slot)] = (k, slot)

    for _ in range(window or count):
        for slot in range(slots):
            refill(slot)
    with tqdm(total=count, unit=what, desc=f"ray {what}s", disable=not progress, dynamic_ncols=True) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            k, slot = pending.pop(done[0])
            try:
                results[k] = ray.get(done[0])
            except ray.exceptions.RayError as error:
                raise EngineError(f"a Ray {what} failed after {RETRIES} retries: {str(error).splitlines()[0]}; "
                                  f"re-run the same command to resume from the finished ones") from None
            bar.update(1)
            refill(slot)
    return [results[k] for k in range(count)]


# ---------------------------------------------------------------------------------------------------------------
# The similarity graph

def graph_units(n: int, tile_rows: int, tile_cols: int, col_tiles: int = 2) -> List[Tuple[int, int, int, int]]:
    """Work units (r0, r1, c0, c1): one tile row of the grid each, its columns [r0, n) cut every col_tiles tiles
    wide (at least tile_rows, so that only a row's first unit touches the diagonal). The units partition the tile
    starts of `threshold_edges`' grid (tiles of a row start at r0 + k*tile_cols), so together they hold every tile
    once, whole."""
    width = tile_cols * max(col_tiles, -(-tile_rows // tile_cols))
    return [(r0, min(r0 + tile_rows, n), c0, min(c0 + width, n))
            for r0 in range(0, n, tile_rows) for c0 in range(r0, n, width)]


def _unit_forest(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray):
    """Maximum spanning forest of one unit's edges, on the nodes they touch only (O(edges), whatever n)."""
    from crop_cluster.clustering.forest import _maximum_spanning_forest

    if rows.size == 0:
        return rows, cols, sims
    nodes, inverse = np.unique(np.concatenate([rows, cols]), return_inverse=True)
    a, b, s = _maximum_spanning_forest(nodes.size, inverse[:rows.size], inverse[rows.size:], sims)
    return nodes[a], nodes[b], s


def unit_rows(x: np.ndarray, block: Tuple[int, int, int, int], tile: Tuple[int, int]):
    """The rows one unit needs, laid out so that its tiles are the local engine's tiles: (y float32, local block,
    row offset, column offset); local row i / column j of y is global row i + row offset / column j + column offset.

    The diagonal unit (c0 < r1) takes the contiguous rows r0..c1. Any other unit takes its rows r0..r1, zero rows
    up to a multiple of the tile width, then its columns c0..c1: its tile columns then start at multiples of the
    tile width, as they do from c0 in the whole grid, so the same pairs meet in the same tile shapes. Memory is
    bounded by the unit (never all n rows); the zero rows sit in a tile outside the local block.
    """
    r0, r1, c0, c1 = block
    if c0 < r1:
        return np.ascontiguousarray(x[r0:c1], dtype=np.float32), (0, r1 - r0, 0, c1 - r0), r0, r0
    start = r1 - r0 + (-(r1 - r0) % tile[1])
    y = np.zeros((start + c1 - c0, x.shape[1]), dtype=np.float32)
    y[:r1 - r0] = x[r0:r1]
    y[start:] = x[c0:c1]
    return y, (0, r1 - r0, start, start + c1 - c0), r0, c0 - start


def _graph_unit(vectors: str, block: Tuple[int, int, int, int], threshold: float, device: str, precision: str,
                tile: Tuple[int, int], folder: str, run_id: str, cpus: int) -> Tuple[int, int]:
    """Ray task: the edges of one unit (same kernels as the local engine, on the rows of `unit_rows` read from the
    shared .npy `vectors`), folded into a forest and written atomically to folder/unit-<r0>-<c0>.npz; returns
    (edges found, forest edges)."""
    from crop_cluster.clustering.graph import threshold_edges
    from crop_cluster.outputs.atomic import atomic_open

    name = _unit_name(block)
    _announce(folder, name, run_id)
    _limit_threads(cpus)
    y, local, row_offset, col_offset = unit_rows(np.load(vectors, mmap_mode="r"), block, tile)
    blocks = list(threshold_edges(y, threshold, device, precision, *tile, block=local))
    rows, cols, sims = (np.concatenate(column) for column in zip(*blocks)) if blocks else \
        (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    found = int(rows.size)
    rows, cols, sims = _unit_forest(rows + row_offset, cols + col_offset, sims)
    with atomic_open(os.path.join(folder, f"{name}.npz"), "wb") as handle:
        np.savez(handle, rows=rows, cols=cols, sims=sims, block=np.asarray(block, np.int64))
    return found, int(rows.size)


def _unit_name(block: Tuple[int, int, int, int]) -> str:
    return f"unit-{block[0]}-{block[2]}"


def _limit_threads(cpus: int) -> None:
    """A task uses the cores Ray gave it: numba's parallel scans (numpy's BLAS reads OMP_NUM_THREADS, which Ray sets
    from num_cpus when it starts the worker)."""
    import numba

    numba.set_num_threads(max(1, min(cpus, numba.config.NUMBA_NUM_THREADS)))


def _read_unit(path: str) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A unit's forest edges, or None when the file is damaged (the unit is computed again)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            edges = data["rows"].astype(np.int64), data["cols"].astype(np.int64), data["sims"].astype(np.float32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        log.warning("ignoring damaged graph unit %s; it is computed again", path)
        return None
    return edges if edges[0].size == edges[1].size == edges[2].size else None


def _finished_unit(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges of a unit that Ray reported finished (EngineError when the driver cannot read them)."""
    edges = _read_unit(path) if os.path.exists(path) else None
    if edges is None:
        raise EngineError(f"graph unit {path} was reported finished but cannot be read here: put --shared_dir on "
                          f"storage every Ray node shares (see docs/scale-out.md)")
    return edges


def _gpu_plan(n: int, d: int, precision: str):
    """Ray task on one GPU: the local engine's plan (precision, tile shape) for that GPU."""
    from crop_cluster.clustering.graph import plan_graph

    return plan_graph(n, d, "cuda", precision)


def ray_forest(engine, embeddings: np.ndarray, threshold: float, device: str = "cpu", stats: Optional[Dict] = None,
               precision: str = "auto", tile_rows: int = 0, tile_cols: int = 0, cpus_per_unit: int = 1,
               progress: bool = False):
    """clustering.forest.Forest of the pairs with cosine >= threshold, computed by Ray tasks (one GPU each when
    `device` is not 'cpu' and the cluster has GPUs, else cpus_per_unit CPUs each); see the module docstring.

    embeddings: float32 (n, d), L2-normalised. tile_rows/tile_cols: override the local engine's tile shape (tests).
    stats: as spanning_forest's, plus 'engine' (cluster size) and 'units' (total, reused from an earlier run, run
    now, attempts including Ray's retries).
    """
    import ray

    from crop_cluster.clustering.forest import Forest, forest_from_edges
    from crop_cluster.clustering.graph import plan_graph

    cluster = connect(engine.address)
    x32 = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x32.shape
    on_gpu = device != "cpu" and cluster["gpus"] > 0
    if on_gpu:
        plan = ray.get(ray.remote(num_gpus=1)(_gpu_plan).remote(n, d, precision))
    else:
        plan = plan_graph(n, d, "cpu", precision)
    tile = (tile_rows or plan.tile_rows, tile_cols or plan.tile_cols)
    digest = hashlib.blake2b(x32.data if x32.size else b"", digest_size=8)
    digest.update(json.dumps([n, d, float(threshold), plan.precision, list(tile)]).encode())
    folder = os.path.join(engine.shared_dir, f"graph-{digest.hexdigest()}")
    os.makedirs(folder, exist_ok=True)
    vectors = os.path.join(folder, "vectors.npy")
    units = graph_units(n, *tile, col_tiles=UNIT_COL_TILES["cuda" if on_gpu else "cpu"])
    paths = {unit: os.path.join(folder, f"{_unit_name(unit)}.npz") for unit in units}
    done = {unit for unit in units if os.path.exists(paths[unit]) and _read_unit(paths[unit]) is not None}
    todo = [unit for unit in units if unit not in done]
    run_id = uuid.uuid4().hex[:12]
    found = 0
    if todo:
        log.info("graph on Ray: %d of %d units to compute (%d finished earlier), %s", len(todo), len(units),
                 len(done), f"{cluster['gpus']} GPUs" if on_gpu else f"{cluster['cpus']} CPUs")
        task = ray.remote(max_retries=RETRIES)(_graph_unit).options(
            num_cpus=1 if on_gpu else cpus_per_unit, num_gpus=1 if on_gpu else 0)
        if not os.path.exists(vectors):
            from crop_cluster.outputs.atomic import atomic_open

            with atomic_open(vectors, "wb") as handle:
                np.save(handle, x32)
        results = _run_all(len(todo), lambda k, _: task.remote(vectors, todo[k], threshold, "cuda" if on_gpu else "cpu",
                                                               plan.precision, tile, folder, run_id, cpus_per_unit),
                           "unit", progress)
        found = sum(edges for edges, _ in results)
    result: Forest = forest_from_edges(n, (_finished_unit(paths[unit]) for unit in units), threshold)
    if stats is not None:
        stats.update(device="cuda" if on_gpu else "cpu", precision=plan.precision, rescore_margin=plan.margin,
                     tile=list(tile), engine={"name": "ray", **cluster, "shared_dir": folder},
                     units={"total": len(units), "reused": len(done), "run": len(todo),
                            "attempts": _attempts(folder, run_id)},
                     edges_run_now=found)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Embedding

def write_manifest(folder: str, digests: Sequence[str], paths: Sequence[str], size: int) -> List[str]:
    """Shard files of `size` lines each, one JSON array [digest, path] per line (any file name, undecodable bytes
    included, survives), named by their content and written atomically when absent; returns their paths."""
    from crop_cluster.outputs.atomic import atomic_open

    os.makedirs(folder, exist_ok=True)
    shards = []
    for start in range(0, len(digests), size):
        lines = "".join(json.dumps([digest, path]) + "\n" for digest, path in
                        zip(digests[start:start + size], paths[start:start + size]))
        name = hashlib.blake2b(lines.encode("ascii"), digest_size=8).hexdigest()
        path = os.path.join(folder, f"shard-{name}.jsonl")
        if not os.path.exists(path):
            with atomic_open(path, "w", encoding="ascii") as handle:
                handle.write(lines)
        shards.append(path)
    return shards


def read_shard(path: str) -> Tuple[List[str], List[str]]:
    """(digests, paths) of one manifest shard."""
    with open(path, encoding="ascii") as handle:
        pairs = [json.loads(line) for line in handle if line.strip()]
    return [digest for digest, _ in pairs], [name for _, name in pairs]


def _decode_shard(path: str, preprocess) -> Dict:
    """Ray task: one manifest shard decoded with the backend's Preprocess (embed/data.py): {'digests' (k,),
    'ok' positions of the decoded images, 'pixels' uint8 (ok, 3, H, W), 'bad' [(position, reason)]}."""
    from crop_cluster.embed.data import ImageDataset, collate

    digests, paths = read_shard(path)
    dataset = ImageDataset(paths, preprocess)
    ok, pixels, bad = collate([dataset[i] for i in range(len(dataset))])
    return {"digests": digests, "ok": ok, "pixels": None if pixels is None else pixels.numpy(), "bad": bad}


class _Embedder:
    """Ray actor: one copy of the backend (embed.load_backend) on the actor's GPU, or its CPU."""

    def __init__(self, backend: str, from_pretrained: Optional[str], device: str):
        from crop_cluster.embed import load_backend
        from crop_cluster.embed.device import resolve_device

        self.backend = load_backend(backend, resolve_device(device), from_pretrained)

    def describe(self) -> Dict:
        return {"device": self.backend.device, "runtime": self.backend.runtime, "preprocess": self.backend.preprocess}

    def embed_shard(self, decoded: Dict, cache, batch_size: int, folder: str, name: str, run_id: str
                    ) -> Tuple[int, int]:
        """Embed one decoded shard and write its vectors (and its undecodable digests) as one cache chunk;
        returns (embedded, undecodable)."""
        import torch

        from crop_cluster.embed.base import _BatchRunner

        _announce(folder, name, run_id)
        digests = decoded["digests"]
        vectors, extras = np.zeros((0, 0), np.float32), None
        if decoded["pixels"] is not None:
            with torch.inference_mode():
                batch = torch.from_numpy(np.array(decoded["pixels"])).to(self.backend.device)
                vectors, extras = _BatchRunner(self.backend, batch_size)(batch)
        cache.write([digests[i] for i in decoded["ok"]], vectors, [(digests[i], reason) for i, reason in decoded["bad"]],
                    extras)
        return len(decoded["ok"]), len(decoded["bad"])


def ray_embed(engine, cache, files: Sequence[str], digests: Sequence[str], backend: str,
              from_pretrained: Optional[str], device: str, batch_size: Optional[int] = None, progress: bool = True,
              actors: int = 0, shard_images: int = 0):
    """embed.cache.CachedEmbeddings as embed_with_cache returns them, the missing contents embedded on Ray.

    actors: embedding actors (0: one per GPU of the cluster when `device` allows a GPU, else half the cluster's
    CPUs, at least one: the other half decodes); shard_images: images per shard (0: SHARD_IMAGES).
    """
    import ray

    from crop_cluster.embed.base import default_batch_size
    from crop_cluster.embed.cache import embed_with_cache

    started = time.perf_counter()
    lookup = cache.lookup(digests)
    missing = lookup.missing
    info: Dict = {}
    computed = 0
    if missing.size:
        cluster = connect(engine.address)
        on_gpu = cluster["gpus"] > 0 and device != "cpu"
        count = actors or (cluster["gpus"] if on_gpu else max(1, cluster["cpus"] // 2))
        folder = os.path.join(engine.shared_dir, f"embed-{os.path.basename(cache.folder)}")
        shards = write_manifest(folder, [digests[i] for i in missing], [files[i] for i in missing],
                                 shard_images or SHARD_IMAGES["cuda" if on_gpu else "cpu"])
        actor_class = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)(_Embedder).options(
            num_gpus=1 if on_gpu else 0, num_cpus=1)
        pool = [actor_class.remote(backend, from_pretrained, "cuda" if on_gpu else "cpu") for _ in range(count)]
        try:
            description = ray.get(pool[0].describe.remote())
        except ray.exceptions.RayError as error:
            raise EngineError(f"the embedding actor could not load the model: {str(error).splitlines()[-1]}") \
                from None
        batch_size = batch_size or default_batch_size(description["device"])
        log.info("embedding %d images on Ray: %d shards, %d actors (%s, %s); %d found in the cache", missing.size,
                 len(shards), count, description["device"], description["runtime"], int(lookup.found.sum()))
        decode = ray.remote(max_retries=RETRIES)(_decode_shard).options(num_cpus=1)
        preprocess = ray.put(description["preprocess"])
        run_id = uuid.uuid4().hex[:12]
        results = _run_all(len(shards), lambda k, slot: pool[slot].embed_shard.remote(
            decode.remote(shards[k], preprocess), cache, batch_size, folder, os.path.basename(shards[k])[:-6], run_id),
            "shard", progress, slots=count, window=IN_FLIGHT_PER_ACTOR)
        computed = sum(ok for ok, _ in results)
        for handle in pool:
            ray.kill(handle)
        info = {"device": description["device"], "runtime": description["runtime"], "batch_size": batch_size,
                "embed_engine": {"name": "ray", **cluster, "actors": count, "shared_dir": folder,
                           "shards": len(shards), "attempts": _attempts(folder, run_id)}}
        cache.compact()

    def unreachable():
        raise EngineError(f"some embeddings written by Ray workers are not visible in {cache.folder}: put the "
                          f"output folder (or --cache_dir) on storage every Ray node shares (docs/scale-out.md)")

    cached = embed_with_cache(cache, files, digests, unreachable, batch_size, 0, False)
    if not missing.size:
        return cached
    counts = dict(cached.info["embedding_cache"], computed=computed, reused=int(lookup.found.sum()))
    counts["seconds"] = {"total": round(time.perf_counter() - started, 3)}
    return type(cached)(cached.result, computed, int(lookup.found.sum()), {**info, "embedding_cache": counts})
