"""A simulated reviewer on report.html's own data: the page's review state and actions in Python, a label-knowing
reviewer who works through the page, and the effort it takes (bench/review_effort.py runs it).

`Page` mirrors the page's script (outputs/report/template.html) over the data document the run wrote into
report.html: one `place` per item (an individual: its representative crop, shown as one thumbnail), the blocks
0..K-1 of the run, new groups K.. made by splits, -1 not clustered, EXCLUDED; every action is a list of operations
in the undo log; `export_rows` writes the review file exactly as the page's Export review does. The reviewer's end
state is then checked against `crop-cluster --review` of that file (campaign/decisions.py applies it), so the
simulated partition is the one the real program produces.

Effort is counted as the page would feel it:
- actions: entries of the undo log (a move, split, exclude, merge, name, an accepted or rejected suggestion);
- clicks: selection changes (a thumbnail clicked into or out of a selection, a card ticked for a merge);
- viewed: thumbnails shown to the reviewer (one per individual), counted every time they are shown.
`Tracker` keeps the pairwise F1 against the labels (evaluate.metrics's convention: rows not clustered are their own
singletons; unlabelled rows are ignored) up to date after every action, from the contingency counts.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

EXCLUDED, IDENTIFIED = -3, -2
DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


def read_document(path: str) -> Dict:
    """The data document of a report.html (the JSON the page's script reads)."""
    with open(path, encoding="utf-8") as handle:
        found = DATA.search(handle.read())
    if found is None:
        raise ValueError(f"{path}: no report data block; is it a crop-cluster report.html?")
    return json.loads(found.group(1))


def pairs(n: int) -> int:
    return n * (n - 1) // 2


class Tracker:
    """Pairwise precision/recall/F1 of the page's partition against crop labels, updated per moved item.

    labels: per item, a Counter label -> crops (unlabelled crops left out)."""

    def __init__(self, labels: Sequence[Counter], place: np.ndarray) -> None:
        self.labels = labels
        totals: Counter = Counter()
        for counts in labels:
            totals.update(counts)
        self.true_pairs = sum(pairs(n) for n in totals.values())
        self.cell: Dict[Tuple[int, str], int] = defaultdict(int)
        self.size: Dict[int, int] = defaultdict(int)
        self.same = self.grouped = 0
        for i, group in enumerate(place.tolist()):
            self._add(i, group, +1)

    def _add(self, item: int, group: int, sign: int) -> None:
        if group < 0:               # not clustered, excluded, identified: every crop its own singleton
            return
        for label, n in self.labels[item].items():
            before = self.cell[(group, label)]
            after = before + sign * n
            self.same += pairs(after) - pairs(before)
            self.cell[(group, label)] = after
        n = sum(self.labels[item].values())
        before = self.size[group]
        self.grouped += pairs(before + sign * n) - pairs(before)
        self.size[group] = before + sign * n

    def move(self, item: int, old: int, new: int) -> None:
        self._add(item, old, -1)
        self._add(item, new, +1)

    @property
    def f1(self) -> float:
        total = self.grouped + self.true_pairs
        return 2 * self.same / total if total else 1.0

    @property
    def precision(self) -> float:
        return self.same / self.grouped if self.grouped else 1.0

    @property
    def recall(self) -> float:
        return self.same / self.true_pairs if self.true_pairs else 1.0


class Page:
    """report.html's review state over its data document (template.html's `place`, `attrs`, `created`, undo log).

    labels: optional Tracker input (per item Counter of crop labels) to follow the F1 after every action."""

    def __init__(self, data: Dict, labels: Optional[Sequence[Counter]] = None) -> None:
        self.data = data
        self.items = data["items"]
        self.n = len(self.items)
        self.info = {block["id"]: block for block in data["clusters"]}
        self.K = max((block["id"] + 1 for block in data["clusters"]), default=0)
        identified = {i for group in data.get("identified", []) for i in group["members"]}
        self.original = np.asarray([IDENTIFIED if i in identified else item["c"] for i, item in enumerate(self.items)],
                                   dtype=np.int64)
        self.place = self.original.copy()
        self.members: Dict[int, Set[int]] = defaultdict(set)
        for i, group in enumerate(self.place.tolist()):
            if group != IDENTIFIED:
                self.members[group].add(i)
        self.attrs: Dict[int, Dict] = {}
        self.created: Set[int] = set()
        self.rejected: List[Tuple[int, int, str]] = []      # (item, other item, suggestion kind)
        self.done: List[Dict] = []
        self.tracker = Tracker(labels, self.place) if labels is not None else None
        self.clicks = 0
        self.viewed = 0
        self.offset = 0                 # actions of the earlier pages of the same review (rounds)
        self.judged: List[Tuple[str, float, int, int]] = []   # per suggestion: kind, margin, kept, pre-selected
        self.curve: List[Tuple[int, float, int, int]] = [(0, self.f1, 0, 0)]   # actions, F1, viewed, clicks

    def carry(self, earlier: "Page") -> "Page":
        """Continue the effort counts of `earlier`, the page of the previous round of the same review."""
        self.clicks, self.viewed, self.offset = earlier.clicks, earlier.viewed, earlier.actions
        self.judged = earlier.judged
        self.curve = earlier.curve + [(self.offset, self.f1, self.viewed, self.clicks)]
        return self

    @property
    def actions(self) -> int:
        return self.offset + len(self.done)

    # -- the page's derived state ---------------------------------------------------------------------------------
    @property
    def f1(self) -> float:
        return self.tracker.f1 if self.tracker is not None else float("nan")

    def attr(self, block: int) -> Dict:
        return self.attrs.get(block, {"name": "", "note": "", "verified": False})

    def next_id(self) -> int:
        return max([self.K - 1, *self.created]) + 1

    def group_name(self, block: int) -> str:
        """The name a block is exported under (template.html groupName)."""
        info = self.info.get(block, {})
        return self.attr(block)["name"] or info.get("group") or info.get("name") or \
            (f"cluster {block}" if block < self.K else f"new group {block - self.K + 1}")

    def used_names(self) -> Set[str]:
        names = {str(b.get("group") or "") for b in self.data["clusters"]} | \
            {str(b.get("name") or "") for b in self.data["clusters"]} | {a["name"] for a in self.attrs.values()}
        return names - {""}

    def default_name(self) -> str:
        """A new group's name when the reviewer gives none: "new group k", unused in this report and campaign."""
        used = self.used_names()
        k = 1
        while f"new group {k}" in used:
            k += 1
        return f"new group {k}"

    def touched(self) -> Set[int]:
        """Blocks that gained or lost crops on the page."""
        moved = np.flatnonzero(self.place != self.original)
        return set(self.place[moved].tolist()) | set(self.original[moved].tolist())

    def received(self, block: int) -> bool:
        return any(self.original[i] != block for i in self.members.get(block, ()))

    def reviewed_here(self, block: int) -> bool:
        a = self.attr(block)
        return a["verified"] or bool(a["name"]) or block in self.created or self.received(block)

    def order(self) -> List[int]:
        """The page's default order of the cards: the run's clusters largest first (by their size in the run),
        then new groups, then not clustered and excluded (template.html blockIds)."""
        ids = [b for b, m in self.members.items() if b >= 0 and m]
        size = lambda b: self.info[b]["size"] if b in self.info else 0   # noqa: E731
        ids.sort(key=lambda b: (b >= self.K, -size(b), b))
        return ids + [b for b in (-1, EXCLUDED) if self.members.get(b)]

    def majority(self, block: int, items: Optional[Iterable[int]] = None) -> Optional[str]:
        """The label most of the crops of `items` (default: the block's members) carry; None when unlabelled."""
        counts: Counter = Counter()
        for i in (self.members.get(block, ()) if items is None else items):
            counts.update(self.tracker.labels[i])
        return counts.most_common(1)[0][0] if counts else None

    # -- the undo log ---------------------------------------------------------------------------------------------
    def _apply(self, ops: List[Dict]) -> None:
        for op in ops:
            if op["kind"] == "place":
                for i in op["items"]:
                    old = int(self.place[i])
                    self.members[old].discard(i)
                    self.members[op["to"]].add(i)
                    self.place[i] = op["to"]
                    if self.tracker is not None:
                        self.tracker.move(i, old, op["to"])
            elif op["kind"] == "attr":
                self.attrs[op["id"]] = {**self.attr(op["id"]), op["key"]: op["to"]}
            elif op["kind"] == "new":
                self.created.add(op["id"])
            elif op["kind"] == "reject":
                self.rejected.extend(op["pairs"])

    def act(self, label: str, ops: List[Dict]) -> bool:
        if not ops:
            return False
        self._apply(ops)
        self.done.append({"label": label, "ops": ops})
        self.curve.append((self.actions, self.f1, self.viewed, self.clicks))
        return True

    def place_op(self, items: Iterable[int], to: int) -> List[Dict]:
        moving = [i for i in items if self.place[i] != to and self.place[i] != IDENTIFIED]
        return [{"kind": "place", "items": moving, "from": [int(self.place[i]) for i in moving], "to": to}] \
            if moving else []

    def attr_op(self, block: int, key: str, value) -> List[Dict]:
        return [] if self.attr(block)[key] == value else \
            [{"kind": "attr", "id": block, "key": key, "from": self.attr(block)[key], "to": value}]

    # -- the page's actions ---------------------------------------------------------------------------------------
    def select(self, items: Iterable[int]) -> List[int]:
        """The reviewer clicks `items` into a selection (one click each)."""
        chosen = sorted(set(items))
        self.clicks += len(chosen)
        return chosen

    def move(self, items: Sequence[int], target: int) -> bool:
        if target < 0 or not (target in self.info or target in self.created):
            raise ValueError(f"move to {target}: not a cluster or group of the page")
        return self.act(f"moved {len(items)} to {self.group_name(target)}", self.place_op(items, target))

    def split(self, items: Sequence[int], name: str = "") -> int:
        block = self.next_id()
        name = name or self.default_name()
        self.act(f"split {len(items)} into {name}", [{"kind": "new", "id": block}, *self.attr_op(block, "name", name),
                                                      *self.place_op(items, block)])
        return block

    def exclude(self, items: Sequence[int]) -> bool:
        return self.act(f"excluded {len(items)}", self.place_op(items, EXCLUDED))

    def merge(self, blocks: Sequence[int], name: str = "") -> int:
        """Merge ticked blocks into the first of them in the page's order (template.html mergeTicked)."""
        blocks = [b for b in blocks if self.members.get(b)]
        if len(blocks) < 2:
            raise ValueError("merge needs two or more blocks with crops")
        self.clicks += len(blocks)
        rank = {b: k for k, b in enumerate(self.order())}
        target = min(blocks, key=rank.__getitem__)
        ops = self.attr_op(target, "name", name) if name else []
        for block in blocks:
            if block != target:
                ops += self.place_op(sorted(self.members[block]), target)
        self.act(f"merged {len(blocks)} clusters into {name or self.group_name(target)}", ops)
        return target

    def name(self, block: int, text: str) -> bool:
        return self.act(f"named {text}", self.attr_op(block, "name", text))

    def verify(self, block: int) -> bool:
        return self.act(f"verified {self.group_name(block)}", self.attr_op(block, "verified", True))

    # -- suggestions (template.html acceptSuggestion / rejectSuggestion) -----------------------------------------------
    def pending(self, entry: Dict) -> Tuple[List[int], int]:
        """What accepting suggestion `entry` would act on now: (its pre-selected items still to act on, the target
        block), ([], -1) when it no longer applies. merge: one anchor per distinct block >= 0 (in the suggestion's
        order); move: the items not yet in the anchor's block (which must be a cluster or group); split: the side's
        items still in the anchor's block."""
        kind, items, anchor = entry["k"], entry["i"], entry["a"]
        if kind == "merge":
            blocks, anchors = set(), []
            for i in items:
                b = int(self.place[i])
                if b == -1 or (b >= 0 and b not in blocks):
                    blocks.add(b)
                    anchors.append(i)
            return (anchors, -1) if len(anchors) >= 2 else ([], -1)
        target = int(self.place[anchor])
        if target < 0:
            return [], -1
        if kind == "move":
            return [i for i in items if self.place[i] != target and self.place[i] not in (IDENTIFIED, EXCLUDED)], \
                target
        return [i for i in items if self.place[i] == target and i != anchor], target

    def accept(self, entry: Dict, ticked: Sequence[int]) -> bool:
        """Accept suggestion `entry` with the reviewer's ticks (a subset of pending()'s items); what was unticked is
        remembered as rejected pairs. One action."""
        items, target = self.pending(entry)
        chosen = [i for i in items if i in set(ticked)]
        left = [i for i in items if i not in set(ticked)]
        kind = entry["k"]
        if kind == "merge":
            if len(chosen) < 2:
                return False
            blocks = [int(self.place[i]) for i in chosen]
            rank = {b: k for k, b in enumerate(self.order())}
            clustered = [k for k, b in enumerate(blocks) if b >= 0]
            ops: List[Dict] = []
            if clustered:       # into the first ticked cluster in the page's order, as a merge of ticked cards
                first = min(clustered, key=lambda k: rank[blocks[k]])
                target = blocks[first]
            else:               # individuals not clustered only: together into a new group
                first, target = 0, self.next_id()
                ops += [{"kind": "new", "id": target}, *self.attr_op(target, "name", self.default_name())]
            for i, block in zip(chosen, blocks):
                if block != target:
                    ops += self.place_op(sorted(self.members[block]) if block >= 0 else [i], target)
            pairs = [(i, chosen[first], kind) for i in left]
            label = f"merged {len(chosen)} into {self.group_name(target)} (suggested)"
        elif kind == "move":
            ops, pairs = self.place_op(chosen, target), [(i, entry["a"], kind) for i in left]
            label = f"moved {len(chosen)} to {self.group_name(target)} (suggested)"
        else:
            block = self.next_id()
            ops = [{"kind": "new", "id": block}, *self.attr_op(block, "name", self.default_name()),
                   *self.place_op(chosen, block)] if chosen else []
            pairs = []
            label = f"split {len(chosen)} off {self.group_name(target)} (suggested)"
        if pairs:
            ops.append({"kind": "reject", "pairs": pairs})
        return self.act(label, ops)

    def reject(self, entry: Dict) -> bool:
        """Reject suggestion `entry` (one action): merge and move -> "apart" pairs, split -> the edge's two ends."""
        items, _ = self.pending(entry)
        kind = entry["k"]
        if kind == "merge":
            pairs = [(i, items[0], kind) for i in items[1:]]
        elif kind == "move":
            pairs = [(i, entry["a"], kind) for i in items]
        else:
            pairs = [(entry["i"][0], entry["a"], kind)]
        return self.act(f"rejected a {kind} suggestion", [{"kind": "reject", "pairs": pairs}])

    def view(self, items: Iterable[int]) -> int:
        """The reviewer looks at these thumbnails; returns how many."""
        n = sum(1 for _ in items)
        self.viewed += n
        return n

    # -- export (template.html reviewRows) --------------------------------------------------------------------------
    def exported_blocks(self) -> List[int]:
        touched = self.touched()
        return [b for b, m in self.members.items() if m and (b == EXCLUDED or (b >= 0 and (
            self.reviewed_here(b) or b in touched)))]

    def export_rows(self, reviewer: str = "simulated", time: Optional[str] = None) -> List[List[str]]:
        """The review file's rows (filename, group, crop, reviewer, time, note[, rejected, other]), sorted by
        filename, rejections last; time: ISO 8601 (default: now, so a later round's decisions win)."""
        import datetime

        time = time or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        rows = []
        for block in self.exported_blocks():
            group = "-1" if block == EXCLUDED else self.group_name(block)
            note = "" if block == EXCLUDED else self.attr(block)["note"]
            for i in sorted(self.members[block]):
                item = self.items[i]
                rows.append([item["f"], group, item["h"], reviewer, time, note])
                for filename, digest in item.get("x", []):
                    rows.append([filename, group, digest, reviewer, time, note])
        rows.sort(key=lambda row: row[0])
        if self.rejected:
            rows = [row + ["", ""] for row in rows] + sorted(
                [self.items[x]["f"], "", self.items[x]["h"], reviewer, time, "", kind, self.items[y]["h"]]
                for x, y, kind in self.rejected)
        return rows

    def write_export(self, path: str) -> int:
        import csv

        rows = self.export_rows()
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["filename", "group", "crop", "reviewer", "time", "note"] +
                            (["rejected", "other"] if self.rejected else []))
            writer.writerows(rows)
        return len(rows)

    def partition(self) -> Set[frozenset]:
        """The crops grouped as the page shows them: groups of two or more crops, by filename."""
        groups = []
        for block, m in self.members.items():
            if block < 0:
                continue
            files = [f for i in m for f in [self.items[i]["f"], *(x[0] for x in self.items[i].get("x", []))]]
            if len(files) >= 2:
                groups.append(frozenset(files))
        return set(groups)


