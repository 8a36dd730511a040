"""What a GEPA run returns: gepa 0.1.4's ``GEPAResult`` fields, plus the per-iteration trace."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from asynctg.gepa.state import SearchState

__all__ = ["GEPAResult"]


@dataclass(frozen=True)
class GEPAResult:
    """Every candidate explored, its lineage and validation scores, and the Pareto front.

    ``parents[i]`` lists candidate ``i``'s parents (``[None]`` for the seed);
    ``val_subscores[i]`` maps validation id -> score; ``per_val_instance_best_candidates``
    maps each validation id to the candidates with the best score on it (the front);
    ``discovery_eval_counts[i]`` is the metric calls spent when candidate ``i`` was found.
    ``trace`` has one record per iteration (parents tried, minibatch, scores before/after,
    accepted candidates, front size) for reports.
    """

    candidates: list[dict[str, str]]
    parents: list[list[int | None]]
    val_aggregate_scores: list[float]
    val_subscores: list[dict[Hashable, float]]
    per_val_instance_best_candidates: dict[Hashable, set[int]]
    discovery_eval_counts: list[int]
    val_aggregate_subscores: list[dict[str, float]] | None = None
    per_objective_best_candidates: dict[str, set[int]] | None = None
    objective_pareto_front: dict[str, float] | None = None
    best_outputs_valset: dict[Hashable, list[tuple[int, Any]]] | None = None
    total_metric_calls: int | None = None
    num_full_val_evals: int | None = None
    run_dir: str | None = None
    seed: int | None = None
    trace: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_state(cls, state: SearchState, run_dir: str | None, seed: int) -> GEPAResult:
        """A snapshot of ``state``."""
        return cls(
            candidates=[dict(c) for c in state.candidates],
            parents=[list(p) for p in state.parents],
            val_aggregate_scores=state.aggregate_scores,
            val_subscores=[dict(s) for s in state.val_subscores],
            per_val_instance_best_candidates=state.front_mapping(),
            discovery_eval_counts=list(state.discovery_eval_counts),
            best_outputs_valset=state.best_outputs,
            total_metric_calls=state.total_num_evals,
            num_full_val_evals=state.num_full_val_evals,
            run_dir=run_dir,
            seed=seed,
            trace=tuple(state.trace),
        )

    @property
    def num_candidates(self) -> int:
        """How many candidates were kept (the seed included)."""
        return len(self.candidates)

    @property
    def num_val_instances(self) -> int:
        """How many validation ids the front covers."""
        return len(self.per_val_instance_best_candidates)

    @property
    def best_idx(self) -> int:
        """The candidate with the best mean validation score (the first on a tie)."""
        scores = self.val_aggregate_scores
        return max(range(len(scores)), key=lambda i: scores[i])

    @property
    def best_candidate(self) -> dict[str, str]:
        """The best candidate's texts."""
        return self.candidates[self.best_idx]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (fronts as lists)."""
        return {
            "candidates": self.candidates,
            "parents": self.parents,
            "val_aggregate_scores": self.val_aggregate_scores,
            "val_subscores": [{str(k): v for k, v in s.items()} for s in self.val_subscores],
            "per_val_instance_best_candidates": {
                str(k): sorted(v) for k, v in self.per_val_instance_best_candidates.items()
            },
            "discovery_eval_counts": self.discovery_eval_counts,
            "total_metric_calls": self.total_metric_calls,
            "num_full_val_evals": self.num_full_val_evals,
            "run_dir": self.run_dir,
            "seed": self.seed,
            "best_idx": self.best_idx,
            "trace": list(self.trace),
        }
