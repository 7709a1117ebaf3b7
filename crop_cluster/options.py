"""The options of one run: one frozen dataclass, validated on creation, shared by the command line and the API."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

from .clustering import ALGORITHMS      # registries only: light imports, so `-h` stays instant
from .embed import BACKENDS
from .engines import ENGINES
from .errors import OptionsError


@dataclass(frozen=True)
class Options:
    """Every option of one run, validated on creation; the field names are the long flags, underscored.

    The command line and `crop_cluster.cluster()` both build one. Paths are as given; None = the default the
    backend or the algorithm chooses (resolved in the pipeline and recorded in run.json). `progress` shows progress
    bars (the command line turns it on unless -q); `report` None writes report.html up to 20 000 rows.
    """

    out_folder: str
    inputs: Tuple[str, ...] = ()
    embed: str = "dino"
    from_pretrained: Optional[str] = None
    device: str = "auto"
    cluster: str = "cosine"
    threshold: Optional[float] = None
    embeddings: Optional[str] = None
    meta_folder: Optional[str] = None
    time_format: Optional[str] = None
    metadata: Optional[str] = None
    labels: Optional[str] = None
    save_labels: bool = False
    num_classes: Optional[int] = None
    dedup: bool = False
    gen_cluster_dirs: bool = False
    save_embs: bool = False
    batch_size: Optional[int] = None
    num_workers: int = -1
    resize: Optional[str] = None                 # who fits crops to the model input; None = by device
    cache_dir: Optional[str] = None
    max_cluster_size: int = 0
    linkage: str = "ward"
    distance_threshold: Optional[float] = None
    n_clusters: Optional[int] = None
    pca: int = 0
    standardize: bool = False
    min_cluster_size: Optional[int] = None
    min_samples: Optional[int] = None
    min_sim_to_centroid: Optional[float] = None
    seed: int = 0
    progress: bool = False
    report: Optional[bool] = None       # None: write report.html when there are at most 20 000 rows
    review: Optional[str] = None
    darwin_core: bool = False                    # also write OUT/dwca.zip, one occurrence per individual
    sweep: Optional[str] = None
    filter: Tuple[str, ...] = ()
    dedup_threshold: Optional[float] = None      # None: the backend's calibrated default
    track_max_seconds: Optional[float] = None
    track_max_distance: Optional[float] = None
    track_min_similarity: Optional[float] = None
    verify_from: Optional[float] = None          # band [verify_from, dedup threshold) checked on pixels; None = default
    no_verify: bool = False                      # switch the pixel verification off
    taxon_share: float = 0.8                     # cluster names: the weighted share a taxon needs (-e hierarchical)
    unknown_below: Optional[float] = None        # cluster only crops less sure than this at unknown_level
    unknown_level: Optional[str] = None          # None: the model's finest level
    engine: str = "local"                        # where embedding and the graph's tiles run (engines/)
    ray_address: Optional[str] = None            # None: RAY_ADDRESS, else a local Ray
    shared_dir: Optional[str] = None             # None: OUT/ray_shared
    add: bool = False                            # add the inputs to the campaign in out_folder (campaign/)
    match_threshold: Optional[float] = None      # similarity to a reviewed group's members to join it; None = off
    re_embed: bool = False                       # a campaign may change its model: every crop embedded again
    reference: Tuple[str, ...] = ()              # named reference galleries / reviewed output folders (naming/)
    species_list: Optional[str] = None           # the taxa that may occur: restricts references and predictions
    name_threshold: Optional[float] = None       # cosine a unit's best prototype needs; None = backend default
    name_margin: Optional[float] = None          # by how much it must beat the second name; None = backend default
    name_level: Optional[str] = None             # what one name is decided for; None = cluster
    command: Tuple[str, ...] = field(default=(), compare=False)
    given: Tuple[str, ...] = field(default=(), compare=False)    # the options the user typed (campaign/settings.py)

    def __post_init__(self) -> None:
        self._normalise()
        self._check_engine_options()
        if not self.inputs and not self.embeddings and not self.review:
            raise OptionsError("nothing to cluster: give -i INPUT (files, folders, globs, .txt lists) or "
                              "--embeddings OUT/embeddings.pkl from a previous run")
        if self.embed not in BACKENDS:
            raise OptionsError(f"unknown embed '{self.embed}'; available: {', '.join(BACKENDS)}")
        if self.cluster not in ALGORITHMS:
            raise OptionsError(f"unknown cluster algorithm '{self.cluster}'; available: {', '.join(ALGORITHMS)}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise OptionsError(f"-th {self.threshold}: a cosine similarity threshold lies in [-1, 1] "
                              f"(typical values 0.6 to 0.95)")
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionsError(f"--batch_size {self.batch_size}: must be at least 1")
        if self.resize is not None and self.resize not in ("pil", "torch", "device"):
            raise OptionsError(f"--resize {self.resize}: use pil, torch or device")
        if self.resize not in (None, "pil") and self.engine == "ray":
            raise OptionsError(f"--resize {self.resize} applies to --engine local; the Ray engine's decoding tasks fit "
                               f"crops with PIL (drop --resize)")
        if self.num_workers < -1:
            raise OptionsError(f"--num_workers {self.num_workers}: use 0 (decode in the main process), a positive "
                              f"number, or -1 for the default")
        if self.cache_dir is not None and (self.embeddings or os.path.isfile(self.cache_dir)):
            raise OptionsError(f"--cache_dir {self.cache_dir}: " + (
                "not used with --embeddings (nothing is embedded); drop one of them" if self.embeddings
                else "is a file; give a folder (created if needed)"))
        if self.num_classes is not None and self.num_classes < 1:
            raise OptionsError(f"-x {self.num_classes}: the number of classes must be at least 1")
        if self.save_labels and not self.labels:
            raise OptionsError("-sl/--save_labels needs --labels FILE.csv (columns filename,label) or --labels folders")
        self._check_clustering_options()
        self._check_individual_options()
        self._check_taxonomy_options()
        self._check_campaign_options()
        self._check_naming_options()
        if self.sweep is not None:
            from .evaluate.sweep import parse_sweep

            if self.cluster != "cosine":
                raise OptionsError(f"--sweep scores cosine thresholds; use it with -c cosine, not -c {self.cluster}")
            parse_sweep(self.sweep)
        if os.path.exists(self.out_folder) and not os.path.isdir(self.out_folder):
            raise OptionsError(f"-o {self.out_folder}: exists and is not a folder; choose another output folder")

    def _check_engine_options(self) -> None:
        """--engine is known; --ray_address and --shared_dir only with --engine ray; --shared_dir is a folder."""
        if self.engine not in ENGINES:
            raise OptionsError(f"unknown engine '{self.engine}'; available: {', '.join(ENGINES)}")
        if self.engine != "ray" and (self.ray_address or self.shared_dir):
            raise OptionsError(f"--{'ray_address' if self.ray_address else 'shared_dir'} applies to --engine ray; "
                               f"add --engine ray or drop it")
        if self.shared_dir is not None and os.path.isfile(self.shared_dir):
            raise OptionsError(f"--shared_dir {self.shared_dir}: is a file; give a folder every Ray node can read "
                               f"and write (created if needed)")

    def _normalise(self) -> None:
        """One string where a sequence is expected becomes a 1-tuple; -kp implies -gs."""
        for name in ("inputs", "filter", "command", "given", "reference"):
            value = getattr(self, name)
            object.__setattr__(self, name, (str(value),) if isinstance(value, (str, os.PathLike)) else
                               tuple(str(v) for v in value))
        object.__setattr__(self, "out_folder", str(self.out_folder))
        if self.dedup:
            object.__setattr__(self, "gen_cluster_dirs", True)

    def _check_individual_options(self) -> None:
        """Ranges of the linking flags, flags that need timestamps or boxes, and --filter syntax."""
        checks = [
            (self.dedup_threshold is not None and not 0.0 < self.dedup_threshold <= 1.0,
             f"--dedup_threshold {self.dedup_threshold}: a cosine similarity in (0, 1]; near-duplicates sit near "
             f"the top (0.9 to 0.99)"),
            (self.track_max_seconds is not None and self.track_max_seconds < 0,
             f"--track_max_seconds {self.track_max_seconds}: use 0 (no tracking) or a number of seconds"),
            (self.track_max_seconds is not None and not self.time_format,
             "--track_max_seconds needs --time_format (tracks follow the timestamps in the file names)"),
            (self.track_max_distance is not None and self.track_max_distance <= 0,
             f"--track_max_distance {self.track_max_distance}: must be > 0 (in box sizes)"),
            (self.track_max_distance is not None and not self.meta_folder,
             "--track_max_distance needs -mf/--meta_folder (box positions come from the detector's sidecars)"),
            (self.track_min_similarity is not None and not -1.0 <= self.track_min_similarity <= 1.0,
             f"--track_min_similarity {self.track_min_similarity}: a cosine similarity lies in [-1, 1]"),
            (self.verify_from is not None and not 0.0 < self.verify_from <= 1.0,
             f"--verify_from {self.verify_from}: a cosine similarity in (0, 1]"),
            (self.verify_from is not None and self.no_verify, "--verify_from and --no_verify contradict; give one"),
            (bool(self.filter) and not self.metadata,
             "--filter chooses crops by --metadata columns; add --metadata FILE.csv"),
        ]
        for failed, message in checks:
            if failed:
                raise OptionsError(message)
        from .inputs.filters import parse_filter

        for expression in self.filter:
            parse_filter(expression)

    def _check_campaign_options(self) -> None:
        """--add needs new inputs and embeds them itself; ranges of the campaign flags."""
        checks = [
            (self.add and not self.inputs, "--add adds the -i inputs to the campaign in -o; give -i NEW_CROPS"),
            (self.add and self.embeddings is not None,
             "--add embeds only the new crops itself (cached crops are reused); drop --embeddings"),
            (self.add and self.embed == "hierarchical",
             "--add does not carry -e hierarchical's per-level predictions yet; run the campaign with dino or lite0"),
            (self.add and self.unknown_below is not None, "--add clusters every crop; drop --unknown_below"),
            (self.match_threshold is not None and not -1.0 <= self.match_threshold <= 1.0,
             f"--match_threshold {self.match_threshold}: a cosine similarity lies in [-1, 1]"),
        ]
        for failed, message in checks:
            if failed:
                raise OptionsError(message)

    def _check_naming_options(self) -> None:
        """--reference sources exist; the naming flags need references (or --add into a campaign that remembers
        them) and lie in range; --species_list needs something to restrict."""
        from .naming import LEVELS

        named = bool(self.reference) or self.add
        checks = [
            (self.name_threshold is not None and not -1.0 <= self.name_threshold <= 1.0,
             f"--name_threshold {self.name_threshold}: a cosine similarity lies in [-1, 1]"),
            (self.name_margin is not None and not 0.0 <= self.name_margin < 2.0,
             f"--name_margin {self.name_margin}: a difference of cosines in [0, 2) (e.g. 0.02)"),
            (self.name_level is not None and self.name_level not in LEVELS,
             f"--name_level {self.name_level}: choose one of {', '.join(LEVELS)}"),
            (not named and any(v is not None for v in (self.name_threshold, self.name_margin, self.name_level)),
             "--name_threshold, --name_margin and --name_level tune naming from references; give --reference REF"),
            (self.species_list is not None and not named and self.embed != "hierarchical",
             f"--species_list {self.species_list}: restricts the names of --reference galleries and the predictions "
             f"of -e hierarchical; give --reference REF (a folder of <name>/ folders, a filename,name CSV or a "
             f"reviewed crop-cluster output folder) or -e hierarchical -fp MODEL"),
            (self.species_list is not None and not os.path.isfile(self.species_list),
             f"--species_list {self.species_list}: no such file"),
        ]
        for failed, message in checks:
            if failed:
                raise OptionsError(message)
        for source in self.reference:
            if not os.path.exists(source):
                raise OptionsError(f"--reference {source}: no such file or folder (a folder of <name>/ folders, a "
                                   f"filename,name CSV, or an earlier crop-cluster output folder)")
            if os.path.abspath(source) == os.path.abspath(self.out_folder):
                raise OptionsError(f"--reference {source} is this run's own output folder; its reviewed groups already "
                                   f"keep their names here. Give another campaign's folder, or a gallery")

    def _check_taxonomy_options(self) -> None:
        """-e hierarchical needs its model file; the ranges of --taxon_share and --unknown_below."""
        checks = [
            (self.embed == "hierarchical" and not self.from_pretrained and not self.embeddings,
             "-e hierarchical needs -fp MODEL.pt2 (torch.export), MODEL.pt (TorchScript) or MODEL.onnx, with "
             "MODEL.json beside it; see README 'Hierarchical taxonomic model' for how to export one"),
            (not 0.0 < self.taxon_share <= 1.0,
             f"--taxon_share {self.taxon_share}: the weighted share of a cluster's members that must agree on a "
             f"taxon lies in (0, 1] (default 0.8)"),
            (self.unknown_below is not None and not 0.0 < self.unknown_below <= 1.0,
             f"--unknown_below {self.unknown_below}: a probability in (0, 1], e.g. 0.9"),
            (self.unknown_level is not None and self.unknown_below is None,
             "--unknown_level chooses the level --unknown_below reads; give --unknown_below P too"),
        ]
        for failed, message in checks:
            if failed:
                raise OptionsError(message)

    def _check_clustering_options(self) -> None:
        """Ranges of the clustering flags, and algorithm-specific flags given to an algorithm that ignores them."""
        from .clustering import LINKAGES

        checks = [
            (self.max_cluster_size < 0, f"--max_cluster_size {self.max_cluster_size}: use 0 (off) or a size >= 2"),
            (self.max_cluster_size == 1, "--max_cluster_size 1 would leave every crop unclustered; use >= 2"),
            (self.linkage not in LINKAGES, f"--linkage {self.linkage}: choose one of {', '.join(LINKAGES)}"),
            (self.distance_threshold is not None and self.distance_threshold <= 0,
             f"--distance_threshold {self.distance_threshold}: must be > 0"),
            (self.n_clusters is not None and self.n_clusters < 1, f"--n_clusters {self.n_clusters}: must be >= 1"),
            (self.pca < 0, f"--pca {self.pca}: use 0 (no PCA) or a number of components >= 1"),
            (self.min_cluster_size is not None and self.min_cluster_size < 2,
             f"--min_cluster_size {self.min_cluster_size}: a cluster has at least 2 members; use >= 2"),
            (self.min_samples is not None and self.min_samples < 1, f"--min_samples {self.min_samples}: must be >= 1"),
            (self.min_sim_to_centroid is not None and not -1.0 <= self.min_sim_to_centroid <= 1.0,
             f"--min_sim_to_centroid {self.min_sim_to_centroid}: a cosine similarity lies in [-1, 1]"),
        ]
        k_given = self.n_clusters is not None or self.num_classes is not None
        checks += [  # checked here, before any embedding, rather than when the algorithm runs
            (self.cluster == "kmeans" and not k_given,
             "-c kmeans needs the number of clusters: give --n_clusters K (or -x K)"),
            (self.cluster == "agglomerative" and self.distance_threshold is None and not k_given,
             "-c agglomerative needs --distance_threshold D (stop merging at that linkage distance) or "
             "--n_clusters K (or -x K)"),
        ]
        for failed, message in checks:
            if failed:
                raise OptionsError(message)
        specific = {"max_cluster_size": (self.max_cluster_size != 0, "cosine"),
                    "linkage": (self.linkage != "ward", "agglomerative"),
                    "distance_threshold": (self.distance_threshold is not None, "agglomerative"),
                    "pca": (self.pca != 0, "agglomerative"), "standardize": (self.standardize, "agglomerative"),
                    "n_clusters": (self.n_clusters is not None, "kmeans or agglomerative"),
                    "min_samples": (self.min_samples is not None, "hdbscan")}
        for flag, (given, algorithms) in specific.items():
            if given and self.cluster not in algorithms.split(" or "):
                raise OptionsError(f"--{flag} applies to -c {algorithms}, not to -c {self.cluster}; drop it or "
                                  f"choose that algorithm")


def options_from(inputs: Any, out_folder: str, given: Dict[str, Any]) -> Options:
    """Options from the API's arguments; an unknown keyword raises OptionsError naming it and the closest names."""
    names = [f.name for f in fields(Options) if f.name not in ("inputs", "out_folder", "command", "given")]
    unknown = sorted(set(given) - set(names))
    if unknown:
        hint = difflib.get_close_matches(unknown[0], names, n=3)
        raise OptionsError(f"unknown option '{unknown[0]}'" + (f"; did you mean {', '.join(hint)}?" if hint else "")
                           + " (options are the command line's long flags, underscored: see the README's usage "
                             "table)")
    return Options(out_folder=out_folder, inputs=() if inputs is None else inputs, given=tuple(given), **given)