def crop_labels(data: Dict, label_of_file: Dict[str, Optional[str]]) -> List[Counter]:
    """Per item, the labels of its crops (its representative and its other crops)."""
    out = []
    for item in data["items"]:
        files = [item["f"], *(x[0] for x in item.get("x", []))]
        out.append(Counter(label_of_file[f] for f in files if label_of_file.get(f) is not None))
    return out


def table_partition(filenames: Sequence[str], cluster: np.ndarray) -> Set[frozenset]:
    """Groups of two or more crops of a clusters.csv (cluster >= 0), by filename."""
    groups: Dict[int, List[str]] = defaultdict(list)
    for name, c in zip(filenames, np.asarray(cluster).tolist()):
        if c >= 0:
            groups[c].append(name)
    return {frozenset(g) for g in groups.values() if len(g) >= 2}


# ---------------------------------------------------------------- the simulated reviewer

TARGET_F1 = 0.99


@dataclass
class Homes:
    """Where each label's crops go: the group the reviewer has made that label's (label -> block)."""

    block: Dict[str, int] = field(default_factory=dict)

    def settle(self, page: Page, items: Sequence[int], label: str, source: Optional[int]) -> None:
        """Send `items` (all of `label`, in `source` or anywhere) to the label's home: a move when it has one, else
        a split into a new group that becomes its home (a lone crop stays where it is)."""
        items = [i for i in items if page.place[i] != self.block.get(label)]
        if not items:
            return
        home = self.block.get(label)
        if home is not None and page.members.get(home):
            page.move(page.select(items), home)
        elif sum(sum(page.tracker.labels[i].values()) for i in items) >= 2:
            self.block[label] = page.split(page.select(items))


