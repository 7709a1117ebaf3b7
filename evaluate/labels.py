"""Ground-truth labels for evaluation: ``--labels FILE.csv`` or ``--labels folders``."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from crop_cluster.inputs.table import TableError, read_table

FOLDERS = "folders"


class LabelsError(TableError):
    """The ``--labels`` value names no usable labels source."""


def _folder_labels(filenames: Sequence[str]) -> List[Optional[str]]:
    """Label = name of each file's parent folder (relative paths resolved against the cwd)."""
    labels = [os.path.basename(os.path.dirname(os.path.abspath(f))) for f in filenames]
    return [label or None for label in labels]


def read_labels(spec: str, filenames: Sequence[str]) -> List[Optional[str]]:
    """Return one label per run file, in run order; None = unlabelled.

    spec: ``"folders"`` (label = parent folder name), or the path of a CSV with columns
    ``filename,label`` (other columns ignored), matched to ``filenames`` as in
    ``inputs.table.match_filenames``. Labels are read as text and stripped; empty or NA-like
    cells, and files without a row, are unlabelled.
    filenames: (n,) the run's files. Returns a list of length n.
    Raises LabelsError when ``spec`` is neither ``folders`` nor an existing file, and TableError
    for an unreadable CSV, one without a ``label`` column, or one whose rows match no run file.
    """
    if spec == FOLDERS:
        return _folder_labels(filenames)
    if not os.path.isfile(spec):
        raise LabelsError(
            f"--labels {spec}: no such file; give a CSV with columns filename,label "
            f"or the word '{FOLDERS}' to use each image's parent folder name as its label."
        )
    aligned = read_table(spec, filenames, required=("filename", "label"), text_columns=("label",), flag="--labels")
    labels: List[Optional[str]] = []
    for value in aligned.frame["label"].tolist():
        text = value.strip() if isinstance(value, str) else ""
        labels.append(text or None)
    return labels
