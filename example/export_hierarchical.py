#!/usr/bin/env python3
"""Export a hierarchical taxonomic classifier for `cluster.py -e hierarchical -fp MODEL.pt2`.

    python example/export_hierarchical.py --out models/   # insects.pt2, insects.pt, insects.onnx + insects.json
    python cluster.py -i crops/ -o out/ -e hierarchical -fp models/insects.pt2

What crop-cluster needs, whatever your training code looks like:
  1. a torch.export program (.pt2; or TorchScript .pt, or ONNX .onnx) whose forward takes a normalised image
     batch float (B, 3, S, S) and returns (embedding (B, d), logits of the finest level (B, C0), ..., logits of
     the coarsest level (B, C_L-1));
  2. MODEL.json beside it: the level names (finest first), each level's class names in the order of its logits,
     each class's parent in the next coarser level, and the input size, mean and std (pixels scaled to 0..1).
This script builds a small network with random weights to show the shapes; for your model, replace `backbone`
and the heads with your trained modules (or load your weights where marked) and keep the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import warnings

import torch

LEVELS = ["species", "genus", "family", "order"]                      # finest first
CLASSES = {
    "species": ["Agrotis ipsilon", "Agrotis segetum", "Noctua pronuba", "Geometra papilionaria",
                "Campaea margaritaria", "Tipula paludosa"],
    "genus": ["Agrotis", "Noctua", "Geometra", "Campaea", "Tipula"],
    "family": ["Noctuidae", "Geometridae", "Tipulidae"],
    "order": ["Lepidoptera", "Diptera"],
}
PARENTS = {                                                           # each class's parent, one level up
    "species": ["Agrotis", "Agrotis", "Noctua", "Geometra", "Campaea", "Tipula"],
    "genus": ["Noctuidae", "Noctuidae", "Geometridae", "Geometridae", "Tipulidae"],
    "family": ["Lepidoptera", "Lepidoptera", "Diptera"],
}


class HierarchicalClassifier(torch.nn.Module):
    """A backbone giving one embedding per image, and one linear head per taxonomic level on that embedding."""

    def __init__(self, backbone: torch.nn.Module, dim: int, counts):
        super().__init__()
        self.backbone = backbone
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, count) for count in counts)

    def forward(self, pixels):
        embedding = self.backbone(pixels)
        return (embedding, *[head(embedding) for head in self.heads])   # embedding, then logits finest first


def small_backbone(dim: int) -> torch.nn.Module:
    """A stand-in for your trained feature extractor (EfficientNet, ViT, ...): images -> (B, dim)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, dim, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models", help="folder for insects.pt2/.pt/.onnx and insects.json")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    model = HierarchicalClassifier(small_backbone(64), 64, [len(CLASSES[level]) for level in LEVELS]).eval()
    # model.load_state_dict(torch.load("my_trained_weights.pth"))   # <- your trained weights go here
    example = torch.rand(2, 3, args.size, args.size)
    batch = {0: torch.export.Dim("batch")}                             # any batch size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch's notes on TorchScript and the old ONNX exporter
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=(batch,)),
                          os.path.join(args.out, "insects.pt2"))
        torch.jit.trace(model, example).save(os.path.join(args.out, "insects.pt"))
        torch.onnx.export(model, (example,), os.path.join(args.out, "insects.onnx"), dynamo=False,
                          input_names=["pixels"], output_names=["embedding", *LEVELS],
                          dynamic_axes={name: {0: "batch"} for name in ["pixels", "embedding", *LEVELS]})
    sidecar = {"levels": LEVELS, "classes": CLASSES, "parents": PARENTS,
               "input": {"size": args.size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    with open(os.path.join(args.out, "insects.json"), "w", encoding="utf-8") as handle:  # serves all three
        json.dump(sidecar, handle, indent=2)
    print(f"wrote {args.out}/insects.pt2, insects.pt, insects.onnx and insects.json; run:\n"
          f"  python cluster.py -i CROPS -o OUT -e hierarchical -fp {args.out}/insects.pt2")


if __name__ == "__main__":
    main()
