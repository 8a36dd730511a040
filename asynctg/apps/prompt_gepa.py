"""Prompt optimization with GEPA (``asynctg optimize --optimizer gepa``).

The same tasks, engines and evaluation as the TGD loop (``asynctg.apps.prompt``): the model
answers under the candidate system prompt, the task's evaluator scores each answer and its
loss text is the feedback. The search is ``asynctg.gepa.aoptimize`` on the training split
(minibatches) and the validation split (the Pareto front; the training split when there is
none), stopping at ``max_metric_calls`` examples scored or the run's budget. The test split is
evaluated for the seed prompt and for the best candidate at the end. With a checkpoint the
search state lives in its ``gepa`` folder and a rerun resumes it.

The result has the TGD loop's shape (one history row per iteration, row 0 the start, so the
command's summary, ``--json`` and the report read it alike) plus a ``gepa`` part: the
candidate tree and the front after every iteration, which the report draws.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

from asynctg.apps.prompt import ANSWER_ROLE, QUERY_ROLE, PromptConfig, PromptResult
from asynctg.engine.adapters import as_chat_engine
from asynctg.engine.client import ChatEngine
from asynctg.gepa import EvaluationBatch, GEPAResult, Progress, aoptimize
from asynctg.graph.ops import BlackboxLLM
from asynctg.graph.variable import Variable
from asynctg.runs.checkpoint import Checkpoint
from asynctg.runs.loop import EventSink, Meter, RunEvent, gather
from asynctg.tasks.evaluation import make_evaluator
from asynctg.tasks.types import QA, PromptTask

__all__ = ["gepa_sections", "optimize_prompt_gepa"]

COMPONENT = "system_prompt"


class TaskAdapter:
    """A prompt task as a GEPA adapter: answers, scores and feedback through the graph."""

    propose_new_texts = None

    def __init__(self, engine: ChatEngine, evaluator: Any) -> None:
        self.engine = engine
        self.evaluator = evaluator

    async def _one(self, prompt: str, example: QA) -> tuple[str, float, str]:
        system = Variable(prompt, requires_grad=False, role_description="system prompt")
        x = Variable(example.question, requires_grad=False, role_description=QUERY_ROLE)
        y = Variable(example.answer, requires_grad=False, role_description=ANSWER_ROLE)
        response = await BlackboxLLM(self.engine, system)(x)
        loss = await self.evaluator.loss(x, y, response)
        return str(response.value), float(self.evaluator.score(loss)), str(loss.value)

    async def evaluate(
        self, batch: list[QA], candidate: dict[str, str], capture_traces: bool = False
    ) -> EvaluationBatch:
        """Every example answered and scored at once."""
        rows = await gather(self._one(candidate[COMPONENT], e) for e in batch)
        traces = [
            {"question": e.question, "answer": r[0], "feedback": r[2]}
            for e, r in zip(batch, rows, strict=True)
        ]
        return EvaluationBatch(
            outputs=[r[0] for r in rows],
            scores=[r[1] for r in rows],
            trajectories=traces if capture_traces else None,
        )

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: EvaluationBatch, components: list[str]
    ) -> dict[str, list[dict[str, str]]]:
        """Question, answer and the evaluator's feedback per example."""
        records = [
            {"Inputs": t["question"], "Generated Outputs": t["answer"], "Feedback": t["feedback"]}
            for t in eval_batch.trajectories or []
        ]
        return {name: list(records) for name in components}


def _tree(result: GEPAResult) -> list[dict[str, Any]]:
    front = {p for progs in result.per_val_instance_best_candidates.values() for p in progs}
    return [
        {
            "idx": i,
            "parents": [p for p in parents if p is not None],
            "score": round(result.val_aggregate_scores[i], 6),
            "on_front": i in front,
            "metric_calls": result.discovery_eval_counts[i],
            "prompt": result.candidates[i][COMPONENT],
        }
        for i, parents in enumerate(result.parents)
    ]


