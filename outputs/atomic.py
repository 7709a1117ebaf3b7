"""Atomic file writes: write to a temporary file in the same folder, then rename over the target. A write that fails
(a full disk, a read-only folder) leaves the previous file as it was and raises OutputError naming the file and the
fix."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator

from crop_cluster.errors import CropClusterError, describe_os_error


class OutputError(CropClusterError):
    """An output that cannot be written (disk full, no permission, read-only): the message names it and the fix."""


def output_error(error: OSError, path: str) -> OutputError:
    """OutputError for `error` raised while writing `path`."""
    return OutputError(describe_os_error(error, path, writing=True) + f"; the previous {os.path.basename(path)} "
                       "(if any) is unchanged")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path`, on error it is removed.

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
        os.replace(temp_path, path)
    except BaseException as error:
        if temp_path is not None:
            with contextlib.suppress(OSError):
                os.remove(temp_path)
        if isinstance(error, OSError) and (temp_path is None or error.filename in (None, temp_path, path)):
            raise output_error(error, path) from error
        raise
