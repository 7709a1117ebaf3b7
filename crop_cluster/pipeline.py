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
from .gather import cache_folder, embedding_cache, engine_of, gather, model_path_of, run_mode
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
    The folder's campaign store (campaign/) is locked for the whole run; the outputs are staged and put in place
    just after the store's commit (one transaction), so a run that fails leaves the previous ones and the store."""
    from .campaign.run import CampaignSession
    from .outputs.atomic import remove_leftovers

    started = time.perf_counter()
    state = Run()
    from .fallbacks import taken as fallbacks_taken
    fallbacks_taken()           # forget an earlier run's fallbacks (crop_cluster/fallbacks.py; the checks stay done)
    os.makedirs(options.out_folder, exist_ok=True)
    if options.embed == "hierarchical" and not options.embeddings:
        from .embed.predictions import check_model

        check_model(options.from_pretrained, options.unknown_level)
    state.info["engine"] = engine_of(options).describe()
    if options.engine == "ray":
        from .engines import require_ray

        require_ray()
    with CampaignSession(options.out_folder) as session:
        remove_leftovers(options.out_folder)                 # a killed run's staged outputs (under the lock)
        return _run(options, session, started, state)


def _run(options: Options, session, started: float, state: Run) -> Result:
    from .outputs.atomic import staged_outputs

    options, settings = campaign_settings(options, session, state)
    mode = run_mode(options)
    run_crops, n_inputs, options = gather(options, session, mode, state)
    crops = run_crops.crops
    seen = {"inputs": n_inputs, "embedded": state.info.pop("embedded", 0)}
    threshold = default_threshold(options, crops.model)
    identified = None
    taxonomy = taxonomy_of(options, crops)
    if options.species_list and taxonomy is not None:
        run_crops = mask_to_species_list(options, run_crops, taxonomy, state)  # naming/masking.py
        crops = run_crops.crops
    if options.unknown_below is not None:
        from .embed.predictions import identified_rows

        known, state.info["identified"] = identified_rows(crops, taxonomy, options.unknown_below,
                                                         options.unknown_level)
        identified, run_crops = run_crops.keep(known), run_crops.keep(~known)
        crops = run_crops.crops
    with state.stage("metadata"):
        meta, labels = metadata(options, crops.filenames, state, taxonomy)
    with state.stage("graph"):
        forest = campaign_forest(options, session, crops, threshold, state)
    with state.stage("individuals"):
        crops, linked_by = individuals(options, crops, meta, threshold, forest, state)
    with state.stage("cluster"):
        clusters = clustering(options, crops, threshold, forest, mode)
    with state.stage("campaign"):
        crops, clusters, linked_by, settled = settle_campaign(options, session, crops, clusters, linked_by, meta, state,
                                                              run_crops.seen)
    state.info["campaign"].update(key=session.campaign_key(settled.keys), id=session.campaign_id)
    state.info["settings"] = settings.manifest()
    session.new_settings = settings.stored
    named = name_from_references(options, session, crops, clusters, settled, labels, threshold, state)
    with staged_outputs(options.out_folder):
        table, embedding = write_outputs(options, crops, clusters, linked_by, meta, settled, taxonomy, identified,
                                         threshold, state, run_crops, named)
        from .fallbacks import taken as fallbacks_taken

        state.info["fallbacks"] = fallbacks_taken()      # fast paths whose first-use check failed: what ran instead
        manifest = write_manifest(options, crops, clusters, table, labels, identified, threshold, seen, state,
                                  started, settled, session.run_id, named)
        from .outputs.manifest import versions

        session.commit(settled, mode, manifest["parameters"], versions(), manifest["counts"],  # then outputs
                       run_crops.rank, None if named is None else (named.references, named.names))
    return Result(table, embedding, manifest, options.out_folder)


# --- settings, inputs ---------------------------------------------------------------------------------------------

def campaign_settings(options: Options, session, state: Run):
    """(Options with the campaign's settings applied, campaign.settings.Resolved)."""
    from .campaign.settings import resolve_options

    return resolve_options(options, session.settings)


