"""Read a timestamp from each file's basename (``--time_format``).

The format is a ``strptime`` format describing the timestamp *inside* the basename, e.g.
``%Y%m%d%H%M%S`` for ``crop_20230908001617-00-06_CROPNUMBER_0_UUID_x.png``. The BiodivX spelling
``%YYYY-%mm-%dd_%HH-%MM-%SS`` is accepted too: ``%YYYY %mm %dd %HH %MM %SS`` are read as
``%Y %m %d %H %M %S`` (so a doubled letter is never "directive + literal letter").

How a name is read:

1. the format is compiled once into a regular expression: each directive becomes a fixed-width
   pattern (``%Y`` four digits, ``%m %d %H %M %S %y %I`` two digits, ``%j`` three, ``%f`` one to
   six, month/day names letters, ``%z`` ``Z`` or ``+HHMM``/``+HH:MM``), literal text is escaped;
2. the regex is SEARCHED in the basename only (folders are ignored), leftmost match wins;
3. the matched text is parsed with ``datetime.strptime``; a match that is not a valid time
   (month 13, 30 February) counts as unmatched.

Times without ``%z`` are naive and are taken as UTC, so ``seconds`` are POSIX seconds of the wall-clock
time written in the name (differences between names are exact whatever the camera's zone). Fields the
format lacks take ``strptime``'s defaults (1900-01-01 00:00:00).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple

import numpy as np

from crop_cluster.errors import CropClusterError


EXAMPLE = (
    "e.g. --time_format '%Y%m%d%H%M%S' for names like crop_20230908001617-00-06_CROPNUMBER_0_UUID_x.png, "
    "or '%Y-%m-%d_%H-%M-%S' (BiodivX spelling '%YYYY-%mm-%dd_%HH-%MM-%SS') for 2023-09-08_00-16-17.jpg"
)

_EPOCH = datetime(1970, 1, 1)  # naive times are taken as UTC

# BiodivX spelling -> strptime directive letter.
_BIODIVX_SPELLINGS = {"YYYY": "Y", "mm": "m", "dd": "d", "HH": "H", "MM": "M", "SS": "S"}

# Supported directive letter -> regex for the text it matches in a basename.
_DIRECTIVE_PATTERNS = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "j": r"\d{3}",
    "H": r"\d{2}",
    "I": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "f": r"\d{1,6}",
    "p": r"[AaPp][Mm]",
    "b": r"[A-Za-z]{3}",
    "B": r"[A-Za-z]{3,9}",
    "a": r"[A-Za-z]{3}",
    "A": r"[A-Za-z]{6,9}",
    "z": r"(?:Z|[+-]\d{2}:?\d{2})",
    "%": "%",
}

# Directives that carry a date or time value (a format needs at least one).
_VALUE_DIRECTIVES = frozenset("YymdjHIMSfbB")


class TimeFormatError(CropClusterError, ValueError):
    """A ``--time_format`` has no date/time directive, an unsupported or repeated one."""


@dataclass(frozen=True, eq=False)
class TimestampResult:
    """Timestamps read from basenames.

    seconds: float64 array of shape (n,), POSIX seconds (naive times taken as UTC); NaN where the
        basename holds no valid timestamp in the format.
    n_unmatched: number of NaN entries in ``seconds``.
    examples_unmatched: up to 3 basenames without a timestamp, in input order.
    """

    seconds: np.ndarray
    n_unmatched: int
    examples_unmatched: List[str]


def _format_error(fmt: str, problem: str) -> TimeFormatError:
    return TimeFormatError(f"--time_format {fmt!r}: {problem}; {EXAMPLE}.")


@lru_cache(maxsize=32)
def _compile(fmt: str) -> Tuple[str, "re.Pattern[str]"]:
    """Return (normalised strptime format, compiled search regex) for ``fmt``."""
    normalised: List[str] = []
    regex: List[str] = []
    seen: set = set()
    i = 0
    while i < len(fmt):
        char = fmt[i]
        if char != "%":
            normalised.append(char)
            regex.append(re.escape(char))
            i += 1
            continue
        spelling = next((s for s in _BIODIVX_SPELLINGS if fmt.startswith(s, i + 1)), None)
        if spelling is not None:
            letter = _BIODIVX_SPELLINGS[spelling]
            i += 1 + len(spelling)
        elif i + 1 < len(fmt):
            letter = fmt[i + 1]
            i += 2
        else:
            raise _format_error(fmt, "it ends with a lone '%' (write '%%' for a literal percent sign)")
        if letter not in _DIRECTIVE_PATTERNS:
            supported = " ".join("%" + d for d in _DIRECTIVE_PATTERNS)
            raise _format_error(fmt, f"directive '%{letter}' is not supported (supported: {supported})")
        if letter != "%":
            if letter in seen:
                raise _format_error(fmt, f"directive '%{letter}' appears more than once")
            seen.add(letter)
        normalised.append("%" + letter)
        regex.append(_DIRECTIVE_PATTERNS[letter])
    if not seen & _VALUE_DIRECTIVES:
        raise _format_error(fmt, "it has no date or time directive such as %Y, %m, %d, %H, %M or %S")
    return "".join(normalised), re.compile("".join(regex))


def normalise_time_format(fmt: str) -> str:
    """Return ``fmt`` as a plain strptime format (BiodivX ``%YYYY``-style spellings rewritten).

    Raises TimeFormatError when the format has no date/time directive, an unsupported directive,
    a repeated directive, or a trailing lone ``%``.
    """
    return _compile(fmt)[0]


def _to_seconds(text: str, fmt: str) -> float:
    """POSIX seconds of ``text`` parsed with ``fmt`` (naive = UTC); NaN when it is not a valid time."""
    try:
        moment = datetime.strptime(text, fmt)
        if moment.tzinfo is None:
            return (moment - _EPOCH).total_seconds()
        return moment.timestamp()
    except (ValueError, OverflowError):
        return math.nan


def parse_timestamps(filenames: Sequence[str], fmt: str) -> TimestampResult:
    """Read one timestamp per file from its basename; see the module docstring for the rules.

    filenames: n paths (only the basename of each is searched).
    fmt: strptime format or BiodivX spelling; raises TimeFormatError when unusable.
    Returns a TimestampResult whose ``seconds`` has shape (n,).
    """
    normalised, regex = _compile(fmt)
    seconds = np.full(len(filenames), np.nan, dtype=np.float64)
    parsed: Dict[str, float] = {}  # matched text -> seconds; crops of one frame share a timestamp
    unmatched: List[str] = []
    n_unmatched = 0
    for i, name in enumerate(filenames):
        base = os.path.basename(os.fspath(name))
        match = regex.search(base)
        value = math.nan
        if match is not None:
            text = match.group(0)
            value = parsed.get(text)
            if value is None:
                value = parsed[text] = _to_seconds(text, normalised)
        if math.isnan(value):
            n_unmatched += 1
            if len(unmatched) < 3:
                unmatched.append(base)
        else:
            seconds[i] = value
    return TimestampResult(seconds=seconds, n_unmatched=n_unmatched, examples_unmatched=unmatched)
