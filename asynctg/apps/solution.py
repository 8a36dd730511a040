"""Solution optimization, the paper's GPQA / MMLU setting (test-time refinement of answers).

Following TextGrad's ``evaluation/solution_optimization.py`` call for call, for each question:
a zero-shot answer from the model; that answer becomes a variable to optimise; then, for each
of ``iterations`` rounds, the test-time loss (``tg.MultiChoiceTestTime``: an LLM critique of
the answer that does not solve the question itself) is computed and back-propagated, and the
optimizer rewrites the answer under the constraint that it still ends with ``Answer: LETTER``.
The prediction after every round is kept; the final prediction is the majority vote over the
zero-shot answer and every round's. Accuracy is reported per round and for the vote.

Questions run concurrently (the paper's script uses a thread pool); within a question the
rounds are sequential, as each needs the last one's answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from asynctg import prompts
from asynctg.engine.jobs import Job
from asynctg.engine.protocol import Engine
from asynctg.engine.tiers import check_tier, use_tier
from asynctg.graph.ops import BlackboxLLM
from asynctg.graph.variable import Variable
from asynctg.loss import MultiChoiceTestTime
from asynctg.runs.checkpoint import Checkpoint
from asynctg.runs.loop import EventSink, ItemRun, RoundsConfig, run_host
from asynctg.runs.rounds import refine
from asynctg.tasks.evaluation import choice_score, majority_vote, parse_choice
from asynctg.tasks.types import MultipleChoice, SolutionTask

__all__ = ["SolutionConfig", "SolutionResult", "optimize_solutions"]


@dataclass(frozen=True)
class SolutionConfig(RoundsConfig):
    """Settings: ``iterations`` rounds of test-time refinement per question (the paper: 3);
    ``eval_tier`` is the service tier of each question's zero-shot answer ("standard", "flex"
    or "batch": ``asynctg.engine.tiers``). The tier changes prices and latency, not answers,
    so it is not part of the fingerprint."""

    eval_tier: str = "standard"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_tier(self.eval_tier)


@dataclass
class SolutionResult:
    """Per-question records and the accuracy per round: [zero-shot, round 1..N, majority]."""

    task: str
    questions: list[dict[str, Any]]
    accuracy: list[float | None]
    labels: list[str]
    status: str
    stop_reason: str | None
    failed: int
    usage: dict[str, Any]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _labels(iterations: int) -> list[str]:
    return ["zero-shot", *(f"round {i + 1}" for i in range(iterations)), "majority vote"]


def accuracy_by_round(records: Sequence[dict[str, Any]], width: int) -> list[float | None]:
    """Mean score per column over the records that finished (errors excluded)."""
    done = [r["scores"] for r in records if r.get("scores")]
    if not done:
        return [None] * width
    return [round(sum(s[i] for s in done) / len(done), 6) for i in range(width)]


async def _solve_one(
    index: int,
    item: MultipleChoice,
    engine: Engine,
    loss_fn: MultiChoiceTestTime,
    iterations: int,
    eval_tier: str = "standard",
) -> dict[str, Any]:
    zero_shot_prompt = Variable(
        prompts.SOLUTION_SYSTEM_PROMPT,
        requires_grad=False,
        role_description="system prompt to the language model",
    )
    question = Variable(
        item.query, requires_grad=False, role_description="question to the language model"
    )
    # the zero-shot answer is the first column of the report, scored like an evaluation: it
    # takes the evaluation tier; the refinement rounds after it stay standard
    with use_tier(eval_tier):
        first = await BlackboxLLM(engine, zero_shot_prompt)(question)

    async def answer(value: str) -> str:
        return value  # an answer is scored once the rounds are over: nothing to call here

    async def critique(solution: Variable, _previous: str) -> Variable:
        return await loss_fn(item.query, solution)

    predictions = await refine(
        engine,
        str(first.value),
        role=prompts.SOLUTION_ROLE,
        constraints=[prompts.MULTIPLE_CHOICE_CONSTRAINT],
        rounds=iterations,
        evaluate=answer,
        loss=critique,
    )
    vote = majority_vote(predictions)
    scores = [choice_score(p, item.answer) for p in [*predictions, vote]]
    return {
        "index": index,
        "answer": item.answer,
        "letters": [parse_choice(p) for p in predictions],
        "vote": parse_choice(vote),
        "scores": scores,
        "predictions": predictions,
    }


async def optimize_solutions(
    task: SolutionTask,
    engine: Engine,
    *,
    config: SolutionConfig | None = None,
    checkpoint: Checkpoint | None = None,
    on_event: EventSink | None = None,
) -> SolutionResult:
    """Refine the answer to every question of ``task`` at test time; see the module docstring.

    With ``checkpoint`` (already ``open()``), each finished question is saved, and a resumed run
    skips the finished ones and replays the calls of the unfinished ones from the journal. A
    question whose calls fail for good (an API error after retries, an unparseable optimizer
    reply) is recorded with its error and the others go on; ``failed`` counts them.
    """
    async with run_host(engine).job(f"optimize_solutions {task.name}") as job:
        return await _optimize_solutions(task, job, config, checkpoint, on_event)


async def _optimize_solutions(
    task: SolutionTask,
    engine: Job,
    config: SolutionConfig | None,
    checkpoint: Checkpoint | None,
    on_event: EventSink | None,
) -> SolutionResult:
    """The run, inside its job."""
    config = config or SolutionConfig()
    run = ItemRun(
        engine,
        noun="questions",
        total=len(task.questions),
        budget=config.budget,
        checkpoint=checkpoint,
        on_event=on_event,
    )
    loss_fn = MultiChoiceTestTime(prompts.solution_loss_instruction(task.loss_kind), engine=engine)
    labels = _labels(config.iterations)
    run.start(
        f"refining answers to {run.total} questions of {task.name}, {config.iterations} rounds each"
    )

    async def solve(i: int) -> dict[str, Any]:
        question = task.questions[i]
        return await _solve_one(i, question, engine, loss_fn, config.iterations, config.eval_tier)

    def failed(i: int, exc: Exception) -> dict[str, Any]:
        return {"index": i, "answer": task.questions[i].answer, "error": f"{exc}"}

    def describe(i: int, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        acc = accuracy_by_round(list(run.records.values()), len(labels))
        outcome = "error" if "error" in record else f"vote {record['vote']} ({record['answer']})"
        return f"question {i + 1}: {outcome}", {"accuracy": acc[-1]}

    status = await run.run(solve, failed, describe)
    ordered = run.ordered()
    accuracy = accuracy_by_round(ordered, len(labels))
    run.emit("done", f"{status}: " + _summary(labels, accuracy), status=status)
    return SolutionResult(
        task=task.name,
        questions=ordered,
        accuracy=accuracy,
        labels=labels,
        status=status,
        stop_reason=run.stop_reason,
        failed=run.failed(),
        usage=run.meter.total(),
        config=config.fingerprint_fields(),
    )


def _summary(labels: Sequence[str], accuracy: Sequence[float | None]) -> str:
    parts = [
        f"{label} {value:.3f}"
        for label, value in zip(labels, accuracy, strict=True)
        if value is not None
    ]
    return ", ".join(parts) or "no question finished"
