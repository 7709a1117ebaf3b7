"""Embedding speed on a GPU machine, end to end from JPEG files: DINOv2-B/14 in bf16 (random weights: the speed of
a model does not depend on its weight values) and lite0, where the time goes (decode vs model), and the CLI.

    PYTHONPATH=. python3 bench/embed_gpu.py --n 20000 --device cuda:0 --out bench/results/embed_gpu.json

Crops are generated (never committed): N boxes of 100-400 px, aspect 1:3 to 3:1, cut from scikit-learn's two sample
photos and saved as JPEG (quality 80-95), made on every core. The DINOv2-B folder is `Dinov2Model(Dinov2Config())`
(hidden 768, 12 layers, 12 heads, patch 14) plus dinov2's `BitImageProcessor` (224 px input), written with
save_pretrained. Measures, each the median of --runs runs after a warm-up:
  model_only   the model on uint8 batches already on the GPU (normalisation, bf16 autocast, L2, copy to the host):
               the ceiling the decoding has to feed
  decode_only  the DataLoader alone (workers decoding and fitting to 224 px, pinned memory), per worker count
  embed_files  the real pipeline (embed.base.embed_files), per worker count and batch size, with its decode/model
               split (EmbedResult.seconds: 'decode' = waiting for decoded batches)
  cli          `cluster.py -i CROPS -e dino -fp FOLDER -d DEVICE --no_report -th 1.0 --dedup_threshold 1.0` (default
               workers and batch size) on all N crops: wall time and the stage timings of run.json; the same with
               -e lite0. The thresholds keep the similarity graph empty: random-weight embeddings are all alike, and
               their graph (every pair linked) would time nothing real
Writes the machine (GPU name, cores), versions and all figures to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]


import crop_maker  # noqa: E402
import machine as bench_machine  # noqa: E402

TARGET_IMAGES_PER_S = 4000


def make_crops(folder: Path, n: int) -> List[str]:
    """n JPEG crops of 100-400 px from the sample photos, written by every core."""
    return crop_maker.make_crops(folder, n, min_side=100, max_side=400, processes=bench_machine.usable_cores())


def dino_base_folder(folder: Path) -> str:
    """Random-weight DINOv2-B/14 (Dinov2Config() defaults) with dinov2's image processor, as save_pretrained writes."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.patch_size) == \
        (768, 12, 12, 14)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return str(folder)


def model_only(backend, batch_size: int, runs: int, batches: int = 20) -> Dict:
    """images/s of the model on uint8 batches already on the device (what embed_files does after decoding)."""
    import torch

    from crop_cluster.embed.base import _BatchRunner

    size = backend.preprocess.size
    batch = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=backend.device)
    runner = _BatchRunner(backend, batch_size)
    sync = torch.cuda.synchronize if backend.device.startswith("cuda") else (lambda: None)
    rates = []
    with torch.inference_mode():
        for _ in range(3):
            runner(batch)
        for _ in range(runs):
            sync()
            started = time.perf_counter()
            for _ in range(batches):
                runner(batch)
            sync()
            rates.append(batch_size * batches / (time.perf_counter() - started))
    return {"batch_size": batch_size, "images_per_s": round(statistics.median(rates), 1),
            "all_runs_images_per_s": [round(r, 1) for r in rates]}


def decode_only(backend, files: List[str], workers: int, batch_size: int, runs: int) -> Dict:
    """images/s of the DataLoader alone: decoding, fitting, collating and pinning, no model."""
    import torch

    from crop_cluster.embed.data import ImageDataset, collate

    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        loader = torch.utils.data.DataLoader(ImageDataset(files, backend.preprocess), batch_size=batch_size,
                                             shuffle=False, num_workers=workers, collate_fn=collate,
                                             pin_memory=backend.device.startswith("cuda"))
        count = sum(len(indices) for indices, _, _ in loader)
        rates.append(count / (time.perf_counter() - started))
    return {"workers": workers, "batch_size": batch_size, "images_per_s": round(statistics.median(rates), 1),
            "all_runs_images_per_s": [round(r, 1) for r in rates]}


