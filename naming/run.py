"""The entry the pipeline calls: references read, filtered and embedded, then every naming unit named.

`name_run` returns the ref_* columns of clusters.csv (one row per crop), the run.json entry, the metrics.json block
(with labels) and the rows the campaign store keeps (which references named what), all plain values. The rule and
its settings: naming/rule.py; what is named: naming/units.py.

ref_status per row: `named` (the best name reached the threshold used (--name_threshold, or the default raised by
the gallery's self-test) and beat the second by --name_margin),
`rolled_up` (the margin failed and the close names share an ancestor: `Noctuidae sp.`), `unknown`, and where a
reviewer named the crop's group: `reviewed` (the machine agrees, or gave no name) or `conflict` (it gave another
name). A human name always wins; the machine's answer stays in the other columns.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from crop_cluster.campaign.store import NAME_REFERENCE_COLUMNS, UNIT_NAME_COLUMNS
from crop_cluster.naming import COLUMNS, RANKS, NamingError
from crop_cluster.naming.references import PLACEHOLDER, References
from crop_cluster.naming.rule import NamingSettings, resolve_settings

log = logging.getLogger("crop-cluster")
GALLERY_OVERLAP_WARNING = 0.10   # warn when more of the references are closer to another name than to their own


def gather_references(sources: Sequence[str], species_list: Optional[str], remembered: Optional[References],
                      settings) -> Tuple[References, np.ndarray, Dict]:
    """The run's references and their vectors: read from `sources` (or the campaign's `remembered` ones with
    --add), restricted to the species list, embedded with the run's model (naming.embedding.EmbedSettings)."""
    from crop_cluster.naming.embedding import embed_references
    from crop_cluster.naming.references import read_references

    references = read_references(sources) if sources else remembered
    info: Dict = {"sources": list(dict.fromkeys(references.sources)), "read": len(references),
                  "remembered": not sources}
    if species_list:
        from crop_cluster.naming.species_list import on_list, read_species_list

        listed = read_species_list(species_list)
        keep = on_list(listed, references.names, references.taxonomy)
        dropped = sorted(set(np.asarray(references.names, dtype=object)[~keep]))
        if dropped:
            log.info("--species_list %s: %d reference names are not on it and are left out (e.g. %s)",
                     species_list, len(dropped), ", ".join(dropped[:5]))
        if not keep.any():
            raise NamingError(f"--species_list {species_list}: none of the {len(set(references.names))} reference "
                              f"names is on it (e.g. {references.names[0]}); check the names' spelling, or the list")
        references = references.keep(keep)
        info["species_list"] = {"file": species_list, "names_dropped": len(dropped), "examples": dropped[:10]}
    references, vectors, counts = embed_references(references, settings)
    info.update(counts, names=len(set(references.names)))
    if not len(references):
        raise NamingError("--reference: none of the reference crops could be embedded (e.g. "
                          f"{references.skipped[0][0]}: {references.skipped[0][1]})")
    info["left_out_examples"] = [list(item) for item in references.skipped[:10]]
    return references, vectors, info


@dataclass(frozen=True)
class Named:
    """columns: DataFrame of naming.COLUMNS, one row per crop; info: run.json's `naming`; metrics: metrics.json's
    `naming` block (None without labels); references, names: the campaign store's rows (campaign.store's
    NAME_REFERENCE_COLUMNS, UNIT_NAME_COLUMNS)."""

    columns: pd.DataFrame
    info: Dict
    metrics: Optional[Dict]
    references: pd.DataFrame
    names: pd.DataFrame


def name_campaign(sources: Sequence[str], species_list: Optional[str], remembered: pd.DataFrame, embed_settings,
                  level: Optional[str], threshold: Optional[float], margin: Optional[float], cluster_threshold: float,
                  embedding: np.ndarray, cluster: np.ndarray, individual: np.ndarray, group: Sequence[str],
                  labels: Optional[Sequence[Optional[str]]], individual_ids: np.ndarray,
                  crop_keys: Sequence[str]) -> Optional[Named]:
    """The pipeline's call: name the run's units from `sources` (--reference), or with none given from the
    `remembered` references (the store's name_references rows, used when no source is given); None when there are neither.
    embed_settings: naming.embedding.EmbedSettings of the run; level, threshold, margin: as given (None: defaults);
    cluster_threshold: the run's clustering threshold (the default of a model not calibrated for naming);
    individual_ids: int64 (n,) the stable id of each crop's individual; crop_keys: (n,) its store key; the other
    arrays as for name_run."""
    from crop_cluster.embed import backend_of_model

    stored = None if sources else references_from_rows(remembered)
    if not sources and stored is None:
        return None
    settings, source = resolve_settings(backend_of_model(embed_settings.model), level, threshold, margin,
                                        cluster_threshold)
    references, vectors, info = gather_references(sources, species_list, stored, embed_settings)
    keys = {"crop": [str(k) for k in crop_keys], "individual": [str(i) for i in individual_ids.tolist()],
            "cluster": [str(c) for c in cluster.tolist()]}
    named = name_run(references, vectors, embedding, cluster, individual, group, settings, labels, keys)
    log.info("names from %d references of %d names: %s (%s level, threshold %.3f, margin %.3f)", len(references),
             info["names"], ", ".join(f"{count} {status}" for status, count in named.info["statuses"].items()
                                      if count), settings.level, named.info["threshold"], settings.margin)
    return Named(named.columns, {**info, **named.info, "defaults": source}, named.metrics, named.references,
                 named.names)


