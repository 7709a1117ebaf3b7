"""``--filter EXPR``: choose which crops are clustered from the columns of ``--metadata FILE.csv``.

A small parser, never ``eval`` or ``DataFrame.query`` (user text is data, not code)::

    expr    := clause (("and" | "or") clause)*      "and" binds tighter than "or"; keywords in any case
    clause  := COLUMN OP VALUE
    OP      := ==  =  !=  <  <=  >  >=
    COLUMN  := a --metadata column: letters, digits, _ . - (or any name inside `backticks`)
    VALUE   := a number, 'quoted text', "quoted text", or one bare word

A numeric column compares numerically (the value must be a number); any other column compares as text
(``date >= '2023-09-08'`` works on ISO dates). A crop whose value is missing (no row in the table, or an empty
cell) fails every clause on that column, ``!=`` included. Several ``--filter`` options must all hold.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from crop_cluster.errors import CropClusterError


OPERATORS = ("==", "=", "!=", "<=", ">=", "<", ">")
GRAMMAR = ("write COLUMN OP VALUE, joined by and/or, e.g. --filter \"ood_score > 0.4\" or "
           "--filter \"trap == 'A' and ood_score >= 0.2\" (OP: == != < <= > >=)")
_TOKEN = re.compile(r"\s*(?:(?P<op>==|!=|<=|>=|=|<|>)|`(?P<ticked>[^`]+)`|'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\""
                    r"|(?P<word>[^\s=!<>'\"`]+))")


class FilterError(CropClusterError, ValueError):
    """A ``--filter`` expression that cannot be parsed or names an unknown column; the message shows the fix."""


@dataclass(frozen=True)
class Clause:
    """One comparison: column, operator ('==' for '='), value (float for numbers, str for text)."""

    column: str
    op: str
    value: Union[float, str]


@dataclass(frozen=True)
class Filter:
    """A parsed expression in disjunctive form: any of `groups` holds when all clauses of that group hold."""

    text: str
    groups: Tuple[Tuple[Clause, ...], ...]

    @property
    def columns(self) -> List[str]:
        """Columns named by the expression, in order of first mention."""
        return list(dict.fromkeys(c.column for group in self.groups for c in group))


def _tokens(text: str) -> List[Tuple[str, str]]:
    """(kind, text) pairs: kind is 'op', 'name' (bare word or backticked), or 'text' (quoted)."""
    tokens, position = [], 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise FilterError(f"--filter {text!r}: cannot read {text[position:].strip()!r}; {GRAMMAR}")
        kind = match.lastgroup
        value = match.group(kind)
        tokens.append(("op" if kind == "op" else "text" if kind in ("single", "double") else
                       "ticked" if kind == "ticked" else "name", value))
        position = match.end()
    return tokens


def parse_filter(text: str) -> Filter:
    """Parse one --filter expression (grammar in the module docstring); FilterError with the grammar when it fails."""
    tokens = _tokens(text)
    groups: List[List[Clause]] = [[]]
    i = 0
    while True:
        if i + 3 > len(tokens):
            raise FilterError(f"--filter {text!r}: incomplete comparison; {GRAMMAR}")
        (kind_c, column), (kind_o, op), (kind_v, value) = tokens[i:i + 3]
        if kind_c not in ("name", "ticked") or kind_o != "op" or kind_v == "op":
            shown = " ".join(t for _, t in tokens[i:i + 3])
            raise FilterError(f"--filter {text!r}: {shown!r} is not COLUMN OP VALUE; {GRAMMAR}")
        parsed: Union[float, str] = value
        if kind_v == "name":
            try:
                parsed = float(value)
            except ValueError:
                parsed = value
        groups[-1].append(Clause(column, "==" if op == "=" else op, parsed))
        i += 3
        if i == len(tokens):
            return Filter(text, tuple(tuple(g) for g in groups))
        joiner = tokens[i][1].lower() if tokens[i][0] == "name" else ""
        if joiner not in ("and", "or"):
            raise FilterError(f"--filter {text!r}: expected 'and' or 'or' before {tokens[i][1]!r}; {GRAMMAR}")
        if joiner == "or":
            groups.append([])
        i += 1


def _compare(series: pd.Series, clause: Clause, text: str, table: str) -> np.ndarray:
    """bool (n,): the clause on every row; missing values are False."""
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    present = series.notna().to_numpy()
    if numeric:
        if not isinstance(clause.value, float):
            raise FilterError(f"--filter {text!r}: column {clause.column!r} of {table} holds numbers; compare it "
                              f"with a number, not {clause.value!r}")
        values, target = series.to_numpy(dtype=np.float64, na_value=np.nan), clause.value
    else:
        target = clause.value if isinstance(clause.value, str) else _number_text(clause.value)
        values = series.astype(str).to_numpy(dtype=object)
    with np.errstate(invalid="ignore"):
        result = {"==": lambda: values == target, "!=": lambda: values != target, "<": lambda: values < target,
                  "<=": lambda: values <= target, ">": lambda: values > target,
                  ">=": lambda: values >= target}[clause.op]()
    return np.asarray(result, dtype=bool) & present


def _number_text(value: float) -> str:
    """1.0 -> '1', 0.5 -> '0.5': how a bare number is written when the column holds text."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def evaluate(filters: Sequence[Filter], frame: pd.DataFrame, table: str) -> np.ndarray:
    """bool (n,): rows of `frame` (the --metadata columns aligned to the run's files) that pass every filter.

    table: the CSV's path, for messages. Raises FilterError naming an unknown column and the valid columns.
    """
    keep = np.ones(len(frame), dtype=bool)
    for flt in filters:
        for column in flt.columns:
            if column not in frame.columns:
                raise FilterError(f"--filter {flt.text!r}: no column {column!r} in --metadata {table}; columns: "
                                  f"{', '.join(map(str, frame.columns)) or 'none besides filename'}")
        passes = np.zeros(len(frame), dtype=bool)
        for group in flt.groups:
            group_passes = np.ones(len(frame), dtype=bool)
            for clause in group:
                group_passes &= _compare(frame[clause.column], clause, flt.text, table)
            passes |= group_passes
        keep &= passes
    return keep


def exclusion_reasons(filters: Sequence[Filter], frame: pd.DataFrame, keep: np.ndarray) -> List[str]:
    """One reason per row not kept, for skipped.csv: the expressions and the row's values of their columns."""
    columns = list(dict.fromkeys(c for flt in filters for c in flt.columns))
    expressions = " and ".join(f"({flt.text})" if len(filters) > 1 else flt.text for flt in filters)
    reasons = []
    for row in np.flatnonzero(~keep):
        values = ", ".join(f"{c}={'missing' if pd.isna(frame[c].iat[row]) else frame[c].iat[row]}" for c in columns)
        reasons.append(f"excluded by --filter {expressions} ({values})")
    return reasons


def select_files(expressions: Sequence[str], metadata: str, filenames: Sequence[str]):
    """--filter: (bool (n,) the files to cluster, (filename, reason) of each file left out), from the rows of the
    `metadata` CSV (matched like --labels) that every expression in `expressions` must pass."""
    from crop_cluster.inputs.table import read_table

    filters = [parse_filter(text) for text in expressions]
    frame = read_table(metadata, list(filenames)).frame
    keep = evaluate(filters, frame, metadata)
    left_out = list(zip([filenames[i] for i in np.flatnonzero(~keep)], exclusion_reasons(filters, frame, keep)))
    return keep, left_out
