"""Which parent to improve, on which training examples, and which component to rewrite.

All randomness comes from the one ``random.Random(seed)`` of the run, drawn in the order gepa
0.1.4 draws it: per proposal, the parent is chosen first, then the minibatch; merges draw from
the same generator. With the same seed and the same scores, the choices are the same.

- ``pareto``: prune the front of candidates another front member covers wherever they are
  best, then draw a parent with probability proportional to how many validation ids it is
  best on.
- ``current_best``: the best mean validation score. ``epsilon_greedy``: that, except with
  probability 0.1 a uniformly random candidate.
- Minibatches: the training ids are shuffled once per epoch and cut into consecutive chunks
  of ``minibatch_size``; iteration ``i`` takes chunk ``i`` (the k-th extra proposal of one
  iteration takes the k-th following chunk). When the set does not divide evenly, the epoch
  is padded with the least-used ids, the most recently shuffled first.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from asynctg.errors import ConfigError
from asynctg.gepa.state import SearchState

__all__ = [
    "CandidateSelector",
    "ComponentSelector",
    "EpochMinibatches",
    "dominators",
    "make_candidate_selector",
    "make_component_selector",
    "prune_front",
    "select_from_front",
]

#: Picks a parent index from the state.
CandidateSelector = Callable[[SearchState], int]
#: Picks the component names to rewrite: (state, parent index, parent candidate) -> names.
ComponentSelector = Callable[[SearchState, int, Mapping[str, str]], list[str]]

EPSILON = 0.1


def _covered(prog: int, others: set[int], front: Mapping[Hashable, set[int]]) -> bool:
    """True when every front ``prog`` belongs to also holds one of ``others``."""
    return all(any(o in others for o in progs) for progs in front.values() if prog in progs)


def prune_front(
    front: Mapping[Hashable, set[int]], scores: Sequence[float]
) -> dict[Hashable, set[int]]:
    """The front without candidates that others cover everywhere they are best.

    Candidates are examined weakest first (by mean score, ties in order of first appearance on
    the front); the first covered one is dropped and the scan starts over, until none is.
    """
    seen: dict[int, None] = {}
    for progs in front.values():
        for p in progs:
            seen.setdefault(p, None)
    order = sorted(seen, key=lambda p: scores[p])
    dropped: set[int] = set()
    changed = True
    while changed:
        changed = False
        for p in order:
            if p in dropped:
                continue
            rest = set(order) - {p} - dropped
            if _covered(p, rest, front):
                dropped.add(p)
                changed = True
                break
    kept = [p for p in order if p not in dropped]
    return {vid: {p for p in progs if p in kept} for vid, progs in front.items()}


def dominators(front: Mapping[Hashable, set[int]], scores: Sequence[float]) -> list[int]:
    """The candidates left on the pruned front (the merge step's pool), in set order."""
    members: list[int] = []
    for progs in prune_front(front, scores).values():
        members.extend(progs)
    return list(set(members))


def select_from_front(
    front: Mapping[Hashable, set[int]], scores: Sequence[float], rng: random.Random
) -> int:
    """A parent drawn from the pruned front, weighted by the ids it is best on."""
    counts: dict[int, int] = {}
    for progs in prune_front(front, scores).values():
        for p in progs:
            counts[p] = counts.get(p, 0) + 1
    pool = [p for p, n in counts.items() for _ in range(n)]
    if not pool:
        raise ConfigError("the Pareto front is empty: the validation set has no ids")
    return rng.choice(pool)


def make_candidate_selector(strategy: str | Any, rng: random.Random) -> CandidateSelector:
    """``"pareto"``, ``"current_best"``, ``"epsilon_greedy"``, or an object with
    ``select_candidate_idx(state)`` (gepa's selector protocol)."""
    if strategy == "pareto":
        return lambda state: select_from_front(state.front_mapping(), state.aggregate_scores, rng)
    if strategy == "current_best":
        return lambda state: state.best_idx()
    if strategy == "epsilon_greedy":

        def greedy(state: SearchState) -> int:
            if rng.random() < EPSILON:
                return rng.randint(0, len(state.candidates) - 1)
            return state.best_idx()

        return greedy
    pick = getattr(strategy, "select_candidate_idx", None)
    if callable(pick):
        return lambda state: int(pick(state))
    raise ConfigError(
        f"candidate_selection_strategy must be 'pareto', 'current_best' or 'epsilon_greedy', "
        f"got {strategy!r}"
    )


def make_component_selector(selector: str | Any) -> ComponentSelector:
    """``"round_robin"`` (one component per proposal, cycling per lineage), ``"all"``, or a
    callable ``(state, parent_idx, candidate) -> names``."""
    if selector == "round_robin":

        def round_robin(state: SearchState, idx: int, candidate: Mapping[str, str]) -> list[str]:
            k = state.next_component[idx]
            state.next_component[idx] = (k + 1) % len(state.components)
            return [state.components[k]]

        return round_robin
    if selector == "all":
        return lambda state, idx, candidate: list(candidate)
    if callable(selector):
        return lambda state, idx, candidate: list(selector(state, idx, candidate))
    raise ConfigError(f"module_selector must be 'round_robin' or 'all', got {selector!r}")


class EpochMinibatches:
    """Training minibatches: one shuffle per epoch, consecutive chunks (see the module)."""

    def __init__(self, minibatch_size: int, rng: random.Random) -> None:
        if minibatch_size < 1:
            raise ConfigError(f"reflection_minibatch_size must be at least 1, got {minibatch_size}")
        self.size = minibatch_size
        self.rng = rng
        self.order: list[Any] = []
        self.epoch = -1
        self.seen_size = 0
        self.iteration: int | None = None
        self.extra = 0

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the same sequence."""
        return {
            "order": self.order,
            "epoch": self.epoch,
            "seen_size": self.seen_size,
            "iteration": self.iteration,
            "extra": self.extra,
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``state()``'s output."""
        if not saved:
            return
        self.order = list(saved["order"])
        self.epoch = int(saved["epoch"])
        self.seen_size = int(saved["seen_size"])
        self.iteration = saved["iteration"]
        self.extra = int(saved["extra"])

    def _reshuffle(self, ids: Sequence[Any]) -> None:
        self.seen_size = len(ids)
        order = list(ids)
        self.rng.shuffle(order)
        uses: dict[Any, int] = {}
        for x in order:
            uses[x] = uses.get(x, 0) + 1
        short = -len(order) % self.size
        for _ in range(short):
            # the least-used id; among equals, the one that entered the count last
            low = min(uses.values())
            pick = next(x for x in reversed(list(uses)) if uses[x] == low)
            order.append(pick)
            uses[pick] += 1
        self.order = order

    def next_ids(self, ids: Sequence[Any], iteration: int) -> list[Any]:
        """The minibatch for ``iteration``; repeated calls in one iteration move one chunk on."""
        if not ids:
            raise ConfigError("the training set is empty")
        if iteration == self.iteration:
            self.extra += 1
        else:
            self.iteration, self.extra = iteration, 0
        start = iteration * self.size
        epoch = 0 if self.epoch == -1 else start // max(len(self.order), 1)
        if not self.order or len(ids) != self.seen_size or epoch > self.epoch:
            self.epoch = epoch
            self._reshuffle(ids)
        start = (start + self.extra * self.size) % len(self.order)
        return self.order[start : start + self.size]
