"""Reference sources (`--reference REF`, repeatable) read into one References value.

Three kinds, told apart by what REF is:

- an earlier crop-cluster **output folder** (it holds campaign.sqlite): every crop whose latest human decision in
  its store names a group becomes a reference of that group's name (human decisions only: crops the algorithm
  later put into a reviewed cluster are not references). The report's placeholder names of verified but unnamed
  groups ("cluster 7", "new group 2") are made unique with the folder's name: "cluster 7 (night1)".
- a **CSV** file (`.csv`, or `.tsv` tab-separated): columns `filename,name`, optional taxonomy columns `kingdom`,
  `phylum`, `class`, `order`, `family`, `genus`, `species` and `taxonID`; filenames relative to the CSV's folder.
- a **folder tree** `REF/<name>/...`: every image under `REF/<name>/` (recursively) is a reference of `<name>`.

Images that cannot be found are reported (NamingError when a source gives none at all); nothing is silently left out.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from crop_cluster.errors import CropClusterError
from crop_cluster.naming import RANKS, NamingError

log = logging.getLogger("crop-cluster")

PLACEHOLDER = re.compile(r"^(cluster|new group) \d+$", re.IGNORECASE)    # the report's names of unnamed groups
TAXON_ID = "taxonID"


@dataclass(frozen=True)
class References:
    """R reference crops, in source order.

    filenames, names, sources: (R,) str: the crop's path, its name, the --reference it came from. digests: (R,) the
    content digest when the source knows it (a campaign store), else ''. taxonomy: name -> (7,) tuple of rank
    values, kingdom .. species ('' unknown), for names that carry one. taxon_ids: name -> taxonID. skipped:
    (path, reason) of the references that could not be used.
    """

    filenames: List[str]
    names: List[str]
    sources: List[str]
    digests: List[str]
    taxonomy: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    taxon_ids: Dict[str, str] = field(default_factory=dict)
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.filenames)

    def keep(self, mask: Sequence[bool]) -> "References":
        """The references where `mask` (bool (R,)) holds; taxonomy kept for the names left."""
        rows = [k for k, flag in enumerate(mask) if flag]
        names = [self.names[k] for k in rows]
        left = set(names)
        return References([self.filenames[k] for k in rows], names, [self.sources[k] for k in rows],
                          [self.digests[k] for k in rows],
                          {n: t for n, t in self.taxonomy.items() if n in left},
                          {n: t for n, t in self.taxon_ids.items() if n in left}, list(self.skipped))


def combine(parts: Sequence[References]) -> References:
    """One References from several sources; a name given two different taxonomies is an error naming both."""
    taxonomy: Dict[str, Tuple[str, ...]] = {}
    origin: Dict[str, str] = {}
    taxon_ids: Dict[str, str] = {}
    for part in parts:
        source = part.sources[0] if part.sources else ""
        for name, ranks in part.taxonomy.items():
            if name in taxonomy and taxonomy[name] != ranks:
                raise NamingError(f"--reference: '{name}' has the taxonomy {_lineage(taxonomy[name])} in "
                                  f"{origin[name]} but {_lineage(ranks)} in {source}; make them agree")
            taxonomy.setdefault(name, ranks)
            origin.setdefault(name, source)
        taxon_ids.update(part.taxon_ids)
    return References([f for p in parts for f in p.filenames], [n for p in parts for n in p.names],
                      [s for p in parts for s in p.sources], [d for p in parts for d in p.digests], taxonomy,
                      taxon_ids, [s for p in parts for s in p.skipped])


def _lineage(ranks: Tuple[str, ...]) -> str:
    return " > ".join(value for value in ranks if value) or "(none)"


def read_references(sources: Sequence[str]) -> References:
    """Read every --reference source (module docstring) into one References; NamingError for a source that is
    missing, malformed or gives no usable reference."""
    parts = []
    for source in sources:
        part = read_source(source)
        for path, reason in part.skipped[:5]:
            log.warning("--reference %s: %s left out (%s)", source, path, reason)
        if len(part.skipped) > 5:
            log.warning("--reference %s: %d more references left out", source, len(part.skipped) - 5)
        if not len(part):
            raise NamingError(f"--reference {source}: no usable reference crop" + (
                f" ({len(part.skipped)} left out, e.g. {part.skipped[0][0]}: {part.skipped[0][1]})"
                if part.skipped else "") + "; see docs/naming.md for the accepted layouts")
        parts.append(part)
    return combine(parts)


def read_source(source: str) -> References:
    """One --reference source, by kind: output folder, CSV/TSV file, or folder tree."""
    if os.path.isdir(source):
        from crop_cluster.campaign import STORE_NAME

        if os.path.isfile(os.path.join(source, STORE_NAME)):
            return read_campaign_references(source)
        return read_tree(source)
    if os.path.isfile(source):
        if source.lower().endswith((".csv", ".tsv", ".txt")):
            return read_csv(source)
        raise NamingError(f"--reference {source}: not a CSV file, a folder of <name>/ folders or a crop-cluster "
                          f"output folder; see docs/naming.md")
    raise NamingError(f"--reference {source}: no such file or folder")


def read_tree(root: str) -> References:
    """REF/<name>/... : every image under each first-level folder is a reference of that folder's name."""
    from crop_cluster.inputs.collect import collect_images, is_image_path

    filenames, names, skipped = [], [], []
    loose = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            found = collect_images([entry.path])
            filenames += found.files
            names += [entry.name] * len(found.files)
            skipped += found.skipped
        elif is_image_path(entry.name):
            loose.append(entry.path)
    skipped += [(path, "an image directly in the reference folder has no name: put it in a <name>/ folder")
                for path in loose]
    return References(filenames, names, [root] * len(filenames), [""] * len(filenames), skipped=skipped)