def walk_cards(page: Page, homes: Homes, cards: Optional[Sequence[int]] = None,
               seen: Optional[Set[int]] = None, stop_at: Optional[float] = None) -> None:
    """Cards in the page's default order, crop by crop: every thumbnail of a card is looked at (those in `seen`
    are skipped: the page marks them as judged), its strays go to their labels' homes (one move or split per
    label, strays of one label selected together), then the card joins its label's home (a merge of two ticked
    cards) or becomes that home. Not clustered: each label's crops go to its home, or together into a new group."""
    for block in list(page.order() if cards is None else cards):
        if stop_at is not None and page.f1 >= stop_at:
            return
        members = sorted(page.members.get(block, ()))
        if not members or block == EXCLUDED:
            continue
        page.view(i for i in members if seen is None or i not in seen)
        if seen is not None:
            seen.update(members)
        by_label: Dict[str, List[int]] = defaultdict(list)
        for i in members:
            label = page.majority(block, [i])
            if label is not None:
                by_label[label].append(i)
        if block == -1:
            for label, items in sorted(by_label.items(), key=lambda kv: -len(kv[1])):
                homes.settle(page, items, label, block)
            continue
        label = page.majority(block)
        if label is None:
            continue
        for other, items in sorted(by_label.items(), key=lambda kv: -len(kv[1])):
            if other != label:
                homes.settle(page, items, other, block)
        home = homes.block.get(label)
        if home is not None and home != block and page.members.get(home) and page.members.get(block):
            page.view(sorted(page.members[home])[:1])        # the home card is found and ticked
            homes.block[label] = page.merge([home, block])
        elif home is None or not page.members.get(home):
            homes.block[label] = block