def name_run(references: References, vectors: np.ndarray, embedding: np.ndarray, cluster: np.ndarray,
             individual: np.ndarray, group: Sequence[str], settings: NamingSettings,
             labels: Optional[Sequence[Optional[str]]] = None,
             unit_keys: Optional[Dict[str, Sequence[str]]] = None) -> Named:
    """Name every unit of `settings.level` (naming/units.py) against the references.

    references, vectors: float32 (R, d) L2-normalised, row r = reference r; embedding: float32 (n, d) per crop;
    cluster, individual: int64 (n,) per crop (-1 not clustered); group: (n,) the reviewer's group name per crop ('':
    none); labels: (n,) true labels or None; unit_keys: per kind of unit ('cluster', 'individual', 'crop') (n,) per
    crop, what identifies its unit of that kind in the store (the cluster id, stable individual id, crop digest;
    None: the unit number)."""
    from crop_cluster.naming.prototypes import decide, gallery_overlap, name_codes, nearest_references, top_names
    from crop_cluster.naming.rule import member_names, threshold_used
    from crop_cluster.naming.taxonomy import ancestor_name, common_ancestor, rank_of
    from crop_cluster.naming.units import naming_units, split_mixed_clusters, unit_vectors

    names, codes = name_codes(references.names)
    threshold, gallery_threshold = threshold_used(settings, vectors, codes, len(names))
    split = 0
    if settings.members is not None:                     # cluster level: clusters that mix names, member by member
        member = member_names(embedding, individual, vectors, codes, len(names), settings.members)
        unit, kind, split = split_mixed_clusters(cluster, individual, member)
    else:
        unit, kind = naming_units(settings.level, cluster, individual)
    n_units = kind.size
    queries = unit_vectors(embedding, individual if settings.level != "crop" else np.arange(unit.size), unit, n_units)
    index, score = top_names(queries, vectors, codes, len(names), settings.rule)
    decision = decide(index, score, threshold, settings.margin)
    status = decision.status.copy()
    name = np.where(status == "named", np.asarray(names, dtype=object)[np.maximum(decision.best, 0)], "")
    rank = np.asarray([rank_of(value, references.taxonomy) if value else "" for value in name], dtype=object)
    for u, close in decision.close.items():
        ancestor = common_ancestor([names[j] for j in close], references.taxonomy)
        status[u] = "rolled_up" if ancestor else "unknown"
        if ancestor:
            name[u], rank[u] = ancestor_name(*ancestor), ancestor[1]
    evidence = nearest_references(queries, vectors, codes, np.where(status != "unknown", decision.best, -1))
    nearest = np.where(evidence >= 0, np.asarray(references.filenames, dtype=object)[np.maximum(evidence, 0)], "")
    machine = status.copy()
    human = _unit_groups(group, unit, n_units)
    final = _with_reviews(machine, name, rank, human, references.taxonomy)
    second = np.where(decision.second >= 0, np.asarray(names, dtype=object)[np.maximum(decision.second, 0)], "")
    columns = pd.DataFrame({
        "ref_name": name[unit], "ref_rank": rank[unit], "ref_score": np.round(decision.score, 4)[unit],
        "ref_margin": np.round(decision.margin, 4)[unit], "ref_second": second[unit], "ref_nearest": nearest[unit],
        "ref_status": final[unit]}, columns=list(COLUMNS))
    counts = pd.Series(final).value_counts()
    overlap = gallery_overlap(vectors, codes, len(names))
    info = {"level": settings.level, "rule": settings.rule, "threshold": round(threshold, 4),
            "margin": settings.margin, "units": int(n_units),
            "statuses": {s: int(counts.get(s, 0)) for s in ("named", "rolled_up", "unknown", "reviewed", "conflict")},
            "gallery": {"names_with_one_reference": int((np.bincount(codes) == 1).sum()),
                        "references_closer_to_another_name": round(float(overlap.mean()), 4) if overlap.size else 0.0,
                        "self_test_threshold": None if not np.isfinite(gallery_threshold) else
                        round(gallery_threshold, 4),
                        "threshold_default": settings.threshold, "offset": settings.gallery_offset,
                        "raised_threshold": bool(threshold > settings.threshold)}}
    if settings.members is not None:
        info["clusters_named_by_individual"] = split
    if threshold > settings.threshold:
        log.warning("--reference: the model confuses this gallery's own names up to cosine %.3f (its references named "
                    "by each other), so a name needs %.3f here instead of %.3f: few or no units are named; add "
                    "references, or give --name_threshold to name anyway (docs/naming.md, how a name is chosen)",
                    gallery_threshold, threshold, settings.threshold)
    elif overlap.mean() > GALLERY_OVERLAP_WARNING:
        log.warning("--reference: %.0f%% of the reference crops are closer to another name's prototype than to their "
                    "own: this model does not separate these names well, so names given will be unreliable; add "
                    "references, or raise --name_threshold / --name_margin (docs/naming.md, 'reading the scores')",
                    100 * overlap.mean())
    metrics = None
    if labels is not None:
        from crop_cluster.naming.evaluate import open_set_metrics, unit_truth

        best = np.asarray(names, dtype=object)[np.maximum(decision.best, 0)]
        metrics = {"level": settings.level, "threshold": round(threshold, 4), "margin": settings.margin,
                   **open_set_metrics(decision.score, decision.margin, list(best), list(machine),
                                      unit_truth(labels, unit, n_units), names, np.bincount(unit, minlength=n_units),
                                      settings.margin)}
    keys = _unit_keys(unit, kind, unit_keys)
    digest_of = np.asarray(references.digests, dtype=object)
    store_names = pd.DataFrame({"level": [f"{settings.level}:{k}" for k in kind], "unit": keys, "name": name,
                                "rank": rank, "score": np.round(decision.score, 4), "status": final,
                                "reference": np.where(evidence >= 0, digest_of[np.maximum(evidence, 0)], "")},
                               columns=UNIT_NAME_COLUMNS)
    return Named(columns, info, metrics, reference_rows(references), store_names)


