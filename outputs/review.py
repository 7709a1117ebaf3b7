"""The reviewed run's threshold: `--review` without -i re-clusters the folder's own run at the threshold it used.
(Review files themselves are read by campaign/review.py.)"""
from __future__ import annotations

import json
import os
from typing import Optional


def reviewed_threshold(folder: str) -> Optional[float]:
    """The threshold recorded in `folder`/run.json (the run whose report was reviewed), None when unavailable."""
    try:
        with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
            value = json.load(handle)["parameters"]["threshold"]
        return float(value)
    except (OSError, ValueError, KeyError, TypeError):
        return None
