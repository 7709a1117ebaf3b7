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
from dedup import BACKEND_DEFAULTS as LINK_DEFAULTS, TRACK_MAX_DISTANCE, TRACK_MAX_SECONDS
from embed import BACKENDS

log = logging.getLogger("crop-cluster")
CHAINING_SHARE = 0.25  # warn when one cosine cluster holds more than this share of the individuals
REPORT_MAX_ROWS = 20_000  # report.html is written by default up to this many rows; --report forces it
TAXON_COLUMNS = ["cluster_taxon", "cluster_taxon_level", "cluster_taxon_share", "cluster_name", "identified"]


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
    resize: Optional[str] = None  # issue 17: who fits crops to the model input (embed.resize.RESIZERS); None = auto
    cache_dir: Optional[str] = None
    max_cluster_size: int = 0
    linkage: str = "ward"
    distance_threshold: Optional[float] = None
    n_clusters: Optional[int] = None
    pca: int = 0
    standardize: bool = False
    min_cluster_size: Optional[int] = None
    min_samples: Optional[int] = None
    min_sim_to_centroid: Optional[float] = None
    seed: int = 0
    progress: bool = True
    report: Optional[bool] = None       # None: write report.html when there are at most 20 000 rows
    review: Optional[str] = None
    sweep: Optional[str] = None
    filters: Tuple[str, ...] = ()
    dedup_threshold: Optional[float] = None      # None: the backend's calibrated default
    track_max_seconds: Optional[float] = None
    track_max_distance: Optional[float] = None
    track_min_similarity: Optional[float] = None
    taxon_share: float = 0.8                     # cluster names: the weighted share a taxon needs (-e hierarchical)
    unknown_below: Optional[float] = None        # cluster only crops less sure than this at unknown_level
    unknown_level: Optional[str] = None          # None: the model's finest level
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
        if self.resize is not None and self.resize not in ("pil", "torch", "device"):  # issue 17
            raise ConfigError(f"--resize {self.resize}: use pil, torch or device")
        if self.num_workers < -1:
            raise ConfigError(f"--num_workers {self.num_workers}: use 0 (decode in the main process), a positive "
                              f"number, or -1 for the default")
        if self.cache_dir is not None and (self.embeddings or os.path.isfile(self.cache_dir)):
            raise ConfigError(f"--cache_dir {self.cache_dir}: " + (
                "not used with --embeddings (nothing is embedded); drop one of them" if self.embeddings
                else "is a file; give a folder (created if needed)"))
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"-x {self.num_classes}: the number of classes must be at least 1")
        if self.save_labels and not self.labels:
            raise ConfigError("-sl/--save_labels needs --labels FILE.csv (columns filename,label) or --labels folders")
        self._check_clustering_options()
        self._check_individual_options()
        self._check_taxonomy_options()
        if self.sweep is not None:
            from evaluate.sweep import parse_sweep

            if self.cluster != "cosine":
                raise ConfigError(f"--sweep scores cosine thresholds; use it with -c cosine, not -c {self.cluster}")
            parse_sweep(self.sweep)
        if os.path.exists(self.out_folder) and not os.path.isdir(self.out_folder):
            raise ConfigError(f"-o {self.out_folder}: exists and is not a folder; choose another output folder")


    def _check_individual_options(self) -> None:
        """Ranges of the linking flags, flags that need timestamps or boxes, and --filter syntax."""
        checks = [
            (self.dedup_threshold is not None and not 0.0 < self.dedup_threshold <= 1.0,
             f"--dedup_threshold {self.dedup_threshold}: a cosine similarity in (0, 1]; near-duplicates sit near "
             f"the top (0.9 to 0.99)"),
            (self.track_max_seconds is not None and self.track_max_seconds < 0,
             f"--track_max_seconds {self.track_max_seconds}: use 0 (no tracking) or a number of seconds"),
            (self.track_max_seconds is not None and not self.time_format,
             "--track_max_seconds needs --time_format (tracks follow the timestamps in the file names)"),
            (self.track_max_distance is not None and self.track_max_distance <= 0,
             f"--track_max_distance {self.track_max_distance}: must be > 0 (in box sizes)"),
            (self.track_max_distance is not None and not self.meta_folder,
             "--track_max_distance needs -mf/--meta_folder (box positions come from the detector's sidecars)"),
            (self.track_min_similarity is not None and not -1.0 <= self.track_min_similarity <= 1.0,
             f"--track_min_similarity {self.track_min_similarity}: a cosine similarity lies in [-1, 1]"),
            (bool(self.filters) and not self.metadata,
             "--filter chooses crops by --metadata columns; add --metadata FILE.csv"),
        ]
        for failed, message in checks:
            if failed:
                raise ConfigError(message)
        from inputs.filters import parse_filter

        for expression in self.filters:
            parse_filter(expression)

    def _check_taxonomy_options(self) -> None:
        """-e hierarchical needs its model file; the ranges of --taxon_share and --unknown_below."""
        checks = [
            (self.embed == "hierarchical" and not self.from_pretrained and not self.embeddings,
             "-e hierarchical needs -fp MODEL.pt2 (torch.export), MODEL.pt (TorchScript) or MODEL.onnx, with "
             "MODEL.json beside it; see README 'Hierarchical taxonomic model' for how to export one"),
            (not 0.0 < self.taxon_share <= 1.0,
             f"--taxon_share {self.taxon_share}: the weighted share of a cluster's members that must agree on a "
             f"taxon lies in (0, 1] (default 0.8)"),
            (self.unknown_below is not None and not 0.0 < self.unknown_below <= 1.0,
             f"--unknown_below {self.unknown_below}: a probability in (0, 1], e.g. 0.9"),
            (self.unknown_level is not None and self.unknown_below is None,
             "--unknown_level chooses the level --unknown_below reads; give --unknown_below P too"),
        ]
        for failed, message in checks:
            if failed:
                raise ConfigError(message)

    def _check_clustering_options(self) -> None:
        """Ranges of the clustering flags, and algorithm-specific flags given to an algorithm that ignores them."""
        from clustering import LINKAGES

        checks = [
            (self.max_cluster_size < 0, f"--max_cluster_size {self.max_cluster_size}: use 0 (off) or a size >= 2"),
            (self.max_cluster_size == 1, "--max_cluster_size 1 would leave every crop unclustered; use >= 2"),
            (self.linkage not in LINKAGES, f"--linkage {self.linkage}: choose one of {', '.join(LINKAGES)}"),
            (self.distance_threshold is not None and self.distance_threshold <= 0,
             f"--distance_threshold {self.distance_threshold}: must be > 0"),
            (self.n_clusters is not None and self.n_clusters < 1, f"--n_clusters {self.n_clusters}: must be >= 1"),
            (self.pca < 0, f"--pca {self.pca}: use 0 (no PCA) or a number of components >= 1"),
            (self.min_cluster_size is not None and self.min_cluster_size < 2,
             f"--min_cluster_size {self.min_cluster_size}: a cluster has at least 2 members; use >= 2"),
            (self.min_samples is not None and self.min_samples < 1, f"--min_samples {self.min_samples}: must be >= 1"),
            (self.min_sim_to_centroid is not None and not -1.0 <= self.min_sim_to_centroid <= 1.0,
             f"--min_sim_to_centroid {self.min_sim_to_centroid}: a cosine similarity lies in [-1, 1]"),
        ]
        k_given = self.n_clusters is not None or self.num_classes is not None
        checks += [  # checked here, before any embedding, rather than when the algorithm runs
            (self.cluster == "kmeans" and not k_given,
             "-c kmeans needs the number of clusters: give --n_clusters K (or -x K)"),
            (self.cluster == "agglomerative" and self.distance_threshold is None and not k_given,
             "-c agglomerative needs --distance_threshold D (stop merging at that linkage distance) or "
             "--n_clusters K (or -x K)"),
        ]
        for failed, message in checks:
            if failed:
                raise ConfigError(message)
        specific = {"max_cluster_size": (self.max_cluster_size != 0, "cosine"),
                    "linkage": (self.linkage != "ward", "agglomerative"),
                    "distance_threshold": (self.distance_threshold is not None, "agglomerative"),
                    "pca": (self.pca != 0, "agglomerative"), "standardize": (self.standardize, "agglomerative"),
                    "n_clusters": (self.n_clusters is not None, "kmeans or agglomerative"),
                    "min_samples": (self.min_samples is not None, "hdbscan")}
        for flag, (given, algorithms) in specific.items():
            if given and self.cluster not in algorithms.split(" or "):
                raise ConfigError(f"--{flag} applies to -c {algorithms}, not to -c {self.cluster}; drop it or "
                                  f"choose that algorithm")


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
        help="embedding model: dino (transformers, default facebook/dinov2-base), lite0 (bundled EfficientNet-Lite0, "
             "offline) or hierarchical (your taxonomic classifier: per-level predictions and taxon cluster names); "
             "default dino")
    add("-fp", "--from_pretrained", "--from-pretrained",
        help="model to load: hub id or local folder for dino; a weights file for lite0; MODEL.pt2, MODEL.pt or "
             "MODEL.onnx with MODEL.json beside it for hierarchical")
    add("-kp", "--dedup", action="store_true",
        help="keep one representative per individual in the cluster folders (implies -gs)")
    add("-gs", "--gen_cluster_dirs", "--gen-cluster-dirs", action="store_true",
        help="copy images into OUT/clusters/<cluster>/ and OUT/clusters/not-clustered/ (originals untouched)")
    add("-c", "--cluster", default="cosine", choices=list(ALGORITHMS),
        help="clustering algorithm: cosine (default; exact single linkage at -th), agglomerative, kmeans, hdbscan")
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
    group = parser.add_argument_group("clustering options (see README, Clustering algorithms)")
    group.add_argument("--max_cluster_size", "--max-cluster-size", type=int, default=0, metavar="N",
                       help="cosine: split clusters of more than N individuals at their weakest links (chaining "
                            "guard); default 0 = off")
    group.add_argument("--linkage", default="ward", help="agglomerative: ward (default), average or complete")
    group.add_argument("--distance_threshold", "--distance-threshold", type=float, metavar="D",
                       help="agglomerative: stop merging at this linkage distance (ward: Euclidean in the feature "
                            "space; average/complete: cosine distance)")
    group.add_argument("--n_clusters", "--n-clusters", type=int, metavar="K",
                       help="kmeans: k; agglomerative: number of clusters instead of --distance_threshold "
                            "(default: -x when given)")
    group.add_argument("--pca", type=int, default=0, metavar="N",
                       help="agglomerative: reduce to N principal components first (default 0 = no PCA)")
    group.add_argument("--standardize", action="store_true",
                       help="agglomerative: standardise each dimension (StandardScaler) before PCA")
    group.add_argument("--min_cluster_size", "--min-cluster-size", type=int, metavar="N",
                       help="clusters with fewer than N individuals become -1 (default: no such filter, a cluster "
                            "needs 2 crops; hdbscan: its min_cluster_size, default 5)")
    group.add_argument("--min_samples", "--min-samples", type=int, metavar="N",
                       help="hdbscan: neighbourhood size for core points (default: --min_cluster_size)")
    group.add_argument("--min_sim_to_centroid", "--min-sim-to-centroid", type=float, metavar="S",
                       help="members whose cosine similarity to their cluster's centroid is below S become -1")
    group.add_argument("--seed", type=int, default=0, help="random seed for kmeans, PCA and hdbscan (default 0)")
    add("--batch_size", "--batch-size", type=int, help="images per model call (default 32 on CPU, 128 on GPU)")
    add("--num_workers", "--num-workers", type=int, default=-1,
        help="processes decoding images (default: 0 on 2-core CPUs, up to 8 with a GPU)")
    add("--resize", choices=["pil", "torch", "device"],  # issue 17
        help="who fits crops to the model input: pil (default on CPU: reproducible), torch (torch's resize in the "
             "decoding workers, faster), device (the model's device fits each batch; default on a GPU)")
    add("--cache_dir", "--cache-dir", metavar="DIR",
        help="embedding cache folder, shared by runs with any -o (default: OUT/embed_cache); cached crops are never "
             "embedded again, and a killed run resumes from its last checkpoint")
    add("--report", action="store_true", default=None,
        help="write OUT/report.html, a review page with thumbnails (default: on up to 20 000 rows)")
    add("--no_report", "--no-report", dest="report", action="store_false", help="do not write report.html")
    add("--review", metavar="review.csv",
        help="apply a review exported from report.html: merged groups, dissolved clusters and a group column in "
             "clusters.csv; reuses OUT/embeddings.pkl (or --embeddings) and the reviewed run's threshold")
    add("--sweep", metavar="START:STOP:STEP",
        help="also score every threshold START, START+STEP, ..., STOP from one similarity graph: writes sweep.csv, "
             "sweep.png and a recommended threshold in run.json, e.g. 0.70:0.95:0.01")
    links = parser.add_argument_group("individuals (see README, Individuals)")
    links.add_argument("--dedup_threshold", "--dedup-threshold", type=float, metavar="T",
                       help="near-duplicates: crops with cosine >= T are one individual (default per model: "
                            + ", ".join(f"{name} {d.dedup_threshold:.2f}" for name, d in LINK_DEFAULTS.items()) + ")")
    links.add_argument("--track_max_seconds", "--track-max-seconds", type=float, metavar="S",
                       help="with --time_format: link the same insect across frames at most S seconds apart "
                            f"(default {TRACK_MAX_SECONDS:g}; 0 = no tracking)")
    links.add_argument("--track_max_distance", "--track-max-distance", type=float, metavar="D",
                       help="with -mf: box centres of a tracked insect at most D box sizes apart "
                            f"(default {TRACK_MAX_DISTANCE:g})")
    links.add_argument("--track_min_similarity", "--track-min-similarity", type=float, metavar="S",
                       help="cosine similarity a track link needs at least (default per model: "
                            + ", ".join(f"{name} {d.track_min_similarity:.2f}" for name, d in LINK_DEFAULTS.items())
                            + ")")
    add("--filter", dest="filters", action="append", default=[], metavar="EXPR",
        help="cluster only crops whose --metadata columns pass EXPR, e.g. \"ood_score > 0.4\" (COLUMN OP VALUE "
             "joined by and/or; repeatable, all must hold); the others go to skipped.csv with the reason")
    taxa = parser.add_argument_group("taxonomy, with -e hierarchical (see README, Hierarchical taxonomic model)")
    taxa.add_argument("--taxon_share", "--taxon-share", type=float, default=0.8, metavar="S",
                      help="name each cluster after the deepest taxon that a probability-weighted share S of its "
                           "members agree on (default 0.8)")
    taxa.add_argument("--unknown_below", "--unknown-below", type=float, metavar="P",
                      help="cluster only the crops whose top-1 probability is below P (the unknowns); the others "
                           "are listed in clusters.csv with their prediction, identified=True, cluster -1")
    taxa.add_argument("--unknown_level", "--unknown-level", metavar="LEVEL",
                      help="the level whose probability --unknown_below reads (default: the finest, e.g. species)")
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
        num_workers=args.num_workers, resize=args.resize, cache_dir=args.cache_dir,
        max_cluster_size=args.max_cluster_size,
        linkage=args.linkage,
        distance_threshold=args.distance_threshold, n_clusters=args.n_clusters, pca=args.pca,
        standardize=args.standardize, min_cluster_size=args.min_cluster_size, min_samples=args.min_samples,
        min_sim_to_centroid=args.min_sim_to_centroid, seed=args.seed, progress=not args.quiet, report=args.report,
        review=args.review, sweep=args.sweep, filters=tuple(args.filters), dedup_threshold=args.dedup_threshold,
        track_max_seconds=args.track_max_seconds, track_max_distance=args.track_max_distance,
        track_min_similarity=args.track_min_similarity, taxon_share=args.taxon_share,
        unknown_below=args.unknown_below, unknown_level=args.unknown_level, command=tuple(argv))


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
    representative: bool (n,), one True per individual; distinct: bool (n,), the first row of each identical file
    content (the rows whose embeddings differ); predictions: float32 (n, 2L) per-level class index and probability
    from a hierarchical model (embed/hierarchical.py), else None."""

    filenames: List[str]
    embedding: "object"
    individual: "object"
    representative: "object"
    model: str
    distinct: "object"
    predictions: "object" = None

    def representative_rows(self):
        """int64 (I,): the representative's row of each individual, in individual-id order."""
        import numpy as np

        chosen = np.flatnonzero(self.representative)
        ordered = np.empty(chosen.size, dtype=np.int64)
        ordered[self.individual[chosen]] = chosen
        return ordered