def reviewed_blocks(page: Page) -> Set[int]:
    """Blocks a person decided on: in the campaign (status reviewed) or on this page (acted on)."""
    touched = page.touched()
    return {b for b, m in page.members.items() if b >= 0 and m and (
        b in touched or page.reviewed_here(b) or page.info.get(b, {}).get("status") == "reviewed")}


def homes_of_reviewed(page: Page) -> Homes:
    """The reviewer knows the groups already decided: each label's home is its largest reviewed group."""
    homes, best = Homes(), {}
    for block in reviewed_blocks(page):
        label = page.majority(block)
        n = sum(sum(page.tracker.labels[i].values()) for i in page.members[block])
        if label is not None and n > best.get(label, 0):
            homes.block[label], best[label] = block, n
    return homes


def merge_duplicates(page: Page, shown: int = 1) -> None:
    """The reviewer looks over the groups decided so far (the first `shown` thumbnail of each card) and merges
    the groups of one label: one merge of all of them per label."""
    by_label: Dict[str, List[int]] = defaultdict(list)
    for block in sorted(reviewed_blocks(page)):
        page.view(sorted(page.members[block])[:shown])
        label = page.majority(block)
        if label is not None:
            by_label[label].append(block)
    for label, blocks in by_label.items():
        if len(blocks) > 1:
            page.merge(blocks)


