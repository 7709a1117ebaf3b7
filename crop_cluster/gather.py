"""The crops of a run, as the pipeline gathers them: the inputs (collected, filtered, hashed, embedded through the
embedding cache, or read from --embeddings) and the campaign's current crops (their embeddings from the cache by
content), joined in the order campaign/crops.py fixes by content. Part of the pipeline: it calls the inputs, embed
and campaign stages with plain values; `Run` (pipeline.py) collects skipped inputs, run.json entries and timings.
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Tuple

from .crops import Crops
from .errors import OptionsError
from .options import Options

log = logging.getLogger("crop-cluster")


def run_mode(options: Options) -> str:
    """'add' (--add: the campaign's crops and the inputs), 'review' (--review alone: the campaign's crops) or 'full'
    (the inputs: the update of an empty campaign)."""
    if options.add:
        return "add"
    return "review" if options.review and not options.inputs and not options.embeddings else "full"


def gather(options: Options, session, mode: str, state):
    """(campaign.crops.RunCrops of the run, the number of inputs seen, distinct contents embedded for the inputs)."""
    import numpy as np

    from .campaign.crops import canonical, kept_stored, report_changed

    inputs, n_inputs = None, 0
    stored = session.current_files() if mode != "full" else session.current_files().iloc[:0]
    if mode == "review" and not len(stored):                 # a folder from before campaigns: its last run
        legacy = os.path.join(options.out_folder, "embeddings.pkl")
        if not os.path.isfile(legacy):
            raise OptionsError(f"--review: {options.out_folder} holds no campaign crops and no embeddings.pkl; give "
                               f"-i with the crops the review was made on, or -o the folder that was reviewed")
        options = _with(options, embeddings=legacy)
        mode = "full"
    if mode != "review":
        inputs, n_inputs = read_inputs(options, state)
    names = [] if inputs is None else [os.path.abspath(name) for name in inputs.filenames]
    digests = [] if inputs is None else list(inputs.digests or [""] * len(names))
    stored, changed = kept_stored(stored, names, digests)
    report_changed(changed)
    old = stored_crops(options, session, stored, state, inputs.model if inputs is not None else None)
    parts = [part for part in (old, inputs) if part is not None and part.filenames]
    if not parts:
        from .outputs.table import write_skipped

        write_skipped(state.skipped, os.path.join(options.out_folder, "skipped.csv"))
        what = f"none of the {n_inputs} inputs" if inputs is not None else "none of the campaign's crops"
        raise OptionsError(f"{what} could be used; the reasons are in "
                           f"{os.path.join(options.out_folder, 'skipped.csv')}")
    model = parts[-1].model
    filenames = [os.path.abspath(name) for part in parts for name in part.filenames]
    n_old = len(old.filenames) if old is not None else 0
    if mode == "full":                   # the inputs' order
        rank = np.arange(len(filenames), dtype=np.int64)
    else:                                # the campaign's order (as stored), then the new inputs' order
        position = {path: k for k, path in enumerate(session.files["path"].tolist())}
        rank = np.asarray([position.get(name, len(position) + k) for k, name in enumerate(filenames)],
                          dtype=np.int64)
    seen = np.arange(len(filenames)) >= n_old
    shown = [shown_name(name) for name in filenames[:n_old]] + (list(inputs.filenames) if inputs else [])
    predictions = None
    if all(part.predictions is not None for part in parts):
        predictions = np.concatenate([part.predictions for part in parts])
    result = canonical(filenames, [d for part in parts for d in (part.digests or [""] * len(part.filenames))],
                       np.concatenate([part.embedding for part in parts]), model, predictions, shown, rank, seen,
                       changed)
    state.info["crops"] = {"mode": mode, "campaign_crops": n_old, "inputs": len(names),
                           "changed_content": len(changed), "rows": len(filenames)}
    return result, n_inputs, options


def _with(options: Options, **changes) -> Options:
    import dataclasses

    return dataclasses.replace(options, **changes)


def shown_name(path: str) -> str:
    from .campaign.crops import shown

    return shown(path)


def read_inputs(options: Options, state) -> Tuple[Crops, int]:
    """The crops of the run's inputs (embedded, or read from --embeddings) and the number of inputs seen."""
    if options.embeddings:
        crops = reuse_embeddings(options, state)
        if options.filter:
            crops = crops.keep(select(options, crops.filenames, state))
        return crops, len(crops.filenames) + len(state.skipped)
    with state.stage("collect"):
        files = collect(options.inputs, state, options.out_folder)
        if options.filter:
            files = [name for name, keep in zip(files, select(options, files, state)) if keep]
    n_inputs = len(files) + len(state.skipped)
    return embed_files(options, files, state), n_inputs