def _take(embedding, index):
    """embedding[index] (float32 (len(index), d)), without copying N x d when `index` is every row in order, as
    it is whenever no two crops were linked (index: int64 positions)."""
    import numpy as np

    if index.size == embedding.shape[0] and np.array_equal(index, np.arange(index.size)):
        return embedding
    return embedding[index]


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
    from embed import load_backend, model_id
    from embed.cache import CACHE_FOLDER, EmbeddingCache, embed_with_cache
    from embed.device import resolve_device

    with timer.stage("hash"):
        groups = group_identical(files, progress=cfg.progress)
    skipped.extend(groups.unreadable)
    representatives = groups.representatives
    model_path = cfg.from_pretrained or BACKENDS[cfg.embed].default_model
    cache = EmbeddingCache(cfg.cache_dir or os.path.join(cfg.out_folder, CACHE_FOLDER), cfg.embed, model_path)
    with timer.stage("embed"):
        digests = [groups.digests[i] for i in representatives]
        cached = embed_with_cache(cache, [files[i] for i in representatives], digests,
                                  lambda: load_backend(cfg.embed, resolve_device(cfg.device), cfg.from_pretrained),
                                  cfg.batch_size, cfg.num_workers, cfg.progress, cfg.resize)
    result = cached.result
    run_info.update(model=model_id(cfg.embed, model_path), **cached.info)
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
                 individual=_individual_ids(first), representative=first == keep, model=run_info["model"],
                 distinct=first == keep,
                 predictions=None if result.extras is None else result.extras[decoded_first[keep]])


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
    embedding = _take(stored.embedding, rows)
    digests = [""] * len(filenames)
    for k, digest in zip(present, groups.digests):
        digests[k] = digest
    return _Rows(filenames=filenames, embedding=embedding, individual=_individual_ids(first),
                 representative=first == np.arange(len(filenames)), model=stored.model,
                 distinct=first == np.arange(len(filenames)),
                 predictions=_cached_predictions(cfg, stored.model, digests))


