"""The campaign store OUT/campaign.sqlite: SQLite (standard library), WAL journal, a versioned schema.

Tables (schema version SCHEMA_VERSION):

- `schema_version(version)`: one row.
- `runs(id, started, finished, mode, parameters, versions, counts)`: one row per committed run; mode is `full`
  (clustered afresh), `add` (`--add`) or `review` (`--review` of the folder's own run); the last three are JSON.
- `crops(digest PRIMARY KEY, path, first_run, last_run, individual, cluster, representative, seconds, night, site)`:
  every crop ever clustered in the folder, keyed by content digest (BLAKE2b-128 hex, as the embedding cache; a crop
  whose file was gone when it was read is keyed `path:<absolute path>`); `last_run` the last run that read it or
  changed it; `cluster` -1 = not clustered; `seconds` POSIX time (NULL unknown); `night` the trap night (the date of
  the evening), `site` from --metadata (a `site` or `trap` column).
- `individuals(id PRIMARY KEY, first_run, last_run)`: stable individual (occurrence) ids.
- `clusters(id PRIMARY KEY, name, status, first_run, last_run, reviewed_run)`: every cluster id ever issued; rows are
  never deleted, so an id is never given to other material; `name` '' = unnamed; `status` as of its last run.
- `decisions(id PRIMARY KEY, digest, filename, grp, reviewer, time, note, source, run)`: human decisions, crop-keyed,
  in the order they were recorded; `grp` a group name or '-1' (excluded from every cluster).
- `rejections(id PRIMARY KEY, digest, other, kind, reviewer, time, source, run)` (schema 4): rejected suggestions of
  the report, as pairs of crop keys; `kind` merge or move (the two crops' groups are not one) or split (the two
  belong together).

Since schema version 2:

- `files(path PRIMARY KEY, digest, first_run, last_run, current)`: every file (absolute path) the campaign has read,
  with the content it held when last read; several files may hold one content (byte-identical copies). `current`
  1: the file belongs to the campaign's current crop set (what the next `--add` or `--review` run works on).
- `settings(name PRIMARY KEY, value)`: the campaign's settings, the options that shape its answer (JSON values;
  campaign/settings.py), as given by the runs that set them.
- `meta(key PRIMARY KEY, value)`: `id` (a random key of the campaign, also in run.json) and `folder` (the absolute
  output folder the store belongs to).
- `merges(run, cluster, into_cluster)`: clusters merged into another by new crops (single linkage grows), per run.

Since schema version 3 (names from references, naming/):

- `name_references(run, digest, path, name, source, taxonomy)`: the references a run named against
  (`--reference`), one row per reference crop; `taxonomy` JSON {rank: value, taxonID}. `--add` names new clusters
  against the latest run's.
- `unit_names(run, level, unit, name, rank, score, status, reference)`: what those references named: per naming
  unit (`level` 'cluster:cluster', 'cluster:individual', 'individual:individual', 'crop:crop'; `unit` the cluster
  id, stable individual id or crop digest) the machine name, its rank and score, ref_status and the digest of the
  evidence reference.

Writes: `CampaignStore.commit_run` writes everything a run changes in ONE transaction (BEGIN IMMEDIATE ... COMMIT),
after the run's other outputs are written. SQLite's journal makes it atomic: a run killed at any moment (SIGKILL
included) leaves the store as it was before the run or as it is after it. A new folder's store file is created
inside that same transaction, so a run that fails leaves no store behind. Runs into one folder are serialised by
lock.py, held by the caller for the whole run.

Errors (all CampaignError, exit 2): StoreVersionError for a store of a newer schema, StoreDamagedError for a file
that is not a readable crop-cluster store; both name the file and the way out.
"""
from __future__ import annotations

import gc
import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from crop_cluster.campaign import STORE_NAME, CampaignError, StoreDamagedError, StoreVersionError

SCHEMA_VERSION = 4

_SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, started TEXT NOT NULL, finished TEXT NOT NULL, mode TEXT NOT NULL,
                   parameters TEXT NOT NULL, versions TEXT NOT NULL, counts TEXT NOT NULL);
