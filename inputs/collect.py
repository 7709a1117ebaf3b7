"""Turn `-i` entries (files, folders, globs, .txt lists) into one ordered list of image paths.

Order is stable: entries in the order given; a folder's files depth first, sorted by name at each level; a glob's matches
sorted; a list's entries in its line order. Each file appears once (by its real path, first occurrence wins);
symbolic links are followed but a folder is never entered twice, so link loops end.

Output folders are never input: a file under the run's own output folder (`exclude`), or under any folder holding a
crop-cluster `run.json` or `campaign.sqlite` (an output folder of any run: cluster copies, report thumbnails), is
passed over and counted in `passed_over_outputs`, so running again with `-o` inside `-i` reads the same crops.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from crop_cluster.errors import CropClusterError


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
GLOB_CHARACTERS = set("*?[")
OUTPUT_MARKERS = ("campaign.sqlite", "run.json")   # a folder holding one of these is a crop-cluster output folder


class InputError(CropClusterError, ValueError):
    """An `-i` entry that cannot be used at all (missing path, empty result); the message names it."""


@dataclass
class CollectResult:
    """files: image paths in run order; skipped: (entry, reason) for list entries and files that were left out;
    ignored_non_images: how many non-image files were passed over inside folders and globs; passed_over_outputs:
    image files passed over because they lie in an output folder, and output_folders: those folders."""

    files: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    ignored_non_images: int = 0
    passed_over_outputs: int = 0
    output_folders: List[str] = field(default_factory=list)


def _is_run_manifest(path: str) -> bool:
    """True when `path` is a crop-cluster run.json (a JSON object with `parameters` and `counts`)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "parameters" in document and "counts" in document


def is_output_folder(folder: str) -> bool:
    """True when `folder` holds a campaign.sqlite or a crop-cluster run.json."""
    return os.path.isfile(os.path.join(folder, OUTPUT_MARKERS[0])) or \
        _is_run_manifest(os.path.join(folder, OUTPUT_MARKERS[1]))