def _cached_predictions(cfg: RunConfig, model: str, digests: List[str]):
    """A hierarchical model's per-crop predictions for --embeddings rows, from the embedding cache of the run that
    wrote them (beside the embeddings file), by file content; None for other models or when some are missing."""
    import numpy as np

    from embed import backend_of_model
    from embed.cache import CACHE_FOLDER, EmbeddingCache

    if backend_of_model(model) != "hierarchical":
        return None
    from embed.taxonomy import sidecar_path

    if not os.path.isfile(sidecar_path(model.split(":", 1)[1])):
        log.warning("%s (the sidecar of %s) is gone: clusters.csv gets no predictions or cluster names",
                    sidecar_path(model.split(":", 1)[1]), model)
        return None
    cache = EmbeddingCache(os.path.join(os.path.dirname(os.path.abspath(cfg.embeddings)), CACHE_FOLDER),
                           "hierarchical", model.split(":", 1)[1])
    lookup = cache.lookup(digests)
    if lookup.extras is None or not lookup.found.all():
        log.warning("the per-level predictions of %d of %d crops are not in %s (moved, deleted, or the model or its "
                    "sidecar changed): clusters.csv gets no predictions or cluster names; run -e hierarchical -fp "
                    "MODEL on the images to predict again", int((~lookup.found).sum()), len(digests), cache.folder)
        return None
    return lookup.extras.astype(np.float32)


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