def collect(inputs, state, out_folder: str) -> List[str]:
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


def select(options: Options, filenames: List[str], state):
    """--filter: bool (n,) of the files to cluster; the others are listed as skipped with the reason."""
    from .inputs.filters import select_files

    keep, left_out = select_files(options.filter, options.metadata, filenames)
    state.skipped.extend(left_out)
    log.info("--filter kept %d of %d images", int(keep.sum()), len(filenames))
    return keep


def model_path_of(options: Options) -> str:
    from .embed import BACKENDS

    return options.from_pretrained or BACKENDS[options.embed].default_model


def embedding_cache(options: Options, model_path: str):
    """The embed.cache.EmbeddingCache of this run's model and resize (stage A's has its own key)."""
    from .embed.cache import EmbeddingCache
    from .embed.resize import cache_variant

    return EmbeddingCache(cache_folder(options), options.embed, model_path, cache_variant(options.resize))


def cache_folder(options: Options) -> str:
    """The embedding cache's folder (--cache_dir, else OUT/<embed.cache.CACHE_FOLDER>); the pixel check keeps its
    thumbnails there too, by content, and the results a run keeps (crop_cluster/result_cache.py)."""
    from .embed.cache import CACHE_FOLDER

    return options.cache_dir or os.path.join(options.out_folder, CACHE_FOLDER)


def engine_of(options: Options):
    """engines.Engine of the run (--engine, --ray_address, --shared_dir; default OUT/ray_shared)."""
    from .engines import SHARED_FOLDER, Engine

    return Engine(options.engine, options.ray_address,
                  options.shared_dir or os.path.join(options.out_folder, SHARED_FOLDER))


def embed_files(options: Options, files: List[str], state) -> Crops:
    """Hash the files, embed each distinct readable content once (through the embedding cache) and expand back
    to one row per readable file."""
    from .dedup.exact import group_identical
    from .embed import model_id
    from .embed.crops import crops_from_embedded
    from .engines import embed

    with state.stage("hash"):
        groups = group_identical(files, progress=options.progress)
    state.skipped.extend(groups.unreadable)
    model_path = model_path_of(options)
    cache = embedding_cache(options, model_path)
    with state.stage("embed"):
        digests = [groups.digests[i] for i in groups.representatives]
        cached = embed(engine_of(options), cache, [files[i] for i in groups.representatives], digests, options.embed,
                       options.from_pretrained, options.device, options.batch_size, options.num_workers,
                       options.progress, options.resize)
    state.info.update(model=model_id(options.embed, model_path), **cached.info)
    state.info["embedded"] = int(cached.result.ok_index.size)
    state.skipped.extend(cached.result.skipped)
    crops, copies_lost = crops_from_embedded(files, groups, groups.representatives, cached.result,
                                             state.info["model"])
    state.skipped.extend(copies_lost)
    return crops


def reuse_embeddings(options: Options, state) -> Crops:
    """Crops from --embeddings (restricted to the -i files when given); identical files still share an
    individual, and a hierarchical model's predictions come back from its embedding cache. Relative filenames are
    resolved against the folder the file names as the working folder of the run that wrote it."""
    import numpy as np

    from .dedup.exact import group_identical
    from .embed.crops import cached_predictions, crops_from_stored
    from .outputs.embeddings import read_embeddings

    with state.stage("load_embeddings"):
        stored = read_embeddings(options.embeddings)
    stored = stored.resolved()
    rows = np.arange(len(stored.filenames))
    if options.inputs:
        position = {os.path.normpath(name): k for k, name in enumerate(stored.filenames)}
        wanted = collect(options.inputs, state, options.out_folder)
        found = [position.get(os.path.normpath(os.path.abspath(name)), -1) for name in wanted]
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
    if stored.digests:                    # the content each vector was made from (a file that is gone keeps its)
        changed = sum(1 for d, k in zip(digests, rows.tolist()) if d and stored.digests[k] and d != stored.digests[k])
        if changed:
            log.warning("%d files changed content since %s was written: their saved embeddings (of the old content) "
                        "are used; run with -i to embed them again", changed, options.embeddings)
        digests = [stored.digests[k] or d for d, k in zip(digests, rows.tolist())]
    return crops_from_stored(stored, rows, groups, present,
                             cached_predictions(options.embeddings, stored.model, digests))


