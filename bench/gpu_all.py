"""Every GPU measurement of issue 17 in one run (<= 8 minutes on one H200), one JSON: bench/results/gpu_all.json.

    bash bench/gpu_all.sh                 # on the device machine (CUDA)
    bash bench/gpu_all.sh --device cpu    # the same steps at small N on a CPU: proves the script end to end

Sections, in this order (each one's result or error is written as soon as it ends; a section that would start
after --budget_s is recorded as skipped):
  embedding  DINOv2-B (random weights: speed only) and lite0: model only (random uint8 batches), decode only (the
             DataLoader workers, no model) and end to end (embed_files) for resize pil, torch (stage A) and device
             (stage B), from --crops generated JPEG crops (bench/crop_maker.py, 40-420 px)
  parity     on the device: pixels of embed.resize against PIL, lite0 embeddings with each resize against PIL's
  graph      the exact graph's spanning forest (clustering.graph.torch_forest_edges) at each --graph_n x 768:
             the default kernel (Triton on CUDA); at the first N also Triton with per-candidate atomic compaction,
             the torch kernel and the float32 brute force
             (float32 tiles, TF32 off), partitions compared; useful TFLOP/s = N^2 * d / seconds
  cli        `cluster.py --embeddings X.pkl -th 0.9` at --cli_n, stage by stage (bench/cli_stages.py, exact graph)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

RESIZES = ("pil", "torch", "device")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _median_time(call: Callable[[], object], runs: int, device: str) -> List[float]:
    times = []
    for _ in range(runs):
        _sync(device)
        started = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - started)
    return times


def _backends(device: str, scratch: Path) -> Dict:
    """{'dino_b14': DINOv2-B shape (ViT-S-like tiny model on the CPU), 'lite0': the bundled lite0}."""
    import embed_bench
    from crop_cluster.embed import load_backend

    size = "vit_b14" if device.startswith("cuda") else "tiny"
    if size == "tiny":
        import torch
        from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                                 image_size=224)).save_pretrained(scratch / "dino")
        BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}).save_pretrained(
            scratch / "dino")
        folder = str(scratch / "dino")
    else:
        folder = embed_bench.tiny_dino_folder(scratch / "dino", size)
    return {"dino_b14" if size == "vit_b14" else "dino_tiny_cpu": load_backend("dino", device, folder),
            "lite0": load_backend("lite0", device)}


def decode_only(backend, files: List[str], resize: str, batch_size: int, num_workers: int) -> float:
    """Images/s of the decoding workers alone (DataLoader with embed_files' dataset and collate, no model)."""
    import functools

    import torch

    from crop_cluster.embed.data import ImageDataset, collate

    preprocess = backend.preprocess.with_resize(resize)
    loader = torch.utils.data.DataLoader(ImageDataset(files, preprocess), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=backend.device.startswith("cuda"),
                                         collate_fn=functools.partial(collate, stack=resize != "device"))
    started = time.perf_counter()
    for _ in loader:
        pass
    return len(files) / (time.perf_counter() - started)


def section_embedding(args, files: List[str], scratch: Path) -> Dict:
    import torch

    from crop_cluster.embed.base import _BatchRunner, default_batch_size, default_num_workers, embed_files

    device = args.device
    batch_size = default_batch_size(device)
    workers = default_num_workers(device)
    report: Dict = {"crops": len(files), "batch_size": batch_size, "num_workers": workers}
    for name, backend in _backends(device, scratch).items():
        row: Dict = {"model": backend.model_id, "runtime": backend.runtime}
        size = backend.preprocess.size
        batch = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8).to(device)
        runner = _BatchRunner(backend, batch_size)
        with torch.inference_mode():
            runner(batch)
            times = _median_time(lambda: runner(batch), args.runs, device)
        row["model_only_images_per_s"] = round(batch_size / statistics.median(times), 1)
        for resize in RESIZES:
            row[f"decode_only_{resize}_images_per_s"] = round(decode_only(backend, files, resize, batch_size,
                                                                          workers), 1)
            embed_files(backend, files[:batch_size], batch_size, progress=False, resize=resize)  # warm-up
            walls, seconds = [], None
            for _ in range(args.runs):
                started = time.perf_counter()
                result = embed_files(backend, files, batch_size, progress=False, resize=resize)
                walls.append(time.perf_counter() - started)
                seconds = result.seconds
            row[f"end_to_end_{resize}_images_per_s"] = round(len(files) / statistics.median(walls), 1)
            row[f"end_to_end_{resize}_all_runs_s"] = [round(w, 2) for w in walls]
            row[f"end_to_end_{resize}_seconds"] = seconds
        report[name] = row
        del backend
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return report