def _cluster_params(cfg: RunConfig, threshold: float, device: str):
    """ClusterParams as resolved for this run: algorithm-dependent defaults filled in from -x and the algorithm."""
    from clustering import ClusterParams

    n_clusters = cfg.n_clusters
    if n_clusters is None and cfg.cluster in ("kmeans", "agglomerative") and cfg.distance_threshold is None:
        n_clusters = cfg.num_classes
    min_cluster_size = cfg.min_cluster_size or (5 if cfg.cluster == "hdbscan" else 1)
    return ClusterParams(threshold=threshold, max_cluster_size=cfg.max_cluster_size, linkage=cfg.linkage,
                         distance_threshold=cfg.distance_threshold, n_clusters=n_clusters, pca=cfg.pca,
                         standardize=cfg.standardize, min_cluster_size=min_cluster_size, min_samples=cfg.min_samples,
                         device=device, seed=cfg.seed)


def _cluster_rows(cfg: RunConfig, rows: _Rows, threshold: float, forest=None) -> Dict:
    """Cluster the individuals, apply the post-filters and number the clusters.

    `cosine` links individuals through every distinct crop of theirs (two individuals are linked when any of their
    crops are: the poses of one insect bridge to others, as they did before the crops were grouped into
    individuals), reading the shared spanning forest over the distinct crops (`forest`, from `_shared_forest`);
    the other algorithms cluster one vector per individual, its representative's.

    Returns per-row arrays cluster (int64), cluster_size (int64), sim_to_centroid (float32), the per-individual
    cluster ids `rep_cluster`, and `info` (algorithm, parameters and what the algorithm reported) for run.json.
    """
    import numpy as np

    from clustering import ALGORITHMS, run_algorithm
    from clustering.components import number_clusters
    from clustering.postprocess import drop_far_members, drop_small_groups
    from embed.device import resolve_device

    device = resolve_device(cfg.device) if cfg.cluster in ("cosine", "kmeans") else "cpu"
    params = _cluster_params(cfg, threshold, device)
    reps = rows.representative_rows()
    vectors = _take(rows.embedding, reps)
    if ALGORITHMS[cfg.cluster].links_members:
        members = np.flatnonzero(rows.distinct)
        result = run_algorithm(cfg.cluster, _take(rows.embedding, members), params,
                               item_of_row=rows.individual[members], forest=forest)
    else:
        result = run_algorithm(cfg.cluster, vectors, params)
    groups = result.groups
    if cfg.min_sim_to_centroid is not None:
        groups = drop_far_members(vectors, groups, cfg.min_sim_to_centroid)
    groups = drop_small_groups(groups, params.min_cluster_size)
    rep_cluster = number_clusters(groups, [rows.filenames[i] for i in reps], np.bincount(rows.individual))
    used = {name: getattr(params, name) for name in ALGORITHMS[cfg.cluster].uses}
    info = {"algorithm": cfg.cluster, "parameters": used, "min_cluster_size": params.min_cluster_size,
            "min_sim_to_centroid": cfg.min_sim_to_centroid, "device": device, **result.info}
    return {**_per_row(rows, vectors, rep_cluster), "info": info, "forest": result.forest}