def walk_unreviewed(page: Page, stop_at: Optional[float] = TARGET_F1) -> None:
    """After the suggestions: the groups decided so far, one per label (merge_duplicates), then the cards no one
    decided on yet, in the page's order (unreviewed first), crop by crop as in walk_cards, with the reviewed groups
    as the labels' homes; then the crops not clustered."""
    if stop_at is not None and page.f1 >= stop_at:
        return
    merge_duplicates(page)
    reviewed = reviewed_blocks(page)
    cards = [b for b in page.order() if b not in reviewed and b != EXCLUDED]
    walk_cards(page, homes_of_reviewed(page), cards, stop_at=stop_at)


def run_baseline(page: Page) -> None:
    """The baseline: every card in the page's default order, crop by crop (walk_cards)."""
    walk_cards(page, Homes())


def run_queue(page: Page, page_size: int = 250, stop_share: float = 0.05) -> None:
    """The "likely misplaced crops" queue (outputs/report/review_order.py) first: its pages, worst first, are looked
    at; the crops of a page that do not belong to their cluster's label are moved, one move per target on the page
    (the cluster the page names as closer when it is of their label, else their label's largest group, else a new
    group). Once a page finds fewer than `stop_share` misplaced, the reviewer walks the cards as the baseline does
    (crops already judged in the queue are not looked at again)."""
    homes, seen = Homes(), set()
    while True:
        queue = [i for i in range(page.n) if page.place[i] >= 0 and page.place[i] == page.original[i]
                 and page.items[i].get("q") is not None and i not in seen]
        queue.sort(key=lambda i: -page.items[i]["q"])
        shown = queue[:page_size]
        if not shown:
            break
        page.view(shown)
        seen.update(shown)
        targets: Dict[Tuple[str, int], List[int]] = defaultdict(list)
        for i in shown:
            label, own = page.majority(None, [i]), page.majority(int(page.place[i]))
            if label is None or label == own:
                continue
            near = page.items[i].get("o", -1)
            target = near if near >= 0 and page.members.get(near) and page.majority(near) == label else \
                largest_group_of(page, label)
            targets[(label, -1 if target is None else target)].append(i)
        for (label, target), items in targets.items():
            if target >= 0:
                page.move(page.select(items), target)
                homes.block.setdefault(label, target)
            else:
                homes.settle(page, items, label, None)
        if sum(len(v) for v in targets.values()) < stop_share * len(shown):
            break
    walk_cards(page, homes, seen=seen)


