"""The run: inputs -> embed -> individuals -> clustering -> outputs, one function per stage, plain values between.

This is the only module that knows every stage; the command line (cli.py) and the API (api.py) build Options and
call `run`. Each stage function takes the options and the values the earlier stages returned and returns plain
values (Crops, arrays, small dataclasses); `Run` collects what run.json records (skipped inputs, per-stage
entries and timings) as the stages go.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .crops import Crops
from .errors import OptionsError
from .options import Options

log = logging.getLogger("crop-cluster")
CHAINING_SHARE = 0.25     # warn when one cosine cluster holds more than this share of the individuals
REPORT_MAX_ROWS = 20_000  # report.html is written by default up to this many rows; --report forces it
TAXON_COLUMNS = ["cluster_taxon", "cluster_taxon_level", "cluster_taxon_share", "cluster_name", "identified"]


@dataclass
class Result:
    """What a run returns: `table` (pandas DataFrame, the rows of clusters.csv), `embeddings` (float32 (N, d),
    row i belongs to table row i), `manifest` (dict, the content of run.json), `out_folder`."""

    table: Any
    embeddings: Any
    manifest: Dict[str, Any]
    out_folder: str


@dataclass
class Run:
    """The bookkeeping of one run: (filename, reason) of every input that could not be used, the run.json
    entries the stages add, and the wall-clock seconds per stage, in the order the stages ran."""

    skipped: List[Tuple[str, str]] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str):
        log.debug("stage %s", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)


def run(options: Options) -> Result:
    """Run every stage and write the output folder; returns the table, the embeddings and run.json's content.
    The folder's campaign store (campaign/) is locked for the whole run and written last, in one transaction."""
    from .campaign.run import CampaignSession

    started = time.perf_counter()
    state = Run()
    os.makedirs(options.out_folder, exist_ok=True)
    if options.embed == "hierarchical" and not options.embeddings:
        from .embed.predictions import check_model

        check_model(options.from_pretrained, options.unknown_level)
    state.info["engine"] = engine_of(options).describe()
    if options.engine == "ray":
        from .engines import require_ray

        require_ray()
    with CampaignSession(options.out_folder) as session:
        return _run(options, session, started, state)


def _run(options: Options, session, started: float, state: Run) -> Result:
    crops, n_inputs = read_crops(options, state)
    seen = {"inputs": n_inputs, "embedded": int(crops.distinct.sum()) if not options.embeddings else 0}
    threshold = default_threshold(options, crops.model)
    identified = None
    taxonomy = taxonomy_of(options, crops)
    if options.unknown_below is not None:
        from .embed.predictions import split_identified

        crops, identified, state.info["identified"] = split_identified(crops, taxonomy, options.unknown_below,
                                                                       options.unknown_level)
    if options.add:
        with state.stage("campaign_crops"):
            crops, n_old, old_label, read_now = campaign_crops(options, session, crops, state)
    with state.stage("metadata"):
        meta, labels = metadata(options, crops.filenames, state, taxonomy)
    if options.add:
        with state.stage("individuals"):
            crops, linked_by = add_individuals(options, crops, n_old, meta, threshold, state)
        with state.stage("cluster"):
            clusters = add_clusters(options, session, crops, n_old, old_label, threshold, state)
    else:
        with state.stage("graph"):
            forest = shared_forest(options, crops, threshold, state)
        with state.stage("individuals"):
            crops, linked_by = individuals(options, crops, meta, threshold, forest, state)
        with state.stage("cluster"):
            clusters = clustering(options, crops, threshold, forest)
    with state.stage("campaign"):
        crops, clusters, linked_by, settled = settle_campaign(options, session, crops, clusters, linked_by, meta, state,
                                                              read_now if options.add else None)
    state.info["campaign"]["key"] = session.campaign_key(settled.keys)
    table, embedding = write_outputs(options, crops, clusters, linked_by, meta, settled, taxonomy, identified,
                                     threshold, state)
    manifest = write_manifest(options, crops, clusters, table, labels, identified, threshold, seen, state, started,
                              settled, session.run_id)
    from .outputs.manifest import versions

    session.commit(settled, "add" if options.add else "review" if options.review and not options.inputs else "full",
                   manifest["parameters"], versions(), manifest["counts"])     # last: as before or as after the run
    return Result(table, embedding, manifest, options.out_folder)


