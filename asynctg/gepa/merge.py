"""GEPA's merge step: combine two front candidates that improved different components of a
common ancestor.

After an iteration accepts a candidate, a merge becomes due (at most ``max_merge_invocations``
accepted merges in all). The next iteration then tries one instead of a reflective proposal:
two candidates are drawn from the pruned front, neither an ancestor of the other, with a
common ancestor that scores no better than either and from which each kept some component
while the other changed it. The merge takes, per component, the changed text (the better
parent's when both changed it; a coin flip on a tie). It is scored on up to five validation ids
(drawn from those where the first parent wins, where the second wins, and where they tie) and
accepted when its sum reaches the better parent's sum there. Draws use the run's generator in
gepa 0.1.4's order; one deviation: components are walked in the candidate's key order, where
gepa walks a set of names (its order varies with the interpreter's string hashing).
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asynctg.gepa.selection import dominators
from asynctg.gepa.state import SearchState

__all__ = ["MergePlan", "Merges"]

#: Pair draws per attempt, and attempts per merge, before giving up for this iteration.
MAX_ATTEMPTS = 10
#: Validation ids a merge is scored on.
SUBSAMPLE = 5


@dataclass
class MergePlan:
    """A merged candidate, its parents and ancestor, and the ids to score it on."""

    candidate: dict[str, str]
    parents: tuple[int, int]
    ancestor: int
    ids: list[Any]
    parent_sums: tuple[float, float]


def _ancestors(parents: Sequence[Sequence[int | None]], node: int) -> set[int]:
    """Every ancestor of ``node``, inserted depth first in parent order (a set's iteration
    order depends on insertion order, and the merge draws from these sets)."""
    found: set[int] = set()
    stack = [iter(parents[node])]
    while stack:
        p = next(stack[-1], -1)
        if p == -1:
            stack.pop()
        elif p is not None and p not in found:
            found.add(p)
            stack.append(iter(parents[p]))
    return found


def _useful(cands: Sequence[Mapping[str, str]], anc: int, a: int, b: int) -> bool:
    """Some component one descendant kept from the ancestor while the other changed it."""
    return any(
        (cands[anc][n] == cands[a][n] or cands[anc][n] == cands[b][n])
        and cands[a][n] != cands[b][n]
        for n in cands[anc]
    )


@dataclass
class Merges:
    """The merge schedule and its memory (what was tried), saved in the checkpoint."""

    max_invocations: int
    overlap_floor: int
    due: int = 0
    tested: int = 0
    last_found: bool = False
    tried_triplets: list[tuple[int, int, int]] = field(default_factory=list)
    tried_merges: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "tested": self.tested,
            "last_found": self.last_found,
            "tried_triplets": [list(t) for t in self.tried_triplets],
            "tried_merges": [[a, b, list(d)] for a, b, d in self.tried_merges],
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        if not saved:
            return
        self.due = int(saved["due"])
        self.tested = int(saved["tested"])
        self.last_found = bool(saved["last_found"])
        self.tried_triplets = [(int(a), int(b), int(c)) for a, b, c in saved["tried_triplets"]]
        self.tried_merges = [(int(a), int(b), tuple(d)) for a, b, d in saved["tried_merges"]]

    def on_accept(self) -> None:
        """A reflective proposal was accepted: one more merge becomes due (within the cap)."""
        self.last_found = True
        if self.tested < self.max_invocations:
            self.due += 1

    def _pair(
        self, rng: random.Random, state: SearchState, pool: list[int], scores: list[float]
    ) -> tuple[int, int, int] | None:
        for _ in range(MAX_ATTEMPTS):
            if len(pool) < 2:
                return None
            i, j = rng.sample(list(pool), 2)
            if i == j:
                continue
            i, j = min(i, j), max(i, j)
            anc_i = list(_ancestors(state.parents, i))
            anc_j = list(_ancestors(state.parents, j))
            if j in anc_i or i in anc_j:
                continue
            common = [
                a
                for a in set(anc_i) & set(anc_j)
                if (i, j, a) not in self.tried_triplets
                and scores[a] <= scores[i]
                and scores[a] <= scores[j]
                and _useful(state.candidates, a, i, j)
            ]
            if common:
                anc = rng.choices(common, k=1, weights=[scores[a] for a in common])[0]
                return i, j, anc
        return None

    def _plan(self, rng: random.Random, state: SearchState) -> tuple[dict[str, str], int, int, int]:
        scores = state.aggregate_scores
        pool = dominators(state.front_mapping(), scores)
        if len(pool) < 2 or len(state.parents) < 3:
            raise LookupError
        cands = state.candidates
        for _ in range(MAX_ATTEMPTS):
            found = self._pair(rng, state, pool, scores)
            if found is None:
                continue
            a, b, anc = found
            if (a, b, anc) in self.tried_triplets:
                continue
            merged = dict(cands[anc])
            picks: list[int] = []
            for name in cands[anc]:
                base, ta, tb = cands[anc][name], cands[a][name], cands[b][name]
                if (base == ta or base == tb) and ta != tb:
                    src = b if base == ta else a
                elif base != ta and base != tb:
                    if scores[a] > scores[b]:
                        src = a
                    elif scores[b] > scores[a]:
                        src = b
                    else:
                        src = rng.choice([a, b])
                else:
                    src = a
                merged[name] = cands[src][name]
                picks.append(src)
            desc = (a, b, tuple(picks))
            if desc in self.tried_merges:
                continue
            shared = set(state.val_subscores[a]) & set(state.val_subscores[b])
            if len(shared) < self.overlap_floor:
                continue
            self.tried_merges.append(desc)
            return merged, a, b, anc
        raise LookupError

    def _subsample(
        self, rng: random.Random, s1: Mapping[Hashable, float], s2: Mapping[Hashable, float]
    ) -> list[Hashable]:
        common = list(set(s1) & set(s2))
        wins1 = [k for k in common if s1[k] > s2[k]]
        wins2 = [k for k in common if s2[k] > s1[k]]
        ties = [k for k in common if k not in wins1 and k not in wins2]
        each = max(1, math.ceil(SUBSAMPLE / 3))
        chosen: list[Hashable] = []
        for bucket in (wins1, wins2, ties):
            if len(chosen) >= SUBSAMPLE:
                break
            free = [k for k in bucket if k not in chosen]
            take = min(len(free), each, SUBSAMPLE - len(chosen))
            if take > 0:
                chosen += rng.sample(free, k=take)
        missing = SUBSAMPLE - len(chosen)
        if missing > 0:
            unused = [k for k in common if k not in chosen]
            if len(unused) >= missing:
                chosen += rng.sample(unused, k=missing)
            elif common:
                chosen += rng.choices(common, k=missing)
        return chosen[:SUBSAMPLE]

    def plan(self, rng: random.Random, state: SearchState) -> MergePlan | None:
        """The next merge to score, or None when no pair qualifies."""
        try:
            merged, a, b, anc = self._plan(rng, state)
        except LookupError:
            return None
        self.tried_triplets.append((a, b, anc))
        ids = self._subsample(rng, state.val_subscores[a], state.val_subscores[b])
        if not ids:
            return None
        sums = (
            sum(state.val_subscores[a][k] for k in ids),
            sum(state.val_subscores[b][k] for k in ids),
        )
        return MergePlan(merged, (a, b), anc, ids, sums)