def largest_group_of(page: Page, label: str) -> Optional[int]:
    """The group (>= 0) with the most crops of `label` among those whose majority label it is."""
    best, best_n = None, 0
    for block, members in page.members.items():
        if block < 0 or not members or page.majority(block) != label:
            continue
        n = sum(page.tracker.labels[i][label] for i in members)
        if n > best_n:
            best, best_n = block, n
    return best


def label_of(page: Page, items: Iterable[int]) -> Optional[str]:
    """The label most crops of `items` carry (what the reviewer sees in those thumbnails)."""
    counts: Counter = Counter()
    for i in items:
        counts.update(page.tracker.labels[i])
    return counts.most_common(1)[0][0] if counts else None


def judge(page: Page, entry: Dict, known: Optional[Set[int]] = None) -> Tuple[List[int], List[int], List[int]]:
    """What the label-knowing reviewer sees beside suggestion `entry` and keeps ticked: (pending items, kept items,
    thumbnails shown). No side effect.

    merge: each cluster is judged by its shown thumbnails (a group already decided on shows one); the clusters of
    the label with the most crops stay ticked. move: the individuals of the target's label (judged by its shown
    thumbnails) stay ticked. split: the side's individuals of its most common label other than the rest's."""
    items, target = page.pending(entry)
    if not items:
        return [], [], []
    known = reviewed_blocks(page) if known is None else known
    if entry["k"] == "merge":
        shown = {a: [i for i in entry["v"][entry["i"].index(a)] if page.place[i] == page.place[a] >= 0] or [a]
                 for a in items}
        for a in items:       # a group already decided on is shown by its name and one thumbnail
            shown[a] = shown[a][:1] if int(page.place[a]) in known else shown[a]
        judged = {a: label_of(page, shown[a]) for a in items}
        weight: Counter = Counter()
        for a in items:
            unit = page.members[int(page.place[a])] if page.place[a] >= 0 else [a]
            weight[judged[a]] += sum(sum(page.tracker.labels[i].values()) for i in unit)
        win = weight.most_common(1)[0][0]
        return items, [a for a in items if judged[a] == win], [i for a in items for i in shown[a]]
    context = [i for i in entry["v"][0] if page.place[i] == target] or [entry["a"]]
    context = context[:1] if target in known else context
    rest = label_of(page, context)
    if entry["k"] == "move":
        kept = [i for i in items if label_of(page, [i]) == rest]
    else:
        others = [i for i in items if label_of(page, [i]) != rest]
        win = label_of(page, others)
        kept = [i for i in others if label_of(page, [i]) == win]
    return items, kept, list(items) + context