# --- inputs and embed -----------------------------------------------------------------------------------------------

def read_crops(options: Options, state: Run) -> Tuple[Crops, int]:
    """The crops of the run (embedded, or read from --embeddings) and the number of inputs seen."""
    if options.embeddings:
        crops = reuse_embeddings(options, state)
        if options.filter:
            crops = crops.keep(select(options, crops.filenames, state))
        n_inputs = len(crops.filenames) + len(state.skipped)
    else:
        with state.stage("collect"):
            files = collect(options.inputs, state, options.out_folder)
            if options.filter:
                files = [name for name, keep in zip(files, select(options, files, state)) if keep]
        n_inputs = len(files) + len(state.skipped)
        crops = embed_files(options, files, state)
    if not crops.filenames:
        from .outputs.table import write_skipped

        write_skipped(state.skipped, os.path.join(options.out_folder, "skipped.csv"))
        raise OptionsError(f"none of the {n_inputs} inputs could be used; the reasons are in "
                           f"{os.path.join(options.out_folder, 'skipped.csv')}")
    return crops, n_inputs


def collect(inputs, state: Run, out_folder: str) -> List[str]:
    """The image files named by the inputs (files, folders, globs, .txt lists), in a stable order."""
    from .inputs.collect import collect_images

    result = collect_images(list(inputs), exclude=(out_folder,))
    state.skipped.extend(result.skipped)
    if result.passed_over_outputs:
        log.info("passed over %d images inside crop-cluster output folders (never read as input): %s",
                 result.passed_over_outputs, ", ".join(result.output_folders))
    if result.ignored_non_images:
        log.info("passed over %d files without an image extension inside the input folders",
                 result.ignored_non_images)
    log.info("found %d images", len(result.files))
    return result.files


def select(options: Options, filenames: List[str], state: Run):
    """--filter: bool (n,) of the files to cluster; the others are listed as skipped with the reason."""
    from .inputs.filters import select_files

    keep, left_out = select_files(options.filter, options.metadata, filenames)
    state.skipped.extend(left_out)
    log.info("--filter kept %d of %d images", int(keep.sum()), len(filenames))
    return keep


def embed_files(options: Options, files: List[str], state: Run) -> Crops:
    """Hash the files, embed each distinct readable content once (through the embedding cache) and expand back
    to one row per readable file."""
    from .dedup.exact import group_identical
    from .embed import BACKENDS, model_id
    from .embed.crops import crops_from_embedded
    from .engines import embed

    with state.stage("hash"):
        groups = group_identical(files, progress=options.progress)
    state.skipped.extend(groups.unreadable)
    model_path = options.from_pretrained or BACKENDS[options.embed].default_model
    cache = embedding_cache(options, model_path)
    with state.stage("embed"):
        digests = [groups.digests[i] for i in groups.representatives]
        cached = embed(engine_of(options), cache, [files[i] for i in groups.representatives], digests, options.embed,
                       options.from_pretrained, options.device, options.batch_size, options.num_workers,
                       options.progress, options.resize)
    state.info.update(model=model_id(options.embed, model_path), **cached.info)
    state.skipped.extend(cached.result.skipped)
    crops, copies_lost = crops_from_embedded(files, groups, groups.representatives, cached.result,
                                             state.info["model"])
    state.skipped.extend(copies_lost)
    return crops


def reuse_embeddings(options: Options, state: Run) -> Crops:
    """Crops from --embeddings (restricted to the -i files when given); identical files still share an
    individual, and a hierarchical model's predictions come back from its embedding cache."""
    import numpy as np

    from .dedup.exact import group_identical
    from .embed.crops import cached_predictions, crops_from_stored
    from .outputs.embeddings import read_embeddings

    with state.stage("load_embeddings"):
        stored = read_embeddings(options.embeddings)
    rows = np.arange(len(stored.filenames))
    if options.inputs:
        position = {os.path.normpath(name): k for k, name in enumerate(stored.filenames)}
        wanted = collect(options.inputs, state, options.out_folder)
        found = [position.get(os.path.normpath(name), -1) for name in wanted]
        state.skipped.extend((name, f"not in {options.embeddings}; run without --embeddings to embed it")
                             for name, k in zip(wanted, found) if k < 0)
        rows = np.asarray([k for k in found if k >= 0], dtype=np.int64)
    filenames = [stored.filenames[k] for k in rows]
    with state.stage("hash"):
        present = [k for k, name in enumerate(filenames) if os.path.isfile(name)]
        groups = group_identical([filenames[k] for k in present])
    state.info.update(device="none (embeddings reused)", model=stored.model, reused_embeddings=options.embeddings)
    digests = [""] * len(filenames)
    for k, digest in zip(present, groups.digests):
        digests[k] = digest
    return crops_from_stored(stored, rows, groups, present,
                             cached_predictions(options.embeddings, stored.model, digests))


