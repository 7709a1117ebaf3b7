"""The campaign's settings: every option that shapes its answer, kept in the store, so that a run into a campaign
folder starts from them whatever flags were typed this time.

A setting's value in a run comes from the flag when one was given (it then becomes the campaign's setting and is
recorded), else from the campaign (the value a run gave it before), else from the default. `--review` alone and
`--add` change no setting. A change is logged as `old -> new`; what depends on it is recomputed over the whole
campaign (every run computes its answer over the whole current crop set; campaign/memo.py keeps what did not change).
A change of model (backend, weights) would make the stored embeddings unusable: it is refused with the way out unless
`--re_embed` asks for it, and then the model-specific settings are taken from the new model's defaults unless given
again. (Another `--resize` keeps the model: crops whose embeddings the resize's cache variant lacks are embedded
again, so every crop of the campaign is embedded the same way.)

Plain values in and out: `resolve(given, values, stored, defaults)` works on dicts; `resolve_options` on Options.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from crop_cluster.campaign import CampaignError

log = logging.getLogger("crop-cluster")

MODEL_SETTINGS = ("embed", "from_pretrained", "resize")
EMBEDDING_MODEL = ("embed", "from_pretrained")   # a change of these makes the stored embeddings incomparable
# settings whose value is a cosine of one model's embedding space: dropped on a model change unless given again
MODEL_SPECIFIC = ("threshold", "dedup_threshold", "track_min_similarity", "verify_from", "match_threshold",
                  "name_threshold", "name_margin")
INDIVIDUAL_SETTINGS = ("time_format", "meta_folder", "metadata", "filter", "dedup_threshold", "track_max_seconds",
                       "track_max_distance", "track_min_similarity", "verify_from", "no_verify")
CLUSTER_SETTINGS = ("threshold", "cluster", "max_cluster_size", "linkage", "distance_threshold", "n_clusters", "pca",
                    "standardize", "min_cluster_size", "min_samples", "min_sim_to_centroid", "seed", "num_classes",
                    "match_threshold", "taxon_share", "unknown_below", "unknown_level")
NAMING_SETTINGS = ("species_list", "name_threshold", "name_margin", "name_level")   # references: the store's own
SETTINGS = MODEL_SETTINGS + INDIVIDUAL_SETTINGS + CLUSTER_SETTINGS + NAMING_SETTINGS + ("cache_dir",)
PATH_SETTINGS = ("from_pretrained", "meta_folder", "metadata", "cache_dir", "species_list")   # kept absolute


@dataclass(frozen=True)
class Resolved:
    """values: the setting values of this run; sources: name -> 'flag', 'campaign' or 'default'; changed:
    (name, old, new) for the campaign settings this run changes; stored: the campaign's settings after the run."""

    values: Dict[str, Any]
    sources: Dict[str, str]
    changed: List[Tuple[str, Any, Any]] = field(default_factory=list)
    stored: Dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> Dict[str, Dict[str, Any]]:
        """run.json's `settings`: name -> {value, source}."""
        return {name: {"value": self.values[name], "source": self.sources[name]} for name in SETTINGS}


def _plain(value: Any) -> Any:
    """A JSON-able form of a setting's value (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _same(a: Any, b: Any) -> bool:
    return _plain(a) == _plain(b)


def absolute(name: str, value: Any) -> Any:
    """Paths kept absolute (a later run from another working folder means the same file); a hub id as given."""
    if name in PATH_SETTINGS and isinstance(value, tuple):
        return tuple(absolute(name, item) for item in value)
    if name in PATH_SETTINGS and isinstance(value, str) and value and (name != "from_pretrained"
                                                                      or os.path.exists(value)):
        return os.path.abspath(value)
    return value


def resolve(given: Sequence[str], values: Mapping[str, Any], stored: Mapping[str, Any], defaults: Mapping[str, Any],
            re_embed: bool = False, where: str = "") -> Resolved:
    """The settings of a run (module docstring).

    given: the names typed this run; values: this run's values (flags or defaults); stored: the campaign's settings
    ({} for a new campaign); defaults: each setting's default. Raises CampaignError on a refused model change.
    """
    given = set(given)
    model_change = [(name, stored[name], values[name]) for name in EMBEDDING_MODEL
                    if name in given and name in stored and not _same(stored[name], absolute(name, values[name]))]
    if model_change and not re_embed:
        what = "; ".join(f"{name} {old!r} -> {new!r}" for name, old, new in model_change)
        raise CampaignError(f"{where}: this campaign's crops were embedded with another model ({what}), so its stored "
                            f"embeddings cannot be compared with the new ones. Give another -o for the new model, or "
                            f"add --re_embed to embed every crop of the campaign again with it (the review decisions "
                            f"are kept)")
    stored = dict(stored)
    if model_change:                 # --re_embed: the old model's cosines mean nothing for the new one
        for name in MODEL_SPECIFIC:
            if name in stored and name not in given:
                log.warning("--re_embed: the campaign's %s %r belonged to the old model; the new model's default is "
                            "used (give it again to keep it)", name, stored.pop(name))
    result, sources, changed, after = {}, {}, [], dict(stored)
    for name in SETTINGS:
        if name in given:
            value = absolute(name, values[name])
            sources[name] = "flag"
            if name in stored and not _same(stored[name], value):
                changed.append((name, stored[name], _plain(value)))
            after[name] = _plain(value)
        elif name in stored:
            value = tuple(stored[name]) if isinstance(defaults[name], tuple) else stored[name]
            sources[name] = "campaign"
        else:
            value = defaults[name]
            sources[name] = "default"
        result[name] = value
    return Resolved(result, sources, changed, after)


def given_names(options) -> Tuple[str, ...]:
    """The setting names a run's Options were given: Options.given when the caller said (command line, API),
    else every setting whose value differs from its default."""
    if options.given:
        return tuple(name for name in SETTINGS if name in options.given)
    return tuple(name for name in SETTINGS if getattr(options, name) != _default(name))


def _default(name: str) -> Any:
    from crop_cluster.options import Options

    spec = {f.name: f for f in dataclasses.fields(Options)}[name]
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default


def resolve_options(options, stored: Mapping[str, Any]):
    """(Options with the campaign's settings applied, Resolved); logs the changes."""
    resolved = resolve(given_names(options), {name: getattr(options, name) for name in SETTINGS}, stored,
                       {name: _default(name) for name in SETTINGS}, options.re_embed, f"-o {options.out_folder}")
    for name, old, new in resolved.changed:
        scope = "the model" if name in MODEL_SETTINGS else "individuals and clusters" \
            if name in INDIVIDUAL_SETTINGS else "names" if name in NAMING_SETTINGS else "clusters"
        log.info("campaign setting %s: %r -> %r (%s recomputed over the whole campaign)", name, old, new, scope)
    taken = [name for name, source in resolved.sources.items() if source == "campaign"]
    if taken:
        log.info("campaign settings in effect: %s", ", ".join(f"{name}={resolved.values[name]!r}" for name in taken))
    changes = {name: value for name, value in resolved.values.items() if getattr(options, name) != value}
    return (dataclasses.replace(options, **changes) if changes else options), resolved
