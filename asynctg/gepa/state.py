"""The search's memory: every candidate, its lineage and scores, and the per-instance front.

The front maps each validation id to the set of candidate indices that reach the best score
seen on that id. Python sets of small ints are kept on purpose (not sorted lists): the order
the selector walks them in is part of what a seed reproduces, and it must be the order gepa
0.1.4 walks for the same history (same insertions into the same kind of set).

``save``/``load`` write one JSON file (``gepa_state.json`` in ``run_dir``) after every
iteration; it holds the random generator's state too, so a resumed run continues exactly where
the interrupted one stopped (gepa 0.1.4 re-seeds on resume and re-evaluates the seed).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asynctg.errors import ConfigError

__all__ = ["STATE_FILE", "SearchState", "ValEvaluation"]

#: The checkpoint's file name inside ``run_dir``.
STATE_FILE = "gepa_state.json"
_FORMAT = 1


@dataclass(slots=True)
class ValEvaluation:
    """One candidate's validation results, keyed by validation id."""

    scores: dict[Hashable, float]
    outputs: dict[Hashable, Any] = field(default_factory=dict)


@dataclass
class SearchState:
    """Everything a GEPA run knows; ``i`` is the current iteration (-1 before the first)."""

    candidates: list[dict[str, str]]
    parents: list[list[int | None]]
    val_subscores: list[dict[Hashable, float]]
    pareto_front: dict[Hashable, float]
    front_programs: dict[Hashable, set[int]]
    components: list[str]
    next_component: list[int]
    i: int = -1
    total_num_evals: int = 0
    num_full_val_evals: int = 0
    discovery_eval_counts: list[int] = field(default_factory=list)
    best_outputs: dict[Hashable, list[tuple[int, Any]]] | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    # the sampler's and the merge scheduler's memory, saved with the rest for resume
    sampler: dict[str, Any] = field(default_factory=dict)
    merge: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(
        cls, seed_candidate: Mapping[str, str], seed_eval: ValEvaluation, *, track_outputs: bool
    ) -> SearchState:
        """The state after the seed's validation evaluation (one full evaluation counted)."""
        scores = dict(seed_eval.scores)
        state = cls(
            candidates=[dict(seed_candidate)],
            parents=[[None]],
            val_subscores=[scores],
            pareto_front=dict(scores),
            front_programs={vid: {0} for vid in scores},
            components=list(seed_candidate),
            next_component=[0],
            total_num_evals=len(scores),
            num_full_val_evals=1,
            discovery_eval_counts=[0],
        )
        if track_outputs:
            state.best_outputs = {vid: [(0, out)] for vid, out in seed_eval.outputs.items()}
        return state

    # --- scores ---------------------------------------------------------------------------

    def average(self, idx: int) -> float:
        """Mean validation score of candidate ``idx`` (-inf when it has none)."""
        scores = self.val_subscores[idx]
        return sum(scores.values()) / len(scores) if scores else float("-inf")

    @property
    def aggregate_scores(self) -> list[float]:
        """Mean validation score of every candidate, by index."""
        return [self.average(i) for i in range(len(self.candidates))]

    def best_idx(self) -> int:
        """The candidate with the highest mean validation score (the first on a tie)."""
        scores = self.aggregate_scores
        return scores.index(max(scores))

    def front_mapping(self) -> dict[Hashable, set[int]]:
        """A copy of the per-instance front: validation id -> best candidate indices."""
        return {vid: set(progs) for vid, progs in self.front_programs.items()}

    def front_members(self) -> list[int]:
        """Every candidate on the front at least once, ascending."""
        return sorted({p for progs in self.front_programs.values() for p in progs})

    # --- growth ---------------------------------------------------------------------------

    def add_candidate(
        self, candidate: Mapping[str, str], parents: Sequence[int], evaluation: ValEvaluation
    ) -> int:
        """Append an evaluated candidate and fold its scores into the front; its index."""
        idx = len(self.candidates)
        self.candidates.append(dict(candidate))
        self.discovery_eval_counts.append(self.total_num_evals)
        self.next_component.append(max((self.next_component[p] for p in parents), default=0))
        self.parents.append(list(parents))
        scores = dict(evaluation.scores)
        self.val_subscores.append(scores)
        for vid, score in scores.items():
            best = self.pareto_front.get(vid, float("-inf"))
            output = evaluation.outputs.get(vid)
            if score > best:
                self.pareto_front[vid] = score
                self.front_programs[vid] = {idx}
                if self.best_outputs is not None and vid in evaluation.outputs:
                    self.best_outputs[vid] = [(idx, output)]
            elif score == best:
                self.front_programs.setdefault(vid, set()).add(idx)
                if self.best_outputs is not None and vid in evaluation.outputs:
                    self.best_outputs.setdefault(vid, []).append((idx, output))
        return idx

    # --- checkpoint -----------------------------------------------------------------------

    def save(self, run_dir: str | None, rng: random.Random) -> None:
        """Write the checkpoint atomically (nothing without a ``run_dir``)."""
        if run_dir is None:
            return
        os.makedirs(run_dir, exist_ok=True)
        version, internal, gauss = rng.getstate()
        data = {
            "format": _FORMAT,
            "candidates": self.candidates,
            "parents": self.parents,
            # ids keep their order and type through JSON as [id, value] pairs
            "val_subscores": [list(s.items()) for s in self.val_subscores],
            "pareto_front": list(self.pareto_front.items()),
            "front_programs": [[vid, list(p)] for vid, p in self.front_programs.items()],
            "components": self.components,
            "next_component": self.next_component,
            "i": self.i,
            "total_num_evals": self.total_num_evals,
            "num_full_val_evals": self.num_full_val_evals,
            "discovery_eval_counts": self.discovery_eval_counts,
            "trace": self.trace,
            "sampler": self.sampler,
            "merge": self.merge,
            "rng": [version, list(internal), gauss],
        }
        target = os.path.join(run_dir, STATE_FILE)
        tmp = target + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, default=repr)
        os.replace(tmp, target)

    @classmethod
    def load(cls, run_dir: str, rng: random.Random) -> SearchState | None:
        """The checkpoint in ``run_dir`` (``rng`` restored to its saved state), or None."""
        path = os.path.join(run_dir, STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if data.get("format") != _FORMAT:
                raise ConfigError(f"{path}: unknown checkpoint format {data.get('format')!r}")

            def key(vid: Any) -> Hashable:
                return tuple(vid) if isinstance(vid, list) else vid

            state = cls(
                candidates=[dict(c) for c in data["candidates"]],
                parents=[list(p) for p in data["parents"]],
                val_subscores=[{key(k): float(v) for k, v in s} for s in data["val_subscores"]],
                pareto_front={key(k): float(v) for k, v in data["pareto_front"]},
                front_programs={key(k): set(p) for k, p in data["front_programs"]},
                components=list(data["components"]),
                next_component=[int(n) for n in data["next_component"]],
                i=int(data["i"]),
                total_num_evals=int(data["total_num_evals"]),
                num_full_val_evals=int(data["num_full_val_evals"]),
                discovery_eval_counts=[int(n) for n in data["discovery_eval_counts"]],
                trace=list(data["trace"]),
                sampler=dict(data["sampler"]),
                merge=dict(data["merge"]),
            )
            version, internal, gauss = data["rng"]
            rng.setstate((version, tuple(internal), gauss))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{path} is not a GEPA checkpoint of asynctg: {exc}") from exc
        return state