def engine_of(options: Options):
    """engines.Engine of the run (--engine, --ray_address, --shared_dir; default OUT/ray_shared)."""
    from .engines import SHARED_FOLDER, Engine

    return Engine(options.engine, options.ray_address,
                  options.shared_dir or os.path.join(options.out_folder, SHARED_FOLDER))


def default_threshold(options: Options, model: str) -> float:
    """-th, else the reviewed run's threshold with --review, else the backend's default for the model."""
    from .embed import BACKENDS, backend_of_model

    if options.threshold is not None:
        return options.threshold
    if options.review:  # the clusters of the reviewed run: its threshold, from the run.json beside its embeddings
        from .outputs.review import reviewed_threshold

        previous = reviewed_threshold(os.path.dirname(options.embeddings) if options.embeddings
                                      else options.out_folder)
        if previous is not None:
            log.info("--review: using the reviewed run's threshold %.3f", previous)
            return previous
    name = options.embed if not options.embeddings else backend_of_model(model)
    if name is None:
        raise OptionsError(f"no default threshold for model '{model}' in {options.embeddings}; give -th explicitly")
    return BACKENDS[name].default_threshold


def taxonomy_of(options: Options, crops: Crops):
    """The taxonomy behind a hierarchical model's predictions, None without them."""
    from .embed.predictions import taxonomy_of as taxonomy

    return taxonomy(crops, options.unknown_below, options.unknown_level, options.embeddings)


def metadata(options: Options, filenames: List[str], state: Optional[Run], taxonomy=None):
    """Metadata and label columns for clusters.csv: (inputs.metadata.MetadataColumns with the label column in its
    frame, the labels list or None)."""
    from .inputs.metadata import metadata_columns
    from .outputs.table import CONTRACT_COLUMNS

    levels = taxonomy.levels if taxonomy else ()
    meta = metadata_columns(filenames, options.time_format, options.meta_folder, options.metadata,
                            reserved=[*CONTRACT_COLUMNS, "label", "group", "linked_by", *TAXON_COLUMNS,
                                      *(f"{kind}_{level}" for level in levels for kind in ("pred", "prob"))])
    if state is not None:
        state.info.update(meta.counts)
    for warning in meta.warnings:
        log.warning("%s", warning)
    labels = None
    if options.labels:
        from .evaluate.labels import read_labels

        labels = read_labels(options.labels, filenames)
        if options.save_labels:
            meta.frame["label"] = labels
    return meta, labels


# --- individuals and clustering -------------------------------------------------------------------------------------

def link_defaults(options: Options, model: str):
    """The calibrated linking defaults of the run's backend (None for a model without them)."""
    from .dedup.link import backend_defaults
    from .embed import backend_of_model

    return backend_defaults(options.embed if not options.embeddings else backend_of_model(model))


def dedup_threshold(options: Options, model: str) -> Optional[float]:
    """--dedup_threshold, else the backend's calibrated default, else None (no near-duplicate linking)."""
    defaults = link_defaults(options, model)
    return options.dedup_threshold or (defaults.dedup_threshold if defaults else None)


def verify_from(options: Options, model: str) -> Optional[float]:
    """The lower bound of the band of near-duplicate candidates checked on pixels, None = no verification."""
    from .dedup.link import verify_band_start

    return verify_band_start(link_defaults(options, model), dedup_threshold(options, model), options.verify_from,
                             options.no_verify)


