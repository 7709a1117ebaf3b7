"""Which crop geometry suits specimen crops: the whole crop padded to a square ("pad") or the ImageNet centre crop
("crop")? Measured with lite0 (real ImageNet weights) on labelled sets; results in bench/results/crop_geometry.json.

    .venv/bin/python bench/crop_geometry.py         (about half a minute on 2 cores; wrap timings in flock)

Sets: the 26 real light-trap crops of ../shared/data/biodivx-crops labelled by eye per individual and per
morphotype (labels in bench/calibrate_threshold.py; skipped when absent) and the offline example's 60 views of 10
"specimens" cut from scikit-learn's photos (example/make_example.py; several are elongated, e.g. 240 x 60 px).
Measures per geometry: leave-one-out 1-nearest-neighbour accuracy, the best ARI of single-link clustering over
thresholds 0.50-0.98, and the ARI and pairwise precision at lite0's default threshold.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import numpy as np  # noqa: E402

import calibrate_threshold as calibration  # noqa: E402

GEOMETRIES = ("pad", "crop")


def nn_accuracy(embeddings: np.ndarray, labels) -> float:
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.asarray(labels, dtype=object)
    return float((labels[similarity.argmax(axis=1)] == labels).mean())


def example_set(folder: Path):
    """(files, labels) of the offline example generated into `folder`."""
    import pandas as pd

    subprocess.run([sys.executable, str(REPO / "example" / "make_example.py"), "--out", str(folder / "crops"),
                    "--labels", str(folder / "labels.csv")], check=True, capture_output=True)
    table = pd.read_csv(folder / "labels.csv")
    return [str(folder / name) for name in table.filename], list(table.label)


def main() -> int:
    from crop_cluster.embed import BACKENDS, load_backend
    from crop_cluster.embed.data import Preprocess
    from crop_cluster.embed.lite0 import PREPROCESS

    threshold = BACKENDS["lite0"].default_threshold
    backend = load_backend("lite0", "cpu")
    sets = {}
    shared = calibration.biodivx_files(calibration.DEFAULT_BIODIVX)
    if shared:
        files, species, individuals = shared
        sets["biodivx_individuals"] = (files, individuals)
        sets["biodivx_species"] = (files, species)
    else:
        print(f"skipping the real crops: {calibration.DEFAULT_BIODIVX} is absent")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        sets["example_specimens"] = example_set(Path(scratch))
        for geometry in GEOMETRIES:
            backend.preprocess = Preprocess(PREPROCESS.size, PREPROCESS.mean, PREPROCESS.std, geometry=geometry)
            cache = {}
            for name, (files, labels) in sets.items():
                key = tuple(files)
                if key not in cache:
                    cache[key], _ = calibration.embed(backend, files)
                table = calibration.sweep(cache[key], labels)
                at = calibration.row_at(table, threshold)
                results.setdefault(name, {})[geometry] = {
                    "n": len(files), "nn_accuracy": round(nn_accuracy(cache[key], labels), 4),
                    "best_ari": round(max(row["ari"] for row in table), 4),
                    "ari_at_default": round(at["ari"], 4), "precision_at_default": round(at["precision"], 4),
                    "recall_at_default": round(at["recall"], 4)}
    document = {"machine": calibration.machine_info(), "backend": "lite0", "default_threshold": threshold,
                "geometries": {"pad": "whole crop, longer side to 224, centred on white",
                               "crop": "shorter side to 224, centre 224 x 224 cut out"},
                "results": results}
    out = REPO / "bench" / "results" / "crop_geometry.json"
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"{'set':22} {'geometry':8} {'1-NN acc':>8} {'best ARI':>8} {'ARI@t':>6} {'prec@t':>6} {'rec@t':>6}")
    for name, by_geometry in results.items():
        for geometry, row in by_geometry.items():
            print(f"{name:22} {geometry:8} {row['nn_accuracy']:8.3f} {row['best_ari']:8.3f} "
                  f"{row['ari_at_default']:6.3f} {row['precision_at_default']:6.3f} {row['recall_at_default']:6.3f}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