def _per_row(rows: _Rows, vectors, rep_cluster) -> Dict:
    """Per-row cluster (int64), cluster_size (int64) and sim_to_centroid (float32) from the per-individual clusters
    `rep_cluster` (int64, -1 = not clustered) and the representatives' embeddings `vectors` (float32 (I, d))."""
    import numpy as np

    from clustering.postprocess import centroid_similarity

    cluster = rep_cluster[rows.individual]
    sizes = np.bincount(rep_cluster[rep_cluster >= 0], minlength=1)
    return {"cluster": cluster, "cluster_size": np.where(cluster >= 0, sizes[np.maximum(cluster, 0)], 1),
            "sim_to_centroid": centroid_similarity(vectors, rep_cluster)[rows.individual], "rep_cluster": rep_cluster}


def _warn_if_chaining(cfg: RunConfig, counts: Dict) -> None:
    """A giant cluster usually means single linkage chained; say what to do about it."""
    if cfg.cluster == "cosine" and not cfg.max_cluster_size and counts["individuals"] >= 20 \
            and counts["largest_cluster_share"] > CHAINING_SHARE:
        log.warning("the largest cluster holds %.0f%% of all individuals (%d): single linkage may have chained "
                    "different kinds together; raise -th or cap clusters with --max_cluster_size N",
                    100 * counts["largest_cluster_share"], counts["largest_cluster"])


def _review_rows(cfg: RunConfig, rows: _Rows, clusters: Dict):
    """Apply --review to the clusters of `_cluster_rows`; returns (the same per-row dict with merged/dissolved
    clusters renumbered 0..K-1 by decreasing size, group name per row)."""
    import numpy as np

    from clustering.components import number_clusters
    from outputs.review import apply_review, read_review

    rep_cluster = clusters["rep_cluster"]
    review = read_review(cfg.review, int(rep_cluster.max(initial=-1)) + 1)
    merged, rep_group = apply_review(review, rep_cluster)
    reps = rows.representative_rows()
    rep_cluster = number_clusters(merged, [rows.filenames[i] for i in reps], np.bincount(rows.individual))
    log.info("--review %s: %d groups named, %d clusters dissolved -> %d clusters", cfg.review,
             len(set(review.groups.values())), len(review.dissolved), int(rep_cluster.max(initial=-1)) + 1)
    reviewed = {**clusters, **_per_row(rows, _take(rows.embedding, reps), rep_cluster)}
    return reviewed, [rep_group[i] for i in rows.individual]


def _extra_columns(cfg: RunConfig, filenames: List[str], run_info: Dict, taxonomy=None):
    """Metadata and label columns for clusters.csv; returns (MetadataColumns with the label column in its frame,
    labels list or None)."""
    from inputs.metadata import metadata_columns
    from outputs.table import CONTRACT_COLUMNS

    meta = metadata_columns(filenames, cfg.time_format, cfg.meta_folder, cfg.metadata,
                            reserved=[*CONTRACT_COLUMNS, "label", "group", "linked_by", *TAXON_COLUMNS,
                                      *(f"{kind}_{level}" for level in (taxonomy.levels if taxonomy else ())
                                        for kind in ("pred", "prob"))])
    run_info.update(meta.counts)
    for warning in meta.warnings:
        log.warning("%s", warning)
    labels = None
    if cfg.labels:
        from evaluate.labels import read_labels

        labels = read_labels(cfg.labels, filenames)
        if cfg.save_labels:
            meta.frame["label"] = labels
    return meta, labels


def _filter_mask(cfg: RunConfig, filenames: List[str], skipped: List[Tuple[str, str]]):
    """--filter: bool (n,) of the files to cluster; the others are added to `skipped` with the reason."""
    import numpy as np

    if not cfg.filters:
        return np.ones(len(filenames), dtype=bool)
    from inputs.filters import evaluate, exclusion_reasons, parse_filter
    from inputs.table import read_table

    filters = [parse_filter(text) for text in cfg.filters]
    frame = read_table(cfg.metadata, filenames).frame
    keep = evaluate(filters, frame, cfg.metadata)
    skipped.extend(zip([filenames[i] for i in np.flatnonzero(~keep)], exclusion_reasons(filters, frame, keep)))
    log.info("--filter kept %d of %d images", int(keep.sum()), len(filenames))
    return keep


def _keep_rows(rows: _Rows, keep) -> _Rows:
    """The rows where `keep` (bool (n,)) holds; exact-duplicate individuals renumbered, the first kept copy of each
    its representative."""
    import numpy as np

    if keep.all():
        return rows
    _, first, individual = np.unique(rows.individual[keep], return_index=True, return_inverse=True)
    representative = np.zeros(individual.size, dtype=bool)
    representative[first] = True
    return _Rows([name for name, k in zip(rows.filenames, keep) if k], rows.embedding[keep],
                 individual.astype(np.int64), representative, rows.model, distinct=representative,
                 predictions=None if rows.predictions is None else rows.predictions[keep])


