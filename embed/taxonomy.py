"""The taxonomy of a hierarchical classifier: its sidecar JSON, checked, and tree-consistent decoding of its logits.

Sidecar (`MODEL.json` beside `MODEL.pt` / `MODEL.onnx`; README "Hierarchical taxonomic model"):

    {"levels":  ["species", "genus", "family", "order"],            # finest first, at least one
     "classes": {"species": [...names...], "genus": [...], ...},    # per level, unique names
     "parents": {"species": [...], "genus": [...], "family": [...]},# per level but the coarsest: each class's parent
                                                                     # in the next coarser level, by name or index
     "input":   {"size": 224, "mean": [0.485, 0.456, 0.406],        # mean/std of pixels scaled to 0..1
                 "std": [0.229, 0.224, 0.225], "geometry": "pad"}}  # geometry optional: "pad" (default) or "crop"

Decoding (`decode`): the predicted path is the finest-level class whose path up the tree has the highest joint score
(the sum over levels of each head's log-probability of the path's class), so the predicted classes are parent and
child at every level, whatever the heads say separately; each level's probability is that head's softmax
probability of the path's class.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from crop_cluster.embed import EmbedError

LEVEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")   # becomes part of a column name: pred_<level>
SIDECAR_HINT = "see README 'Hierarchical taxonomic model' for the sidecar format"


@dataclass(frozen=True)
class Taxonomy:
    """levels: names, finest first (L,); classes: per level the class names; ancestor: int64 (L, C0), the class at
    level l on the path of each finest-level class (row 0 = arange(C0)); input: size, mean, std (0..1 pixel scale),
    geometry."""

    levels: Tuple[str, ...]
    classes: Tuple[Tuple[str, ...], ...]
    ancestor: np.ndarray
    size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    geometry: str
    source: str

    @property
    def counts(self) -> List[int]:
        """Number of classes per level, finest first."""
        return [len(names) for names in self.classes]

    def level_index(self, level: str) -> int:
        """Position of `level` (finest = 0); EmbedError naming the levels when unknown."""
        if level not in self.levels:
            raise EmbedError(f"level '{level}' is not in {self.source}; its levels are {', '.join(self.levels)}")
        return self.levels.index(level)

    def decode(self, logits: Sequence) -> Tuple["object", "object"]:
        """Tree-consistent top-1 path from one logits tensor per level (torch, (B, C_l), finest first).

        Returns (index int64 (B, L), probability float32 (B, L)), as torch tensors on the logits' device.
        """
        import torch

        ancestor = torch.as_tensor(self.ancestor, device=logits[0].device)
        log_probs = [torch.log_softmax(values.float(), dim=1) for values in logits]
        score = sum(log_probs[level][:, ancestor[level]] for level in range(len(self.levels)))    # (B, C0)
        leaf = score.argmax(dim=1)                                                                 # (B,)
        index = ancestor[:, leaf].T.contiguous()                                                   # (B, L)
        probability = torch.stack([log_probs[level].gather(1, index[:, level:level + 1]).squeeze(1).exp()
                                   for level in range(len(self.levels))], dim=1)
        return index, probability


def sidecar_path(model_file: str) -> str:
    """The sidecar of a model file: `MODEL.json` beside `MODEL.pt` or `MODEL.onnx`."""
    return os.path.splitext(model_file)[0] + ".json"


def load_taxonomy(path: str) -> Taxonomy:
    """Read and check the sidecar at `path`; EmbedError saying what is wrong and where."""
    if not os.path.isfile(path):
        raise EmbedError(f"no taxonomy sidecar {path}: a hierarchical model needs a JSON file beside it with its "
                         f"levels, classes, parents and input preprocessing; {SIDECAR_HINT}")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EmbedError(f"{path}: not readable JSON ({error}); {SIDECAR_HINT}") from None
    return parse_taxonomy(document, path)


def parse_taxonomy(document: Dict, source: str) -> Taxonomy:
    """Check a sidecar document (levels, classes, tree, input) and build the Taxonomy; EmbedError when invalid."""
    def fail(problem: str):
        raise EmbedError(f"{source}: {problem}; {SIDECAR_HINT}")

    if not isinstance(document, dict):
        fail("the top level must be a JSON object")
    missing = [key for key in ("levels", "classes", "input") if key not in document]
    if missing:
        fail(f"missing key(s) {', '.join(missing)}")
    levels = document["levels"]
    if not isinstance(levels, list) or not levels or not all(isinstance(name, str) for name in levels):
        fail("'levels' must be a non-empty list of level names, finest first (e.g. [\"species\", \"genus\"])")
    bad = [name for name in levels if not LEVEL_NAME.match(name)]
    if bad or len(set(levels)) != len(levels):
        fail(f"level names must be unique words of letters, digits and _ (they name CSV columns); got {levels}")
    classes = [_level_classes(document["classes"], level, fail) for level in levels]
    ancestor = _ancestors(document.get("parents", {}), levels, classes, fail)
    size, mean, std, geometry = _input_spec(document["input"], fail)
    return Taxonomy(tuple(levels), tuple(tuple(names) for names in classes), ancestor, size, mean, std, geometry,
                    source)


def _level_classes(classes, level: str, fail) -> List[str]:
    if not isinstance(classes, dict):
        fail("'classes' must map each level name to its list of class names")
    names = classes.get(level)
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        fail(f"'classes' must give level '{level}' a non-empty list of non-empty class names")
    duplicates = sorted({name for name in names if names.count(name) > 1}) if len(set(names)) != len(names) else []
    if duplicates:
        fail(f"level '{level}' lists class names more than once: {', '.join(duplicates[:5])}")
    return names


def _ancestors(parents, levels: List[str], classes: List[List[str]], fail) -> np.ndarray:
    """int64 (L, C0): row l = the level-l ancestor of each finest class, following `parents` level by level."""
    if not isinstance(parents, dict):
        fail("'parents' must map each level but the coarsest to the parent of each of its classes")
    extra = sorted(set(parents) - set(levels[:-1]))
    if extra:
        fail(f"'parents' has entries for {', '.join(extra)}, which are not levels with a coarser level above them")
    ancestor = np.zeros((len(levels), len(classes[0])), dtype=np.int64)
    ancestor[0] = np.arange(len(classes[0]))
    for level in range(len(levels) - 1):
        parent = _parent_index(parents.get(levels[level]), levels[level], levels[level + 1], classes[level],
                               classes[level + 1], fail)
        ancestor[level + 1] = parent[ancestor[level]]
    return ancestor


def _parent_index(given, level: str, coarser: str, names: List[str], coarser_names: List[str], fail) -> np.ndarray:
    """int64 (C_level,): index in `coarser` of each class's parent, from names or indices."""
    if not isinstance(given, list) or len(given) != len(names):
        got = "nothing" if given is None else f"{len(given)} entries" if isinstance(given, list) \
            else type(given).__name__
        fail(f"'parents' must give level '{level}' a list of {len(names)} parents (one per class, a name or index "
             f"in level '{coarser}'); got {got}")
    position = {name: k for k, name in enumerate(coarser_names)}
    parent = np.empty(len(names), dtype=np.int64)
    for k, value in enumerate(given):
        if isinstance(value, str) and value in position:
            parent[k] = position[value]
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(coarser_names):
            parent[k] = value
        else:
            fail(f"the parent of {level} '{names[k]}' is {value!r}, which is not a class of level '{coarser}' "
                 f"(a name from its list, or an index 0..{len(coarser_names) - 1})")
    return parent


def _input_spec(spec, fail) -> Tuple[int, Tuple[float, float, float], Tuple[float, float, float], str]:
    if not isinstance(spec, dict):
        fail("'input' must be an object with size, mean and std")
    size = spec.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
        fail(f"'input.size' must be the model's square input side in pixels (8..4096); got {size!r}")
    triples = []
    for key in ("mean", "std"):
        values = spec.get(key)
        if not isinstance(values, list) or len(values) != 3 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            fail(f"'input.{key}' must be three numbers (per RGB channel, pixels scaled to 0..1); got {values!r}")
        triples.append(tuple(float(v) for v in values))
    if min(triples[1]) <= 0:
        fail(f"'input.std' must be positive; got {list(triples[1])}")
    geometry = spec.get("geometry", "pad")
    if geometry not in ("pad", "crop"):
        fail(f"'input.geometry' must be \"pad\" or \"crop\"; got {geometry!r}")
    return size, triples[0], triples[1], geometry