def section_parity(args, files: List[str], scratch: Path) -> Dict:
    from crop_cluster.embed import load_backend
    from crop_cluster.embed.parity import embedding_parity, pixel_parity

    backend = load_backend("lite0", args.device)
    sets = {"generated": files[:args.parity_n]}
    example = scratch / "example"
    subprocess.run([sys.executable, str(REPO / "example" / "make_example.py"), "--out", str(example / "crops"),
                    "--labels", str(example / "labels.csv")], check=True, capture_output=True)
    sets["example"] = sorted(str(p) for p in (example / "crops").rglob("*") if p.is_file() and p.name != "broken.jpg")
    shared = REPO.parent / "shared" / "data" / "biodivx-crops"
    if shared.is_dir():
        sets["biodivx_crops"] = sorted(str(p) for p in shared.iterdir() if p.suffix.lower() == ".png")
    report = {}
    for name, chosen in sets.items():
        report[name] = {"pixels_on_device": pixel_parity(chosen, backend.preprocess, args.device),
                        "pixels_uint8_cpu": pixel_parity(chosen, backend.preprocess, "cpu", "uint8"),
                        "embeddings_lite0": embedding_parity(backend, chosen)}
    return report


def _labels(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Component of every node, numbered by first appearance (comparable across runs)."""
    from crop_cluster.clustering.forest import component_ids

    labels = component_ids(n, rows, cols)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse.reshape(-1)]


def section_graph(args, deadline: float) -> Dict:
    import bench_clustering
    from crop_cluster.clustering import triton_graph
    from crop_cluster.clustering.graph import graph_kernel, torch_forest_edges

    device, d, threshold = args.device, 768, 0.9
    warm = bench_clustering.synthetic_groups(4096, d, threshold, seed=1)[0]
    torch_forest_edges(warm, threshold, device)  # compiles the Triton kernel, CUDA context, cuBLAS
    report: Dict = {"d": d, "threshold": threshold}
    for position, n in enumerate(args.graph_n):
        if time.perf_counter() > deadline:
            report[str(n)] = {"skipped": "time budget"}
            continue
        x = bench_clustering.synthetic_groups(n, d, threshold, seed=n)[0]
        row: Dict = {}
        runs = [("default", {})]
        if position == 0:  # the comparisons at the first N only (the torch kernel alone took 17 s at 10^6)
            if graph_kernel(device) == "triton":
                runs.append(("triton_atomic_compaction", {}))
            runs += [("torch_kernel", {"kernel": "torch"}),
                     ("float32_bruteforce", {"precision": "float32", "kernel": "torch"})]
        labels = {}
        for name, options in runs:
            triton_graph.COMPACTION = "atomic" if name == "triton_atomic_compaction" else "scan"
            stats: Dict = {}
            _sync(device)
            started = time.perf_counter()
            rows, cols, _ = torch_forest_edges(x, threshold, device, stats=stats, **options)
            _sync(device)
            seconds = time.perf_counter() - started
            labels[name] = _labels(n, rows, cols)
            row[name] = {"seconds": round(seconds, 3), "useful_tflops": round(n * n * d / seconds / 1e12, 1),
                         "kernel": stats.get("kernel"), "precision": stats.get("precision"),
                         "edges": stats.get("edges"), "forest_edges": int(rows.size),
                         "tile_counts": stats.get("tile_counts")}
            if time.perf_counter() > deadline:
                break
        for name in labels:
            if name != "default":
                row[f"same_partition_default_vs_{name}"] = bool(np.array_equal(labels["default"], labels[name]))
        report[str(n)] = row
        del x
    return report


def section_cli(args, scratch: Path) -> Dict:
    out = scratch / "cli_stages.json"
    command = [sys.executable, str(REPO / "bench" / "cli_stages.py"), "--n", str(args.cli_n), "--graph", "exact",
               "--device", args.device, "--repeats", "1", "--out", str(out)]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def _write(path: Path, document: Dict) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--crops", type=int, default=None, help="JPEG crops to embed (20000 on CUDA, 64 on CPU)")
    parser.add_argument("--graph_n", type=int, nargs="+", default=None,
                        help="graph sizes (1e6 3e6 on CUDA, 3000 on CPU); the first is checked against float32")
    parser.add_argument("--cli_n", type=int, default=None, help="CLI rows (1e6 on CUDA, 20000 on CPU)")
    parser.add_argument("--parity_n", type=int, default=256, help="generated crops for the parity section")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measure (3 on CUDA, 1 on CPU)")
    parser.add_argument("--budget_s", type=float, default=420.0, help="start no section after this many seconds")
    parser.add_argument("--sections", nargs="+", default=["embedding", "parity", "graph", "cli"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    args.crops = args.crops or (20000 if on_cuda else 64)
    args.graph_n = args.graph_n or ([1_000_000, 3_000_000] if on_cuda else [3000])
    args.cli_n = args.cli_n or (1_000_000 if on_cuda else 20000)
    args.runs = args.runs or (3 if on_cuda else 1)
    args.out = args.out or REPO / "bench" / "results" / ("gpu_all.json" if on_cuda else "gpu_all_cpu.json")

    import importlib.util

    for name, file in (("bench_clustering", "clustering.py"), ("embed_bench", "embed.py")):
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    import crop_maker
    import machine

    started = time.perf_counter()
    deadline = started + args.budget_s
    document: Dict = {"machine": machine.machine(args.device),
                      "versions": machine.versions(["torch", "triton", "transformers", "numpy", "onnxruntime"]),
                      "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                      "sections": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-all-") as folder:
        scratch = Path(folder)
        files: List[str] = []
        if {"embedding", "parity"} & set(args.sections):
            made = time.perf_counter()
            files = crop_maker.make_crops(scratch / "crops", args.crops, processes=os.cpu_count() or 1)
            document["crops_made_s"] = round(time.perf_counter() - made, 1)
        steps = {"embedding": lambda: section_embedding(args, files, scratch),
                 "parity": lambda: section_parity(args, files, scratch),
                 "graph": lambda: section_graph(args, deadline),
                 "cli": lambda: section_cli(args, scratch)}
        for name in args.sections:
            if time.perf_counter() > deadline:
                document["sections"][name] = {"skipped": f"time budget of {args.budget_s} s spent"}
                continue
            began = time.perf_counter()
            try:
                document["sections"][name] = steps[name]()
            except Exception as error:  # one broken section must not lose the others' figures
                document["sections"][name] = {"error": f"{type(error).__name__}: {error}",
                                              "traceback": traceback.format_exc()[-3000:]}
            document["sections"][name]["section_s"] = round(time.perf_counter() - began, 1)
            document["total_s"] = round(time.perf_counter() - started, 1)
            _write(args.out, document)
            print(f"[gpu_all] {name} done in {document['sections'][name]['section_s']} s", flush=True)
    print(json.dumps({name: {k: v for k, v in section.items() if k != "traceback"}
                      for name, section in document["sections"].items()}, indent=1)[:6000])
    print(f"written {args.out}")
    return 1 if any("error" in section for section in document["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