def _check_model_files(cfg: RunConfig) -> None:
    """-e hierarchical: the model file must exist and its sidecar be valid (and --unknown_level one of its levels),
    checked before anything is hashed or embedded."""
    if cfg.embed != "hierarchical" or cfg.embeddings:
        return
    from embed.hierarchical import require_model_file
    from embed.taxonomy import load_taxonomy, sidecar_path

    require_model_file(cfg.from_pretrained)
    taxonomy = load_taxonomy(sidecar_path(cfg.from_pretrained))
    if cfg.unknown_level:
        taxonomy.level_index(cfg.unknown_level)


def _taxonomy(cfg: RunConfig, rows: _Rows):
    """The Taxonomy of the hierarchical model behind the rows' per-level predictions; None when there are none."""
    if rows.predictions is None:
        if cfg.unknown_below is not None:
            raise ConfigError("--unknown_below reads each crop's predicted probability, which only -e hierarchical "
                              "computes" + (f"; {cfg.embeddings} holds embeddings only: run -e hierarchical -fp "
                                            f"MODEL on the images (cached embeddings are reused)"
                                            if cfg.embeddings else ""))
        return None
    from embed.taxonomy import load_taxonomy, sidecar_path

    taxonomy = load_taxonomy(sidecar_path(rows.model.split(":", 1)[1]))
    if rows.predictions.shape[1] != 2 * len(taxonomy.levels):
        raise ConfigError(f"the cached predictions have {rows.predictions.shape[1] // 2} levels but "
                          f"{taxonomy.source} lists {len(taxonomy.levels)}; delete the embedding cache folder to "
                          f"predict again")
    if cfg.unknown_level:
        taxonomy.level_index(cfg.unknown_level)
    return taxonomy


def _split_identified(cfg: RunConfig, rows: _Rows, taxonomy, run_info: Dict) -> Tuple[_Rows, _Rows]:
    """--unknown_below: (the rows to cluster: top-1 probability below P at the chosen level, the identified rest)."""
    from embed.hierarchical import split_predictions

    level = cfg.unknown_level or taxonomy.levels[0]
    _, probability = split_predictions(rows.predictions, len(taxonomy.levels))
    known = probability[:, taxonomy.level_index(level)] >= cfg.unknown_below
    run_info["identified"] = {"level": level, "min_probability": cfg.unknown_below, "crops": int(known.sum())}
    log.info("--unknown_below %g: %d of %d crops are identified at %s level and listed, not clustered",
             cfg.unknown_below, int(known.sum()), known.size, level)
    if known.all():
        raise ConfigError(f"every one of the {known.size} crops has a {level} probability of at least "
                          f"{cfg.unknown_below:g}, so nothing is left to cluster; raise --unknown_below")
    return _keep_rows(rows, ~known), _keep_rows(rows, known)


def _prediction_columns(taxonomy, rows: _Rows) -> Dict[str, object]:
    """pred_<level> (class name) and prob_<level> per level, coarsest first."""
    import numpy as np

    from embed.hierarchical import split_predictions

    index, probability = split_predictions(rows.predictions, len(taxonomy.levels))
    columns: Dict[str, object] = {}
    for level in reversed(range(len(taxonomy.levels))):
        columns[f"pred_{taxonomy.levels[level]}"] = np.asarray(taxonomy.classes[level], dtype=object)[index[:, level]]
        columns[f"prob_{taxonomy.levels[level]}"] = np.round(probability[:, level], 4)
    return columns


def _taxon_columns(cfg: RunConfig, taxonomy, rows: _Rows, cluster, run_info: Dict) -> "object":
    """clusters.csv columns of the clustered rows: per-level predictions and the cluster names (clustering/naming)."""
    import numpy as np
    import pandas as pd

    from clustering.naming import name_columns
    from embed.hierarchical import split_predictions

    index, probability = split_predictions(rows.predictions, len(taxonomy.levels))
    names = name_columns(cluster, rows.individual, index, probability, taxonomy.levels, taxonomy.classes,
                         cfg.taxon_share)
    ids, first_row = np.unique(cluster, return_index=True)
    named_at = pd.Series(names["cluster_taxon_level"][first_row[ids >= 0]]).value_counts()
    run_info["taxonomy"] = {"sidecar": taxonomy.source, "levels": list(taxonomy.levels), "share": cfg.taxon_share,
                            "clusters_named_at": {level or "none": int(count) for level, count in named_at.items()}}
    frame = pd.DataFrame({**_prediction_columns(taxonomy, rows), **names})
    if cfg.unknown_below is not None:
        frame["identified"] = False
    return frame


def _identified_table(cfg: RunConfig, taxonomy, rows: _Rows, first_individual: int) -> "object":
    """clusters.csv rows of the identified crops (--unknown_below): not clustered, named after their prediction."""
    import numpy as np
    import pandas as pd

    from embed.hierarchical import split_predictions

    level = taxonomy.level_index(cfg.unknown_level or taxonomy.levels[0])
    index, probability = split_predictions(rows.predictions, len(taxonomy.levels))
    taxon = np.asarray(taxonomy.classes[level], dtype=object)[index[:, level]]
    meta, _ = _extra_columns(cfg, rows.filenames, {}, taxonomy)
    n = len(rows.filenames)
    table = pd.DataFrame({
        "filename": rows.filenames, "cluster": np.full(n, -1), "cluster_size": np.ones(n, dtype=np.int64),
        "sim_to_centroid": np.full(n, np.nan, np.float32), "individual": rows.individual + first_individual,
        "representative": rows.representative, "dist_to_centroid": np.full(n, np.nan, np.float32),
        "linked_by": np.where(rows.representative, "", "exact"), **_prediction_columns(taxonomy, rows),
        "cluster_taxon": taxon, "cluster_taxon_level": taxonomy.levels[level],
        "cluster_taxon_share": np.round(probability[:, level], 4),
        "cluster_name": [f"{name} (identified, p={p:.2f})" for name, p in zip(taxon, probability[:, level])],
        "identified": True})
    return pd.concat([table, meta.frame], axis=1)


