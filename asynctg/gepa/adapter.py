"""The adapter protocol GEPA optimizes through, how its methods are called, and the default one.

An adapter (gepa 0.1.4's ``GEPAAdapter``, unchanged) has ``evaluate(batch, candidate,
capture_traces)`` returning an evaluation batch (``outputs``, ``scores``, optional
``trajectories``, ``objective_scores``, ``num_metric_calls``), ``make_reflective_dataset
(candidate, eval_batch, components)`` returning, per component, a list of records for the
reflection model, and optionally ``propose_new_texts(candidate, dataset, components)``. Each
method may be sync (it runs in a worker thread, so several evaluations proceed together) or
async (awaited on the run's loop). gepa's own ``EvaluationBatch`` objects are read by their
attributes, so gepa adapters work as they are.

``DefaultAdapter`` is what ``task_lm`` alone gives: a single-component system prompt, examples
``{"input", "answer", "additional_context"}``, a score of 1 when the reply contains the answer;
every example of a batch is one request through the engine, all sent at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asynctg import fanout, prompts
from asynctg.engine import Engine
from asynctg.errors import ConfigError
from asynctg.gepa.models import complete

__all__ = [
    "DefaultAdapter",
    "EvaluationBatch",
    "GEPAAdapter",
    "call",
    "evaluate",
]


@dataclass
class EvaluationBatch:
    """What ``evaluate`` returns: per-example outputs and scores (higher is better)."""

    outputs: list[Any]
    scores: list[float]
    trajectories: list[Any] | None = None
    objective_scores: list[dict[str, float]] | None = None
    num_metric_calls: int | None = None


class GEPAAdapter(Protocol):
    """gepa 0.1.4's adapter protocol (``propose_new_texts`` is optional)."""

    def evaluate(self, batch: list[Any], candidate: dict[str, str], capture_traces: bool) -> Any:
        """Run ``candidate`` on ``batch``; an evaluation batch (or an awaitable of one)."""
        ...

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> Any:
        """Per component, the records the reflection model reads."""
        ...


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(type(fn), "__call__", None)  # noqa: B004 - an object's own __call__
    )


async def call(
    fn: Callable[..., Any], pool: concurrent.futures.ThreadPoolExecutor, *args: Any
) -> Any:
    """``fn(*args)``: awaited when async, else in a worker thread; an awaitable result awaited."""
    if _is_async(fn):
        return await fn(*args)
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(pool, functools.partial(fn, *args))
    if inspect.isawaitable(result):
        result = await result
    return result


async def evaluate(
    adapter: Any,
    batch: list[Any],
    candidate: dict[str, str],
    capture_traces: bool,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> EvaluationBatch:
    """``adapter.evaluate`` called and its result checked and read into an EvaluationBatch."""
    raw = await call(adapter.evaluate, pool, batch, dict(candidate), capture_traces)
    try:
        outputs = list(raw.outputs)
        scores = [float(s) for s in raw.scores]
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"adapter.evaluate must return an evaluation batch with outputs and numeric scores, "
            f"got {type(raw).__name__}"
        ) from exc
    if len(scores) != len(batch) or len(outputs) != len(batch):
        raise ConfigError(
            f"adapter.evaluate returned {len(scores)} scores and {len(outputs)} outputs for "
            f"{len(batch)} examples"
        )
    traces = getattr(raw, "trajectories", None)
    objectives = getattr(raw, "objective_scores", None)
    calls = getattr(raw, "num_metric_calls", None)
    return EvaluationBatch(
        outputs=outputs,
        scores=scores,
        trajectories=list(traces) if traces is not None else None,
        objective_scores=list(objectives) if objectives is not None else None,
        num_metric_calls=int(calls) if calls is not None else None,
    )


#: ``(example, reply) -> (score, feedback, ...)`` for the default adapter (gepa's evaluators,
#: which return an ``EvaluationResult(score, feedback, objective_scores)``, work as they are).
Evaluator = Callable[[Mapping[str, Any], str], Sequence[Any]]


def contains_answer(example: Mapping[str, Any], reply: str) -> tuple[float, str]:
    """1.0 when the reply contains the example's answer, with feedback saying so either way."""
    answer = str(example["answer"])
    correct = answer in reply
    context = {str(k): str(v) for k, v in dict(example.get("additional_context") or {}).items()}
    return (1.0 if correct else 0.0), prompts.gepa_feedback(correct, answer, context)


class DefaultAdapter:
    """One system prompt optimized against ``{"input", "answer", "additional_context"}``
    examples; each example one request through ``engine``, a batch all at once."""

    def __init__(self, engine: Engine, evaluator: Evaluator | None = None) -> None:
        self.engine = engine
        self.evaluator: Evaluator = evaluator or contains_answer

    async def evaluate(
        self, batch: list[Mapping[str, Any]], candidate: dict[str, str], capture_traces: bool
    ) -> EvaluationBatch:
        """Every example answered concurrently under the candidate's (first) component."""
        system = next(iter(candidate.values()))
        replies = await fanout.gather(
            complete(
                self.engine,
                [
                    {"role": "system", "content": system},
                    {"role": "user", "content": str(example["input"])},
                ],
            )
            for example in batch
        )
        outputs, scores, traces = [], [], []
        for example, reply in zip(batch, replies, strict=True):
            # gepa's evaluators return (score, feedback, objective_scores): read the first two
            verdict = self.evaluator(example, reply)
            score, feedback = verdict[0], str(verdict[1])
            outputs.append({"full_assistant_response": reply})
            scores.append(float(score))
            traces.append({"data": example, "full_assistant_response": reply, "feedback": feedback})
        return EvaluationBatch(
            outputs=outputs, scores=scores, trajectories=traces if capture_traces else None
        )

    def make_reflective_dataset(
        self,
        candidate: dict[str, str],
        eval_batch: EvaluationBatch,
        components_to_update: list[str],
    ) -> dict[str, list[dict[str, Any]]]:
        """The inputs, replies and feedback of the batch, for the one component."""
        if not eval_batch.trajectories:
            raise ConfigError("the default adapter needs trajectories to build a reflective set")
        records = [
            {
                "Inputs": t["data"]["input"],
                "Generated Outputs": t["full_assistant_response"],
                "Feedback": t["feedback"],
            }
            for t in eval_batch.trajectories
        ]
        return {name: list(records) for name in components_to_update}
