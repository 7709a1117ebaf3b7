"""Exact duplicates: files with byte-identical content are one individual and are embedded once."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

CHUNK_BYTES = 1 << 20


def file_digest(path: str) -> str:
    """BLAKE2b-128 hex digest of the file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ExactGroups:
    """first: int64 (n,) index of the first file with the same content (first[i] == i for representatives);
    unreadable: (path, reason) for files that could not be read (their `first` is -1); digests: the BLAKE2b hex
    digest of each file ('' for unreadable ones), reused as the embedding cache's key."""

    first: np.ndarray
    unreadable: List[Tuple[str, str]]
    digests: List[str]

    @property
    def representatives(self) -> np.ndarray:
        """int64 indices of the files to embed: one per distinct content, in input order."""
        return np.flatnonzero(self.first == np.arange(len(self.first)))


def group_identical(files: Sequence[str], progress: bool = False) -> ExactGroups:
    """Hash every file and group identical contents; unreadable files are reported, not fatal."""
    from tqdm import tqdm

    first = np.full(len(files), -1, dtype=np.int64)
    by_digest: Dict[str, int] = {}
    unreadable: List[Tuple[str, str]] = []
    digests = [""] * len(files)
    for index, path in enumerate(tqdm(files, desc="hashing", unit="file", disable=not progress,
                                      dynamic_ncols=True)):
        try:
            digest = file_digest(path)
        except OSError as error:
            unreadable.append((path, f"cannot read file ({error.strerror or error})"))
            continue
        digests[index] = digest
        first[index] = by_digest.setdefault(digest, index)
    return ExactGroups(first, unreadable, digests)
