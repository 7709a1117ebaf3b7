"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

Inside `staged_outputs(OUT)` the renames of the files written directly in OUT (the run's outputs: clusters.csv,
run.json, report.html, ...) and of the folders swapped in with `replace_folder` (clusters/) wait until the block
ends without an error, then happen together: the pipeline commits the campaign store inside the block, so a run
that fails (a full disk, any error) leaves the previous outputs and the store as they were, and the new outputs
appear only with the new store. Caches in subfolders (the embedding cache, kept results) are written through as
usual. A run killed between the commit and the renames leaves staged files (`.NAME.*.tmp`, `.clusters.*`);
`remove_leftovers` clears them at the next run's start (under the folder's lock), and that run writes every output
again. A write that fails (a full disk, a read-only folder) leaves the previous file as it was and raises
OutputError naming the file and the fix.
"""
from __future__ import annotations

import contextlib
import contextvars
import glob
import os
import shutil
import tempfile
from typing import IO, Iterator, List, Optional, Tuple

from crop_cluster.errors import CropClusterError, describe_os_error

_STAGING: contextvars.ContextVar = contextvars.ContextVar("crop_cluster_staging", default=None)


class _Staging:
    """The renames (temporary, target) waiting for the end of a staged block in `folder`."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self.moves: List[Tuple[str, str]] = []

    def covers(self, path: str) -> bool:
        return os.path.dirname(os.path.abspath(path)) == self.folder

    def publish(self) -> None:
        for temporary, target in self.moves:
            if os.path.isdir(temporary):
                _swap_folder(temporary, target)
            else:
                os.replace(temporary, target)
        self.moves = []

    def discard(self) -> None:
        for temporary, _ in self.moves:
            if os.path.isdir(temporary):
                shutil.rmtree(temporary, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
        self.moves = []


@contextlib.contextmanager
def staged_outputs(folder: str) -> Iterator[None]:
    """Hold back the renames of the outputs written in `folder` until the block ends (module docstring)."""
    staging = _Staging(folder)
    token = _STAGING.set(staging)
    try:
        yield
    except BaseException:
        staging.discard()
        raise
    finally:
        _STAGING.reset(token)
    staging.publish()


def _put_in_place(temporary: str, target: str) -> None:
    staging: Optional[_Staging] = _STAGING.get()
    if staging is not None and staging.covers(target):
        staging.moves.append((temporary, target))
    elif os.path.isdir(temporary):
        _swap_folder(temporary, target)
    else:
        os.replace(temporary, target)


def _swap_folder(staging: str, target: str) -> None:
    """Replace the folder `target` by the folder `staging` (the old one moved aside first, then removed)."""
    if os.path.isdir(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}-old.", dir=os.path.dirname(target))
        os.replace(target, os.path.join(old, os.path.basename(target)))
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def replace_folder(staging: str, target: str) -> None:
    """Put the finished folder `staging` (a sibling of `target`) in place of `target`, now or, inside a staged
    block, with the other outputs."""
    _put_in_place(staging, target)


def remove_leftovers(folder: str) -> None:
    """Remove what a killed run staged in `folder` and never put in place (module docstring)."""
    for path in glob.glob(os.path.join(glob.escape(folder), ".*.tmp")):
        with contextlib.suppress(OSError):
            os.remove(path)
    for path in glob.glob(os.path.join(glob.escape(folder), ".clusters*.*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)



class OutputError(CropClusterError):
    """An output that cannot be written (disk full, no permission, read-only): the message names it and the fix."""


def output_error(error: OSError, path: str) -> OutputError:
    """OutputError for `error` raised while writing `path`."""
    return OutputError(describe_os_error(error, path, writing=True) + f"; the previous {os.path.basename(path)} "
                       "(if any) is unchanged")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` (inside `staged_outputs`, at
    the end of the block), on error it is removed.

    An OSError of the write itself (no file name, or the temporary's or the target's) becomes OutputError naming
    `path`; one about another file (e.g. a source read inside the block) passes through as it is."""
    folder = os.path.dirname(os.path.abspath(path))
    temp_path = None
    try:
        fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_path, 0o644)
        _put_in_place(temp_path, path)
    except BaseException as error:
        if temp_path is not None:
            with contextlib.suppress(OSError):
                os.remove(temp_path)
        if isinstance(error, OSError) and (temp_path is None or error.filename in (None, temp_path, path)):
            raise output_error(error, path) from error
        raise