def shared_forest(options: Options, crops: Crops, threshold: float, state: Run):
    """The one similarity-graph pass of the run: the spanning forest over the distinct crops, built at the lowest
    threshold any stage needs (near-duplicates, `-c cosine`, `--sweep`); None when no stage needs one."""
    import numpy as np

    from .engines import forest as engine_forest

    needed = [t for t in (dedup_threshold(options, crops.model), verify_from(options, crops.model)) if t is not None]
    if options.cluster == "cosine":
        needed.append(threshold)
        if options.sweep:
            from .evaluate.sweep import parse_sweep

            needed.append(float(parse_sweep(options.sweep).min()))
    if not needed:
        return None
    stats: Dict = {}
    forest = engine_forest(engine_of(options), crops.rows(np.flatnonzero(crops.distinct)), min(needed),
                           options.device, stats, options.progress)
    state.info["graph"] = {**stats, "forest_threshold": forest.threshold, "forest_edges": int(forest.sims.size),
                           "rows": forest.n}
    return forest


def individuals(options: Options, crops: Crops, meta, threshold: float, forest, state: Run):
    """Exact, near-duplicate and track links: (crops grouped into individuals, linked_by per row)."""
    import dataclasses

    from .dedup.link import link_crops

    params = individual_params(options, crops.model, threshold)
    crops, linked_by, counts = link_crops(crops, meta, params, forest, cache_folder(options))
    state.info["individuals"] = {"parameters": dataclasses.asdict(params), **counts}
    return crops, linked_by


def individual_params(options: Options, model: str, threshold: float):
    """dedup.individuals.LinkParams as resolved for this run (the backend's calibrated defaults filled in)."""
    from .dedup.link import link_params
    from .embed.device import resolve_device

    return link_params(link_defaults(options, model), options.dedup_threshold, options.track_max_seconds,
                       options.track_max_distance, options.track_min_similarity, options.verify_from,
                       options.no_verify, threshold, resolve_device(options.device))


def cache_folder(options: Options) -> str:
    """The embedding cache's folder (--cache_dir, else OUT/<embed.cache.CACHE_FOLDER>); the pixel check keeps its
    thumbnails there too, by content."""
    from .embed.cache import CACHE_FOLDER

    return options.cache_dir or os.path.join(options.out_folder, CACHE_FOLDER)


def embedding_cache(options: Options, model_path: str):
    """The embed.cache.EmbeddingCache of this run's model and resize (stage A's has its own key)."""
    from .embed.cache import EmbeddingCache
    from .embed.resize import cache_variant

    return EmbeddingCache(cache_folder(options), options.embed, model_path, cache_variant(options.resize))


def clustering(options: Options, crops: Crops, threshold: float, forest):
    """Cluster the individuals (clustering/assign.py) with the algorithm's parameters as resolved for this run."""
    from .clustering import ClusterParams
    from .clustering.assign import cluster_crops
    from .embed.device import resolve_device

    n_clusters = options.n_clusters
    if n_clusters is None and options.cluster in ("kmeans", "agglomerative") and options.distance_threshold is None:
        n_clusters = options.num_classes
    params = ClusterParams(
        threshold=threshold, max_cluster_size=options.max_cluster_size, linkage=options.linkage,
        distance_threshold=options.distance_threshold, n_clusters=n_clusters, pca=options.pca,
        standardize=options.standardize,
        min_cluster_size=options.min_cluster_size or (5 if options.cluster == "hdbscan" else 1),
        min_samples=options.min_samples, seed=options.seed,
        device=resolve_device(options.device) if options.cluster in ("cosine", "kmeans") else "cpu")
    return cluster_crops(crops, options.cluster, params, options.min_sim_to_centroid, forest)


# --- campaign -------------------------------------------------------------------------------------------------------

def match_threshold(options: Options, threshold: float) -> float:
    """--match_threshold, else the clustering threshold."""
    return threshold if options.match_threshold is None else options.match_threshold