def _link_defaults(cfg: RunConfig, rows: _Rows):
    """The calibrated linking defaults of the run's backend (None for a model without them)."""
    from embed import backend_of_model

    return LINK_DEFAULTS.get(cfg.embed if not cfg.embeddings else backend_of_model(rows.model))


def _dedup_threshold(cfg: RunConfig, rows: _Rows) -> Optional[float]:
    """--dedup_threshold, else the backend's calibrated default, else None (no near-duplicate linking)."""
    defaults = _link_defaults(cfg, rows)
    return cfg.dedup_threshold or (defaults.dedup_threshold if defaults else None)


def _shared_forest(cfg: RunConfig, rows: _Rows, threshold: float, run_info: Dict):
    """The one similarity-graph pass of the run: the spanning forest over the distinct crops, built at the lowest
    threshold any stage needs (near-duplicates, `-c cosine`, `--sweep`); None when no stage needs one."""
    import numpy as np

    from clustering.forest import spanning_forest
    from embed.device import resolve_device

    needed = [t for t in (_dedup_threshold(cfg, rows),) if t is not None]
    if cfg.cluster == "cosine":
        needed.append(threshold)
        if cfg.sweep:
            from evaluate.sweep import parse_sweep

            needed.append(float(parse_sweep(cfg.sweep).min()))
    if not needed:
        return None
    stats: Dict = {}
    forest = spanning_forest(_take(rows.embedding, np.flatnonzero(rows.distinct)), min(needed),
                             resolve_device(cfg.device), stats=stats)
    run_info["graph"] = {**stats, "forest_threshold": forest.threshold, "forest_edges": int(forest.sims.size),
                         "rows": forest.n}
    return forest


