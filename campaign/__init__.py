"""Campaigns: the output folder's memory across runs, in OUT/campaign.sqlite.

A campaign is every run into one output folder. The store (store.py) remembers, keyed by crop content (the BLAKE2b
digest the embedding cache uses), every crop ever clustered there, the individuals and clusters with **stable ids**
(never reused for different material) and names, and the human decisions (review.py reads them from a review file),
so a later run -- another threshold, another algorithm, a new night added with `--add` -- keeps what an expert
decided, and its settings, so that every run into the folder answers for the whole campaign as one full run would.
Modules, one job each:

- store.py      the SQLite store: schema, migrations, lock, one transaction per run; `read_campaign` (read-only view)
- lock.py       the run lock: a second run into the same folder waits a bounded time, then stops with a message
- review.py     review files: crop-keyed `filename,group[,crop,reviewer,time,note]` and the older cluster-keyed one
- groups.py     a decision's group in one spelling (names NFC, every spelling of -1 an exclusion)
- decisions.py  latest decision per crop, applied over a partition (pinned named groups, excluded crops)
- ids.py        stable ids: maximum-overlap matching of a new partition to the stored one, fresh ids for the rest
- settings.py   the campaign's settings: flag > campaign > default, changes logged, a model change refused
- crops.py      the run's crops (the campaign's current ones and the inputs) in an order fixed by content
- run.py        the entry functions the pipeline calls with plain values: the session, settle (decisions, stable
                ids, merges, bridges), commit

Read-only API for other stages and tools (the report, the Darwin Core export)::

    from crop_cluster.campaign.store import read_campaign
    view = read_campaign(out_folder)        # None when the folder has no campaign.sqlite
    view.crops       # DataFrame: digest, path, individual, cluster, representative, first_run, last_run,
                     #            seconds (POSIX, NaN unknown), night, site
    view.clusters    # DataFrame: id, name ('' none), status, first_run, last_run, reviewed_run, size (crops)
    view.decisions   # DataFrame: digest, filename, group ('-1' = excluded), reviewer, time, note, source, run
    view.runs        # DataFrame: id, started, finished, mode, parameters (JSON), versions (JSON), counts (JSON)

`individual` is the stable occurrence id of the crop's physical insect (an int, never reused); `cluster` the stable
cluster id (-1: not clustered). Cluster status: `reviewed` (it carries a group name from a decision), `unreviewed`
(made by the algorithm in an earlier run), `new` (first made by the latest run).
"""
from __future__ import annotations

from crop_cluster.errors import CropClusterError

STORE_NAME = "campaign.sqlite"
EXCLUDED = "-1"            # the group value of a decision that keeps a crop out of every cluster
STATUSES = ("reviewed", "unreviewed", "new")


class CampaignError(CropClusterError, ValueError):
    """A campaign store or review that cannot be used; the message names the file and the way out (exit 2)."""


class StoreVersionError(CampaignError):
    """The store was written by a newer crop-cluster (a schema version this one does not know)."""


class StoreDamagedError(CampaignError):
    """The store is not a readable SQLite database, or fails its integrity check."""


class StoreLockedError(CampaignError):
    """Another run holds the output folder's lock for longer than the wait allows."""