def campaign_crops(options: Options, session, crops: Crops, state: Run):
    """--add: the campaign's stored crops (their embeddings from the cache by content; only missing ones are
    embedded) followed by the -i crops not in the campaign yet. Returns (crops, n_old, old_label, seen):
    see campaign/crops.py; seen: bool per row, read from this run's inputs."""
    import numpy as np

    from .campaign.crops import with_campaign
    from .campaign.run import crop_keys
    from .embed import BACKENDS, load_backend
    from .embed.cache import embed_with_cache
    from .embed.device import resolve_device

    known = session.known(crop_keys(crops.digests, crops.filenames))
    if known.any():
        log.info("--add: %d of the -i crops are already in the campaign (kept as they are)", int(known.sum()))
    new = crops.keep(~known)
    stored = session.stored_crops
    model_path = options.from_pretrained or BACKENDS[options.embed].default_model
    cached = embed_with_cache(embedding_cache(options, model_path), stored["path"].tolist(),
                              stored["digest"].tolist(),
                              lambda: load_backend(options.embed, resolve_device(options.device),
                                                   options.from_pretrained),
                              options.batch_size, options.num_workers, options.progress, options.resize)
    for path, reason in cached.result.skipped:
        state.skipped.append((path, f"campaign crop not in the embedding cache and {reason}: left out of this "
                                    f"run's outputs, kept in {session.store.path}"))
    combined, n_old, old_label = with_campaign(new, stored, cached.result.embeddings, cached.result.ok_index)
    state.info["campaign_crops"] = {"stored": len(stored), "stored_used": int(cached.result.ok_index.size),
                                    "inputs_already_in_campaign": int(known.sum()), "new": len(new.filenames),
                                    "stored_embeddings_computed": cached.computed}
    inputs = set(crops.digests or ())
    return combined, n_old, old_label, np.asarray([d in inputs for d in combined.digests], dtype=bool)


def add_individuals(options: Options, crops: Crops, n_old: int, meta, threshold: float, state: Run):
    """--add: individuals among the new crops, then tracks from campaign individuals into them."""
    import dataclasses

    from .campaign.crops import link_new

    params = individual_params(options, crops.model, threshold)
    crops, linked_by, counts = link_new(crops, n_old, meta, params, cache_folder(options))
    state.info["individuals"] = {"parameters": dataclasses.asdict(params), **counts}
    return crops, linked_by


def add_clusters(options: Options, session, crops: Crops, n_old: int, old_label, threshold: float, state: Run):
    """--add: campaign individuals keep their clusters, new ones join one or form new ones (campaign/add.py)."""
    from .campaign.crops import place_new
    from .clustering.assign import per_crop
    from .embed.device import resolve_device

    stored = session.store.clusters()
    label, result, conflicts = place_new(crops, n_old, old_label, threshold, match_threshold(options, threshold),
                                         stored.loc[stored["name"] != "", "id"].astype(int).tolist(),
                                         resolve_device(options.device))
    for conflict in conflicts[:10]:
        log.warning("--add: %s reaches the reviewed groups %s (similarities %s): it joins the closer one, %d, and "
                    "does not merge them; review it", conflict["filename"], conflict["clusters"],
                    conflict["similarities"], conflict["chosen"])
    state.info["campaign_add"] = {**result.counts, "conflict_examples": conflicts[:20]}
    log.info("--add: %d new individuals joined existing clusters, %d new clusters, %d conflicts",
             result.counts["joined"], result.counts["new_clusters"], result.counts["conflicts"])
    info = {"algorithm": "cosine", "mode": "add", "parameters": {"threshold": threshold},
            "match_threshold": match_threshold(options, threshold)}
    return per_crop(crops, label, info)


def settle_campaign(options: Options, session, crops: Crops, clusters, linked_by: List[str], meta, state: Run,
                    seen=None):
    """Every run: record --review's decisions, apply all the campaign's decisions over the clusters, give stable
    cluster and individual ids (campaign/run.py). Returns (the crops with excluded crops split off into their own
    individuals, the clusters under their stable ids, linked_by, campaign.run.Settled)."""
    from .clustering.assign import per_crop

    digests = crops.digests if crops.digests is not None else [""] * len(crops.filenames)
    if options.review:
        folder = os.path.dirname(os.path.abspath(options.embeddings)) if options.embeddings else options.out_folder
        session.read_review(options.review, crops.filenames, digests, os.path.join(folder, "clusters.csv"))
    frame = meta.frame
    column = next((name for name in ("site", "trap") if name in frame.columns), None)
    sites = None if column is None else [None if v != v else str(v) for v in frame[column].tolist()]
    nights = [None if v != v else str(v) for v in frame["night"].tolist()] if "night" in frame.columns else None
    settled = session.settle(crops.filenames, digests, crops.individual, crops.representative, clusters.rep_cluster,
                             crops.embedding, meta.seconds, sites, nights, seen)
    linked_by = ["" if excluded else rule for excluded, rule in zip(settled.excluded, linked_by)]
    # the forest follows the individuals as the decisions left them (crops kept out split off)
    from .clustering.forest import renumbered
    forest = renumbered(clusters.forest, crops.individual, settled.individual)
    crops = crops.with_individuals(settled.individual, settled.representative)
    state.info["campaign"] = {"store": session.store.path, "run": session.run_id, **settled.counts}
    return crops, per_crop(crops, settled.rep_cluster, clusters.info, forest), linked_by, settled


