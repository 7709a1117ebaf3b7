"""Choose `--match_threshold`: how new crops join a reviewed campaign's clusters at each match threshold (lite0).

    .venv/bin/python bench/match_threshold.py [--out bench/results/match_threshold.json]

Two labelled sets, each split into a first batch (the campaign) and a second one (added with --add):
  biodivx   the 26 real light-trap crops (../shared/data/biodivx-crops): frames 00:16:17 and :19 are the campaign,
            frame :21 is added (the same insects seen again); labels = morphotype (bench/calibrate_threshold.py)
  tux       synthetic camera-trap views of Debian's tuxpaint photo stamps (bench/calibrate_threshold.py): the views
            of 70 % of the stamps are the campaign, those of the other 30 % are added; labels = category/subcategory,
            so an added crop has the right cluster to join whenever its kind is clustered in the campaign
The campaign is clustered at lite0's clustering threshold (single linkage, clusters of >= 2 crops); then
campaign/add.py places the added crops for every match threshold m in 0.70 .. 0.95. Scores per m:
  join_precision  added crops that joined a cluster whose majority kind is theirs / added crops that joined one
  join_recall     added crops that joined a cluster of their kind / added crops whose kind has a cluster
  f1_all          pairwise F1 of the campaign + added partition against the labels, beside `f1_full_rerun`, the
                  same for clustering everything afresh at the clustering threshold
Rule (precision first, as the clustering threshold's calibration): the default is the clustering threshold when its
join precision is >= 0.95 on every set; otherwise the lowest m that reaches it. Writes the JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]
for folder in (str(REPO), str(REPO / "bench")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402

import calibrate_threshold as calibration  # noqa: E402
import machine as bench_machine  # noqa: E402

MATCH_THRESHOLDS = np.round(np.arange(0.70, 0.9501, 0.01), 2)
PRECISION_TARGET = 0.95
SEED = 7


def campaign_labels(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Single-link clusters of the campaign at `threshold`, -1 for crops in no cluster of >= 2."""
    groups = calibration.single_link(similarity, threshold)
    sizes = np.bincount(groups)
    return np.where(sizes[groups] >= 2, groups, -1)


def score(old: np.ndarray, old_kind: np.ndarray, new: np.ndarray, new_kind: np.ndarray, threshold: float
          ) -> List[Dict]:
    """One row per match threshold (module docstring)."""
    from crop_cluster.campaign.add import add_to_campaign
    from crop_cluster.evaluate.metrics import partition_metrics

    old_label = campaign_labels(old @ old.T, threshold)
    majority = {c: max(set(old_kind[old_label == c]), key=list(old_kind[old_label == c]).count)
                for c in np.unique(old_label[old_label >= 0])}
    clustered_kinds = set(old_kind[old_label >= 0])
    joinable = np.isin(new_kind, list(clustered_kinds))
    everything = np.concatenate([old, new])
    kinds = list(old_kind) + list(new_kind)
    full = partition_metrics(kinds, campaign_labels(everything @ everything.T, threshold))["pairwise_f1"]
    rows = []
    for m in MATCH_THRESHOLDS:
        result = add_to_campaign(old, np.arange(len(old)), old_label, new, np.arange(len(new)), threshold,
                                 float(m), set())
        placed = result.label[len(old):]
        joined = (placed >= 0) & (placed < result.first_new_label)
        right = np.asarray([joined[k] and majority[placed[k]] == new_kind[k] for k in range(len(new))])
        combined = np.where(result.label >= 0, result.label, -1 - np.arange(result.label.size))
        rows.append({"match_threshold": float(m), "joined": int(joined.sum()), "joinable": int(joinable.sum()),
                     "join_precision": round(float(right.sum() / max(joined.sum(), 1)), 4) if joined.any() else None,
                     "join_recall": round(float(right.sum() / max(joinable.sum(), 1)), 4),
                     "f1_all": round(partition_metrics(kinds, combined)["pairwise_f1"], 4),
                     "f1_full_rerun": round(full, 4)})
    return rows


