"""OUT/dwca.zip: a Darwin Core Archive of one run, one occurrence per individual, for GBIF and other aggregators.

The archive holds meta.xml (the descriptor), occurrence.txt (the Occurrence core), multimedia.txt (GBIF's Simple
Multimedia extension: each individual's representative crop, copied into media/), and eml.xml (dataset metadata).
Written with the standard library: the few fixed files do not justify a dependency (the maintained writers pull in
test tools and pin older pandas); the tests read every archive back with python-dwca-reader.

Identification follows GBIF's advice for morphospecies: the most precise real taxon known (a reviewer's or a
hierarchical classifier's cluster taxon, else `default_taxon`) is the scientificName with its taxonRank, and the
morphospecies label (the reviewed group name, the classifier's cluster name such as "Geometridae sp. 37", or
"<taxon> sp. <cluster>") is the verbatimIdentification. A name from references (naming/: ref_status `named` or
`rolled_up`) names a record no reviewer named: its verbatimIdentification, and its scientificName and taxonRank when
the references' taxonomy gives its rank. identificationVerificationStatus tells the two apart: `verified` for a
reviewer's identification, `unverified` for every machine one (a classifier's, a reference's, the clustering's).

Columns read from the table (clusters.csv's rows): filename, cluster, individual, representative (the contract);
optional: timestamp (ISO 8601 text, from --time_format), group (the reviewed name; "-1" or empty when none),
cluster_status ('reviewed' makes the record a HumanObservation, as does a group), cluster_taxon,
cluster_taxon_level, cluster_name (a hierarchical classifier), ref_name, ref_rank, ref_status, ref_score,
ref_margin (names from references), occurrence_id (stable ids the pipeline supplies,
e.g. from the campaign store; the same on every row of one individual), crop (content digest), and the
`event_columns` (e.g. site, night) that make the eventID.
"""
from __future__ import annotations

import datetime as dt
import mimetypes
import os
import zipfile
from typing import Dict, List, Optional, Sequence
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from crop_cluster.csv_cells import unescape_frame
from crop_cluster.errors import CropClusterError
from crop_cluster.outputs.atomic import atomic_open

DWC = "http://rs.tdwg.org/dwc/terms/"
DC = "http://purl.org/dc/terms/"
OCCURRENCE_FIELDS = [
    ("occurrenceID", DWC), ("basisOfRecord", DWC), ("eventDate", DWC), ("eventID", DWC), ("individualCount", DWC),
    ("scientificName", DWC), ("taxonRank", DWC), ("verbatimIdentification", DWC), ("identifiedBy", DWC),
    ("dateIdentified", DWC), ("identificationVerificationStatus", DWC), ("identificationRemarks", DWC),
    ("occurrenceRemarks", DWC), ("associatedMedia", DWC)]
MACHINE_NAMED = ("named", "rolled_up")      # ref_status values of a name given from references
MEDIA_FIELDS = [("type", DC), ("format", DC), ("identifier", DC), ("title", DC), ("created", DC)]
EVENT_COLUMNS = ("site", "night")
ID_PREFIX = "urn:crop-cluster:occurrence:"


class DarwinCoreError(CropClusterError, ValueError):
    """A table that cannot become an archive; the message says which column or file and how to fix it."""