def _link_rows(cfg: RunConfig, rows: _Rows, meta, threshold: float, run_info: Dict, forest=None):
    """Individuals from exact, near-duplicate and track links (dedup/individuals.py); returns (rows with the new
    individual and representative, linked_by per row). meta: MetadataColumns of the rows; forest: the shared
    spanning forest over the distinct crops (near-duplicates are its links at or above the dedup threshold)."""
    import dataclasses

    import numpy as np

    from dedup.individuals import LinkParams, link_individuals
    from embed.device import resolve_device

    defaults = _link_defaults(cfg, rows)
    dedup_threshold = _dedup_threshold(cfg, rows)
    if dedup_threshold is None:
        log.info("no calibrated near-duplicate threshold for model %s: only exact duplicates and tracks are linked "
                 "(give --dedup_threshold to link near-duplicates)", rows.model)
    params = LinkParams(
        dedup_threshold=dedup_threshold,
        track_max_seconds=TRACK_MAX_SECONDS if cfg.track_max_seconds is None else cfg.track_max_seconds,
        track_max_distance=cfg.track_max_distance or TRACK_MAX_DISTANCE,
        track_min_similarity=(cfg.track_min_similarity if cfg.track_min_similarity is not None
                              else defaults.track_min_similarity if defaults else threshold),
        device=resolve_device(cfg.device))
    exact_first = np.flatnonzero(rows.representative)[rows.individual]
    found = link_individuals(rows.embedding, exact_first, rows.filenames, meta.sources, meta.seconds, meta.boxes,
                             params, forest)
    run_info["individuals"] = {"parameters": dataclasses.asdict(params), **found.counts}
    log.info("%d images -> %d individuals (linked: %d exact, %d near-duplicate, %d track)", len(rows.filenames),
             found.counts["individuals"], found.counts["linked_exact"], found.counts["linked_near"],
             found.counts["linked_track"])
    return dataclasses.replace(rows, individual=found.individual, representative=found.representative), \
        found.linked_by


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
    _check_model_files(cfg)

    if cfg.embeddings:
        rows = _reuse_rows(cfg, skipped, timer, run_info)
        rows = _keep_rows(rows, _filter_mask(cfg, rows.filenames, skipped))
        n_inputs = len(rows.filenames) + len(skipped)
    else:
        with timer.stage("collect"):
            files = _collect(cfg, skipped)
            files = [name for name, keep in zip(files, _filter_mask(cfg, files, skipped)) if keep]
        n_inputs = len(files) + len(skipped)
        rows = _embed_rows(cfg, files, skipped, timer, run_info)
    if not rows.filenames:
        write_skipped(skipped, os.path.join(cfg.out_folder, "skipped.csv"))
        raise ConfigError(f"none of the {n_inputs} inputs could be used; the reasons are in "
                          f"{os.path.join(cfg.out_folder, 'skipped.csv')}")

    n_embedded = int(rows.distinct.sum()) if not cfg.embeddings else 0
    threshold = _default_threshold(cfg, rows.model)
    taxonomy, identified = _taxonomy(cfg, rows), None
    if cfg.unknown_below is not None:
        rows, identified = _split_identified(cfg, rows, taxonomy, run_info)
    with timer.stage("metadata"):
        meta, labels = _extra_columns(cfg, rows.filenames, run_info, taxonomy)
    with timer.stage("graph"):
        forest = _shared_forest(cfg, rows, threshold, run_info)
    with timer.stage("individuals"):
        rows, linked_by = _link_rows(cfg, rows, meta, threshold, run_info, forest)
    with timer.stage("cluster"):
        clusters = _cluster_rows(cfg, rows, threshold, forest)
    if cfg.review:
        with timer.stage("review"):
            clusters, group = _review_rows(cfg, rows, clusters)
    cluster, rep_cluster = clusters["cluster"], clusters["rep_cluster"]
    with timer.stage("silhouette"):
        from evaluate.metrics import silhouette

        run_info["quality"] = silhouette(_take(rows.embedding, rows.representative_rows()), rep_cluster)
    extra = meta.frame
    if cfg.review:
        extra.insert(0, "group", group)
    if taxonomy is not None:
        extra = pd.concat([extra, _taxon_columns(cfg, taxonomy, rows, cluster, run_info)], axis=1)
    filenames, embedding = rows.filenames, rows.embedding     # every row read: the clustered and the identified
    if identified is not None:
        filenames, embedding = filenames + identified.filenames, np.concatenate([embedding, identified.embedding])

    with timer.stage("write"):
        table = order_columns(pd.concat([pd.DataFrame({
            "filename": rows.filenames, "cluster": cluster, "cluster_size": clusters["cluster_size"],
            "sim_to_centroid": clusters["sim_to_centroid"], "individual": rows.individual,
            "representative": rows.representative, "dist_to_centroid": 1.0 - clusters["sim_to_centroid"],
            "linked_by": linked_by,
        }), extra], axis=1))
        if identified is not None:
            table = pd.concat([table, _identified_table(cfg, taxonomy, identified, int(rows.individual.max()) + 1)],
                              ignore_index=True)
        write_csv(table, os.path.join(cfg.out_folder, "clusters.csv"))
        write_skipped(skipped, os.path.join(cfg.out_folder, "skipped.csv"))
        write_embeddings(os.path.join(cfg.out_folder, "embeddings.pkl"), filenames, embedding, rows.model)
        if cfg.save_embs:
            from outputs.atomic import atomic_open

            with_embeddings = table.assign(embedding=list(embedding))
            with atomic_open(os.path.join(cfg.out_folder, "clusters.pkl"), "wb") as handle:
                with_embeddings.to_pickle(handle)
        if cfg.gen_cluster_dirs:
            from outputs.folders import write_cluster_folders

            keep = table["representative"].to_numpy(bool) if cfg.dedup else np.ones(len(table), dtype=bool)
            taxa = table["cluster_taxon"].where(table["identified"], "").tolist() if identified is not None else None
            write_cluster_folders(cfg.out_folder, filenames, table["cluster"].to_numpy(np.int64), keep, taxa)
    if cfg.report or (cfg.report is None and len(table) <= REPORT_MAX_ROWS):
        with timer.stage("report"):
            from outputs.report import write_report

            run_info["report_timings_s"] = write_report(cfg.out_folder, table, embedding, threshold, rows.model)
    metrics = None
    if labels is not None:
        with timer.stage("evaluate"):
            metrics = _evaluate(cfg, labels, cluster, rows.individual, run_info["quality"])
    if cfg.sweep:
        with timer.stage("sweep"):
            run_info["sweep"] = _sweep(cfg, rows, labels, clusters["forest"])

    cache_counts = run_info.get("embedding_cache", {})
    counts = {"inputs": n_inputs, "embedded": n_embedded,
              "embeddings_computed": cache_counts.get("computed", 0),
              "embeddings_reused": cache_counts.get("reused", 0),
              "rows": len(table), "skipped": len(skipped),
              "individuals": int(rows.representative.sum()), **cluster_counts(rep_cluster, int(rep_cluster.size))}
    if identified is not None:
        counts["identified"] = len(identified.filenames)
    config = {k: v for k, v in asdict(cfg).items() if k not in ("command", "progress")}
    config.update(threshold=threshold, gen_cluster_dirs=cfg.gen_cluster_dirs)
    _warn_if_chaining(cfg, counts)
    manifest = {"command": list(cfg.command), "parameters": config, **run_info, "counts": counts,
                "clustering": clusters["info"], "dim": int(rows.embedding.shape[1]),
                "timings_s": {**timer.seconds, "total": round(time.perf_counter() - started, 3)}}
    if metrics is not None:
        manifest["metrics"] = {level: {k: metrics[level][k] for k in ("ari", "ami", "pairwise_f1")}
                               for level in ("cluster", "individual")}
    write_manifest(os.path.join(cfg.out_folder, "run.json"), manifest)
    log.info("%d images -> %d individuals -> %d clusters (largest %d), %d individuals not clustered, %d skipped; "
             "%s; outputs in %s", counts["rows"], counts["individuals"], counts["clusters"],
             counts["largest_cluster"], counts["singletons"], counts["skipped"],
             f"threshold {threshold:.3f}" if cfg.cluster == "cosine" else f"-c {cfg.cluster}", cfg.out_folder)
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


def _sweep(cfg: RunConfig, rows: _Rows, labels, forest) -> Dict:
    """--sweep: sweep.csv and sweep.png in the output folder; returns the run.json entry with the recommendation.
    forest: the clustering's spanning forest (built down to the sweep's lowest threshold), reused."""
    from evaluate.sweep import parse_sweep, recommend, sweep_table
    from evaluate.sweep_plot import plot_sweep
    from outputs.table import write_csv

    table = sweep_table(_take(rows.embedding, rows.representative_rows()), parse_sweep(cfg.sweep), rows.individual,
                        labels, forest)
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
    from inputs.filters import FilterError
    from inputs.metadata import MetadataError
    from inputs.sidecars import SidecarError
    from inputs.table import TableError
    from inputs.timestamps import TimeFormatError
    from outputs.embeddings import EmbeddingsFileError
    from outputs.review import ReviewError

    return (ConfigError, InputError, EmbedError, ClusteringError, EmbeddingsFileError, TableError, NoLabelsError,
            TimeFormatError, SidecarError, MetadataError, ReviewError,
            SweepError, FilterError)


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
