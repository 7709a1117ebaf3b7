"""The one base of every error that means bad usage or unusable input (the command line's exit 2).

Every stage raises a subclass of CropClusterError whose message names the bad value or file and the fix; anything
else is unexpected (exit 1). Library users catch `crop_cluster.CropClusterError`; nothing here calls `sys.exit`.
"""
from __future__ import annotations


class CropClusterError(Exception):
    """Bad usage or unusable input; the message says what and how to fix it."""


class OptionsError(CropClusterError, ValueError):
    """Options that do not fit together, or an unknown option; the message names it and the fix."""


def describe_os_error(error: OSError, path: str, writing: bool = False) -> str:
    """One line for an OSError on `path` (a file, or the folder written into): what went wrong and the fix, e.g.
    'cannot write OUT/clusters.csv: no space left on the device (1.2 MB free on the disk holding OUT); free some
    space there, or give another output folder, and run again'."""
    import errno
    import os
    import shutil

    verb = "cannot write" if writing else "cannot use"
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = os.path.abspath(path) if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free on the disk holding {folder}"
        except OSError:
            free = f"the disk holding {folder}"
        what = "no space left on the device" if error.errno == errno.ENOSPC else "disk quota exceeded"
        return f"{verb} {path}: {what} ({free}); free some space there, or give another output folder, and run again"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{verb} {path}: {reason}; make its folder writable for this user (or mount it read-write), or give "
                f"another output folder, and run again" if writing else
                f"{verb} {path}: {reason}; check its permissions and run again")
    if error.errno == errno.ENAMETOOLONG:
        return f"{verb} {path}: {reason}; use a shorter output folder path and run again"
    return f"{verb} {path}: {reason}; check the path, its permissions and the free disk space"