def review_suggestion(page: Page, entry: Dict) -> Optional[bool]:
    """The reviewer on one suggestion (judge): looks at what the page shows, unticks what does not belong (a click
    each), accepts (True) or rejects (False); None when it no longer applies (the page hides it)."""
    items, kept, shown = judge(page, entry)
    if not items:
        return None
    page.view(shown)
    page.clicks += len(items) - len(kept)
    page.judged.append((entry["k"], float(entry["s"]) - page.data["run"]["threshold"], len(kept), len(items)))
    if (entry["k"] == "merge" and len(kept) >= 2) or (entry["k"] != "merge" and kept):
        return page.accept(entry, kept)
    page.reject(entry)
    return False


def first_judgements(page: Page) -> List[Tuple[str, float, int, int]]:
    """Every suggestion of a fresh page judged as it stands (kind, similarity - threshold, kept, pre-selected): the
    measurement behind suggestions.PRECISION."""
    known = reviewed_blocks(page)
    out = []
    for entry in page.data.get("suggestions", []):
        items, kept, _ = judge(page, entry, known)
        if items:
            out.append((entry["k"], float(entry["s"]) - page.data["run"]["threshold"], len(kept), len(items)))
    return out


def shown_first(page: Page) -> List[Dict]:
    """The suggestions the page's panel offers before its "below the cards" note (template.html worthOf)."""
    return [entry for entry in page.data.get("suggestions", []) if entry.get("w", 1)]


