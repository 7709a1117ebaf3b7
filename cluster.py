#!/usr/bin/env python3
"""crop-cluster: cluster image crops of insects (and other specimens) by visual similarity.

    python cluster.py -i CROPS -o OUT [options]        (or the installed console script `crop-cluster`)

inputs -> embed -> dedup -> clustering -> outputs; this module is the only one that knows every stage. It parses
the command line (all BiodivX clustering flags keep their meaning), validates options into a frozen RunConfig, runs
the stages and turns errors into messages and exit codes: 0 success, 2 bad usage or unusable input, 1 unexpected.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from clustering import ALGORITHMS       # registries only: these imports are light, so -h stays instant
from embed import BACKENDS

log = logging.getLogger("crop-cluster")
REPORT_MAX_ROWS = 20_000  # report.html is written by default up to this many rows; --report forces it


class ConfigError(ValueError):
    """Options that do not fit together; the message says which and how to fix them."""


@dataclass(frozen=True)
class RunConfig:
    """Every option of one run, validated on creation. Paths are as given; `threshold` None = backend default."""

    out_folder: str
    inputs: Tuple[str, ...] = ()
    embed: str = "dino"
    from_pretrained: Optional[str] = None
    device: str = "auto"
    cluster: str = "cosine"
    threshold: Optional[float] = None
    embeddings: Optional[str] = None
    meta_folder: Optional[str] = None
    time_format: Optional[str] = None
    metadata: Optional[str] = None
    labels: Optional[str] = None
    save_labels: bool = False
    num_classes: Optional[int] = None
    dedup: bool = False
    gen_cluster_dirs: bool = False
    save_embs: bool = False
    batch_size: Optional[int] = None
    num_workers: int = -1
    progress: bool = True
    report: Optional[bool] = None       # None: write report.html when there are at most 20 000 rows
    review: Optional[str] = None
    sweep: Optional[str] = None
    command: Tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.inputs and not self.embeddings and not self.review:
            raise ConfigError("nothing to cluster: give -i INPUT (files, folders, globs, .txt lists) or "
                              "--embeddings OUT/embeddings.pkl from a previous run")
        if self.embed not in BACKENDS:
            raise ConfigError(f"unknown embedding backend '{self.embed}'; available: {', '.join(BACKENDS)}")
        if self.cluster not in ALGORITHMS:
            raise ConfigError(f"unknown clustering algorithm '{self.cluster}'; available: {', '.join(ALGORITHMS)}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"-th {self.threshold}: a cosine similarity threshold lies in [-1, 1] "
                              f"(typical values 0.6 to 0.95)")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch_size {self.batch_size}: must be at least 1")
        if self.num_workers < -1:
            raise ConfigError(f"--num_workers {self.num_workers}: use 0 (decode in the main process), a positive "
                              f"number, or -1 for the default")
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"-x {self.num_classes}: the number of classes must be at least 1")
        if self.save_labels and not self.labels:
            raise ConfigError("-sl/--save_labels needs --labels FILE.csv (columns filename,label) or --labels folders")
        if self.sweep is not None:
            from evaluate.sweep import parse_sweep

            if self.cluster != "cosine":
                raise ConfigError(f"--sweep scores cosine thresholds; use it with -c cosine, not -c {self.cluster}")
            parse_sweep(self.sweep)
        if os.path.exists(self.out_folder) and not os.path.isdir(self.out_folder):
            raise ConfigError(f"-o {self.out_folder}: exists and is not a folder; choose another output folder")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every BiodivX flag keeps its short and long name (hyphenated long aliases too)."""
    parser = argparse.ArgumentParser(
        prog="crop-cluster", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Cluster image crops by visual similarity: embed every crop with a pretrained model, group "
                    "identical files into individuals, link individuals whose cosine similarity reaches a threshold "
                    "and write clusters.csv, embeddings.pkl, skipped.csv and run.json to the output folder.",
        epilog="examples:\n"
               "  crop-cluster -i crops/ -o out/ -e lite0            # bundled offline model\n"
               "  crop-cluster -i 'trap1/**/*.jpg' list.txt -o out/ -gs  # DINOv2, one folder per cluster\n"
               "  crop-cluster --embeddings out/embeddings.pkl -o out2/ -th 0.85   # new threshold, no re-embedding\n"
               "exit codes: 0 success, 2 bad usage or unusable input, 1 unexpected error")
    add = parser.add_argument
    add("-i", "--input", nargs="+", action="extend", default=[], metavar="INPUT",
        help="image files, folders (recursive), globs (quote them; ** works) or .txt lists (one entry per line, "
             "relative to the list, # comments); may be repeated")
    add("-o", "--out_folder", "--out-folder", required=True, help="output folder (created if needed)")
    add("-mf", "--meta_folder", "--meta-folder",
        help="folder of BiodivX JSON sidecars with detection boxes; adds frame and box columns")
    add("--time_format", "--time-format",
        help="strptime format of the timestamp in each file's basename, e.g. %%Y%%m%%d%%H%%M%%S (BiodivX "
             "%%YYYY-%%mm-%%dd_%%HH-%%MM-%%SS also accepted); adds a timestamp column")
    add("-d", "--device", default="auto", help="auto (cuda:0 when available, else cpu), cpu, cuda or cuda:N")
    add("-e", "--embed", default="dino", choices=list(BACKENDS),
        help="embedding model: dino (transformers, default facebook/dinov2-base) or lite0 (bundled EfficientNet-Lite0, "
             "offline); default dino")
    add("-fp", "--from_pretrained", "--from-pretrained",
        help="model to load: hub id or local folder for dino; a weights file for lite0")
    add("-kp", "--dedup", action="store_true",
        help="keep one representative per individual in the cluster folders (implies -gs)")
    add("-gs", "--gen_cluster_dirs", "--gen-cluster-dirs", action="store_true",
        help="copy images into OUT/clusters/<cluster>/ and OUT/clusters/not-clustered/ (originals untouched)")
    add("-c", "--cluster", default="cosine", choices=list(ALGORITHMS), help="clustering algorithm; default cosine")
    add("-th", "--threshold", type=float,
        help="cosine similarity at or above which two crops are linked (default per model: "
             + ", ".join(f"{name} {info.default_threshold:.2f}" for name, info in BACKENDS.items())
             + "; recorded in run.json)")
    add("-se", "--save_embs", "--save-embs", action="store_true",
        help="also write OUT/clusters.pkl: the rows of clusters.csv plus an embedding column")
    add("-sl", "--save_labels", "--save-labels", action="store_true",
        help="add a label column to clusters.csv (needs --labels)")
    add("-x", "--num_classes", "--num-classes", type=int,
        help="number of classes in the labels, reported beside the number of clusters found in metrics.json")
    add("--embeddings", metavar="FILE",
        help="reuse OUT/embeddings.pkl from an earlier run instead of embedding (with -i: only those files)")
    add("--labels", metavar="FILE.csv|folders",
        help="true labels for evaluation: a CSV with columns filename,label, or 'folders' (parent folder name); "
             "writes metrics.json")
    add("--metadata", metavar="FILE.csv",
        help="CSV with a filename column and any others (trap, ood_score, ...), merged into clusters.csv")
    add("--batch_size", "--batch-size", type=int, help="images per model call (default 32 on CPU, 128 on GPU)")
    add("--num_workers", "--num-workers", type=int, default=-1,
        help="processes decoding images (default: 0 on 2-core CPUs, up to 8 with a GPU)")
    add("--report", action="store_true", default=None,
        help="write OUT/report.html, a review page with thumbnails (default: on up to 20 000 rows)")
    add("--no_report", "--no-report", dest="report", action="store_false", help="do not write report.html")
    add("--review", metavar="review.csv",
        help="apply a review exported from report.html: merged groups, dissolved clusters and a group column in "
             "clusters.csv; reuses OUT/embeddings.pkl (or --embeddings) and the reviewed run's threshold")
    add("--sweep", metavar="START:STOP:STEP",
        help="also score every threshold START, START+STEP, ..., STOP from one similarity graph: writes sweep.csv, "
             "sweep.png and a recommended threshold in run.json, e.g. 0.70:0.95:0.01")
    add("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    add("-v", "--verbose", action="store_true", help="debug messages")
    return parser


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> RunConfig:
    """RunConfig from parsed arguments (raises ConfigError for combinations that cannot work)."""
    embeddings = args.embeddings
    if args.review and not embeddings and not args.input:  # review the run in the output folder: no re-embedding
        embeddings = os.path.join(args.out_folder, "embeddings.pkl")
    return RunConfig(
        out_folder=args.out_folder, inputs=tuple(args.input), embed=args.embed, from_pretrained=args.from_pretrained,
        device=args.device, cluster=args.cluster, threshold=args.threshold, embeddings=embeddings,
        meta_folder=args.meta_folder, time_format=args.time_format, metadata=args.metadata, labels=args.labels,
        save_labels=args.save_labels, num_classes=args.num_classes, dedup=args.dedup,
        gen_cluster_dirs=args.gen_cluster_dirs or args.dedup, save_embs=args.save_embs, batch_size=args.batch_size,
        num_workers=args.num_workers, progress=not args.quiet, report=args.report, review=args.review,
        sweep=args.sweep, command=tuple(argv))


# ----------------------------------------------------------------------------------------------------------------
# The run: one function per stage, plain values between them.

class _Timer:
    """Wall-clock seconds per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        log.debug("stage %s", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)


@dataclass
class _Rows:
    """The images that were read, in input order. embedding: float32 (n, d); individual: int64 (n,) 0..I-1;
    representative: bool (n,), one True per individual."""

    filenames: List[str]
    embedding: "object"
    individual: "object"
    representative: "object"
    model: str


def _collect(cfg: RunConfig, skipped: List[Tuple[str, str]]) -> List[str]:
    from inputs.collect import collect_images

    result = collect_images(list(cfg.inputs))
    skipped.extend(result.skipped)
    if result.ignored_non_images:
        log.info("passed over %d files without an image extension inside the input folders",
                 result.ignored_non_images)
    log.info("found %d images", len(result.files))
    return result.files


def _individual_ids(first: "object") -> "object":
    """Individual id per row, 0..I-1 in order of first appearance, from `first` (index of first identical row)."""
    import numpy as np

    _, ids = np.unique(first, return_inverse=True)
    return ids.astype(np.int64)


def _embed_rows(cfg: RunConfig, files: List[str], skipped: List[Tuple[str, str]], timer: _Timer,
                run_info: Dict) -> _Rows:
    """Hash, embed the distinct readable files once, and expand back to one row per readable file."""
    import numpy as np

    from dedup.exact import group_identical
    from embed import load_backend
    from embed.base import embed_files
    from embed.device import resolve_device

    with timer.stage("hash"):
        groups = group_identical(files, progress=cfg.progress)
    skipped.extend(groups.unreadable)
    representatives = groups.representatives
    with timer.stage("load_model"):
        device = resolve_device(cfg.device)
        backend = load_backend(cfg.embed, device, cfg.from_pretrained)
    run_info.update(device=device, model=backend.model_id)
    batch_size = cfg.batch_size or (128 if device.startswith("cuda") else 32)
    run_info["batch_size"] = batch_size
    log.info("embedding %d distinct images with %s on %s", representatives.size, backend.model_id, device)
    with timer.stage("embed"):
        result = embed_files(backend, [files[i] for i in representatives], batch_size=batch_size,
                             num_workers=cfg.num_workers, progress=cfg.progress)
    skipped.extend(result.skipped)
    # Map every readable file to the embedded row of its content; files whose content failed to decode drop out.
    row_of_file = np.full(len(files), -1, dtype=np.int64)
    row_of_file[representatives[result.ok_index]] = np.arange(result.ok_index.size)
    decoded_first = np.where(groups.first >= 0, row_of_file[np.maximum(groups.first, 0)], -1)
    for index in np.flatnonzero((groups.first >= 0) & (decoded_first < 0) & (groups.first != np.arange(len(files)))):
        skipped.append((files[index], f"identical to {files[groups.first[index]]}, which could not be decoded"))
    keep = np.flatnonzero(decoded_first >= 0)
    first = groups.first[keep]
    return _Rows(filenames=[files[i] for i in keep], embedding=result.embeddings[decoded_first[keep]],
                 individual=_individual_ids(first), representative=first == keep, model=backend.model_id)


def _reuse_rows(cfg: RunConfig, skipped: List[Tuple[str, str]], timer: _Timer, run_info: Dict) -> _Rows:
    """Rows from --embeddings (restricted to -i files when given); identical files still share an individual."""
    import numpy as np

    from dedup.exact import group_identical
    from outputs.embeddings import read_embeddings

    with timer.stage("load_embeddings"):
        stored = read_embeddings(cfg.embeddings)
    rows = np.arange(len(stored.filenames))
    if cfg.inputs:
        position = {os.path.normpath(name): k for k, name in enumerate(stored.filenames)}
        wanted = _collect(cfg, skipped)
        found = [position.get(os.path.normpath(name), -1) for name in wanted]
        skipped.extend((name, f"not in {cfg.embeddings}; run without --embeddings to embed it")
                       for name, k in zip(wanted, found) if k < 0)
        rows = np.asarray([k for k in found if k >= 0], dtype=np.int64)
    filenames = [stored.filenames[k] for k in rows]
    with timer.stage("hash"):
        present = [k for k, name in enumerate(filenames) if os.path.isfile(name)]
        groups = group_identical([filenames[k] for k in present])
    first = np.arange(len(filenames), dtype=np.int64)
    readable = groups.first >= 0
    first[np.asarray(present, dtype=np.int64)[readable]] = np.asarray(present, dtype=np.int64)[groups.first[readable]]
    run_info.update(device="none (embeddings reused)", model=stored.model, reused_embeddings=cfg.embeddings)
    return _Rows(filenames=filenames, embedding=stored.embedding[rows], individual=_individual_ids(first),
                 representative=first == np.arange(len(filenames)), model=stored.model)


def _default_threshold(cfg: RunConfig, model: str) -> float:
    from embed import BACKENDS, backend_of_model

    if cfg.threshold is not None:
        return cfg.threshold
    if cfg.review:  # the clusters of the reviewed run: its threshold, from the run.json beside its embeddings
        from outputs.review import reviewed_threshold

        previous = reviewed_threshold(os.path.dirname(cfg.embeddings) if cfg.embeddings else cfg.out_folder)
        if previous is not None:
            log.info("--review: using the reviewed run's threshold %.3f", previous)
            return previous
    name = cfg.embed if not cfg.embeddings else backend_of_model(model)
    if name is None:
        raise ConfigError(f"no default threshold for model '{model}' in {cfg.embeddings}; give -th explicitly")
    return BACKENDS[name].default_threshold


def _cluster_rows(cfg: RunConfig, rows: _Rows, threshold: float):
    """Cluster the representatives; returns per-row (cluster int64, cluster_size int64, sim_to_centroid float32)."""
    import numpy as np

    from clustering import run_algorithm
    from clustering.components import number_clusters
    from clustering.postprocess import centroid_similarity

    reps = np.flatnonzero(rows.representative)          # one row per individual, in individual-id order
    groups = run_algorithm(cfg.cluster, rows.embedding[reps], threshold)
    rep_cluster = number_clusters(groups, [rows.filenames[i] for i in reps])
    cluster = rep_cluster[rows.individual]
    sizes = np.bincount(rep_cluster[rep_cluster >= 0], minlength=1)
    cluster_size = np.where(cluster >= 0, sizes[np.maximum(cluster, 0)], 1)
    rep_similarity = centroid_similarity(rows.embedding[reps], rep_cluster)
    return cluster, cluster_size, rep_similarity[rows.individual], rep_cluster


def _review_rows(cfg: RunConfig, rows: _Rows, rep_cluster):
    """Apply --review to the clusters; returns per-row (cluster, cluster_size, sim_to_centroid, group name) and the
    new per-individual clusters, renumbered 0..K-1 by decreasing size."""
    import numpy as np

    from clustering.components import number_clusters
    from clustering.postprocess import centroid_similarity
    from outputs.review import apply_review, read_review

    review = read_review(cfg.review, int(rep_cluster.max(initial=-1)) + 1)
    merged, rep_group = apply_review(review, rep_cluster)
    reps = np.flatnonzero(rows.representative)
    rep_cluster = number_clusters(merged, [rows.filenames[i] for i in reps])
    log.info("--review %s: %d groups named, %d clusters dissolved -> %d clusters", cfg.review,
             len(set(review.groups.values())), len(review.dissolved), int(rep_cluster.max(initial=-1)) + 1)
    cluster = rep_cluster[rows.individual]
    sizes = np.bincount(rep_cluster[rep_cluster >= 0], minlength=1)
    cluster_size = np.where(cluster >= 0, sizes[np.maximum(cluster, 0)], 1)
    similarity = centroid_similarity(rows.embedding[reps], rep_cluster)[rows.individual]
    return cluster, cluster_size, similarity, rep_cluster, [rep_group[i] for i in rows.individual]


def _extra_columns(cfg: RunConfig, filenames: List[str], run_info: Dict):
    """Metadata and label columns for clusters.csv; returns (DataFrame (n, k), labels list or None)."""
    from inputs.metadata import metadata_columns
    from outputs.table import CONTRACT_COLUMNS

    meta = metadata_columns(filenames, cfg.time_format, cfg.meta_folder, cfg.metadata,
                            reserved=[*CONTRACT_COLUMNS, "label", "group"])
    run_info.update(meta.counts)
    for warning in meta.warnings:
        log.warning("%s", warning)
    labels = None
    if cfg.labels:
        from evaluate.labels import read_labels

        labels = read_labels(cfg.labels, filenames)
        if cfg.save_labels:
            meta.frame["label"] = labels
    return meta.frame, labels


def run(cfg: RunConfig) -> Dict:
    """Run every stage and write the output folder; returns the run.json document."""
    import numpy as np
    import pandas as pd

    from outputs.embeddings import write_embeddings
    from outputs.manifest import cluster_counts, write_manifest
    from outputs.table import order_columns, write_csv, write_skipped

    started = time.perf_counter()
    timer = _Timer()
    skipped: List[Tuple[str, str]] = []
    run_info: Dict = {}
    os.makedirs(cfg.out_folder, exist_ok=True)

    if cfg.embeddings:
        rows = _reuse_rows(cfg, skipped, timer, run_info)
        n_inputs = len(rows.filenames) + len(skipped)
    else:
        with timer.stage("collect"):
            files = _collect(cfg, skipped)
        n_inputs = len(files) + len(skipped)
        rows = _embed_rows(cfg, files, skipped, timer, run_info)
    if not rows.filenames:
        write_skipped(skipped, os.path.join(cfg.out_folder, "skipped.csv"))
        raise ConfigError(f"none of the {n_inputs} inputs could be used; the reasons are in "
                          f"{os.path.join(cfg.out_folder, 'skipped.csv')}")

    threshold = _default_threshold(cfg, rows.model)
    with timer.stage("cluster"):
        cluster, cluster_size, similarity, rep_cluster = _cluster_rows(cfg, rows, threshold)
    if cfg.review:
        with timer.stage("review"):
            cluster, cluster_size, similarity, rep_cluster, group = _review_rows(cfg, rows, rep_cluster)
    with timer.stage("silhouette"):
        from evaluate.metrics import silhouette

        run_info["quality"] = silhouette(rows.embedding[rows.representative], rep_cluster)
    with timer.stage("metadata"):
        extra, labels = _extra_columns(cfg, rows.filenames, run_info)
    if cfg.review:
        extra.insert(0, "group", group)

    with timer.stage("write"):
        table = order_columns(pd.concat([pd.DataFrame({
            "filename": rows.filenames, "cluster": cluster, "cluster_size": cluster_size,
            "sim_to_centroid": similarity, "individual": rows.individual, "representative": rows.representative,
        }), extra], axis=1))
        write_csv(table, os.path.join(cfg.out_folder, "clusters.csv"))
        write_skipped(skipped, os.path.join(cfg.out_folder, "skipped.csv"))
        write_embeddings(os.path.join(cfg.out_folder, "embeddings.pkl"), rows.filenames, rows.embedding, rows.model)
        if cfg.save_embs:
            from outputs.atomic import atomic_open

            with_embeddings = table.assign(embedding=list(rows.embedding))
            with atomic_open(os.path.join(cfg.out_folder, "clusters.pkl"), "wb") as handle:
                with_embeddings.to_pickle(handle)
        if cfg.gen_cluster_dirs:
            from outputs.folders import write_cluster_folders

            keep = rows.representative if cfg.dedup else np.ones(len(rows.filenames), dtype=bool)
            write_cluster_folders(cfg.out_folder, rows.filenames, cluster, keep)
    if cfg.report or (cfg.report is None and len(table) <= REPORT_MAX_ROWS):
        with timer.stage("report"):
            from outputs.report import write_report

            run_info["report_timings_s"] = write_report(cfg.out_folder, table, rows.embedding, threshold, rows.model)
    metrics = None
    if labels is not None:
        with timer.stage("evaluate"):
            metrics = _evaluate(cfg, labels, cluster, rows.individual, run_info["quality"])
    if cfg.sweep:
        with timer.stage("sweep"):
            run_info["sweep"] = _sweep(cfg, rows, labels)

    counts = {"inputs": n_inputs, "embedded": int(rows.representative.sum()) if not cfg.embeddings else 0,
              "rows": len(rows.filenames), "skipped": len(skipped),
              "individuals": int(rows.representative.sum()), **cluster_counts(rep_cluster, int(rep_cluster.size))}
    config = {k: v for k, v in asdict(cfg).items() if k not in ("command", "progress")}
    config.update(threshold=threshold, gen_cluster_dirs=cfg.gen_cluster_dirs)
    manifest = {"command": list(cfg.command), "parameters": config, **run_info, "counts": counts,
                "dim": int(rows.embedding.shape[1]),
                "timings_s": {**timer.seconds, "total": round(time.perf_counter() - started, 3)}}
    if metrics is not None:
        manifest["metrics"] = {level: {k: metrics[level][k] for k in ("ari", "ami", "pairwise_f1")}
                               for level in ("cluster", "individual")}
    write_manifest(os.path.join(cfg.out_folder, "run.json"), manifest)
    log.info("%d images -> %d individuals -> %d clusters (largest %d), %d individuals not clustered, %d skipped; "
             "threshold %.3f; outputs in %s", counts["rows"], counts["individuals"], counts["clusters"],
             counts["largest_cluster"], counts["singletons"], counts["skipped"], threshold, cfg.out_folder)
    return manifest


def _evaluate(cfg: RunConfig, labels, cluster, individual, quality: Dict) -> Dict:
    """metrics.json from the true labels; returns the metrics document."""
    import json

    from evaluate.metrics import evaluate_run
    from outputs.atomic import atomic_open

    metrics = {**evaluate_run(labels, cluster, individual, cfg.num_classes), "label_free": quality}
    with atomic_open(os.path.join(cfg.out_folder, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
        handle.write("\n")
    found = metrics["cluster"]["n_clusters"]
    log.info("evaluation: ARI %.3f, AMI %.3f, pairwise F1 %.3f; %d clusters found%s", metrics["cluster"]["ari"],
             metrics["cluster"]["ami"], metrics["cluster"]["pairwise_f1"], found,
             f" for {cfg.num_classes} classes (-x)" if cfg.num_classes else "")
    return metrics


def _sweep(cfg: RunConfig, rows: _Rows, labels) -> Dict:
    """--sweep: sweep.csv and sweep.png in the output folder; returns the run.json entry with the recommendation."""
    from evaluate.sweep import parse_sweep, recommend, sweep_table
    from evaluate.sweep_plot import plot_sweep
    from outputs.table import write_csv

    table = sweep_table(rows.embedding[rows.representative], parse_sweep(cfg.sweep), rows.individual, labels)
    threshold, rule = recommend(table)
    write_csv(table, os.path.join(cfg.out_folder, "sweep.csv"))
    plot_sweep(table, threshold, os.path.join(cfg.out_folder, "sweep.png"))
    log.info("sweep %s: recommended threshold %g (%s); curves in sweep.csv and sweep.png", cfg.sweep, threshold, rule)
    return {"spec": cfg.sweep, "thresholds": len(table), "recommended_threshold": threshold, "rule": rule}


# ----------------------------------------------------------------------------------------------------------------

def _user_errors() -> tuple:
    """Exception types that mean bad usage or unusable input (exit 2); imported only when an error happened."""
    from clustering import ClusteringError
    from embed import EmbedError
    from evaluate.metrics import NoLabelsError
    from evaluate.sweep import SweepError
    from inputs.collect import InputError
    from inputs.metadata import MetadataError
    from inputs.sidecars import SidecarError
    from inputs.table import TableError
    from inputs.timestamps import TimeFormatError
    from outputs.embeddings import EmbeddingsFileError
    from outputs.review import ReviewError

    return (ConfigError, InputError, EmbedError, ClusteringError, EmbeddingsFileError, TableError, NoLabelsError,
            TimeFormatError, SidecarError, MetadataError, ReviewError,
            SweepError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code (0 success, 2 bad usage/input, 1 unexpected error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the problem
        return int(exit_.code or 0)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    try:
        cfg = config_from_args(args, ["crop-cluster", *argv])
        run(cfg)
        return 0
    except KeyboardInterrupt:
        log.error("interrupted; outputs already written are complete, the rest were not written")
        return 130
    except Exception as error:  # noqa: BLE001 - the entry point turns every error into a message and exit code
        if isinstance(error, _user_errors()):
            log.error("%s", error)
            return 2
        if isinstance(error, OSError) and error.filename:
            log.error("cannot use %s: %s; check the path, its permissions and the free disk space",
                      error.filename, error.strerror or error)
            return 2
        log.error("unexpected error: %s: %s (run with -v for the traceback; please report it)",
                  type(error).__name__, error)
        log.debug("traceback", exc_info=True)
        return 1
    finally:
        root.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