def stored_crops(options: Options, session, files, state, model: Optional[str]) -> Optional[Crops]:
    """The campaign's current files `files` (DataFrame path, digest) as crops: their embeddings from the cache by
    content; a file whose embedding is missing is embedded again when it still holds the stored content, else its
    vector is taken from OUT/embeddings.pkl; what is left is listed in skipped.csv (and kept in the store). None
    when there are no stored files."""
    import numpy as np

    from .embed import model_id

    if not len(files):
        return None
    model_path = model_path_of(options)
    cache = embedding_cache(options, model_path)
    paths, digests = files["path"].tolist(), files["digest"].tolist()
    with state.stage("campaign_crops"):
        lookup = cache.lookup(digests)
        missing = np.flatnonzero(~lookup.found)
        vectors = lookup.vectors.astype(np.float32, copy=False)
        found = lookup.found.copy()
        extras = lookup.extras
        computed = 0
        if missing.size:
            vectors, found, extras, computed = _recover(options, session, paths, digests, vectors, found, extras,
                                                        missing, state, cache, model_path)
    state.info["campaign_crops"] = {"stored": len(paths), "stored_used": int(found.sum()),
                                    "stored_embeddings_computed": computed}
    keep = np.flatnonzero(found)
    if not keep.size:
        return Crops([], np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), np.float32),
                     np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool), model_id(options.embed, model_path),
                     None, [])
    return Crops(filenames=[paths[k] for k in keep], embedding=np.ascontiguousarray(vectors[keep]),
                 individual=np.arange(keep.size, dtype=np.int64), representative=np.ones(keep.size, bool),
                 distinct=np.ones(keep.size, bool), model=model or model_id(options.embed, model_path),
                 predictions=None if extras is None else extras[keep].astype(np.float32),
                 digests=[digests[k] for k in keep])


def _recover(options, session, paths, digests, vectors, found, extras, missing, state, cache, model_path):
    """Embeddings for the stored crops the cache lacks (stored_crops' docstring): (vectors, found, extras,
    embeddings computed)."""
    import numpy as np

    from .dedup.exact import file_digest
    from .embed import load_backend
    from .embed.cache import embed_with_cache
    from .embed.device import resolve_device

    again, gone = [], []
    for k in missing.tolist():
        try:
            same = not digests[k].startswith("path:") and file_digest(paths[k]) == digests[k]
        except OSError:
            same = False
        (again if same else gone).append(k)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    computed = 0
    if again:
        cached = embed_with_cache(cache, [paths[k] for k in again], [digests[k] for k in again],
                                  lambda: load_backend(options.embed, resolve_device(options.device),
                                                       options.from_pretrained),
                                  options.batch_size, options.num_workers, options.progress, options.resize)
        result = cached.result
        computed = cached.computed
        if result.embeddings.size:
            if dim == 0:                      # the cache held none of the campaign's crops
                dim = result.embeddings.shape[1]
                vectors = np.zeros((len(paths), dim), np.float32)
            rows = np.asarray(again, dtype=np.int64)[result.ok_index]
            vectors[rows] = result.embeddings
            found[rows] = True
        for path, reason in result.skipped:
            state.skipped.append((shown_name(path), f"campaign crop: {reason}; left out of this run, kept in "
                                                    f"{session.store.path}"))
    if gone:
        recovered = _from_saved(options.out_folder, [paths[k] for k in gone], [digests[k] for k in gone], dim)
        for k, vector in zip(gone, recovered):
            if vector is None:
                state.skipped.append((shown_name(paths[k]), f"campaign crop: its embedding is not in the cache "
                                                           f"{cache.folder} and its file is gone or changed; left "
                                                           f"out of this run, kept in {session.store.path}"))
            else:
                vectors[k], found[k] = vector, True
    return vectors, found, extras, computed


def _from_saved(out_folder: str, paths: List[str], digests: List[str], dim: int) -> List:
    """The vectors of `paths` from OUT/embeddings.pkl (by content digest, else by absolute path); None where not
    there or of another dimension."""
    from .outputs.embeddings import EmbeddingsFileError, read_embeddings

    saved = os.path.join(out_folder, "embeddings.pkl")
    if not os.path.isfile(saved):
        return [None] * len(paths)
    try:
        stored = read_embeddings(saved)
    except EmbeddingsFileError as error:
        log.warning("%s", error)
        return [None] * len(paths)
    stored = stored.resolved()
    by_path = {os.path.normpath(name): k for k, name in enumerate(stored.filenames)}
    by_digest = {d: k for k, d in enumerate(stored.digests or []) if d}
    result = []
    for path, digest in zip(paths, digests):
        k = by_digest.get(digest, by_path.get(os.path.normpath(path)) if not stored.digests else None)
        ok = k is not None and (dim == 0 or stored.embedding.shape[1] == dim)
        result.append(stored.embedding[k] if ok else None)
    return result
