"""Fast paths that check themselves on first use and fall back to their reference path.

The CUDA defaults that no test machine can run -- the fused Triton graph kernel (clustering/kernel_check.py) and
`--resize device` (embed/resize.py) -- are each checked once per process and device, on a small block, against
their reference (the torch tiles; PIL). A check that fails to compile or run, or disagrees, turns the fast path off
for the rest of the process: a warning says so, and every run that then uses the reference path lists it in
run.json → `fallbacks` as {"path", "reason", "used"}. The results are those of the reference path, so a fallback
costs time, never correctness.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

log = logging.getLogger("crop-cluster")


@dataclass(frozen=True)
class Fallback:
    """path: the fast path and its device, e.g. 'fused Triton graph kernel on cuda:0'; reason: why its check failed;
    used: the reference path used instead."""

    path: str
    reason: str
    used: str


_verdicts: Dict[Tuple[str, str], Optional[Fallback]] = {}    # (path, device) -> None (passed) or the fallback
_taken: Dict[Tuple[str, str], Fallback] = {}                 # fallbacks used since the last `taken()`
_lock = threading.Lock()


def _failure(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"failed to compile or run ({type(error).__name__}{': ' + text[0][:300] if text else ''})"


def fast_path_ok(path: str, device: str, check: Callable[[], Optional[str]], used: str) -> bool:
    """True when fast path `path` may run on `device`. On the first call for (path, device) in this process
    `check()` runs: None means it agrees with the reference; a text (what differs) or an exception (it failed to
    compile or run) turns the path off, with one warning. Every call that returns False records the fallback for
    run.json (`taken`)."""
    key = (path, device)
    with _lock:
        if key not in _verdicts:
            try:
                reason = check()
            except Exception as error:  # noqa: BLE001 - any failure of the fast path means: use the reference
                reason = _failure(error)
            _verdicts[key] = None if reason is None else Fallback(f"{path} on {device}", reason, used)
            if reason is not None:
                log.warning("%s on %s %s; using %s instead (the same results, more slowly); recorded in run.json "
                            "fallbacks", path, device, reason, used)
        verdict = _verdicts[key]
        if verdict is not None:
            _taken[key] = verdict
    return verdict is None


def taken() -> List[Dict[str, str]]:
    """The fallbacks used since the last call, as run.json entries {"path", "reason", "used"}; then forgets them
    (the verdicts stay: a fast path is checked once per process)."""
    with _lock:
        entries = [asdict(fallback) for fallback in _taken.values()]
        _taken.clear()
    return entries