def write_darwin_core(path: str, table: pd.DataFrame, title: str, *, default_taxon: str = "Insecta",
                      default_rank: str = "class", event_columns: Optional[Sequence[str]] = None,
                      decisions: Optional[pd.DataFrame] = None, remarks: str = "",
                      creator: str = "crop-cluster") -> Dict[str, int]:
    """Write the archive to `path` (atomically) and return counts {occurrences, media, human, machine}.

    table: clusters.csv's rows (see the module docstring for the columns read). title: the dataset's title.
    event_columns: metadata columns joined into eventID (default: those of EVENT_COLUMNS present, any case).
    decisions: a review file's rows (columns filename and optionally reviewer, time as ISO 8601): identifiedBy and
    dateIdentified of the individuals they name. remarks: identificationRemarks of machine identifications (e.g.
    the model and threshold). Raises DarwinCoreError for missing contract columns or an unreadable crop.
    """
    missing = [c for c in ("filename", "cluster", "individual", "representative") if c not in table.columns]
    if missing:
        raise DarwinCoreError(f"--darwin_core: clusters.csv lacks column(s) {', '.join(missing)}; re-run the "
                              f"clustering to write a complete table")
    records, media = _records(table, _identifications(decisions), default_taxon, default_rank,
                              _event_columns(table, event_columns), remarks)
    ids = [r["occurrenceID"] for r in records]
    if len(set(ids)) != len(ids):
        duplicate = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DarwinCoreError(f"--darwin_core: occurrenceID {duplicate} is given to two individuals; the "
                              f"occurrence_id column must be unique per individual")
    with atomic_open(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("occurrence.txt", _tsv([name for name, _ in OCCURRENCE_FIELDS], records))
        archive.writestr("multimedia.txt", _tsv(["coreid"] + [name for name, _ in MEDIA_FIELDS], media))
        archive.writestr("meta.xml", _meta_xml())
        archive.writestr("eml.xml", _eml(title, creator, len(records)))
        for medium in media:
            archive.write(medium.pop("source"), medium["identifier"], compress_type=zipfile.ZIP_STORED)
    human = sum(r["basisOfRecord"] == "HumanObservation" for r in records)
    return {"occurrences": len(records), "media": len(media), "human": human, "machine": len(records) - human}


def review_decisions(path: Optional[str]) -> Optional[pd.DataFrame]:
    """The rows of a crop-keyed review file (filename, reviewer, time, ...) for identifiedBy/dateIdentified; None
    without a file or for the older cluster-keyed file (it names no reviewer)."""
    if not path:
        return None
    frame = unescape_frame(pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig"))
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame if "filename" in frame.columns else None


def _event_columns(table: pd.DataFrame, chosen: Optional[Sequence[str]]) -> List[str]:
    if chosen is not None:
        absent = [c for c in chosen if c not in table.columns]
        if absent:
            raise DarwinCoreError(f"--darwin_core: event column(s) {', '.join(absent)} are not in clusters.csv "
                                  f"(add them with --metadata)")
        return list(chosen)
    lower = {str(c).lower(): c for c in table.columns}
    return [lower[name] for name in EVENT_COLUMNS if name in lower]


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _identifications(decisions: Optional[pd.DataFrame]) -> Dict[str, tuple]:
    """filename -> (reviewer, time) from the review's rows (matched on the path as given or its absolute form)."""
    if decisions is None or "filename" not in decisions.columns:
        return {}
    people: Dict[str, tuple] = {}
    for row in decisions.to_dict("records"):
        entry = (_text(row.get("reviewer")), _text(row.get("time")))
        people[_text(row["filename"])] = entry
        people[os.path.abspath(_text(row["filename"]))] = entry
    return people


def _column(table: pd.DataFrame, name: str, rows: np.ndarray) -> List[str]:
    """The column's text at `rows` ('' for a missing column or value)."""
    if name not in table.columns:
        return [""] * rows.size
    return [_text(v) for v in table[name].to_numpy(dtype=object)[rows]]


def _records(table: pd.DataFrame, people: Dict[str, tuple], default_taxon: str, default_rank: str,
             event_columns: List[str], remarks: str):
    """One occurrence record and one media record (media/<number><ext>) per individual, in individual order.

    Per-row work is vectorised: rows are sorted once by (individual, time, filename), so each individual's earliest
    crop (which names it when no stable id is given), its time span and its number of crops are slices."""
    n = len(table)
    if n == 0:
        return [], []
    filenames = table["filename"].astype(str).to_numpy(dtype=object)
    individual = pd.factorize(table["individual"], sort=True)[0]
    times = pd.to_datetime(table["timestamp"], errors="coerce", utc=False) if "timestamp" in table.columns else \
        pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns]")
    utc = getattr(times.dt, "tz", None) is not None
    stamp = (times.dt.tz_convert("UTC").dt.tz_localize(None) if utc else times).to_numpy("datetime64[ns]")
    known = ~np.isnat(stamp)
    nanos = stamp.view(np.int64)
    early = np.where(known, nanos, np.iinfo(np.int64).max)
    late = np.where(known, nanos, np.iinfo(np.int64).min)
    order = np.lexsort((filenames, early, individual))
    starts = np.flatnonzero(np.r_[True, individual[order][1:] != individual[order][:-1]])
    first = order[starts]
    crops = np.diff(np.r_[starts, n])
    start, end = np.minimum.reduceat(early[order], starts), np.maximum.reduceat(late[order], starts)
    shown = first.copy()                  # the representative row of each individual, else its earliest crop
    marked = np.flatnonzero(table["representative"].astype(str).str.lower().isin(("true", "1")).to_numpy())
    shown[individual[marked[::-1]]] = marked[::-1]
    who: Dict[int, List[tuple]] = {}
    for row in (k for k, name in enumerate(filenames) if name in people):
        who.setdefault(int(individual[row]), []).append(people[filenames[row]])
    columns = {name: _column(table, name, first) for name in (
        "occurrence_id", "crop", "group", "cluster_status", "cluster_taxon", "cluster_taxon_level", "cluster_name",
        "ref_name", "ref_rank", "ref_status", "ref_score", "ref_margin")}
    events = [_column(table, name, first) for name in event_columns]
    clusters = table["cluster"].to_numpy(dtype=np.int64)[first]
    records, media = [], []
    for k in range(first.size):
        occurrence_id = columns["occurrence_id"][k] or ID_PREFIX + (columns["crop"][k] or _digest(filenames[first[k]]))
        group = "" if columns["group"][k] == "-1" else columns["group"][k]
        reviewed = bool(group) or columns["cluster_status"][k] == "reviewed"
        taxon, rank, cluster = columns["cluster_taxon"][k], columns["cluster_taxon_level"][k], int(clusters[k])
        referenced = "" if reviewed or columns["ref_status"][k] not in MACHINE_NAMED else columns["ref_name"][k]
        if referenced and columns["ref_rank"][k]:
            taxon = referenced[:-len(" sp.")] if referenced.endswith(" sp.") else referenced
            rank = columns["ref_rank"][k]
        label = group or referenced or columns["cluster_name"][k] or (
            f"{taxon or default_taxon} sp. {cluster}" if cluster >= 0 else "")
        note = remarks if not referenced else "; ".join(part for part in (
            f"named from references ({columns['ref_status'][k]}: cosine {columns['ref_score'][k]}, margin "
            f"{columns['ref_margin'][k] or 'none'})", remarks) if part)
        when = ""
        if start[k] != np.iinfo(np.int64).max:
            first_seen, last_seen = _iso(start[k], utc), _iso(end[k], utc)
            when = first_seen if first_seen == last_seen else f"{first_seen}/{last_seen}"
        people_k = who.get(k, [])
        source = str(filenames[shown[k]])
        if not os.path.isfile(source):
            raise DarwinCoreError(f"--darwin_core: the representative crop {source} can no longer be read; restore "
                                  f"it or re-run without it")
        name = f"media/{k:06d}{os.path.splitext(source)[1].lower()}"
        records.append({
            "occurrenceID": occurrence_id, "basisOfRecord": "HumanObservation" if reviewed else "MachineObservation",
            "eventDate": when, "eventID": "/".join(column[k] for column in events), "individualCount": "1",
            "scientificName": taxon or default_taxon, "taxonRank": rank if taxon else default_rank,
            "verbatimIdentification": label, "identifiedBy": " | ".join(sorted({p for p, _ in people_k if p})),
            "dateIdentified": max((t for _, t in people_k if t), default=""),
            "identificationVerificationStatus": "verified" if reviewed else "unverified",
            "identificationRemarks": "" if reviewed else note,
            "occurrenceRemarks": f"{crops[k]} crop{'s' if crops[k] != 1 else ''}" + (
                "" if cluster >= 0 else "; not clustered"),
            "associatedMedia": name})
        media.append({"coreid": occurrence_id, "type": "StillImage", "format": mimetypes.guess_type(source)[0] or "",
                      "identifier": name, "title": os.path.basename(source), "created": when.split("/")[0],
                      "source": source})
    return records, media


def _iso(nanos: int, utc: bool) -> str:
    """ISO 8601 text of a time in ns since the epoch; with a Z when the timestamps carried a time zone."""
    text = pd.Timestamp(int(nanos)).strftime("%Y-%m-%dT%H:%M:%S")
    return text + "Z" if utc else text


def _digest(path: str) -> str:
    from crop_cluster.dedup.exact import file_digest

    try:
        return file_digest(path)
    except OSError as error:
        raise DarwinCoreError(f"--darwin_core: {path} cannot be read for its content digest ({error}); restore it "
                              f"or give stable ids in an occurrence_id column") from None


def _tsv(header: List[str], records: List[Dict]) -> str:
    """Tab-separated UTF-8 text, one header line, no quoting: tabs and line breaks inside values become spaces."""
    lines = ["\t".join(header)]
    for record in records:
        lines.append("\t".join(" ".join(str(record.get(k, "")).split()) for k in header))
    return "\n".join(lines) + "\n"


def _meta_xml() -> str:
    """The archive descriptor: occurrence.txt as the core, multimedia.txt as an extension keyed by coreid."""
    root = ET.Element("archive", {"xmlns": "http://rs.tdwg.org/dwc/text/", "metadata": "eml.xml"})
    files = (("core", "occurrence.txt", DWC + "Occurrence", OCCURRENCE_FIELDS, "id"),
             ("extension", "multimedia.txt", "http://rs.gbif.org/terms/1.0/Multimedia", MEDIA_FIELDS, "coreid"))
    for tag, name, row_type, fields, key in files:
        node = ET.SubElement(root, tag, {"encoding": "UTF-8", "fieldsTerminatedBy": "\\t",
                                         "linesTerminatedBy": "\\n", "fieldsEnclosedBy": "", "ignoreHeaderLines": "1",
                                         "rowType": row_type})
        ET.SubElement(ET.SubElement(node, "files"), "location").text = name
        ET.SubElement(node, key, {"index": "0"})
        offset = 0 if tag == "core" else 1
        for k, (term, namespace) in enumerate(fields):
            ET.SubElement(node, "field", {"index": str(k + offset), "term": namespace + term})
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _eml(title: str, creator: str, occurrences: int) -> str:
    """Minimal EML 2.1.1 dataset metadata: title, creator, publication date, abstract."""
    root = ET.Element("eml:eml", {"xmlns:eml": "eml://ecoinformatics.org/eml-2.1.1",
                                  "packageId": f"crop-cluster/{title}", "system": "crop-cluster", "xml:lang": "en"})
    dataset = ET.SubElement(root, "dataset")
    ET.SubElement(dataset, "title").text = title
    ET.SubElement(ET.SubElement(dataset, "creator"), "organizationName").text = creator
    ET.SubElement(dataset, "pubDate").text = dt.date.today().isoformat()
    ET.SubElement(ET.SubElement(dataset, "abstract"), "para").text = (
        f"{occurrences} insect occurrences (one per individual) from light-trap image crops, grouped into "
        f"morphospecies by visual similarity with crop-cluster; reviewed groups are human observations.")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