def default_threshold(options: Options, model: str) -> float:
    """-th (or the campaign's), else the reviewed run's threshold with --review of another folder's embeddings,
    else the backend's default for the model."""
    from .embed import BACKENDS, backend_of_model

    if options.threshold is not None:
        return options.threshold
    if options.review and options.embeddings:   # the clusters of the reviewed run: its threshold, beside its pkl
        from .outputs.review import reviewed_threshold

        previous = reviewed_threshold(os.path.dirname(options.embeddings))
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
    from .naming import COLUMNS as NAMING_COLUMNS
    from .outputs.table import CONTRACT_COLUMNS

    levels = taxonomy.levels if taxonomy else ()
    meta = metadata_columns(filenames, options.time_format, options.meta_folder, options.metadata,
                            reserved=[*CONTRACT_COLUMNS, "label", "group", "linked_by", "merged_from", *TAXON_COLUMNS,
                                      *NAMING_COLUMNS,
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


# --- the similarity graph, individuals and clustering ---------------------------------------------------------------

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


def vectors_key(options: Options, crops: Crops) -> str:
    """What the run's vectors are, for the keys of kept results: the embedding cache's namespace (model, its
    files, the preprocessing), or for --embeddings a hash of the vectors themselves."""
    import numpy as np

    from .result_cache import content_key

    if options.embeddings:
        return "vectors:" + content_key([crops.model, crops.rows(np.flatnonzero(crops.distinct))])
    return os.path.basename(embedding_cache(options, model_path_of(options)).folder)


def campaign_forest(options: Options, session, crops: Crops, threshold: float, state: Run):
    """The one similarity-graph pass of the run: the spanning forest over the distinct crops at the lowest
    threshold any stage needs (near-duplicates, `-c cosine`, `--sweep`); None when no stage needs one. Kept by
    content (crop_cluster/result_cache.py): the same contents again read it; a campaign that grew has it grown from
    the forest of its previous crops (clustering.forest.grow_forest: only the new crops' edges are computed)."""
    import numpy as np

    from .clustering.forest import Forest, grow_forest
    from .engines import forest as engine_forest
    from .result_cache import ResultCache, content_key

    needed = [t for t in (dedup_threshold(options, crops.model), verify_from(options, crops.model)) if t is not None]
    if options.cluster == "cosine":
        needed.append(threshold)
        if options.sweep:
            from .evaluate.sweep import parse_sweep

            needed.append(float(parse_sweep(options.sweep).min()))
    if not needed:
        return None
    lowest = min(needed)
    distinct = np.flatnonzero(crops.distinct)
    names = [crops.digests[k] or "path:" + crops.filenames[k] for k in distinct.tolist()]
    try:
        keys = np.asarray(names, dtype="S")        # sorted (canonical order); one byte a character
    except UnicodeEncodeError:
        keys = np.asarray(names)
    results = ResultCache(cache_folder(options))
    key = content_key([vectors_key(options, crops), names])
    kept = results.get("forest", key)
    stats: Dict = {}
    if kept is not None and float(kept["threshold"]) <= lowest:
        forest = Forest(distinct.size, kept["rows"].astype(np.int64), kept["cols"].astype(np.int64), kept["sims"],
                        float(kept["threshold"]))
        stats["kept"] = True
    else:
        previous = results.get("forest", session.meta.get("forest"))
        vectors = crops.rows(distinct)
        before_keys = None if previous is None else previous["keys"].astype(keys.dtype) \
            if previous["keys"].dtype.kind == keys.dtype.kind else None
        old = None if before_keys is None or float(previous["threshold"]) > lowest else \
            np.searchsorted(keys, before_keys) if before_keys.size else np.zeros(0, np.int64)
        if old is not None and old.size and not (np.all(old < keys.size) and
                                                  np.array_equal(keys[np.minimum(old, keys.size - 1)],
                                                                 before_keys)):
            old = None                           # the previous crops are not all here: no growing
        if old is not None and old.size:
            before = Forest(old.size, previous["rows"].astype(np.int64), previous["cols"].astype(np.int64),
                            previous["sims"], float(previous["threshold"]))
            forest = grow_forest(before, old, vectors, lowest, stats)
            stats["grown"] = True
        else:
            forest = engine_forest(engine_of(options), vectors, lowest, options.device, stats, options.progress)
        results.put("forest", key, {"keys": keys, "rows": forest.rows.astype(np.int32),
                                    "cols": forest.cols.astype(np.int32), "sims": forest.sims,
                                    "threshold": np.float64(forest.threshold)})
    session.new_meta["forest"] = key
    state.info["graph"] = {**stats, "forest_threshold": forest.threshold, "forest_edges": int(forest.sims.size),
                           "rows": forest.n}
    return forest


def individuals(options: Options, crops: Crops, meta, threshold: float, forest, state: Run):
    """Exact, near-duplicate and track links: (crops grouped into individuals, linked_by per row). Kept by what
    they depend on (contents, paths, frames, times, boxes, the linking parameters, the forest), so a run that
    changes none of them (another -th, the same command again) links nothing again."""
    import dataclasses
    import json

    import numpy as np

    from .dedup.link import link_crops
    from .dedup.union import RULES
    from .result_cache import ResultCache, content_key

    params = individual_params(options, crops.model, threshold)
    results = ResultCache(cache_folder(options))
    described = {k: v for k, v in dataclasses.asdict(params).items() if k != "device"}
    key = content_key([vectors_key(options, crops), json.dumps(described, sort_keys=True),
                       None if forest is None else (forest.threshold, forest.sims.size),
                       list(crops.digests or ()), list(crops.filenames), [s or "" for s in meta.sources],
                       meta.seconds, meta.boxes])
    kept = results.get("individuals", key)
    if kept is not None:
        codes = kept["linked_by"]
        linked_by = ["" if c == 0 else RULES[c - 1] for c in codes.tolist()]
        crops = crops.with_individuals(kept["individual"].astype(np.int64), kept["representative"].astype(bool))
        counts = {**json.loads(str(kept["counts"])), "kept": True}
    else:
        crops, linked_by, counts = link_crops(crops, meta, params, forest, cache_folder(options),
                                              vectors_key(options, crops))
        codes = np.asarray([0 if rule == "" else RULES.index(rule) + 1 for rule in linked_by], dtype=np.int8)
        results.put("individuals", key, {"individual": crops.individual, "representative": crops.representative,
                                         "linked_by": codes, "counts": np.asarray(json.dumps(counts))})
    state.info["individuals"] = {"parameters": dataclasses.asdict(params), **counts}
    return crops, linked_by


def individual_params(options: Options, model: str, threshold: float):
    """dedup.individuals.LinkParams as resolved for this run (the backend's calibrated defaults filled in)."""
    from .dedup.link import link_params
    from .embed.device import resolve_device

    return link_params(link_defaults(options, model), options.dedup_threshold, options.track_max_seconds,
                       options.track_max_distance, options.track_min_similarity, options.verify_from,
                       options.no_verify, threshold, resolve_device(options.device))


def clustering(options: Options, crops: Crops, threshold: float, forest, mode: str = "full"):
    """Cluster the individuals (clustering/assign.py) with the algorithm's parameters as resolved for this run;
    returns clustering.assign.Grouping (read per crop once the campaign's decisions are applied)."""
    from .clustering import ClusterParams
    from .clustering.assign import cluster_individuals
    from .embed.device import resolve_device

    if mode == "add" and options.cluster != "cosine":
        log.info("-c %s is not incremental: the whole campaign (%d crops) is clustered again; cluster ids are kept "
                 "by overlap", options.cluster, len(crops.filenames))
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
    grouping = cluster_individuals(crops, options.cluster, params, options.min_sim_to_centroid, forest)
    if mode == "add":                  # cosine grows from the kept forest; the others cluster everything again
        grouping.info["incremental"] = options.cluster == "cosine"
    return grouping


# --- campaign -------------------------------------------------------------------------------------------------------

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
                             crops.embedding, meta.seconds, sites, nights, seen, options.match_threshold)
    linked_by = ["" if excluded else rule for excluded, rule in zip(settled.excluded, linked_by)]
    from .clustering.forest import renumbered

    forest = renumbered(clusters.forest, crops.individual, settled.individual)  # the individuals as decided
    crops = crops.with_individuals(settled.individual, settled.representative)
    state.info["campaign"] = {"store": session.store.path, "run": session.run_id, **settled.counts,
                              "merges": [{"cluster": a, "into": b} for a, b in settled.merges],
                              "bridges": settled.bridges[:20]}
    if settled.merges:
        log.info("%d clusters merged into others: new crops link them (single linkage over the whole campaign)",
                 len(settled.merges))
    return crops, per_crop(crops, settled.rep_cluster, clusters.info, forest), linked_by, settled


# --- names from references -----------------------------------------------------------------------------------------

def naming_embed_settings(options: Options, model: str):
    """naming.embedding.EmbedSettings: how naming/ embeds references (or reruns a hierarchical model) like the run."""
    from .embed.resize import cache_variant
    from .naming.embedding import EmbedSettings

    return EmbedSettings(model, cache_folder(options), cache_variant(options.resize), options.device,
                         options.batch_size, options.num_workers, options.progress, options.resize)


def mask_to_species_list(options: Options, run_crops, taxonomy, state: Run):
    """--species_list with a hierarchical model: the run's crops (campaign.crops.RunCrops) with their predictions
    masked to the list, the unmasked ones kept (naming/masking.py)."""
    import dataclasses

    from .naming.masking import mask_crops

    with state.stage("species_list"):
        crops, state.info["species_list"] = mask_crops(run_crops.crops, taxonomy, options.species_list,
                                                       naming_embed_settings(options, run_crops.crops.model))
    return dataclasses.replace(run_crops, crops=crops)


def name_from_references(options: Options, session, crops: Crops, clusters, settled, labels, threshold: float,
                         state: Run):
    """--reference (none given: the references the campaign remembers, in every run into its folder):
    naming.run.Named, the ref_* columns of clusters.csv, the metrics block and the store's rows; None when the run
    names nothing."""
    from .naming.run import name_campaign

    remembered = session.store.name_references()
    if not options.reference and not len(remembered):
        return None
    with state.stage("naming"):
        named = name_campaign(options.reference, options.species_list, remembered,
                              naming_embed_settings(options, crops.model),
                              options.name_level, options.name_threshold, options.name_margin, threshold,
                              crops.embedding, clusters.cluster, crops.individual, settled.group, labels,
                              settled.individual_id[crops.individual], settled.keys)
    if named is not None:
        state.info["naming"] = named.info
    return named


# --- outputs --------------------------------------------------------------------------------------------------------

def write_outputs(options: Options, crops: Crops, clusters, linked_by, meta, settled, taxonomy, identified,
                  threshold: float, state: Run, run_crops, named=None):
    """clusters.csv, skipped.csv, embeddings.pkl, and as asked clusters.pkl, cluster folders, report.html,
    metrics.json; returns (the table, the embeddings of its rows). The stages' rows are in canonical order
    (campaign/crops.py); the outputs list them in the campaign's order, under the names clusters.csv shows.
    identified: the RunCrops that --unknown_below set aside, or None. named: naming.run.Named or None."""
    import numpy as np
    import pandas as pd

    from .outputs import results

    with state.stage("silhouette"):
        state.info["quality"] = quality(options, crops, clusters.rep_cluster)
    extra = meta.frame
    merged = [";".join(map(str, settled.merged_since_review.get(c, ()))) for c in clusters.cluster.tolist()] \
        if settled.merged_since_review else [""] * len(crops.filenames)
    for position, (name, values) in enumerate([("group", settled.group), ("cluster_status", settled.status),
                                               ("first_run", settled.first_run), ("merged_from", merged)]):
        extra.insert(position, name, values)
    if taxonomy is not None:
        extra = pd.concat([extra, results.taxon_columns(taxonomy, crops, clusters.cluster, options.taxon_share,
                                                        options.unknown_below is not None, state.info)], axis=1)
    if named is not None:                                        # naming/: names from references
        extra = pd.concat([extra, named.columns], axis=1)
    if options.species_list and taxonomy is not None:            # naming/masking.py: the unmasked predictions
        from .naming.masking import unmasked_columns

        extra = pd.concat([extra, unmasked_columns(taxonomy, crops.predictions)], axis=1)
    order = run_crops.order
    paths = [crops.filenames[k] for k in order.tolist()]     # every row read: the clustered and the identified
    embedding = crops.embedding[order]
    digests = [crops.digests[k] for k in order.tolist()] if crops.digests is not None else None
    with state.stage("write"):
        table = results.cluster_table(crops, clusters, linked_by, extra)
        table["individual"] = settled.individual_id[crops.individual]        # the campaign's stable ids
        table["filename"] = run_crops.shown
        table = table.iloc[order].reset_index(drop=True)
        if identified is not None:
            later = identified.order
            aside = identified.crops
            identified_meta, _ = metadata(options, aside.filenames, None, taxonomy)
            part = results.identified_table(taxonomy, aside, int(settled.individual_id.max(initial=-1)) + 1,
                                            options.unknown_level, identified_meta.frame)
            if options.species_list:                                  # naming/masking.py: the unmasked predictions
                from .naming.masking import unmasked_columns

                part = pd.concat([part, unmasked_columns(taxonomy, aside.predictions)], axis=1)
            part["filename"] = identified.shown
            table = pd.concat([table, part.iloc[later]], ignore_index=True)
            paths += [aside.filenames[k] for k in later.tolist()]
            embedding = np.concatenate([embedding, aside.embedding[later]])
            if digests is not None and aside.digests is not None:
                digests += [aside.digests[k] for k in later.tolist()]
        results.write_tables(options.out_folder, table, state.skipped, table["filename"].tolist(), embedding,
                             crops.model, options.save_embs, digests)
        if options.gen_cluster_dirs:
            from .outputs.folders import write_cluster_folders

            keep = table["representative"].to_numpy(bool) if options.dedup else np.ones(len(table), dtype=bool)
            taxa = table["cluster_taxon"].where(table["identified"], "").tolist() if identified is not None else None
            state.info["cluster_folders"] = write_cluster_folders(
                options.out_folder, paths, table["cluster"].to_numpy(np.int64), keep, taxa).manifest()
    if options.report or (options.report is None and len(table) <= REPORT_MAX_ROWS):
        with state.stage("report"):
            from .outputs.report import write_report

            report = write_report(options.out_folder, table, embedding, threshold, crops.model, digests,
                                  clusters.forest, crops.individual[order], settled.rejections)   # suggestions
            state.info["report_timings_s"], state.info["suggestions"] = report.seconds, report.suggestions
    if options.darwin_core:
        with state.stage("darwin_core"):
            state.info["darwin_core"] = darwin_core(options, table, threshold, crops.model, settled,
                                                    state.info["campaign"]["key"])
    return table, embedding


def quality(options: Options, crops: Crops, rep_cluster) -> Dict:
    """The label-free silhouette of the clusters (evaluate/metrics.py), kept by the representatives' contents and
    clusters, so a run with the same clusters (the same command again) scores nothing again."""
    import json

    import numpy as np

    from .evaluate.metrics import silhouette
    from .result_cache import ResultCache, content_key

    reps = crops.representative_rows()
    results = ResultCache(cache_folder(options))
    key = content_key([vectors_key(options, crops), [crops.digests[k] for k in reps.tolist()]
                       if crops.digests is not None else crops.rows(reps), np.asarray(rep_cluster, dtype=np.int64)])
    kept = results.get("silhouette", key)
    if kept is not None:
        return json.loads(str(kept["quality"]))
    found = silhouette(crops.rows(reps), rep_cluster)
    results.put("silhouette", key, {"quality": np.asarray(json.dumps(found))})
    return found


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
                   seen: Dict[str, int], state: Run, started: float, settled, run_id: int, named=None) -> Dict:
    """metrics.json (with --labels), sweep.csv/png (with --sweep) and run.json; returns run.json's content.
    seen: the counts of inputs and of distinct contents embedded, taken before any crop was set aside; named:
    naming.run.Named (its metrics block goes into metrics.json) or None."""
    from .outputs.manifest import cluster_counts, write_manifest as write

    metrics = None
    if labels is not None:
        with state.stage("evaluate"):
            from .evaluate.report import write_metrics

            metrics = write_metrics(os.path.join(options.out_folder, "metrics.json"), labels, clusters.cluster,
                                    crops.individual, options.num_classes, state.info["quality"],
                                    {"naming": named.metrics} if named is not None else None)
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
        counts.update(joined=settled.counts["joined"], conflicts=settled.counts["conflicts"],
                      merged=settled.counts["clusters_merged"])
    if identified is not None:
        counts["identified"] = len(identified.crops.filenames)
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
