"""Throughput of `-e hierarchical` end to end from JPEG files: a BiodivX-sized classifier, exported and run.

    python bench/hierarchical.py --device cuda:0 --n 8000     # on a GPU machine
    python bench/hierarchical.py --device cpu --n 500         # any machine with torchvision (not this project's CPU
                                                              # machines: torch 2.13 there has no torchvision)

The model is EfficientNetV2-S (torchvision, random weights: throughput does not depend on the weights) with one
linear head per level sized like the BiodivX classifier: 7 967 species, 3 938 genera, 443 families, 33 orders,
5 classes, on its 1280-d pooled features; exported with torch.export (`.pt2`) and with TorchScript (`.pt`), with a
generated sidecar. Crops are JPEGs of 100-400 px cut from the sample photos (bench/crop_maker.py). Timed:
`embed_files` (decoding workers, bf16 autocast on CUDA, tree-consistent decoding of the five heads), medians of
--repeats runs after one warm-up; the result goes to bench/results/hierarchical_{gpu,cpu}.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import crop_maker  # noqa: E402
import machine as bench_machine  # noqa: E402

LEVELS = ["species", "genus", "family", "order", "class"]
COUNTS = [7967, 3938, 443, 33, 5]


def sidecar(size: int) -> dict:
    """A tree with COUNTS classes per level: class k of a level has parent k * C_up // C_level one level up."""
    classes = {level: [f"{level}_{k}" for k in range(count)] for level, count in zip(LEVELS, COUNTS)}
    parents = {LEVELS[l]: [k * COUNTS[l + 1] // COUNTS[l] for k in range(COUNTS[l])] for l in range(len(LEVELS) - 1)}
    return {"levels": LEVELS, "classes": classes, "parents": parents,
            "input": {"size": size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def build_model(size: int, folder: Path) -> dict:
    """Export EfficientNetV2-S + five heads to folder/model.pt2 and model.pt with model.json; returns the paths."""
    import torch
    from torchvision.models import efficientnet_v2_s

    class Hierarchical(torch.nn.Module):
        def __init__(self):
            super().__init__()
            net = efficientnet_v2_s()
            self.features, self.pool = net.features, torch.nn.AdaptiveAvgPool2d(1)
            self.heads = torch.nn.ModuleList(torch.nn.Linear(1280, count) for count in COUNTS)

        def forward(self, pixels):
            embedding = self.pool(self.features(pixels)).flatten(1)
            return (embedding, *[head(embedding) for head in self.heads])

    model = Hierarchical().eval()
    example = torch.rand(2, 3, size, size)
    paths = {"pt2": folder / "model.pt2", "pt": folder / "model.pt"}
    with torch.no_grad():
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                          str(paths["pt2"]))
        torch.jit.trace(model, example).save(str(paths["pt"]))
    (folder / "model.json").write_text(json.dumps(sidecar(size)))
    return paths


def time_backend(model_path: Path, files: list, device: str, batch_size: int, repeats: int,
                 channels_last: bool = True) -> dict:
    """Median seconds and images/s of embed_files over `repeats` runs after a warm-up on 2 batches."""
    from crop_cluster.embed.base import default_num_workers, embed_files
    from crop_cluster.embed.hierarchical import HierarchicalBackend

    started = time.perf_counter()
    backend = HierarchicalBackend(device, str(model_path), channels_last=channels_last)
    load_s = time.perf_counter() - started
    workers = default_num_workers(device)
    embed_files(backend, files[:2 * batch_size], batch_size, workers, progress=False)
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = embed_files(backend, files, batch_size, workers, progress=False)
        runs.append({"seconds": time.perf_counter() - started, **result.seconds})
    seconds = statistics.median(run["seconds"] for run in runs)
    return {"load_s": round(load_s, 2), "batch_size": batch_size, "num_workers": workers, "runs": runs,
            "median_s": round(seconds, 3), "images_per_s": round(len(files) / seconds, 1),
            "dim": int(result.embeddings.shape[1]), "levels": int(result.extras.shape[1] // 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=500, help="crops to embed per timed run")
    parser.add_argument("--size", type=int, default=384, help="model input side (EfficientNetV2-S uses 384)")
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    from crop_cluster.embed.base import default_batch_size

    batch_size = args.batch_size or default_batch_size(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        paths = build_model(args.size, Path(scratch))
        files = crop_maker.make_crops(Path(scratch) / "crops", args.n, min_side=100, max_side=400,
                                       processes=bench_machine.usable_cores())
        results = {kind: time_backend(path, files, args.device, batch_size, args.repeats)
                   for kind, path in paths.items()}
        if args.device.startswith("cuda"):   # the layout's share of the speed: the same .pt2 in NCHW
            results["pt2_nchw"] = time_backend(paths["pt2"], files, args.device, batch_size, args.repeats, False)
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    document = {"benchmark": "hierarchical", "device": args.device, "machine": bench_machine.machine(args.device),
                "torch": torch.__version__, "n": args.n, "input_size": args.size,
                "model": "EfficientNetV2-S (torchvision, random weights) + heads " + "/".join(map(str, COUNTS)),
                "precision": "bf16 autocast" if gpu else "float32", "results": results}
    out = args.out or REPO / "bench" / "results" / f"hierarchical_{'gpu' if gpu else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"{'format':<6} {'img/s':>8} {'median s':>9}  ({args.n} crops, {args.device}{', ' + gpu if gpu else ''})")
    for kind, result in results.items():
        print(f"{kind:<6} {result['images_per_s']:>8} {result['median_s']:>9}")


if __name__ == "__main__":
    main()