def pipeline(backend, files: List[str], workers: int, batch_size: int, runs: int, niceness: int) -> Dict:
    """The real pipeline, embed_files: median images/s over `runs` and its decode/model split. niceness: of the
    decoding workers (embed.base.GPU_WORKER_NICENESS; 0 = as nice as the main process)."""
    import crop_cluster.embed.base as embed_base
    from crop_cluster.embed.base import embed_files

    default_niceness = embed_base.GPU_WORKER_NICENESS
    embed_base.GPU_WORKER_NICENESS = niceness
    try:
        embed_files(backend, files[:4 * batch_size], batch_size=batch_size, num_workers=workers, progress=False)
        results = []
        for _ in range(runs):
            started = time.perf_counter()
            result = embed_files(backend, files, batch_size=batch_size, num_workers=workers, progress=False)
            results.append((time.perf_counter() - started, result.seconds, result.embeddings.shape[0]))
    finally:
        embed_base.GPU_WORKER_NICENESS = default_niceness
    wall, seconds, embedded = sorted(results, key=lambda run: run[0])[len(results) // 2]
    return {"workers": workers, "batch_size": batch_size, "worker_niceness": niceness, "images": len(files),
            "embedded": embedded,
            "images_per_s": round(len(files) / wall, 1), "wall_s": round(wall, 2),
            "decode_wait_s": seconds["decode"], "model_s": seconds["model"],
            "decode_wait_share": round(seconds["decode"] / wall, 3), "model_share": round(seconds["model"] / wall, 3),
            "all_runs_images_per_s": [round(len(files) / w, 1) for w, _, _ in results]}


def cli(crops: Path, out: Path, device: str, *extra: str) -> Dict:
    command = [sys.executable, str(REPO / "cluster.py"), "-i", str(crops), "-o", str(out), "-d", device, "-q",
               "--no_report", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    manifest = json.loads((out / "run.json").read_text())
    images = manifest["counts"]["inputs"]
    embed_s = manifest["timings_s"].get("embed")
    return {"images": images, "wall_s": round(wall, 2), "images_per_s_whole_run": round(images / wall, 1),
            "images_per_s_embed_stage": round(images / embed_s, 1) if embed_s else None,
            "stages_s": manifest["timings_s"], "num_workers": manifest["parameters"].get("num_workers"),
            "batch_size": manifest["parameters"].get("batch_size"), "device": manifest.get("device")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="JPEG crops to generate")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--configs", nargs="+", default=None, metavar="W:B[:NICE]",
                        help="embed_files settings to compare: decoding workers, batch size, worker niceness "
                             "(default: the pipeline's defaults)")
    parser.add_argument("--lite0_configs", nargs="+", default=None, metavar="W:B[:NICE]",
                        help="the same for lite0 (default: the first of --configs)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cli_args", nargs="*", default=["-th", "1.0", "--dedup_threshold", "1.0"],
                        help="extra cluster.py arguments for the CLI runs (default keeps the similarity graph of "
                             "random-weight embeddings, all alike, empty: only the pipeline is timed)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["lite0", "cli", "decode_only"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "embed_gpu.json")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from crop_cluster.embed import load_backend
    from crop_cluster.embed.base import GPU_WORKER_NICENESS, default_batch_size, default_num_workers

    hf_logging.set_verbosity_error()

    def parse(specs):
        configs = []
        for spec in specs:
            parts = [int(v) for v in spec.split(":")]
            configs.append((parts[0], parts[1], parts[2] if len(parts) > 2 else GPU_WORKER_NICENESS))
        return configs

    configs = parse(args.configs or [f"{default_num_workers(args.device)}:{default_batch_size(args.device)}"])
    lite0_configs = parse(args.lite0_configs) if args.lite0_configs else configs[:1]
    scratch = Path(tempfile.mkdtemp(prefix="bench-embed-gpu-"))
    os.environ.setdefault("CROP_CLUSTER_CACHE", str(scratch / "user-cache"))
    document: Dict = {"benchmark": "embed_gpu", "date": time.strftime("%Y-%m-%d"),
                      "machine": bench_machine.machine(args.device),
                      "versions": bench_machine.versions(("torch", "transformers", "pillow", "numpy")),
                      "n_crops": args.n, "runs": args.runs,
                      "target_images_per_s": TARGET_IMAGES_PER_S,
                      "defaults": {"num_workers": default_num_workers(args.device),
                                   "batch_size": default_batch_size(args.device)}}
    try:
        started = time.perf_counter()
        crops = scratch / "crops"
        files = make_crops(crops, args.n)
        document["crops_made_s"] = round(time.perf_counter() - started, 1)
        sizes = [os.path.getsize(f) for f in files]
        document["crop_jpeg_kb_mean"] = round(sum(sizes) / len(sizes) / 1024, 1)
        print(f"{len(files)} crops in {document['crops_made_s']} s", flush=True)
        folder = dino_base_folder(scratch / "dinov2-base-random")
        results: Dict = {}
        for name in ["dino"] + ([] if "lite0" in args.skip else ["lite0"]):
            backend = load_backend(name, args.device, folder if name == "dino" else None)
            entry: Dict = {"model": backend.model_id if name == "lite0" else "dinov2-base (random weights)",
                           "runtime": backend.runtime, "input_size": backend.preprocess.size}
            if name == "dino":
                entry["attn_implementation"] = getattr(backend.model.config, "_attn_implementation", None)
            mine = configs if name == "dino" else lite0_configs
            entry["model_only"] = [model_only(backend, b, args.runs) for b in sorted({c[1] for c in mine})]
            print(name, "model only", [(m["batch_size"], m["images_per_s"]) for m in entry["model_only"]],
                  flush=True)
            if "decode_only" not in args.skip and name == "dino":
                entry["decode_only"] = [decode_only(backend, files, w, mine[0][1], 1)
                                        for w in sorted({c[0] for c in mine})]
                print(name, "decode only", [(d["workers"], d["images_per_s"]) for d in entry["decode_only"]],
                      flush=True)
            entry["embed_files"] = []
            for workers, batch, niceness in mine:
                row = pipeline(backend, files, workers, batch, args.runs, niceness)
                entry["embed_files"].append(row)
                print(f"{name} embed_files workers {workers:2d} batch {batch:4d} nice {niceness}: "
                      f"{row['images_per_s']:8.1f} img/s (decode wait {row['decode_wait_share']:.0%}, "
                      f"model {row['model_share']:.0%}) runs {row['all_runs_images_per_s']}", flush=True)
            results[name] = entry
            del backend
        if "cli" not in args.skip:
            results["dino"]["cli"] = cli(crops, scratch / "out_dino", args.device, "-e", "dino", "-fp", folder,
                                         *args.cli_args)
            results["dino"]["cli"]["extra_args"] = args.cli_args
            print("dino cli", results["dino"]["cli"], flush=True)
            if "lite0" in results:
                results["lite0"]["cli"] = cli(crops, scratch / "out_lite0", args.device, "-e", "lite0",
                                              *args.cli_args)
                results["lite0"]["cli"]["extra_args"] = args.cli_args
                print("lite0 cli", results["lite0"]["cli"], flush=True)
        document["results"] = results
        best = max(results["dino"]["embed_files"], key=lambda row: row["images_per_s"])
        document["summary"] = {
            "dino_best_embed_files_images_per_s": best["images_per_s"],
            "dino_best_config": {"workers": best["workers"], "batch_size": best["batch_size"],
                                 "worker_niceness": best["worker_niceness"]},
            "dino_vs_target": round(best["images_per_s"] / TARGET_IMAGES_PER_S, 3),
            "dino_model_only_images_per_s": max(m["images_per_s"] for m in results["dino"]["model_only"]),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(document["summary"], indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