def run_suggestions(page: Page, next_round, target: float = TARGET_F1, probe: int = 5, probe_share: float = 0.6,
                    stop_share: float = 0.7, rounds: int = 10) -> Page:
    """The suggestions the page shows first (those worth an action, `w`; best expected gain first), each judged by
    review_suggestion (the others, below the cards' gain per action, are not asked for);
    a round ends when they are used up, then `next_round(page)` (export, `crop-cluster --review`, the new report)
    gives the next round's page; rounds end when the target F1 is reached, when fewer than `stop_share` of a
    round's suggestions were accepted, or when the first `probe` suggestions kept less than `probe_share` of what
    they pre-selected (they are not worth following on this material). Then, if the target is not reached: the
    groups decided so far are merged per label and the undecided cards walked (walk_unreviewed), and if that is
    not enough (or the suggestions were given up), every card is walked as the baseline does.
    Returns the last round's page (the effort counts run over all rounds)."""
    given_up = False
    for round_ in range(rounds):
        accepted = rejected = 0
        for entry in shown_first(page):
            if page.f1 >= target:
                break
            outcome = review_suggestion(page, entry)
            accepted += outcome is True
            rejected += outcome is False
            if round_ == 0 and len(page.judged) == probe and \
                    sum(j[2] for j in page.judged) < probe_share * sum(j[3] for j in page.judged):
                given_up = True
                break
        if given_up or page.f1 >= target or accepted == 0 or accepted < stop_share * (accepted + rejected):
            break
        page = next_round(page)
    if page.f1 < target and not given_up:
        walk_unreviewed(page, target)
    if page.f1 < target:
        walk_cards(page, homes_of_reviewed(page), stop_at=target)
    return page


def effort(page: Page, target: float = TARGET_F1, marks: Sequence[int] = (50, 100, 200)) -> Dict:
    """Actions, clicks and thumbnails viewed when the F1 first reached `target` (None: never), the F1 after
    `marks` actions, and the end state."""
    reached = next((point for point in page.curve if point[1] >= target), None)
    f1_at = {str(m): round(next(point[1] for point in reversed(page.curve) if point[0] <= m), 4) for m in marks}
    return {"actions_to_target": None if reached is None else reached[0],
            "viewed_to_target": None if reached is None else reached[2],
            "clicks_to_target": None if reached is None else reached[3],
            "f1_after_actions": f1_at, "actions": page.actions, "viewed": page.viewed, "clicks": page.clicks,
            "f1_start": round(page.curve[0][1], 4), "f1_end": round(page.f1, 4)}