# --- outputs --------------------------------------------------------------------------------------------------------

def write_outputs(options: Options, crops: Crops, clusters, linked_by, meta, settled, taxonomy, identified,
                  threshold: float, state: Run):
    """clusters.csv, skipped.csv, embeddings.pkl, and as asked clusters.pkl, cluster folders, report.html,
    metrics.json; returns (the table, the embeddings of its rows)."""
    import numpy as np
    import pandas as pd

    from .outputs import results

    with state.stage("silhouette"):
        from .evaluate.metrics import silhouette

        state.info["quality"] = silhouette(crops.rows(crops.representative_rows()), clusters.rep_cluster)
    extra = meta.frame
    for position, (name, values) in enumerate([("group", settled.group), ("cluster_status", settled.status),
                                               ("first_run", settled.first_run)]):
        extra.insert(position, name, values)
    if taxonomy is not None:
        extra = pd.concat([extra, results.taxon_columns(taxonomy, crops, clusters.cluster, options.taxon_share,
                                                        options.unknown_below is not None, state.info)], axis=1)
    filenames, embedding = crops.filenames, crops.embedding   # every row read: the clustered and the identified
    if identified is not None:
        filenames = filenames + identified.filenames
        embedding = np.concatenate([embedding, identified.embedding])
    with state.stage("write"):
        table = results.cluster_table(crops, clusters, linked_by, extra)
        table["individual"] = settled.individual_id[crops.individual]        # the campaign's stable ids
        if identified is not None:
            identified_meta, _ = metadata(options, identified.filenames, None, taxonomy)
            table = pd.concat([table, results.identified_table(
                taxonomy, identified, int(settled.individual_id.max(initial=-1)) + 1, options.unknown_level,
                identified_meta.frame)], ignore_index=True)
        results.write_tables(options.out_folder, table, state.skipped, filenames, embedding, crops.model,
                             options.save_embs)
        if options.gen_cluster_dirs:
            from .outputs.folders import write_cluster_folders

            keep = table["representative"].to_numpy(bool) if options.dedup else np.ones(len(table), dtype=bool)
            taxa = table["cluster_taxon"].where(table["identified"], "").tolist() if identified is not None else None
            write_cluster_folders(options.out_folder, filenames, table["cluster"].to_numpy(np.int64), keep, taxa)
    if options.report or (options.report is None and len(table) <= REPORT_MAX_ROWS):
        with state.stage("report"):
            from .outputs.report import write_report

            report = write_report(options.out_folder, table, embedding, threshold, crops.model,
                                  row_digests(crops, identified),
                                  clusters.forest, crops.individual, settled.rejections)   # review suggestions
            state.info["report_timings_s"], state.info["suggestions"] = report.seconds, report.suggestions
    if options.darwin_core:
        with state.stage("darwin_core"):
            state.info["darwin_core"] = darwin_core(options, table, threshold, crops.model, settled,
                                                    state.info["campaign"]["key"])
    return table, embedding


def row_digests(crops: Crops, identified: Optional[Crops]) -> Optional[List[str]]:
    """The content digest of every table row (the clustered crops, then the identified ones), so the report need
    not hash the files again; None when the run did not hash them."""
    parts = [crops] + ([identified] if identified is not None else [])
    if any(part.digests is None for part in parts):
        return None
    return [digest for part in parts for digest in part.digests]


def darwin_core(options: Options, table, threshold: float, model: str, settled, campaign_key: str) -> Dict[str, int]:
    """--darwin_core: OUT/dwca.zip from the table; identifiedBy/dateIdentified from the campaign's latest decision
    on each crop (every review file recorded in the folder), else from a crop-keyed --review file. occurrenceID:
    the campaign's key and the store's stable individual id (crops identified by --unknown_below, whose
    individuals the store does not keep, get the content-keyed id of their first crop)."""
    from .outputs.darwin_core import review_decisions, write_darwin_core

    occurrence = f"urn:crop-cluster:{campaign_key}:occurrence:" + table["individual"].astype(str)
    if "identified" in table:
        occurrence = occurrence.where(~table["identified"].astype(bool), "")
    table = table.assign(occurrence_id=occurrence)

    return write_darwin_core(os.path.join(options.out_folder, "dwca.zip"), table,
                             os.path.basename(os.path.abspath(options.out_folder)),
                             decisions=settled.identifications if len(settled.identifications)
                             else review_decisions(options.review),
                             remarks=f"grouped by crop-cluster ({model}, threshold {threshold:.3f})")