def _unit_groups(group: Sequence[str], unit: np.ndarray, n_units: int) -> np.ndarray:
    """object (U,): the reviewer's name of each unit (its first crop's group; '' when none or only a placeholder of
    a verified, unnamed group such as 'cluster 7')."""
    human = _first_of_unit(np.asarray(["" if g is None else str(g) for g in group], dtype=object), unit, n_units)
    return np.asarray(["" if value in ("", "-1", "nan") or PLACEHOLDER.match(value) else value for value in human],
                      dtype=object)


def _first_of_unit(values: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """object (U,): values (n,) at each unit's first row ('' for a unit without rows)."""
    first = np.full(n_units, "", dtype=object)
    first[unit[::-1]] = values[::-1]                 # repeated indices: the last assignment, the first row, wins
    return first


def _with_reviews(status: np.ndarray, name: np.ndarray, rank: np.ndarray, human: np.ndarray, taxonomy) -> np.ndarray:
    """ref_status with the reviewers' names over the machine's: `reviewed` where a person named the unit and the
    machine agrees or gave no name, `conflict` where it gave another name."""
    from crop_cluster.naming.taxonomy import consistent

    final = status.copy()
    for u in np.flatnonzero(human != "").tolist():
        agrees = status[u] == "unknown" or consistent(human[u], name[u], rank[u], taxonomy)
        final[u] = "reviewed" if agrees else "conflict"
    return final


def _unit_keys(unit: np.ndarray, kind: np.ndarray, unit_keys: Optional[Dict[str, Sequence[str]]]) -> List[str]:
    """Each unit's key in the store: unit_keys[its kind] at its first row; the unit number without unit_keys."""
    if unit_keys is None:
        return [str(u) for u in range(kind.size)]
    keys = np.full(kind.size, "", dtype=object)
    for name in np.unique(kind):
        chosen = kind == name
        keys[chosen] = _first_of_unit(np.asarray(unit_keys[name], dtype=object), unit, kind.size)[chosen]
    return keys.tolist()


def reference_rows(references: References) -> pd.DataFrame:
    """The store's rows of the references (campaign.store.NAME_REFERENCE_COLUMNS); taxonomy as JSON {rank: value,
    taxonID}."""
    taxonomy = []
    for name in references.names:
        lineage = references.taxonomy.get(name)
        entry = {rank: value for rank, value in zip(RANKS, lineage) if value} if lineage else {}
        if name in references.taxon_ids:
            entry["taxonID"] = references.taxon_ids[name]
        taxonomy.append(json.dumps(entry, sort_keys=True))
    return pd.DataFrame({"digest": references.digests, "path": references.filenames, "name": references.names,
                         "source": references.sources, "taxonomy": taxonomy}, columns=NAME_REFERENCE_COLUMNS)


def references_from_rows(rows: pd.DataFrame) -> Optional[References]:
    """References from the store's rows (campaign.store.NAME_REFERENCE_COLUMNS); None when there are none."""
    if rows is None or rows.empty:
        return None
    taxonomy, taxon_ids = {}, {}
    for name, text in zip(rows["name"], rows["taxonomy"]):
        entry = json.loads(text or "{}")
        if any(rank in entry for rank in RANKS):
            taxonomy[name] = tuple(entry.get(rank, "") for rank in RANKS)
        if "taxonID" in entry:
            taxon_ids[name] = entry["taxonID"]
    return References(rows["path"].tolist(), rows["name"].tolist(), rows["source"].tolist(), rows["digest"].tolist(),
                      taxonomy, taxon_ids)