def is_image_path(path: str) -> bool:
    """True for the supported image extensions, any case."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _walk_folder(folder: str, seen_dirs: Set[Tuple[int, int]]) -> Iterator[str]:
    """All files under `folder`, depth first with entries sorted by name at each level, following links but entering
    each directory once."""
    stat = os.stat(folder)
    key = (stat.st_dev, stat.st_ino)
    if key in seen_dirs:
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=True):
                yield from _walk_folder(entry.path, seen_dirs)
            elif entry.is_file(follow_symlinks=True):
                yield entry.path
        except OSError:
            continue  # a dangling link or an unreadable entry: nothing to read there


class _Collector:
    """Accumulates files in order, without repeats, and the reasons for what was left out."""

    def __init__(self, exclude: Sequence[str] = ()) -> None:
        self.result = CollectResult()
        self._outputs: Dict[str, Optional[str]] = {os.path.realpath(folder): os.path.realpath(folder)
                                                  for folder in exclude}
        self._seen_files: Set[str] = set()
        self._seen_dirs: Set[Tuple[int, int]] = set()
        self._open_lists: List[str] = []
        self._real_folders: Dict[str, str] = {}

    def _realpath(self, path: str) -> str:
        """os.path.realpath, with each folder resolved once (a list of 10^5 files in a few folders)."""
        folder, name = os.path.split(os.path.normpath(path))
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            real_folder = self._real_folders[folder] = os.path.realpath(folder or ".")
        real = os.path.join(real_folder, name)
        return os.path.realpath(real) if os.path.islink(real) else real

    def add_file(self, path: str, explicit: bool) -> None:
        real = self._realpath(path)
        output = self._output_folder(os.path.dirname(real))
        if output is not None:
            self.result.passed_over_outputs += is_image_path(path)
            if output not in self.result.output_folders:
                self.result.output_folders.append(output)
            return
        if not is_image_path(path):
            if explicit:
                self.result.skipped.append((path, "not a supported image extension "
                                                  f"({', '.join(IMAGE_EXTENSIONS)})"))
            else:
                self.result.ignored_non_images += 1
            return
        if real not in self._seen_files:
            self._seen_files.add(real)
            self.result.files.append(os.path.normpath(path))

    def _output_folder(self, folder: str) -> Optional[str]:
        """The output folder that `folder` (a real path) lies in, itself included; None when none (cached)."""
        if folder in self._outputs:
            return self._outputs[folder]
        parent = os.path.dirname(folder)
        found = folder if is_output_folder(folder) else (self._output_folder(parent) if parent != folder else None)
        self._outputs[folder] = found
        return found

    def add_entry(self, entry: str, origin: str) -> None:
        """Add one entry; `origin` is '' for the command line, or 'list.txt:LINE' for a list entry."""
        expanded = os.path.expanduser(entry)
        if any(c in GLOB_CHARACTERS for c in expanded) and not os.path.exists(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            if not matches:
                self._missing(entry, origin, "the pattern matches no file")
            for match in matches:
                if os.path.isdir(match):
                    continue  # `dir/**` also yields folders; their files are matched by the pattern itself
                self._add_existing(match, explicit=False)
            return
        if not os.path.exists(expanded):
            self._missing(entry, origin, "no such file or folder")
            return
        self._add_existing(expanded, explicit=True)

    def _add_existing(self, path: str, explicit: bool) -> None:
        """A folder is walked; a .txt named explicitly (not matched by a glob) is a list; anything else a file."""
        if os.path.isdir(path):
            for file in _walk_folder(path, self._seen_dirs):
                self.add_file(file, explicit=False)
        elif explicit and path.lower().endswith(".txt"):
            self.add_list(path)
        else:
            self.add_file(path, explicit)

    def add_list(self, list_path: str) -> None:
        """Entries of a .txt list, one per line, relative to the list's folder; blank lines and # comments ignored."""
        real = os.path.realpath(list_path)
        if real in self._open_lists:
            self.result.skipped.append((list_path, "list includes itself (directly or through another list)"))
            return
        try:
            with open(list_path, encoding="utf-8-sig") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read the list {list_path}: {error}; lists must be UTF-8 text, "
                             f"one path per line") from error
        base = os.path.dirname(list_path)
        self._open_lists.append(real)
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            text = os.path.expanduser(text)
            self.add_entry(text if os.path.isabs(text) else os.path.join(base, text), f"{list_path}:{number}")
        self._open_lists.pop()

    def _missing(self, entry: str, origin: str, reason: str) -> None:
        if not origin:
            raise InputError(f"input '{entry}': {reason}; check the path (quote globs so the shell does not "
                             f"expand them, e.g. -i 'crops/**/*.jpg')")
        self.result.skipped.append((entry, f"{reason} (listed in {origin})"))


def collect_images(entries: List[str], exclude: Sequence[str] = ()) -> CollectResult:
    """Collect the image files named by `entries` (see module docstring); files under the folders `exclude` (the
    run's output folder) or under any crop-cluster output folder are passed over and counted.

    Raises InputError for a command-line entry that does not exist or a glob that matches nothing, and when no
    image at all is found (the message lists the supported extensions).
    """
    collector = _Collector(exclude)
    for entry in entries:
        collector.add_entry(entry, origin="")
    result = collector.result
    if not result.files:
        hint = f" ({result.ignored_non_images} other files were found)" if result.ignored_non_images else ""
        if result.passed_over_outputs:
            hint += (f" ({result.passed_over_outputs} images were passed over inside crop-cluster output folders: "
                     f"{', '.join(result.output_folders)})")
        raise InputError(f"no images found in {', '.join(entries)}{hint}; supported extensions: "
                         f"{', '.join(IMAGE_EXTENSIONS)} (any case)")
    return result
