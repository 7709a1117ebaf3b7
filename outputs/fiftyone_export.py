"""Load a run into FiftyOne: OUT/fiftyone.json with one sample per crop and its cluster fields.

    python -m crop_cluster.outputs.fiftyone_export OUT [--name NAME] [--launch]

writes OUT/fiftyone.json from OUT/clusters.csv (no FiftyOne needed). With FiftyOne installed (`pip install
fiftyone`), `--launch` loads it as a dataset and opens the app; in Python, `load_dataset("OUT/fiftyone.json")`.
The JSON is FiftyOne's samples document ({"name", "media_type": "image", "samples": [...]}, readable with
`fo.Dataset.from_json` too); each sample has `filepath` (absolute), `tags` (`cluster-<id>` or `not-clustered`) and
one field per column of clusters.csv (cluster, cluster_size, sim_to_centroid, individual, representative, group,
label, metadata...). Relative filenames are resolved against the current folder: run it where crop-cluster ran.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

import pandas as pd

from crop_cluster.csv_cells import unescape_frame
from crop_cluster.outputs.atomic import atomic_open

RESERVED = {"id", "filepath", "tags", "metadata", "media_type", "_id", "_media_type", "_rand", "_dataset_id"}


def field_name(column: str) -> str:
    """A valid, non-reserved FiftyOne field name for a CSV column ('box x1' -> 'box_x1', 'metadata' -> 'metadata_')."""
    name = re.sub(r"\W", "_", column.strip()) or "field"
    name = f"f_{name}" if name[0].isdigit() else f"f{name}" if name[0] == "_" else name
    return f"{name}_" if name in RESERVED else name


def _plain(value):
    """NumPy/pandas scalars -> JSON values; NaN/NA -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def fiftyone_document(table: pd.DataFrame, name: str) -> Dict:
    """FiftyOne samples document for the rows of clusters.csv (see the module docstring)."""
    columns = [c for c in table.columns if c != "filename"]
    fields = [field_name(c) for c in columns]
    samples: List[Dict] = []
    for row in table.itertuples(index=False):
        values = dict(zip(table.columns, row))
        cluster = int(values["cluster"])
        sample = {"filepath": os.path.abspath(str(values["filename"])),
                  "tags": [f"cluster-{cluster}" if cluster >= 0 else "not-clustered"]}
        sample.update({field: _plain(values[column]) for field, column in zip(fields, columns)})
        samples.append(sample)
    return {"name": name, "media_type": "image", "samples": samples}


def write_fiftyone_json(out_folder: str, name: Optional[str] = None) -> str:
    """Write OUT/fiftyone.json from OUT/clusters.csv atomically; returns its path."""
    table = unescape_frame(pd.read_csv(os.path.join(out_folder, "clusters.csv"), keep_default_na=False,
                                       na_values=[""]))
    document = fiftyone_document(table, name or os.path.basename(os.path.normpath(os.path.abspath(out_folder))))
    path = os.path.join(out_folder, "fiftyone.json")
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, allow_nan=False)
    return path


def load_dataset(path: str):
    """A FiftyOne dataset from fiftyone.json (needs `pip install fiftyone`); replaces one of the same name."""
    import fiftyone as fo

    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if fo.dataset_exists(document["name"]):
        fo.delete_dataset(document["name"])
    dataset = fo.Dataset(document["name"])
    dataset.add_samples([fo.Sample(**sample) for sample in document["samples"]])
    return dataset


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crop_cluster.outputs.fiftyone_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_folder", help="a crop-cluster output folder (with clusters.csv)")
    parser.add_argument("--name", help="dataset name (default: the folder's name)")
    parser.add_argument("--launch", action="store_true", help="load into FiftyOne and open the app (needs fiftyone)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.out_folder, "clusters.csv")):
        print(f"error: {args.out_folder}/clusters.csv not found; give the output folder of a crop-cluster run",
              file=sys.stderr)
        return 2
    path = write_fiftyone_json(args.out_folder, args.name)
    print(f"wrote {path}")
    if args.launch:
        try:
            import fiftyone as fo
        except ImportError:
            print("error: fiftyone is not installed; pip install fiftyone, then run again with --launch",
                  file=sys.stderr)
            return 2
        session = fo.launch_app(load_dataset(path).sort_by("sim_to_centroid", reverse=True))
        session.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
