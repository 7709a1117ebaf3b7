"""Names from references: clusters named from a gallery of named crops, open-set, `unknown` when nothing matches.

A *reference* is a crop with a name (and optionally a taxonomy): a folder tree `REF/<name>/*.jpg`, a CSV
`filename,name[,kingdom,...,species,taxonID]`, or an earlier crop-cluster output folder whose reviewed groups (human
decisions in its campaign store) become references. Modules, one job each:

- references.py   read the reference sources into one References value (names, files, digests, taxonomy)
- embedding.py    embed the reference crops with the run's model through the embedding cache; refuse vectors of
                  another model
- species_list.py read a species list (GBIF checklist or one name a line); which references are on it; a
                  hierarchical model's per-level probabilities masked to it
- prototypes.py   the naming rule over arrays: one prototype per name (the L2-normalised mean of its references),
                  best and second name per query, threshold and margin, the nearest reference as evidence; the
                  gallery check and self-test (its references named by each other, leave one out)
- rule.py         the rule as resolved for a run: per-level settings, the threshold the gallery allows, the
                  members' names that split clusters mixing names
- taxonomy.py     the common ancestor of names whose scores are too close to choose (`Noctuidae sp.`)
- units.py        what is named at each level: cluster centroids (and unclustered individuals; the individuals of
                  a cluster that mixes names), individuals, crops
- evaluate.py     open-set quality against true labels: AUROC known vs unknown, precision, coverage, a sweep
- masking.py      --species_list with -e hierarchical: the predictions masked to the list, the unmasked kept
- run.py          the entry the pipeline calls with plain values: the ref_* columns of clusters.csv

This module holds only what the command line needs without importing NumPy (so `cluster.py -h` stays instant).
"""
from __future__ import annotations

from dataclasses import dataclass

from crop_cluster.errors import CropClusterError

LEVELS = ("cluster", "individual", "crop")       # --name_level: what one name is decided for
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")    # taxonomy columns, coarsest first
STATUSES = ("named", "rolled_up", "unknown", "reviewed", "conflict")             # ref_status
COLUMNS = ("ref_name", "ref_rank", "ref_score", "ref_margin", "ref_second", "ref_nearest", "ref_status")


@dataclass(frozen=True)
class NamingDefaults:
    """Per-backend defaults of the naming rule at one --name_level (bench/results/naming.json; docs/naming.md):
    threshold, the cosine a unit's best prototype needs at least; margin, by how much it must beat the second;
    gallery_offset, how far above the gallery's own self-test threshold (naming.prototypes.self_test_threshold: the
    highest cosine at which the gallery misnames its own references) a name must be: the threshold used is
    max(threshold, self-test + gallery_offset), so a gallery whose names the model confuses names only clear
    matches, or nothing."""

    threshold: float
    margin: float
    gallery_offset: float


# Calibrated with bench/naming.py at each level, where it is applied (a crop-level threshold is wrong for cluster
# centroids and the other way round), on tux_views, tux_categories and fmnist: bench/results/naming.json, "decision".
BACKEND_DEFAULTS = {
    "lite0": {"cluster": NamingDefaults(threshold=0.85, margin=0.02, gallery_offset=0.24),
              "individual": NamingDefaults(threshold=0.85, margin=0.0, gallery_offset=0.15),
              "crop": NamingDefaults(threshold=0.83, margin=0.0, gallery_offset=0.15)},
}
UNCALIBRATED_MARGIN = 0.05   # backends without calibrated defaults: this margin, and their clustering threshold
UNCALIBRATED_GALLERY_OFFSET = 0.0   # ... and never below the cosine where the gallery misnames its own references


class NamingError(CropClusterError, ValueError):
    """A reference source, species list or reference embedding that cannot be used; the message names the file and
    the way out (exit 2)."""
