"""The run lock of an output folder: one run at a time writes there.

An advisory lock (`fcntl.flock`, on Windows `msvcrt.locking`) on OUT/campaign.lock, held from the start of a run to
its end. The operating system drops it when the process ends in any way, SIGKILL included, so a killed run never
leaves a stale lock. A second run polls for it every POLL_SECONDS up to `wait_seconds`, then stops with
StoreLockedError (exit 2) naming the folder.
"""
from __future__ import annotations

import os
import time
from typing import Optional

from crop_cluster.campaign import StoreLockedError

LOCK_NAME = "campaign.lock"
WAIT_SECONDS = 30.0        # how long a second run into the same folder waits for the first
POLL_SECONDS = 0.2


def _try_lock(handle) -> bool:
    """Take the lock without blocking; False when another process holds it."""
    try:
        import fcntl
    except ImportError:            # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class RunLock:
    """Context manager: `with RunLock(out_folder): ...` holds the folder's lock (the folder must exist)."""

    def __init__(self, folder: str, wait_seconds: Optional[float] = None) -> None:
        self.path = os.path.join(folder, LOCK_NAME)
        self.wait_seconds = WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._handle = None

    def acquire(self) -> None:
        handle = open(self.path, "a+b")
        deadline = time.monotonic() + self.wait_seconds
        while not _try_lock(handle):
            if time.monotonic() >= deadline:
                handle.close()
                raise StoreLockedError(
                    f"{os.path.dirname(self.path) or '.'}: another crop-cluster run is writing to this output folder "
                    f"(it holds {self.path}); waited {self.wait_seconds:g} s. Wait for it to finish, or give this "
                    f"run another -o")
            time.sleep(POLL_SECONDS)
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()          # closing the file drops the lock
            self._handle = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
