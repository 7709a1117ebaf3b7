"""The campaign's part of a run, as the pipeline calls it (plain values in, plain values out).

    with CampaignSession(out_folder) as session:          # takes the folder's lock, opens the store
        decisions = session.read_review(path, filenames, digests, reviewed_table)   # --review, optional
        settled = session.settle(filenames, digests, individual, representative, label, embedding, seconds,
                                 nights, sites)          # decisions applied, stable ids, status per row
        ... the pipeline writes clusters.csv etc. from `settled` ...
        session.commit(settled, mode, parameters, versions, counts)   # one transaction, last

`label` is the partition of the individuals before any human decision: the algorithm's over the campaign's whole
current crop set (any ids). Nothing is written to the store before
`commit`, so a run that fails or is killed leaves it as it was.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from crop_cluster.campaign import STATUSES
from crop_cluster.campaign.decisions import apply_decisions, latest_decisions
from crop_cluster.campaign.ids import stable_ids
from crop_cluster.campaign.lock import RunLock
from crop_cluster.campaign.store import DECISION_COLUMNS, REJECTION_COLUMNS, CampaignStore, RunRecord, paused_gc

log = logging.getLogger("crop-cluster")
SESSION_COLUMNS = ["digest", "path", "individual", "cluster", "representative", "first_run"]   # what a run reads
REVIEWED, UNREVIEWED, NEW = STATUSES
NIGHT_OFFSET_HOURS = 12      # a trap night is named after its evening's date: times before noon are the night before


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def nights_of(seconds: np.ndarray) -> List[Optional[str]]:
    """The trap night of each POSIX time (UTC date of time - 12 h), None where unknown."""
    seconds = np.asarray(seconds, dtype=np.float64)
    nights: List[Optional[str]] = [None] * seconds.size
    known = np.flatnonzero(np.isfinite(seconds))
    if known.size:
        shifted = pd.to_datetime(seconds[known] - NIGHT_OFFSET_HOURS * 3600.0, unit="s", utc=True)
        for k, night in zip(known.tolist(), shifted.strftime("%Y-%m-%d").tolist()):
            nights[k] = night
    return nights


def _mapped(mapping: Dict[int, int], values: np.ndarray, missing: int = -1) -> np.ndarray:
    """int64 array: mapping[v] for each of `values` (int64), `missing` where v is not a key (vectorised)."""
    values = np.asarray(values, dtype=np.int64)
    if not mapping or not values.size:
        return np.full(values.size, missing, dtype=np.int64)
    keys = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
    targets = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
    order = np.argsort(keys, kind="stable")
    keys, targets = keys[order], targets[order]
    spot = np.minimum(np.searchsorted(keys, values), keys.size - 1)
    return np.where(keys[spot] == values, targets[spot], missing)


def merged_clusters(old_cluster: np.ndarray, row_cluster: np.ndarray, issued: int, named: set) -> List[tuple]:
    """(old id, id now) for every stored unreviewed cluster whose crops all went into another stored cluster this
    run (single linkage merged them: the larger kept its id). old_cluster, row_cluster: int64 (n,) per row."""
    merges = []
    present = set(np.unique(row_cluster[row_cluster >= 0]).tolist())
    for old in np.unique(old_cluster[old_cluster >= 0]).tolist():
        if old in present or old in named:
            continue
        now = row_cluster[(old_cluster == old) & (row_cluster >= 0)]
        if now.size and (now == now[0]).all() and now[0] < issued:
            merges.append((int(old), int(now[0])))
    return merges


def legacy_settings(runs: pd.DataFrame) -> Dict:
    """The settings of a store written before they were kept (schema 1): those of its latest run's parameters that
    a run gives (campaign/settings.py SETTINGS; the threshold as that run resolved it), else {}."""
    from crop_cluster.campaign.settings import SETTINGS

    if not len(runs):
        return {}
    parameters = json.loads(runs["parameters"].iloc[-1])
    parameters["filter"] = parameters.pop("filters", ())
    defaults = {"filter": [], "no_verify": False, "cluster": "cosine", "max_cluster_size": 0, "linkage": "ward",
                "pca": 0, "standardize": False, "seed": 0, "taxon_share": 0.8, "embed": "dino"}
    return {name: parameters[name] for name in SETTINGS
            if name in parameters and parameters[name] is not None and parameters[name] != defaults.get(name)
            or name in ("embed", "threshold") and parameters.get(name) is not None}


def crop_keys(digests: Sequence[str], filenames: Sequence[str]) -> List[str]:
    """The store key of each row: its content digest, or `path:<absolute path>` for a file that could not be read."""
    return [d if d else "path:" + os.path.abspath(f) for d, f in zip(digests, filenames)]


@dataclass
class Settled:
    """The run's final partition. Per row (n,): individual int64 0..I-1 (excluded crops split off), representative
    bool, group (name or ''), status ('reviewed', 'unreviewed', 'new'; '' when not clustered), first_run int64.
    Per individual (I,): rep_cluster int64 stable cluster id (-1 none), individual_id int64 stable id.
    keys: the store key per row; counts: for run.json; conflicts etc. are in counts and logged. identifications:
    filename, group, reviewer, time of every row that carries a human decision (the latest), for Darwin Core.
    merges: (cluster id that stopped, cluster id that holds it now) merged by this run; bridges: reviewed groups
    that new material links (kept apart); merged_since_review: cluster id -> the ids merged into it since the
    campaign's last review (this run's merges included)."""

    individual: np.ndarray
    representative: np.ndarray
    rep_cluster: np.ndarray
    individual_id: np.ndarray
    group: List[str]
    status: List[str]
    first_run: np.ndarray
    keys: List[str]
    filenames: List[str]
    seconds: np.ndarray
    nights: List[Optional[str]]
    sites: List[Optional[str]]
    names: Dict[int, str]
    excluded: np.ndarray
    seen: np.ndarray
    counts: Dict[str, int] = field(default_factory=dict)
    identifications: Optional[pd.DataFrame] = None
    merges: List[tuple] = field(default_factory=list)
    bridges: List[Dict] = field(default_factory=list)
    merged_since_review: Dict[int, List[int]] = field(default_factory=dict)
    rejections: Optional[pd.DataFrame] = None      # remembered rejected suggestions (digest, other, kind, ...)


class CampaignSession:
    """The output folder's lock and store for the length of one run."""

    def __init__(self, out_folder: str, lock_wait: Optional[float] = None) -> None:
        self.out_folder = out_folder
        self.lock = RunLock(out_folder, lock_wait)
        self.store: Optional[CampaignStore] = None
        self.started = now()
        self.new_decisions = pd.DataFrame(columns=DECISION_COLUMNS[:-1])
        self.new_rejections = pd.DataFrame(columns=REJECTION_COLUMNS[:-1])

    def __enter__(self) -> "CampaignSession":
        self.lock.acquire()
        try:
            self.store = CampaignStore(self.out_folder)
            self.run_id = self.store.next_run_id()
            self.stored_crops = self.store.crops(SESSION_COLUMNS)
            self._stored_index = pd.Index(self.stored_crops["digest"])          # unique: the table's key
            self.files = self.store.files()
            self.meta = self.store.meta()
            self.settings = self.store.settings() or legacy_settings(self.store.runs())
        except BaseException:
            self.lock.release()
            raise
        self.new_settings: Optional[Dict] = None
        self.new_meta: Dict[str, str] = {"id": self.meta.get("id") or uuid.uuid4().hex[:16]}
        return self

    @property
    def campaign_id(self) -> str:
        """The campaign's random key (store meta `id`, also in run.json): the same in every run into the folder."""
        return self.new_meta["id"]

    def current_files(self) -> pd.DataFrame:
        """The campaign's current files (path absolute, digest), in the order first stored."""
        files = self.files[self.files["current"].to_numpy(bool)]
        return files[["path", "digest"]].reset_index(drop=True)

    def __exit__(self, *exc) -> None:
        if self.store is not None:
            self.store.close()
        self.lock.release()

    def campaign_key(self, keys: Sequence[str]) -> str:
        """A stable name of the campaign for ids that must be unique beyond it (Darwin Core occurrenceIDs): the
        smallest store key among the crops of its first run, shortened; `keys` (this run's store keys) stand in
        for them when the campaign starts with this run. The same in every run into the folder."""
        stored = self.stored_crops
        first = stored["digest"][stored["first_run"].to_numpy() == 0] if len(stored) else ()
        return str(min(first) if len(first) else min(keys, default="empty"))[:16]

    # -- before clustering ---------------------------------------------------------------------------------------
    def known(self, keys: Sequence[str]) -> np.ndarray:
        """bool (n,): which store keys are already crops of the campaign."""
        return self._stored_row(keys) >= 0

    def _stored_row(self, keys: Sequence[str]) -> np.ndarray:
        """int64 (n,): the row of each key in stored_crops, -1 for a key not stored."""
        return self._stored_index.get_indexer(pd.Index(list(keys), dtype=object)).astype(np.int64)

    def _stored(self, column: str, where: np.ndarray, missing: int) -> np.ndarray:
        """int64 (n,): stored_crops[column] at rows `where` (from _stored_row), `missing` where -1."""
        values = self.stored_crops[column].to_numpy(np.int64)
        return np.where(where >= 0, values[np.maximum(where, 0)] if values.size else missing, missing)

    def read_review(self, path: str, filenames: Sequence[str], digests: Sequence[str],
                    reviewed_table: Optional[str]) -> int:
        """Record the decisions of review file `path` for this run (committed with it); returns how many matched."""
        from crop_cluster.campaign.review import read_review

        review = read_review(path, filenames, crop_keys(digests, filenames), reviewed_table)
        if review.matched < review.rows:
            log.warning("--review %s: %d of its %d decisions match a crop of this run; the other %d name files "
                        "that are not here", path, review.matched, review.rows, review.rows - review.matched)
        self.new_decisions = pd.concat([self.new_decisions, review.decisions], ignore_index=True)
        if review.rejections is not None and len(review.rejections):
            self.new_rejections = pd.concat([self.new_rejections, review.rejections], ignore_index=True)
        log.info("--review %s (%s-keyed): %d decisions recorded", path, review.kind, len(review.decisions))
        return review.matched

    # -- after clustering ----------------------------------------------------------------------------------------
    def settle(self, filenames: Sequence[str], digests: Sequence[str], individual: np.ndarray,
               representative: np.ndarray, label: np.ndarray, embedding: np.ndarray, seconds: np.ndarray,
               sites: Optional[Sequence[Optional[str]]] = None, nights: Optional[Sequence[Optional[str]]] = None,
               seen: Optional[np.ndarray] = None, match_threshold: Optional[float] = None) -> Settled:
        """Apply every decision of the campaign over `label` (int64 (I,) per individual), give stable ids.

        filenames, digests: (n,) per row; individual int64 (n,) 0..I-1; representative bool (n,); embedding
        float32 (n, d); seconds float64 (n,) NaN unknown; sites, nights: per row or None (nights default to the
        night of each time); seen: bool (n,), the rows read from this run's inputs (None: all; with --add the
        campaign's other crops are written back only where this run changed them); match_threshold: the similarity
        an unnamed individual needs to a named group's members to join it (campaign/decisions.py; None: no gate).
        """
        with paused_gc():                       # per-crop lists and dicts only: nothing cyclic to collect
            return self._settle(filenames, digests, individual, representative, label, embedding, seconds, sites,
                                nights, seen, match_threshold)

    def _settle(self, filenames, digests, individual, representative, label, embedding, seconds, sites, nights,
                seen, match_threshold) -> Settled:
        keys = crop_keys(digests, filenames)
        latest = latest_decisions(pd.concat([self.store.decisions().drop(columns="run"), self.new_decisions],
                                            ignore_index=True))
        now_decided = set(self.new_decisions["digest"])       # disagreements this run's review brought
        disagreements = [(key, groups) for key, groups in latest.disagreements if key in now_decided]
        for key, groups in disagreements[:5]:
            log.warning("decisions disagree on crop %s: %s; the latest (%s) wins", key, " then ".join(groups),
                        groups[-1])
        applied = apply_decisions(latest, keys, individual, representative, label, embedding, match_threshold)
        row_label = applied.label[applied.individual]
        named = set(applied.names)
        crops_per_label = pd.Series(row_label[row_label >= 0]).value_counts()
        small = [lab for lab, size in crops_per_label.items() if size < 2 and lab not in named]
        row_label = np.where(np.isin(row_label, small), -1, row_label)
        where = self._stored_row(keys)
        self._settled_rows = (keys, where)                 # commit reuses them for the same keys
        old_cluster = self._stored("cluster", where, -1)
        old_individual = self._stored("individual", where, -1)
        clusters = self.store.clusters()
        stored_names = clusters[clusters["name"] != ""]
        id_of_name = dict(zip(stored_names["name"], stored_names["id"].astype(int)))
        fixed = {lab: id_of_name[name] for lab, name in applied.names.items() if name in id_of_name}
        cluster_id = stable_ids(row_label, old_cluster, self.store.next_cluster_id(), fixed)
        row_cluster = np.where(row_label >= 0, _mapped(cluster_id, row_label), -1)
        person = stable_ids(applied.individual, old_individual, self.store.next_individual_id())
        n_ind = int(applied.label.size)
        individual_id = _mapped(person, np.arange(n_ind))
        rep_cluster = np.full(n_ind, -1, dtype=np.int64)
        rep_cluster[applied.individual] = row_cluster
        names = {cluster_id[lab]: name for lab, name in applied.names.items() if lab in cluster_id}
        issued = self.store.next_cluster_id()
        status = np.where(row_cluster < 0, "", np.where(np.isin(row_cluster, list(names)), REVIEWED,
                                                        np.where(row_cluster < issued, UNREVIEWED, NEW)))
        first_run = self._stored("first_run", where, self.run_id)
        seconds = np.asarray(seconds, dtype=np.float64)
        counts = {**applied.counts, "decisions_recorded": int(len(self.new_decisions)),
                  "decisions_disagreeing": len(disagreements),
                  "new_crops": int((old_individual < 0).sum()),
                  "clusters_kept_id": int(np.intersect1d(row_cluster[row_cluster >= 0],
                                                         old_cluster[old_cluster >= 0]).size),
                  "new_clusters": int(np.unique(row_cluster[row_cluster >= issued]).size)}
        fresh = (old_individual < 0) & (row_cluster >= 0) & (row_cluster < issued)
        counts["joined"] = int(np.unique(applied.individual[fresh]).size)    # new individuals in existing clusters
        merges = merged_clusters(old_cluster, row_cluster, issued, set(names))
        counts["clusters_merged"] = len(merges)
        bridges = [{"groups": sorted(cluster_id[lab] for lab in bridge["labels"] if lab in cluster_id),
                    "names": bridge["names"], "crops": [filenames[k] for k in
                                                        np.flatnonzero(np.isin(applied.individual,
                                                                               bridge["individuals"]))[:10]]}
                   for bridge in applied.bridges]
        counts["conflicts"] = len(bridges)
        for bridge in bridges[:5]:
            log.warning("new material links the reviewed groups %s (%s): they are kept apart, each crop goes to the "
                        "closer group; review whether they are one (run.json campaign.bridges)",
                        " and ".join(map(str, bridge["groups"])), ", ".join(bridge["names"]))
        decided = [k for k, key in enumerate(keys) if key in latest.group] if latest.group else []
        identifications = pd.DataFrame({"filename": [filenames[k] for k in decided],
                                        "group": [latest.group[keys[k]] for k in decided],
                                        "reviewer": [latest.reviewer.get(keys[k], "") for k in decided],
                                        "time": [latest.time[keys[k]] for k in decided]})
        rejections = pd.concat([self.store.rejections().drop(columns="run"), self.new_rejections],
                               ignore_index=True)
        return Settled(applied.individual, applied.representative, rep_cluster, individual_id,
                       [names.get(c, "") for c in row_cluster.tolist()] if names else [""] * len(keys),
                       status.tolist(), first_run, keys,
                       list(filenames), seconds, list(nights) if nights is not None else nights_of(seconds),
                       list(sites) if sites is not None else [None] * len(keys), names, applied.excluded,
                       np.ones(len(keys), dtype=bool) if seen is None else np.asarray(seen, dtype=bool), counts,
                       identifications, merges, bridges, self._merged_since_review(merges), rejections)

    def commit(self, settled: Settled, mode: str, parameters: Dict, versions: Dict, counts: Dict,
               rank: Optional[np.ndarray] = None, naming=None) -> int:
        """Write the run to the store in one transaction; returns its run id. rank: int64 (n,) each row's position
        in the run's clusters.csv (new files are stored in that order; None: row order). naming: the
        (name_references, unit_names) DataFrames of a run that named from references (naming/run.py), else None."""
        with paused_gc():
            return self._commit(settled, mode, parameters, versions, counts, rank, naming)

    def _commit(self, settled: Settled, mode: str, parameters: Dict, versions: Dict, counts: Dict,
                rank: Optional[np.ndarray] = None, naming=None) -> int:
        codes, digests = pd.factorize(pd.Index(settled.keys, dtype=object))      # one row per content, first seen
        first = np.empty(len(digests), dtype=np.int64)
        first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
        seen = np.bincount(codes, weights=settled.seen, minlength=len(digests))[:len(digests)] > 0
        individual = settled.individual_id[settled.individual][first]
        cluster = settled.rep_cluster[settled.individual][first]
        representative = np.asarray(settled.representative, dtype=bool)[first]
        path = np.asarray(settled.filenames, dtype=object)[first]
        rows_of = getattr(self, "_settled_rows", None)
        where = rows_of[1][first] if rows_of is not None and rows_of[0] is settled.keys else \
            self._stored_row(digests)
        stored = where >= 0
        at = np.maximum(where, 0)
        stored_path = self.stored_crops["path"].to_numpy(dtype=object)[at] if stored.any() else path
        same = stored & (path == stored_path)               # the stored path itself: absolute already
        for k in np.flatnonzero(~same).tolist():            # the others absolute, as the store keeps them
            if not os.path.isabs(path[k]):
                path[k] = os.path.abspath(path[k])
            same[k] = stored[k] and path[k] == stored_path[k]
        if stored.any():
            same &= (individual == self.stored_crops["individual"].to_numpy(np.int64)[at]) & \
                (cluster == self.stored_crops["cluster"].to_numpy(np.int64)[at]) & \
                (representative == self.stored_crops["representative"].to_numpy(bool)[at])
        write = np.flatnonzero(~same | seen)                 # unchanged, unread: left as stored
        rows = first[write]
        crops = pd.DataFrame({"digest": np.asarray(digests, dtype=object)[write], "path": path[write],
                              "individual": individual[write], "cluster": cluster[write],
                              "representative": representative[write],
                              "seconds": np.asarray(settled.seconds, dtype=np.float64)[rows],
                              "night": [settled.nights[k] for k in rows.tolist()],
                              "site": [settled.sites[k] for k in rows.tolist()]})
        present = np.unique(settled.rep_cluster[settled.rep_cluster >= 0])
        issued = self.store.next_cluster_id()
        clusters = pd.DataFrame({"id": present, "name": [settled.names.get(int(c), "") for c in present],
                                 "status": [REVIEWED if int(c) in settled.names else
                                            UNREVIEWED if c < issued else NEW for c in present]})
        record = RunRecord(self.started, now(), mode, parameters, versions, counts, crops, clusters,
                           self.new_decisions, self._file_rows(settled, rank), self.new_settings,
                           list(settled.merges), self.new_meta, *(naming if naming is not None else (None, None)),
                           rejections=self.new_rejections)
        return self.store.commit_run(record)

    def _merged_since_review(self, merges: List[tuple]) -> Dict[int, List[int]]:
        """cluster id -> ids merged into it since the last run that recorded decisions (following merge chains)."""
        decisions = self.store.decisions()
        last_review = int(pd.to_numeric(decisions["run"]).max()) if len(decisions) else -1
        stored = self.store.merges()
        pairs = [(int(a), int(b)) for run, a, b in stored.itertuples(index=False) if run > last_review] + \
            [(int(a), int(b)) for a, b in merges]
        into = dict(pairs)
        result: Dict[int, List[int]] = {}
        for start in into:
            end, seen = start, {start}
            while end in into and into[end] not in seen:
                end = into[end]
                seen.add(end)
            result.setdefault(end, []).append(start)
        return {key: sorted(value) for key, value in result.items()}

    def _file_rows(self, settled: Settled, rank: Optional[np.ndarray]) -> pd.DataFrame:
        """The files table rows this run writes, in the order of `rank`: its files that are new, changed, read again
        or back in the current set (current), and the stored current files it left out (no longer current)."""
        paths = pd.Index(np.asarray(settled.filenames, dtype=object))
        stored = self.files.set_index("path")
        at = stored.index.get_indexer(paths)
        known = at >= 0
        digest = np.asarray(settled.keys, dtype=object)
        same = np.zeros(len(paths), dtype=bool)
        if known.any():
            same[known] = (stored["digest"].to_numpy(dtype=object)[at[known]] == digest[known]) & \
                stored["current"].to_numpy(bool)[at[known]]
        write = ~same | np.asarray(settled.seen, dtype=bool)
        if rank is not None:
            write = np.flatnonzero(write)[np.argsort(np.asarray(rank)[write], kind="stable")]
        rows = pd.DataFrame({"path": paths[write], "digest": digest[write], "current": True})
        left = self.files[self.files["current"].to_numpy(bool) & ~self.files["path"].isin(paths).to_numpy()]
        return pd.concat([rows, pd.DataFrame({"path": left["path"], "digest": left["digest"], "current": False})],
                         ignore_index=True)