def write_manifest(options: Options, crops: Crops, clusters, table, labels, identified, threshold: float,
                   seen: Dict[str, int], state: Run, started: float, settled, run_id: int) -> Dict:
    """metrics.json (with --labels), sweep.csv/png (with --sweep) and run.json; returns run.json's content.
    seen: the counts of inputs and of distinct contents embedded, taken before any crop was set aside."""
    from .outputs.manifest import cluster_counts, write_manifest as write

    metrics = None
    if labels is not None:
        with state.stage("evaluate"):
            from .evaluate.report import write_metrics

            metrics = write_metrics(os.path.join(options.out_folder, "metrics.json"), labels, clusters.cluster,
                                    crops.individual, options.num_classes, state.info["quality"])
    if options.sweep:
        with state.stage("sweep"):
            from .evaluate.report import write_sweep

            state.info["sweep"] = write_sweep(options.out_folder, options.sweep,
                                              crops.rows(crops.representative_rows()), crops.individual, labels,
                                              clusters.forest)
    cache_counts = state.info.get("embedding_cache", {})
    rep_cluster = clusters.rep_cluster
    stored_computed = state.info.get("campaign_crops", {}).get("stored_embeddings_computed", 0)
    counts = {**seen, "embeddings_computed": cache_counts.get("computed", 0) + stored_computed,
              "embeddings_reused": cache_counts.get("reused", 0),
              "rows": len(table), "skipped": len(state.skipped),
              "individuals": int(crops.representative.sum()), **cluster_counts(rep_cluster, int(rep_cluster.size)),
              **{key: settled.counts[key] for key in ("new_crops", "new_clusters", "excluded_crops", "named_groups")}}
    if options.add:
        counts.update(joined=state.info["campaign_add"]["joined"], conflicts=state.info["campaign_add"]["conflicts"])
    if identified is not None:
        counts["identified"] = len(identified.filenames)
    parameters = {k: v for k, v in asdict(options).items() if k not in ("command", "progress")}
    parameters["filters"] = parameters.pop("filter")          # run.json keeps its key
    parameters.update(threshold=threshold)
    import numpy as np

    unreviewed = rep_cluster[(rep_cluster >= 0) & ~np.isin(rep_cluster, list(settled.names))]
    largest = int(np.unique(unreviewed, return_counts=True)[1].max(initial=0))
    warn_if_chaining(options, {**counts, "largest_cluster": largest,            # reviewed groups are a person's call
                               "largest_cluster_share": largest / max(int(rep_cluster.size), 1)})
    manifest = {"command": list(options.command), "parameters": parameters, **state.info, "counts": counts,
                "clustering": clusters.info, "dim": int(crops.embedding.shape[1]),
                "timings_s": {**state.seconds, "total": round(time.perf_counter() - started, 3)}}
    if metrics is not None:
        manifest["metrics"] = {level: {k: metrics[level][k] for k in ("ari", "ami", "pairwise_f1")}
                               for level in ("cluster", "individual")}
    write(os.path.join(options.out_folder, "run.json"), manifest)
    log.info("%d images -> %d individuals -> %d clusters (largest %d), %d individuals not clustered, %d skipped; "
             "%s; outputs in %s", counts["rows"], counts["individuals"], counts["clusters"],
             counts["largest_cluster"], counts["singletons"], counts["skipped"],
             f"threshold {threshold:.3f}" if options.cluster == "cosine" else f"-c {options.cluster}",
             options.out_folder)
    return manifest


def warn_if_chaining(options: Options, counts: Dict) -> None:
    """A giant cluster usually means single linkage chained; say what to do about it."""
    if options.cluster == "cosine" and not options.max_cluster_size and counts["individuals"] >= 20 \
            and counts["largest_cluster_share"] > CHAINING_SHARE:
        log.warning("the largest cluster holds %.0f%% of all individuals (%d): single linkage may have chained "
                    "different kinds together; raise -th or cap clusters with --max_cluster_size N",
                    100 * counts["largest_cluster_share"], counts["largest_cluster"])