CREATE TABLE crops (digest TEXT PRIMARY KEY, path TEXT NOT NULL, first_run INTEGER NOT NULL,
                    last_run INTEGER NOT NULL, individual INTEGER NOT NULL, cluster INTEGER NOT NULL,
                    representative INTEGER NOT NULL, seconds REAL, night TEXT, site TEXT);
CREATE INDEX crops_cluster ON crops (cluster);
CREATE TABLE individuals (id INTEGER PRIMARY KEY, first_run INTEGER NOT NULL, last_run INTEGER NOT NULL);
CREATE TABLE clusters (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, first_run INTEGER NOT NULL,
                       last_run INTEGER NOT NULL, reviewed_run INTEGER);
CREATE TABLE decisions (id INTEGER PRIMARY KEY, digest TEXT NOT NULL, filename TEXT NOT NULL, grp TEXT NOT NULL,
                        reviewer TEXT NOT NULL, time TEXT NOT NULL, note TEXT NOT NULL, source TEXT NOT NULL,
                        run INTEGER NOT NULL);
CREATE INDEX decisions_digest ON decisions (digest);
"""

def _statements(script: str) -> List[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


# Version 2: the files of the campaign (several files may hold one content), its settings, its identity, its merges.
# A version-1 store's crops become its files; those read by its latest full or review run (and the --add runs
# after it) are the current set.
_SCHEMA_V2 = """
CREATE TABLE files (path TEXT PRIMARY KEY, digest TEXT NOT NULL, first_run INTEGER NOT NULL,
                    last_run INTEGER NOT NULL, current INTEGER NOT NULL);
CREATE INDEX files_digest ON files (digest);
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE merges (run INTEGER NOT NULL, cluster INTEGER NOT NULL, into_cluster INTEGER NOT NULL);
INSERT INTO files SELECT path, digest, first_run, last_run,
    last_run >= (SELECT coalesce(max(id), 0) FROM runs WHERE mode != 'add') FROM crops WHERE true
    ON CONFLICT(path) DO NOTHING;
INSERT INTO meta VALUES ('id', lower(hex(randomblob(8))))
"""

# MIGRATIONS[v]: the statements that upgrade a store of schema version v to v + 1 (v = 0: a new store), run inside
# one transaction. Append one list per schema change and raise SCHEMA_VERSION.
# Version 3: names from references (naming/): which references a run named against, and what they named.
_SCHEMA_V3 = """
CREATE TABLE name_references (run INTEGER NOT NULL, digest TEXT NOT NULL, path TEXT NOT NULL, name TEXT NOT NULL,
                              source TEXT NOT NULL, taxonomy TEXT NOT NULL);
CREATE TABLE unit_names (run INTEGER NOT NULL, level TEXT NOT NULL, unit TEXT NOT NULL, name TEXT NOT NULL,
                         rank TEXT NOT NULL, score REAL, status TEXT NOT NULL, reference TEXT NOT NULL);
"""
# Version 4: remembered rejections of the report's suggestions (outputs/report/suggestions.py), crop pairs: `kind`
# is the rejected suggestion's (merge, move: the crops' groups are not one; split: the two crops belong together).
_SCHEMA_V4 = """
CREATE TABLE rejections (id INTEGER PRIMARY KEY, digest TEXT NOT NULL, other TEXT NOT NULL, kind TEXT NOT NULL,
                         reviewer TEXT NOT NULL, time TEXT NOT NULL, source TEXT NOT NULL, run INTEGER NOT NULL);