def _history(
    result: GEPAResult, test_before: float | None, test_after: float | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    best = 0
    rows.append(
        {
            "step": 0,
            "prompt": result.candidates[0][COMPONENT],
            "train_accuracy": None,
            "validation_accuracy": round(result.val_aggregate_scores[0], 6),
            "test_accuracy": test_before,
            "reverted": False,
        }
    )
    for record in result.trace:
        for idx in record.get("accepted", []):
            if result.val_aggregate_scores[idx] > result.val_aggregate_scores[best]:
                best = idx
        tried = [t for t in record.get("tasks", []) if "after" in t]
        size = sum(len(t["ids"]) for t in tried)
        rows.append(
            {
                "step": int(record["i"]) + 1,
                "prompt": result.candidates[best][COMPONENT],
                "train_accuracy": round(sum(t["after"] for t in tried) / size, 6) if size else None,
                "validation_accuracy": round(result.val_aggregate_scores[best], 6),
                "test_accuracy": None,
                # every proposal of the iteration failed its minibatch test
                "reverted": bool(tried) and not record.get("accepted"),
                "metric_calls": record.get("metric_calls"),
                "frontier": record.get("front", []),
                "accepted": record.get("accepted", []),
            }
        )
    rows[-1]["test_accuracy"] = test_after if len(rows) > 1 else test_before
    return rows


async def optimize_prompt_gepa(
    task: PromptTask,
    engine: ChatEngine,
    *,
    backward_engine: ChatEngine | None = None,
    config: PromptConfig | None = None,
    checkpoint: Checkpoint | None = None,
    on_event: EventSink | None = None,
    max_metric_calls: int = 200,
    parallel_proposals: int = 1,
) -> PromptResult:
    """Optimize ``task``'s system prompt with GEPA; see the module docstring."""
    config = config or PromptConfig()
    engine = as_chat_engine(engine)
    backward = as_chat_engine(backward_engine) if backward_engine is not None else engine
    if checkpoint is not None:
        checkpoint.attach(engine, backward)
    previous = checkpoint.state.get("usage") if checkpoint and checkpoint.state else None
    meter = Meter([engine, backward], previous)
    evaluator = make_evaluator(task.evaluation, backward)
    adapter = TaskAdapter(engine, evaluator)
    stop_reason: list[str] = []

    def emit(kind: str, message: str, **data: Any) -> None:
        if on_event is not None:
            on_event(RunEvent(kind, message, data))

    def over_budget(_state: Any) -> bool:
        reason = config.budget.exceeded(meter.total())
        if reason and not stop_reason:
            stop_reason.append(reason)
        return reason is not None

    def progress(p: Progress) -> None:
        emit(
            "step",
            f"iteration {p.iteration + 1}: frontier {p.frontier_size}, best validation "
            f"{p.best_score:.3f}, metric calls {p.metric_calls}/{p.max_metric_calls}",
            progress=f"metric calls {p.metric_calls}/{p.max_metric_calls}",
            accuracy=p.best_score,
            frontier_size=p.frontier_size,
            metric_calls=p.metric_calls,
        )

    async def test_accuracy(prompt: str) -> float | None:
        if not config.evaluate_test or not task.test:
            return None
        scored = await adapter.evaluate(list(task.test), {COMPONENT: prompt})
        return round(sum(scored.scores) / len(scored.scores), 6)

    emit(
        "start",
        f"optimizing the system prompt of {task.name} with GEPA: {max_metric_calls} metric "
        f"calls, {parallel_proposals} proposal(s) per iteration",
        progress=f"metric calls 0/{max_metric_calls}",
    )
    started = time.monotonic()
    run_dir = str(checkpoint.path / "gepa") if checkpoint is not None else None
    result = await aoptimize(
        seed_candidate={COMPONENT: task.system_prompt},
        trainset=list(task.train),
        valset=list(task.val) if task.val else None,
        adapter=adapter,
        reflection_lm=backward,
        reflection_minibatch_size=config.batch_size,
        max_metric_calls=max_metric_calls,
        run_dir=run_dir,
        seed=config.seed,
        num_parallel_proposals=parallel_proposals,
        progress=progress,
        stop_callbacks=[over_budget],
    )
    best = result.best_candidate[COMPONENT]
    before, after = await gather([test_accuracy(task.system_prompt), test_accuracy(best)])
    status = "stopped" if stop_reason else "completed"
    history = _history(result, before, after)
    history[-1]["seconds"] = round(time.monotonic() - started, 3)
    if checkpoint is not None:
        reason = stop_reason[0] if stop_reason else None
        state = {"status": status, "stop_reason": reason, "usage": meter.total()}
        await checkpoint.asave({**state, "history": history})
    emit("done", f"{status}: best validation {max(result.val_aggregate_scores):.3f}", status=status)
    out = PromptResult(
        task=task.name,
        initial_prompt=task.system_prompt,
        final_prompt=best,
        history=history,
        status=status,
        stop_reason=stop_reason[0] if stop_reason else None,
        usage=meter.total(),
        config={
            **config.fingerprint_fields(),
            "optimizer": "gepa",
            "max_metric_calls": max_metric_calls,
            "parallel_proposals": parallel_proposals,
        },
        unreadable_verdicts=getattr(evaluator, "unreadable", 0),
    )
    out.gepa = {
        "candidates": _tree(result),
        "metric_calls": result.total_metric_calls,
        "best_idx": result.best_idx,
        "trace": list(result.trace),
    }
    return out


def gepa_sections(part: Mapping[str, Any]) -> str:
    """The report's GEPA sections: the candidate tree, then the front after every iteration."""
    nodes: Sequence[Mapping[str, Any]] = part.get("candidates", [])
    children: dict[int, list[int]] = {}
    for node in nodes:
        for p in node["parents"][:1]:  # a merge is drawn under its first parent
            children.setdefault(int(p), []).append(int(node["idx"]))

    def item(i: int) -> str:
        node = nodes[i]
        star = " &#9733; front" if node["on_front"] else ""
        best = " <b>best</b>" if i == part.get("best_idx") else ""
        merged = f" (merge of {node['parents']})" if len(node["parents"]) > 1 else ""
        text = html.escape(str(node["prompt"]))
        kids = "".join(item(k) for k in children.get(i, []))
        return (
            f"<li>#{i} validation {node['score']:.3f}{star}{best}{merged}"
            f"<details><summary>prompt</summary><pre>{text}</pre></details>"
            + (f"<ul>{kids}</ul>" if kids else "")
            + "</li>"
        )

    out = ["<h2>GEPA candidate tree</h2>", f"<ul>{item(0)}</ul>" if nodes else ""]
    rows = "".join(
        f"<tr><td>{int(r['i']) + 1}</td><td>{r.get('metric_calls')}</td>"
        f"<td>{html.escape(', '.join(f'#{p}' for p in r.get('front', [])))}</td>"
        f"<td>{html.escape(', '.join(f'#{p}' for p in r.get('accepted', [])))}</td>"
        f"<td>{r.get('best_score', 0):.3f}</td></tr>"
        for r in part.get("trace", [])
    )
    out.append(
        "<h2>Pareto front per iteration</h2><table><tr><th>iteration</th><th>metric calls</th>"
        f"<th>front</th><th>accepted</th><th>best validation</th></tr>{rows}</table>"
    )
    return "".join(out)
