"""The one base of every error that means bad usage or unusable input (the command line's exit 2).

Every stage raises a subclass of CropClusterError whose message names the bad value or file and the fix; anything
else is unexpected (exit 1). Library users catch `crop_cluster.CropClusterError`; nothing here calls `sys.exit`.
"""
from __future__ import annotations


class CropClusterError(Exception):
    """Bad usage or unusable input; the message says what and how to fix it."""


class OptionsError(CropClusterError, ValueError):
    """Options that do not fit together, or an unknown option; the message names it and the fix."""