CREATE INDEX rejections_digest ON rejections (digest);
"""
MIGRATIONS: List[List[str]] = [_statements(_SCHEMA_V1), _statements(_SCHEMA_V2), _statements(_SCHEMA_V3),
                               _statements(_SCHEMA_V4)]
TABLES = ("schema_version", "runs", "crops", "individuals", "clusters", "decisions", "files", "settings", "meta",
          "merges")
NAMING_TABLES = ("name_references", "unit_names")        # since version 3
REVIEW_TABLES = ("rejections",)                           # since version 4

CROP_COLUMNS = ["digest", "path", "individual", "cluster", "representative", "first_run", "last_run", "seconds",
                "night", "site"]
CLUSTER_COLUMNS = ["id", "name", "status", "first_run", "last_run", "reviewed_run"]
INTEGER_CROP_COLUMNS = {"individual", "cluster", "representative", "first_run", "last_run"}     # NOT NULL
DECISION_COLUMNS = ["digest", "filename", "group", "reviewer", "time", "note", "source", "run"]
RUN_COLUMNS = ["id", "started", "finished", "mode", "parameters", "versions", "counts"]
FILE_COLUMNS = ["path", "digest", "first_run", "last_run", "current"]
NAME_REFERENCE_COLUMNS = ["digest", "path", "name", "source", "taxonomy"]
UNIT_NAME_COLUMNS = ["level", "unit", "name", "rank", "score", "status", "reference"]
REJECTION_COLUMNS = ["digest", "other", "kind", "reviewer", "time", "source", "run"]


@contextmanager
def paused_gc():
    """Python's cyclic garbage collector off for a bulk of row tuples (none of them can form a cycle): its full
    passes over every live object would otherwise run again and again while 10^5 rows are built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def store_path(folder: str) -> str:
    return os.path.join(folder, STORE_NAME)


@dataclass
class RunRecord:
    """Everything one run writes to the store.

    crops: DataFrame with columns digest, path, individual (stable id), cluster (stable id, -1 none), representative
    (bool), seconds (float, NaN unknown), night, site (str or None): the crops this run changed or read.
    clusters: DataFrame id, name ('' none), status: the clusters present after this run.
    decisions: DataFrame with DECISION_COLUMNS except run: the decisions this run read (appended in order).
    files: DataFrame path (absolute), digest, current (bool): the files this run read or whose membership of the
    current set it changed (others are left as stored). settings: the campaign's settings after this run (None:
    unchanged). merges: (cluster, into_cluster) pairs merged by this run. meta: key -> value to set.
    name_references, unit_names: DataFrames with NAME_REFERENCE_COLUMNS / UNIT_NAME_COLUMNS when the run named
    clusters from references (naming/), else None.
    """

    started: str
    finished: str
    mode: str
    parameters: Dict
    versions: Dict
    counts: Dict
    crops: pd.DataFrame
    clusters: pd.DataFrame
    decisions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DECISION_COLUMNS[:-1]))
    files: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "digest", "current"]))
    settings: Optional[Dict[str, object]] = None
    merges: List[tuple] = field(default_factory=list)
    meta: Dict[str, str] = field(default_factory=dict)
    name_references: Optional[pd.DataFrame] = None
    unit_names: Optional[pd.DataFrame] = None
    rejections: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=REJECTION_COLUMNS[:-1]))


def _way_out(path: str) -> str:
    return (f"move {path} away (this output folder then starts a new campaign, without its stored clusters and "
            f"decisions) or give another -o")


# SQLite result codes that say the file system, not the store, is the problem (disk full, I/O, permissions)
_SYSTEM_ERRORS = {10: "an I/O error", 13: "the disk is full", 14: "the file cannot be opened",
                  8: "the file is read-only", 23: "access was denied"}


