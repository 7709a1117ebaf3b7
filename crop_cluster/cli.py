"""The command line: the parser (every BiodivX clustering flag keeps its meaning), Options from the arguments,
and `main`, which configures logging and turns errors into messages and exit codes: 0 success, 2 bad usage or
unusable input, 1 unexpected error, 130 interrupted.

    crop-cluster -i CROPS -o OUT [options]      (or `python cluster.py ...` from a checkout)
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Optional, Sequence

from .clustering import ALGORITHMS       # registries only: these imports are light, so -h stays instant
from .dedup import BACKEND_DEFAULTS as LINK_DEFAULTS, TRACK_MAX_DISTANCE, TRACK_MAX_SECONDS
from .embed import BACKENDS
from .engines import ENGINES
from .errors import CropClusterError, describe_os_error
from .naming import BACKEND_DEFAULTS as NAMING_DEFAULTS, LEVELS as NAME_LEVELS
from .options import Options

log = logging.getLogger("crop-cluster")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every BiodivX flag keeps its short and long name (hyphenated long aliases too)."""
    parser = argparse.ArgumentParser(
        prog="crop-cluster", formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        description="Cluster image crops by visual similarity: embed every crop with a pretrained model, group "
                    "identical files into individuals, link individuals whose cosine similarity reaches a threshold "
                    "and write clusters.csv, embeddings.pkl, skipped.csv and run.json to the output folder.",
        epilog="examples:\n"
               "  crop-cluster -i crops/ -o out/ -e lite0            # bundled offline model\n"
               "  crop-cluster -i 'trap1/**/*.jpg' list.txt -o out/ -gs  # DINOv2, one folder per cluster\n"
               "  crop-cluster --embeddings out/embeddings.pkl -o out2/ -th 0.85   # new threshold, no re-embedding\n"
               "exit codes: 0 success, 2 bad usage or unusable input, 1 unexpected error")
    add = parser.add_argument
    add("-i", "--input", dest="inputs", nargs="+", action="extend", metavar="INPUT",
        help="image files, folders (recursive), globs (quote them; ** works) or .txt lists (one entry per line, "
             "relative to the list, # comments); may be repeated")
    add("-o", "--out_folder", "--out-folder", required=True, help="output folder (created if needed)")
    add("-mf", "--meta_folder", "--meta-folder",
        help="folder of BiodivX JSON sidecars with detection boxes; adds frame and box columns")
    add("--time_format", "--time-format",
        help="strptime format of the timestamp in each file's basename, e.g. %%Y%%m%%d%%H%%M%%S (BiodivX "
             "%%YYYY-%%mm-%%dd_%%HH-%%MM-%%SS also accepted); adds a timestamp column")
    add("-d", "--device", help="auto (cuda:0 when available, else cpu), cpu, cuda or cuda:N")
    add("-e", "--embed", choices=list(BACKENDS),
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
    add("-c", "--cluster", choices=list(ALGORITHMS),
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
    group.add_argument("--max_cluster_size", "--max-cluster-size", type=int, metavar="N",
                       help="cosine: split clusters of more than N individuals at their weakest links (chaining "
                            "guard); default 0 = off")
    group.add_argument("--linkage", help="agglomerative: ward (default), average or complete")
    group.add_argument("--distance_threshold", "--distance-threshold", type=float, metavar="D",
                       help="agglomerative: stop merging at this linkage distance (ward: Euclidean in the feature "
                            "space; average/complete: cosine distance)")
    group.add_argument("--n_clusters", "--n-clusters", type=int, metavar="K",
                       help="kmeans: k; agglomerative: number of clusters instead of --distance_threshold "
                            "(default: -x when given)")
    group.add_argument("--pca", type=int, metavar="N",
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
    group.add_argument("--seed", type=int, help="random seed for kmeans, PCA and hdbscan (default 0)")
    add("--batch_size", "--batch-size", type=int, help="images per model call (default 32 on CPU, 128 on GPU)")
    add("--num_workers", "--num-workers", type=int,
        help="processes decoding images (default: 0 on 2-core CPUs, up to 8 with a GPU)")
    add("--resize", choices=["pil", "torch", "device"],
        help="who fits crops to the model input: pil (default on CPU: reproducible), torch (torch's resize in the "
             "decoding workers, faster), device (the model's device fits each batch; default on a GPU)")
    add("--cache_dir", "--cache-dir", metavar="DIR",
        help="embedding cache folder, shared by runs with any -o (default: OUT/embed_cache); cached crops are never "
             "embedded again, and a killed run resumes from its last checkpoint")
    add("--report", action="store_true",
        help="write OUT/report.html, a review page with thumbnails (default: on up to 20 000 rows)")
    add("--no_report", "--no-report", dest="report", action="store_false", help="do not write report.html")
    add("--review", metavar="review.csv",
        help="record a review file's decisions in the campaign (OUT/campaign.sqlite) and apply them, now and in every "
             "later run into OUT: columns filename,group (a name, or -1 to keep the crop out of every cluster) and "
             "optionally crop, reviewer, time, note; the older cluster,group,note file of the folder's last run "
             "too. Without -i, re-clusters OUT/embeddings.pkl at the reviewed run's threshold")
    add("--add", action="store_true",
        help="add the -i crops to the campaign in -o: only new crops are embedded; they join existing clusters "
             "(ids and names kept) or form new ones (docs/campaigns.md)")
    add("--match_threshold", "--match-threshold", type=float, metavar="S",
        help="cosine similarity an unreviewed individual needs to a reviewed group's members to join that group "
             "(default: off, it joins when single linkage puts it in the group's cluster); a campaign setting")
    add("--re_embed", "--re-embed", action="store_true",
        help="let a campaign change its model (-e/-fp/--resize): every crop is embedded again with the new one "
             "(review decisions are kept); without it such a change is refused")
    add("--sweep", metavar="START:STOP:STEP",
        help="also score every threshold START, START+STEP, ..., STOP from one similarity graph: writes sweep.csv, "
             "sweep.png and a recommended threshold in run.json, e.g. 0.70:0.95:0.01")
    add("--darwin_core", "--darwin-core", action="store_true",
        help="also write OUT/dwca.zip, a Darwin Core Archive for GBIF: one occurrence per individual with its "
             "representative crop, eventDate from --time_format, eventID from site/night --metadata columns")
    engine = parser.add_argument_group("engine (see docs/scale-out.md)")
    engine.add_argument("--engine", choices=list(ENGINES),
                        help="where embedding and the similarity graph run: local (this process, default) or ray "
                             "(a Ray cluster; install it with: bash install.sh --ray); same results")
    engine.add_argument("--ray_address", "--ray-address", metavar="HOST:PORT",
                        help="Ray cluster to join with --engine ray (default: RAY_ADDRESS, else a local Ray)")
    engine.add_argument("--shared_dir", "--shared-dir", metavar="DIR",
                        help="folder every Ray node reads and writes: graph tiles and the embedding manifest; a "
                             "re-run resumes from what is there (default: OUT/ray_shared)")
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
    links.add_argument("--verify_from", "--verify-from", type=float, metavar="S",
                       help="near-duplicate pairs with cosine in [S, dedup threshold) are linked when their aligned "
                            "grey thumbnails match (S >= the threshold: no band; docs/individuals.md; default per model: "
                            + ", ".join(f"{name} {d.verify_from:.2f}" for name, d in LINK_DEFAULTS.items()
                                        if d.verify_from is not None) + ")")
    links.add_argument("--no_verify", "--no-verify", action="store_true",
                       help="no pixel verification: near-duplicates by the embedding threshold alone")
    add("--filter", action="append", metavar="EXPR",
        help="cluster only crops whose --metadata columns pass EXPR, e.g. \"ood_score > 0.4\" (COLUMN OP VALUE "
             "joined by and/or; repeatable, all must hold); the others go to skipped.csv with the reason")
    taxa = parser.add_argument_group("taxonomy, with -e hierarchical (see README, Hierarchical taxonomic model)")
    taxa.add_argument("--taxon_share", "--taxon-share", type=float, metavar="S",
                      help="name each cluster after the deepest taxon that a probability-weighted share S of its "
                           "members agree on (default 0.8)")
    taxa.add_argument("--unknown_below", "--unknown-below", type=float, metavar="P",
                      help="cluster only the crops whose top-1 probability is below P (the unknowns); the others "
                           "are listed in clusters.csv with their prediction, identified=True, cluster -1")
    taxa.add_argument("--unknown_level", "--unknown-level", metavar="LEVEL",
                      help="the level whose probability --unknown_below reads (default: the finest, e.g. species)")
    naming = parser.add_argument_group("names from references (see docs/naming.md)")
    naming.add_argument("--reference", action="append", metavar="REF",
                        help="name clusters from references (repeatable): a folder of <name>/ folders of images, a "
                             "CSV filename,name (optional kingdom..species, taxonID columns), or an earlier "
                             "crop-cluster output folder whose reviewed groups become references; adds ref_* columns "
                             "to clusters.csv, 'unknown' where nothing matches")
    naming.add_argument("--species_list", "--species-list", metavar="FILE",
                        help="the taxa that may occur (a GBIF checklist TSV/CSV, or one name a line): references of "
                             "other names are left out, a hierarchical model's predictions are masked to it")
    naming.add_argument("--name_threshold", "--name-threshold", type=float, metavar="S",
                        help="cosine a cluster's best name prototype needs at least (default per model and "
                             "--name_level: "
                             + ", ".join(f"{name} {d['cluster'].threshold:.2f} at cluster level"
                                         for name, d in NAMING_DEFAULTS.items())
                             + "; other models: the clustering threshold; a default is raised where the model "
                               "confuses the gallery's own references, a value given is used as given)")
    naming.add_argument("--name_margin", "--name-margin", type=float, metavar="M",
                        help="by how much the best name must beat the second; else the names' common ancestor "
                             "('Noctuidae sp.') or unknown (default per model and --name_level: "
                             + ", ".join(f"{name} {d['cluster'].margin:.2f} at cluster level"
                                         for name, d in NAMING_DEFAULTS.items()) + ")")
    naming.add_argument("--name_level", "--name-level", choices=list(NAME_LEVELS),
                        help="what is named: cluster (default: each cluster and each individual not clustered), "
                             "individual or crop")
    add("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    add("-v", "--verbose", action="store_true", help="debug messages")
    return parser


def options_from_args(args: argparse.Namespace, argv: Sequence[str]) -> Options:
    """Options from parsed arguments: the flags given (every flag's destination is the Options field of the same
    name; the defaults live in Options alone); raises OptionsError for combinations that cannot work."""
    given = {name: value for name, value in vars(args).items() if name not in ("quiet", "verbose")}
    typed = tuple(given)
    for name in ("inputs", "filter", "reference"):
        given[name] = tuple(given.get(name, ()))
    return Options(progress=not getattr(args, "quiet", False), command=tuple(argv), given=typed, **given)


def run(options: Options) -> None:
    """Run the pipeline (imported here, so that `-h` and bad usage never import it)."""
    from .pipeline import run as run_pipeline

    run_pipeline(options)


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
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    try:
        run(options_from_args(args, ["crop-cluster", *argv]))
        return 0
    except KeyboardInterrupt:
        log.error("interrupted; outputs already written are complete, the rest were not written")
        return 130
    except Exception as error:  # noqa: BLE001 - the entry point turns every error into a message and exit code
        if isinstance(error, CropClusterError):
            log.error("%s", error)
            return 2
        if isinstance(error, OSError) and (error.filename or error.errno in (errno.ENOSPC, errno.EDQUOT)):
            log.error("%s", describe_os_error(error, error.filename or os.path.abspath(args.out_folder),
                                              writing=not error.filename))
            return 2
        log.error("unexpected error: %s: %s (run with -v for the traceback; please report it)",
                  type(error).__name__, error)
        log.debug("traceback", exc_info=True)
        return 1
    finally:
        root.removeHandler(handler)

