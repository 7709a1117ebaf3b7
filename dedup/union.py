"""Union-find over crops that never puts two crops cut from one source frame into one individual.

Every linking rule (exact, near, near-verified, track) proposes links; `FrameUnion.link` accepts a link unless the two
individuals it would join already hold crops of a common frame (then it is refused and counted). The accepted links
form a spanning forest of each individual; `linked_by` reads, for every crop, the rule of its link towards the
individual's representative.
"""
from __future__ import annotations

from typing import Dict, List, Set

import numpy as np

RULES = ("exact", "near", "track", "near-verified")


class FrameUnion:
    """n crops; frame: int64 (n,) source-frame id per crop, -1 unknown (an unknown frame never conflicts)."""

    def __init__(self, frame: np.ndarray) -> None:
        self.parent = np.arange(frame.size, dtype=np.int64)
        self.frames: Dict[int, Set[int]] = {i: {int(f)} for i, f in enumerate(frame) if f >= 0}
        self.edges: List[tuple] = []          # accepted links (a, b, rule index into RULES)
        self.refused = dict.fromkeys(RULES, 0)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:              # path compression
            parent[i], i = root, parent[i]
        return int(root)

    def same(self, a: int, b: int) -> bool:
        return self.find(a) == self.find(b)

    def may_link(self, a: int, b: int) -> bool:
        """Whether the individuals of a and b hold no frame in common (a link between them would be accepted)."""
        return self.frames.get(self.find(a), set()).isdisjoint(self.frames.get(self.find(b), set()))

    def link(self, a: int, b: int, rule: str, force: bool = False) -> bool:
        """Join the individuals of crops a and b; False when already joined or refused (a frame in common).
        force: accept even when frames are shared (byte-identical files are one object whatever their names say)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        fa, fb = self.frames.get(ra, set()), self.frames.get(rb, set())
        if not force and not fa.isdisjoint(fb):
            self.refused[rule] += 1
            return False
        if len(fa) < len(fb):                 # keep the larger frame set at the new root
            ra, rb, fa, fb = rb, ra, fb, fa
        self.parent[rb] = ra
        if fb:
            fa |= fb
            self.frames[ra] = fa
            self.frames.pop(rb, None)
        self.edges.append((a, b, RULES.index(rule)))
        return True

    def labels(self) -> np.ndarray:
        """int64 (n,): root of each crop's individual (pointer jumping over the whole parent array at once)."""
        parent = self.parent
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent.copy()
            parent = grand