def _system_problem(error: sqlite3.Error) -> Optional[str]:
    """What went wrong outside the store (disk full, I/O, permissions), None when the store itself is at fault."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _SYSTEM_ERRORS:
        return _SYSTEM_ERRORS[code & 0xFF]
    text = str(error).lower()
    for words, problem in (("disk is full", "the disk is full"), ("disk i/o", "an I/O error"),
                           ("unable to open", "the file cannot be opened"), ("readonly", "the file is read-only")):
        if words in text:
            return problem
    return None


def system_error(path: str, error: sqlite3.Error, doing: str) -> Optional[CampaignError]:
    """The CampaignError for an SQLite error caused by the file system (None when the store is at fault): names
    the file, says the store is left as it was, and how to go on."""
    problem = _system_problem(error)
    if problem is None:
        return None
    try:                                 # SQLite often reports a full disk as an I/O error or as "cannot open"
        stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if stat.f_bavail * stat.f_frsize < 1 << 16:
            problem = f"the disk is full ({stat.f_bavail * stat.f_frsize} bytes free)"
    except (OSError, AttributeError):
        pass
    return CampaignError(f"{path}: cannot {doing}: {problem} ({error}); the store is left as it was. Free disk space "
                         f"or fix the folder's permissions, then run again")


def _recorded_campaign(folder: str) -> Optional[Dict]:
    """The `campaign` entry of OUT/run.json (id, run, ...), None without one."""
    try:
        with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    entry = manifest.get("campaign") if isinstance(manifest, dict) else None
    return entry if isinstance(entry, dict) else None


class CampaignStore:
    """One output folder's store. Reads return empty tables while the file does not exist yet.

    Opening checks that the store is the folder's own: a store whose recorded campaign id differs from the one
    the folder's run.json records (a store copied in from another folder) is refused, and so is a store that is
    empty although run.json records committed runs (a store lost to a disk problem)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self.path = store_path(folder)
        self._connection: Optional[sqlite3.Connection] = None
        if os.path.exists(self.path):
            self._connection = self._open_existing()
        self._check_belongs()

    # -- opening -----------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def _open_existing(self) -> Optional[sqlite3.Connection]:
        """The connection to a valid store (migrated to SCHEMA_VERSION); None for a file without any table yet."""
        connection = None
        try:
            connection = self._connect()
            check = connection.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = None
            if "schema_version" in tables:
                row = connection.execute("SELECT version FROM schema_version").fetchone()
                version = None if row is None else int(row[0])
        except sqlite3.Error as error:
            if connection is not None:
                connection.close()
            raise system_error(self.path, error, "open the campaign store") or StoreDamagedError(
                f"{self.path}: not a readable campaign store ({error}); {_way_out(self.path)}, or restore it from a "
                f"backup") from None
        if not tables:              # a first run killed before its commit: still an empty campaign
            connection.close()
            return None
        if check != "ok":
            connection.close()
            raise StoreDamagedError(f"{self.path}: the store is damaged (SQLite integrity check: {check}); "
                                    f"{_way_out(self.path)}, or restore it from a backup")
        if version is None:
            connection.close()
            raise StoreDamagedError(f"{self.path}: not a crop-cluster campaign store (no schema version); "
                                    f"{_way_out(self.path)}")
        if version > SCHEMA_VERSION:
            connection.close()
            raise StoreVersionError(f"{self.path}: written by a newer crop-cluster (store schema {version}; this "
                                    f"version reads up to {SCHEMA_VERSION}); upgrade crop-cluster "
                                    f"(pip install -U crop-cluster), or {_way_out(self.path)}")
        expected = {name for name in TABLES if version >= 2 or name not in TABLES[6:]} | \
            (set(NAMING_TABLES) if version >= 3 else set()) | (set(REVIEW_TABLES) if version >= 4 else set())
        if expected - tables:
            connection.close()
            raise StoreDamagedError(f"{self.path}: the store has lost its table(s) {', '.join(sorted(expected - tables))} "
                                    f"(schema {version}); restore it from a backup, or {_way_out(self.path)}")
        if version < SCHEMA_VERSION:
            try:
                self._migrate(connection, version)
            except sqlite3.Error as error:
                connection.close()
                raise system_error(self.path, error, "upgrade the campaign store") or StoreDamagedError(
                    f"{self.path}: cannot upgrade the store to schema {SCHEMA_VERSION} ({error}); restore it from a "
                    f"backup, or {_way_out(self.path)}") from None
        return connection

    def _check_belongs(self) -> None:
        """The store is this folder's (module docstring of this class); StoreDamagedError with the way out."""
        recorded = _recorded_campaign(self.folder)
        if self._connection is None:
            if recorded is not None and (recorded.get("id") or int(recorded.get("run", 0) or 0) > 0):
                state = "empty" if os.path.exists(self.path) else "missing"
                raise StoreDamagedError(
                    f"{self.path} is {state}, but {os.path.join(self.folder, 'run.json')} records campaign "
                    f"{recorded.get('id') or recorded.get('key', '?')} after its run {recorded.get('run')}: the "
                    f"store of this campaign was lost (its clusters' ids and review decisions are in it). Restore "
                    f"{STORE_NAME} from a backup; or, to start a new campaign here, move {STORE_NAME} and run.json "
                    f"away, or give another -o")
            return
        meta = self.meta()
        theirs = recorded.get("id") if recorded else None
        if theirs and meta.get("id") and theirs != meta["id"]:
            raise StoreDamagedError(
                f"{self.path} belongs to campaign {meta['id']} (folder {meta.get('folder', '?')}), but this folder's "
                f"run.json belongs to campaign {theirs}: the store was copied in from another folder. Put this "
                f"folder's own {STORE_NAME} back, or move the copied one away (this folder then starts a new "
                f"campaign), or give another -o")

    @staticmethod
    def _migrate(connection: sqlite3.Connection, version: int) -> None:
        """Upgrade to SCHEMA_VERSION in one transaction (a kill leaves the old version)."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    connection.execute(statement)
            connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "CampaignStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def exists(self) -> bool:
        return self._connection is not None

    # -- reading -----------------------------------------------------------------------------------------------
    def _frame(self, query: str, columns: List[str]) -> pd.DataFrame:
        if self._connection is None:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
        with paused_gc():
            rows = self._connection.execute(query).fetchall()
            if not rows:
                return pd.DataFrame(rows, columns=columns)
            # column-wise (one Series per column): several times faster than a frame built row by row
            return pd.DataFrame({name: pd.Series(column) for name, column in zip(columns, zip(*rows))},
                                columns=columns)

    def crops(self, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """Every stored crop, in the order they were first stored: CROP_COLUMNS, or only `columns` (a subset, in
        CROP_COLUMNS order; `digest` always)."""
        wanted = [name for name in CROP_COLUMNS if columns is None or name in columns or name == "digest"]
        unknown = set(columns or ()) - set(CROP_COLUMNS)
        if unknown:
            raise ValueError(f"not crop columns: {sorted(unknown)}")
        integer = [name for name in wanted if name in INTEGER_CROP_COLUMNS]
        other = [name for name in wanted if name not in INTEGER_CROP_COLUMNS]
        if self._connection is None:
            frame = self._frame("", wanted)
        else:
            self._connection.execute("BEGIN")           # one snapshot for both reads
            try:
                frame = self._frame(f"SELECT {', '.join(other)} FROM crops ORDER BY rowid", other)
                with paused_gc():                       # the NOT NULL integers straight into one numpy array
                    numbers = np.fromiter(
                        self._connection.execute(f"SELECT {', '.join(integer)} FROM crops ORDER BY rowid"),
                        dtype=[(name, np.int64) for name in integer], count=len(frame))
            finally:
                self._connection.execute("COMMIT")
            for name in integer:
                frame[name] = numbers[name]
            frame = frame[wanted]
        for name in integer:
            frame[name] = frame[name].astype(np.int64)
        if "representative" in frame:
            frame["representative"] = frame["representative"].astype(bool)
        if "seconds" in frame:
            frame["seconds"] = pd.to_numeric(frame["seconds"], errors="coerce").astype(np.float64)
        return frame

    def clusters(self) -> pd.DataFrame:
        """Every cluster id ever issued (CLUSTER_COLUMNS), by id."""
        frame = self._frame("SELECT id, name, status, first_run, last_run, reviewed_run FROM clusters ORDER BY id",
                            CLUSTER_COLUMNS)
        frame["id"] = frame["id"].astype(np.int64)
        return frame

    def decisions(self) -> pd.DataFrame:
        """Every recorded decision (DECISION_COLUMNS), oldest first."""
        return self._frame("SELECT digest, filename, grp, reviewer, time, note, source, run FROM decisions "
                           "ORDER BY id", DECISION_COLUMNS)

    def rejections(self) -> pd.DataFrame:
        """Every remembered rejection of a suggestion (REJECTION_COLUMNS), oldest first."""
        return self._frame("SELECT digest, other, kind, reviewer, time, source, run FROM rejections ORDER BY id",
                           REJECTION_COLUMNS)

    def runs(self) -> pd.DataFrame:
        return self._frame("SELECT id, started, finished, mode, parameters, versions, counts FROM runs ORDER BY id",
                           RUN_COLUMNS)

    def files(self) -> pd.DataFrame:
        """Every file the campaign has read (FILE_COLUMNS; current as bool), in the order first stored."""
        frame = self._frame("SELECT path, digest, first_run, last_run, current FROM files ORDER BY rowid",
                            FILE_COLUMNS)
        for name in ("first_run", "last_run"):
            frame[name] = frame[name].astype(np.int64)
        frame["current"] = frame["current"].astype(bool)
        return frame

    def settings(self) -> Dict[str, object]:
        """The campaign's settings: name -> value (JSON-decoded); empty for a new store."""
        rows = self._connection.execute("SELECT name, value FROM settings").fetchall() if self._connection else []
        return {name: json.loads(value) for name, value in rows}

    def meta(self) -> Dict[str, str]:
        """The campaign's identity: `id`, `folder` (absent before the first commit)."""
        return dict(self._connection.execute("SELECT key, value FROM meta").fetchall()) if self._connection else {}

    def merges(self) -> pd.DataFrame:
        """Every recorded merge: run, cluster (the id that stopped), into_cluster (the id that holds it now)."""
        frame = self._frame("SELECT run, cluster, into_cluster FROM merges ORDER BY rowid",
                            ["run", "cluster", "into_cluster"])
        return frame.astype(np.int64)

    def name_references(self) -> pd.DataFrame:
        """The references of the latest run that named against references (NAME_REFERENCE_COLUMNS); empty if none."""
        return self._frame("SELECT digest, path, name, source, taxonomy FROM name_references WHERE run = "
                           "(SELECT max(run) FROM name_references) ORDER BY rowid", NAME_REFERENCE_COLUMNS)

    def _max(self, query: str) -> int:
        if self._connection is None:
            return -1
        value = self._connection.execute(query).fetchone()[0]
        return -1 if value is None else int(value)

    def next_cluster_id(self) -> int:
        """The smallest id never issued (ids are never reused)."""
        return self._max("SELECT max(id) FROM clusters") + 1

    def next_individual_id(self) -> int:
        return self._max("SELECT max(id) FROM individuals") + 1

    def next_run_id(self) -> int:
        return self._max("SELECT max(id) FROM runs") + 1

    # -- writing -----------------------------------------------------------------------------------------------
    def commit_run(self, record: RunRecord) -> int:
        """Write one run in one transaction (module docstring); returns its run id."""
        created = self._connection is None
        if created:
            self._connection = self._connect()
        connection = self._connection
        run = 0 if created else self.next_run_id()
        connection.execute("BEGIN IMMEDIATE")
        try:
            if created:
                for statements in MIGRATIONS:
                    for statement in statements:
                        connection.execute(statement)
                connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            connection.executemany("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                                   "excluded.value", [("folder", self.folder), *record.meta.items()])
            connection.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (run, record.started, record.finished, record.mode,
                                *(json.dumps(part, default=str) for part in (record.parameters, record.versions,
                                                                              record.counts))))
            with paused_gc():
                self._write_crops(connection, record.crops, run)
            self._write_clusters(connection, record.clusters, run)
            self._write_files(connection, record.files, run)
            if record.settings is not None:
                connection.execute("DELETE FROM settings")
                connection.executemany("INSERT INTO settings VALUES (?, ?)",
                                       [(name, json.dumps(value)) for name, value in sorted(record.settings.items())])
            connection.executemany("INSERT INTO merges VALUES (?, ?, ?)",
                                   [(run, int(a), int(b)) for a, b in record.merges])
            decisions = record.decisions
            connection.executemany(
                "INSERT INTO decisions (digest, filename, grp, reviewer, time, note, source, run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(*(str(v) for v in row), run) for row in decisions[DECISION_COLUMNS[:-1]].itertuples(index=False)])
            self._write_naming(connection, record, run)
            connection.executemany(
                "INSERT INTO rejections (digest, other, kind, reviewer, time, source, run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*(str(v) for v in row), run)
                 for row in record.rejections[REJECTION_COLUMNS[:-1]].itertuples(index=False)])
            connection.execute("COMMIT")
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if created:
                self.close()
            if isinstance(error, sqlite3.Error):
                raise system_error(self.path, error, "write this run to the campaign store") or error from None
            raise
        return run

    @staticmethod
    def _write_files(connection: sqlite3.Connection, files: pd.DataFrame, run: int) -> None:
        connection.executemany(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET digest = excluded.digest, "
            "last_run = excluded.last_run, current = excluded.current",
            [(p, d, run, run, int(c)) for p, d, c in zip(files["path"].tolist(), files["digest"].tolist(),
                                                         files["current"].astype(bool).tolist())])

    @staticmethod
    def _write_crops(connection: sqlite3.Connection, crops: pd.DataFrame, run: int) -> None:
        seconds = crops["seconds"].to_numpy(np.float64)
        rows = zip(crops["digest"].tolist(), crops["path"].tolist(), crops["individual"].astype(int).tolist(),
                   crops["cluster"].astype(int).tolist(), crops["representative"].astype(int).tolist(),
                   [s if finite else None for s, finite in zip(seconds.tolist(), np.isfinite(seconds).tolist())],
                   [None if v is None or v != v else str(v) for v in crops["night"].tolist()],
                   [None if v is None or v != v else str(v) for v in crops["site"].tolist()])
        connection.executemany(
            "INSERT INTO crops VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET "
            "path = excluded.path, last_run = excluded.last_run, individual = excluded.individual, "
            "cluster = excluded.cluster, representative = excluded.representative, "
            "seconds = coalesce(excluded.seconds, seconds), night = coalesce(excluded.night, night), "
            "site = coalesce(excluded.site, site)",
            [(d, p, run, run, i, c, r, s, n, t) for d, p, i, c, r, s, n, t in rows])
        connection.executemany(
            "INSERT INTO individuals VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET last_run = excluded.last_run",
            [(i, run, run) for i in np.unique(crops["individual"].to_numpy(np.int64)).tolist()])

    @staticmethod
    def _write_naming(connection: sqlite3.Connection, record: RunRecord, run: int) -> None:
        """The run's references and the names they gave (naming/), when it named from references."""
        if record.name_references is not None:
            connection.executemany("INSERT INTO name_references VALUES (?, ?, ?, ?, ?, ?)",
                                   [(run, *map(str, row)) for row in
                                    record.name_references[NAME_REFERENCE_COLUMNS].itertuples(index=False)])
        if record.unit_names is not None:
            frame = record.unit_names[UNIT_NAME_COLUMNS]
            connection.executemany("INSERT INTO unit_names VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                   [(run, str(lv), str(u), str(n), str(r), None if s != s else float(s), str(st),
                                     str(ref)) for lv, u, n, r, s, st, ref in frame.itertuples(index=False)])

    @staticmethod
    def _write_clusters(connection: sqlite3.Connection, clusters: pd.DataFrame, run: int) -> None:
        rows = [(int(i), str(name), str(status), run, run, run if name else None)
                for i, name, status in zip(clusters["id"], clusters["name"], clusters["status"])]
        connection.executemany(
            "INSERT INTO clusters VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name, "
            "status = excluded.status, last_run = excluded.last_run, "
            "reviewed_run = CASE WHEN excluded.name != '' AND excluded.name != clusters.name THEN excluded.last_run "
            "ELSE clusters.reviewed_run END", rows)


@dataclass(frozen=True)
class CampaignView:
    """A read-only snapshot of a store: crops, clusters (with `size`, crops per cluster), decisions, runs."""

    path: str
    crops: pd.DataFrame
    clusters: pd.DataFrame
    decisions: pd.DataFrame
    runs: pd.DataFrame


def read_campaign(folder: str) -> Optional[CampaignView]:
    """The store of output folder `folder` as DataFrames (see the package docstring); None when there is none.
    Raises StoreVersionError / StoreDamagedError like a run would."""
    if not os.path.exists(store_path(folder)):
        return None
    with CampaignStore(folder) as store:
        crops, clusters = store.crops(), store.clusters()
        sizes = crops.loc[crops["cluster"] >= 0, "cluster"].value_counts()
        clusters["size"] = clusters["id"].map(sizes).fillna(0).astype(np.int64)
        return CampaignView(store.path, crops, clusters, store.decisions(), store.runs())