def recommend(tables: Dict[str, List[Dict]], threshold: float) -> Dict:
    def meets(m: float) -> bool:
        for rows in tables.values():
            precision = next(r for r in rows if r["match_threshold"] == m)["join_precision"]
            if precision is not None and precision < PRECISION_TARGET:
                return False
        return True

    at_default = round(threshold, 2)
    if meets(at_default):
        return {"match_threshold": None, "rule": f"the clustering threshold ({at_default}) already joins with "
                                                 f"precision >= {PRECISION_TARGET} on every set"}
    lowest = next((float(m) for m in MATCH_THRESHOLDS if meets(float(m))), None)
    return {"match_threshold": lowest, "rule": f"lowest m with join precision >= {PRECISION_TARGET} on every set"}


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "match_threshold.json")
    parser.add_argument("--biodivx", type=Path, default=calibration.DEFAULT_BIODIVX)
    parser.add_argument("--tuxpaint", type=Path, default=calibration.DEFAULT_TUX)
    parser.add_argument("--views", type=int, default=calibration.VIEWS)
    args = parser.parse_args(argv)
    from crop_cluster.embed import BACKENDS, load_backend

    threshold = BACKENDS["lite0"].default_threshold
    backend = load_backend("lite0", "cpu")
    tables, sizes, skipped = {}, {}, {}
    bio = calibration.biodivx_files(args.biodivx)
    if bio is None:
        skipped["biodivx"] = f"{args.biodivx} not found"
    else:
        files, species, _ = bio
        emb, _ = calibration.embed(backend, files)
        later = np.asarray(["20230908001621" in f for f in files])
        kind = np.asarray(species, dtype=object)
        tables["biodivx"] = score(emb[~later], kind[~later], emb[later], kind[later], threshold)
        sizes["biodivx"] = {"campaign": int((~later).sum()), "added": int(later.sum())}
    photos = calibration.tux_photos(args.tuxpaint)
    if photos is None:
        skipped["tux"] = f"{args.tuxpaint} not found (apt-get install -y tuxpaint-stamps-default)"
    else:
        with tempfile.TemporaryDirectory(prefix="match-") as tmp:
            files, kinds, individuals = calibration.write_bursts(photos, Path(tmp), args.views, SEED)
            emb, _ = calibration.embed(backend, files)
        stamps = sorted(set(individuals))
        rng = np.random.default_rng(SEED)
        added = set(rng.choice(stamps, size=int(0.3 * len(stamps)), replace=False).tolist())
        later = np.asarray([s in added for s in individuals])
        kind = np.asarray(kinds, dtype=object)
        tables["tux"] = score(emb[~later], kind[~later], emb[later], kind[later], threshold)
        sizes["tux"] = {"campaign": int((~later).sum()), "added": int(later.sum())}
    recommendation = recommend(tables, threshold)
    document = {"benchmark": "match threshold of --add (lite0)", "machine": bench_machine.machine(),
                "versions": bench_machine.versions(("torch", "numpy", "scipy", "onnxruntime")),
                "clustering_threshold": threshold, "precision_target": PRECISION_TARGET, "sets": sizes,
                "skipped": skipped, "tables": tables, "recommendation": recommendation}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"{'m':>5} " + " ".join(f"{name + ' P/R/F1':>22}" for name in tables))
    for k, m in enumerate(MATCH_THRESHOLDS):
        cells = [f"{rows[k]['join_precision'] or 0:.2f}/{rows[k]['join_recall']:.2f}/{rows[k]['f1_all']:.2f}"
                 for rows in tables.values()]
        print(f"{m:5.2f} " + " ".join(f"{c:>22}" for c in cells))
    print("full re-run F1:", {name: rows[0]["f1_full_rerun"] for name, rows in tables.items()})
    print("recommendation:", recommendation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
