"""The group value of a review decision in one spelling: a name is NFC-normalised (macOS writes NFD) with its outer
white space removed; every way people and spreadsheets write minus one -- '-1.0', '-1,0', '−1' (U+2212), '- 1',
'-01', a dash or a full-width minus -- is EXCLUDED ('-1'), never a group name."""
from __future__ import annotations

import re
import unicodedata

from crop_cluster.campaign import EXCLUDED

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-")
_MINUS_ONE = re.compile(r"-0*1(?:[.,]0*)?")


def group_value(text) -> str:
    """The decision's group: EXCLUDED for a spelling of -1, else the name (NFC, stripped; '' = no decision)."""
    name = unicodedata.normalize("NFC", str(text)).strip()
    compact = "".join(unicodedata.normalize("NFKC", name).translate(_DASHES).split())
    return EXCLUDED if _MINUS_ONE.fullmatch(compact) else name