def read_csv(path: str) -> References:
    """filename,name[,kingdom..species,taxonID] (tab-separated for .tsv); filenames relative to the CSV's folder."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(65536)
            handle.seek(0)
            delimiter = "\t" if path.lower().endswith(".tsv") or ("\t" in sample and "," not in sample) else ","
            rows = list(csv.DictReader(handle, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise NamingError(f"--reference {path}: not a readable CSV ({error})") from None
    header = {str(k).strip().lower(): k for k in (rows[0].keys() if rows else [])}
    missing = [c for c in ("filename", "name") if c not in header]
    if missing:
        raise NamingError(f"--reference {path}: needs the column(s) {', '.join(missing)} (columns filename,name and "
                          f"optionally {', '.join(RANKS)}, {TAXON_ID}); found {', '.join(header) or 'no header'}")
    folder = os.path.dirname(os.path.abspath(path))
    filenames, names, skipped = [], [], []
    taxonomy: Dict[str, Tuple[str, ...]] = {}
    taxon_ids: Dict[str, str] = {}
    ranks = [header.get(rank) for rank in RANKS]
    taxon_id = header.get(TAXON_ID.lower())
    for line, row in enumerate(rows, start=2):
        given = (row.get(header["filename"]) or "").strip()
        name = " ".join((row.get(header["name"]) or "").split())
        if not given or not name:
            skipped.append((f"{path}:{line}", "an empty filename or name"))
            continue
        file = given if os.path.isabs(given) else os.path.join(folder, given)
        if not os.path.isfile(file):
            skipped.append((file, f"not found ({path} line {line})"))
            continue
        lineage = tuple(" ".join((row.get(column) or "").split()) if column else "" for column in ranks)
        if any(lineage):
            if name in taxonomy and taxonomy[name] != lineage:
                raise NamingError(f"--reference {path} line {line}: '{name}' has the taxonomy {_lineage(lineage)} "
                                  f"but {_lineage(taxonomy[name])} on an earlier line; give one taxonomy per name")
            taxonomy[name] = lineage
        if taxon_id and (row.get(taxon_id) or "").strip():
            taxon_ids[name] = row[taxon_id].strip()
        filenames.append(os.path.normpath(file))
        names.append(name)
    return References(filenames, names, [path] * len(filenames), [""] * len(filenames), taxonomy, taxon_ids,
                      skipped)


def read_campaign_references(folder: str) -> References:
    """The crops of an output folder's campaign store whose latest human decision names a group."""
    from crop_cluster.campaign import EXCLUDED
    from crop_cluster.campaign.decisions import latest_decisions
    from crop_cluster.campaign.store import read_campaign

    view = read_campaign(folder)
    latest = latest_decisions(view.decisions)
    paths = dict(zip(view.crops["digest"], view.crops["path"]))
    recorded = dict(zip(view.decisions["digest"], view.decisions["filename"]))
    label = os.path.basename(os.path.normpath(os.path.abspath(folder)))
    filenames, names, digests, skipped = [], [], [], []
    for digest, group in latest.group.items():
        if group == EXCLUDED or not str(group).strip():
            continue
        path = paths.get(digest) or recorded.get(digest, "")
        if digest.startswith("path:"):
            skipped.append((path or digest, "its file could not be read when it was reviewed"))
            continue
        name = " ".join(str(group).split())
        filenames.append(path)
        names.append(f"{name} ({label})" if PLACEHOLDER.match(name) else name)
        digests.append(digest)
    if not filenames and not skipped:
        raise NamingError(f"--reference {folder}: its campaign store holds no named or verified group yet; review "
                          f"its report.html and apply the export with crop-cluster -o {folder} --review review.csv")
    return References(filenames, names, [folder] * len(filenames), digests, skipped=skipped)


def cache_folders_of(folder: str) -> List[str]:
    """The embedding cache folder(s) an output folder's runs used: their --cache_dir (run.json), else
    OUT/embed_cache; for looking up the vectors of reference crops whose files are gone."""
    import json

    from crop_cluster.embed.cache import CACHE_FOLDER

    found: List[str] = []
    try:
        with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
            given: Optional[str] = json.load(handle).get("parameters", {}).get("cache_dir")
    except (OSError, ValueError, AttributeError):
        given = None
    for candidate in (given, os.path.join(folder, CACHE_FOLDER)):
        if candidate and os.path.isdir(candidate) and candidate not in found:
            found.append(candidate)
    return found


def recorded_model(folder: str) -> Optional[str]:
    """The model id an output folder's campaign embeds with: its store's settings (embed, from_pretrained), else
    its last run.json's `model`; None when unknown."""
    import json

    from crop_cluster.campaign.store import CampaignStore
    from crop_cluster.embed import model_id

    with CampaignStore(folder) as store:
        settings = store.settings() if store.exists else {}
    if settings.get("embed"):
        try:
            return model_id(settings["embed"], settings.get("from_pretrained"))
        except CropClusterError:
            pass                                   # a backend this crop-cluster does not know: try run.json
    try:
        with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
            model = json.load(handle).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None
