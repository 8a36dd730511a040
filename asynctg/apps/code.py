"""Code optimization, the paper's LeetCode-Hard setting (test-time refinement of programs).

Following TextGrad's ``evaluation/code_optimization/leetcode_testtime_with_supervision.py``
call for call, for each problem: a first program from the model (a code-only system prompt);
the program becomes a variable to optimise, with the constraints "no asserts" and "include the
imports"; then, round after round, the program is run against the problem's tests in a
sandboxed subprocess (``asynctg.runs.sandbox``), the test results and the program go to an LLM
evaluator whose critique is the loss (``CodeTestTimeLoss``), the critique is back-propagated
and the optimizer rewrites the program. The first round always optimises; from the second on,
a program that passes every test ends the refinement. Problems run concurrently.

One difference, on purpose: the script also optimises once more after it has seen a program
pass every test and then throws that untested rewrite away; here the refinement stops before
that step (the same final program, three calls fewer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from asynctg import prompts
from asynctg.engine.jobs import Job
from asynctg.engine.protocol import Engine
from asynctg.engine.tiers import check_tier, use_tier
from asynctg.errors import require_int
from asynctg.graph.function import Module
from asynctg.graph.ops import FormattedLLMCall
from asynctg.graph.variable import Variable
from asynctg.runs.checkpoint import Checkpoint
from asynctg.runs.loop import Budget, EventSink, ItemRun, run_host
from asynctg.runs.rounds import refine
from asynctg.runs.sandbox import CodeRunner, Isolation, TestRun, extract_code
from asynctg.tasks.types import CodeProblem, CodeTask

__all__ = ["CodeConfig", "CodeResult", "CodeTestTimeLoss", "optimize_code"]


class CodeTestTimeLoss(Module):
    """The test-time loss of a program: an LLM's critique given the problem and test results.

    >>> # loss = await CodeTestTimeLoss(engine)(problem_text, program_variable, run.feedback())
    """

    def __init__(self, engine: Engine | None = None, system_prompt: Variable | None = None):
        self.system_prompt = system_prompt or Variable(
            prompts.CODE_EVALUATOR_SYSTEM_PROMPT,
            requires_grad=False,
            role_description="system prompt for the evaluation of the code solution",
        )
        self.engine = engine
        self.call = FormattedLLMCall(
            engine,
            prompts.code_evaluation_prompt(),
            ["problem", "program", "tests"],
            system_prompt=self.system_prompt,
        )

    def parameters(self) -> list[Variable]:
        return []

    async def __call__(self, problem: str, program: Variable, tests: str) -> Variable:
        problem_variable = Variable(
            problem, requires_grad=False, role_description="the coding problem"
        )
        results = Variable(
            tests,
            requires_grad=False,
            role_description="the results of the unit tests on the code solution",
        )
        return await self.call(
            inputs={"problem": problem_variable, "program": program, "tests": results},
            response_role_description=f"evaluation of the {program.role_description}",
        )

    forward = __call__


@dataclass(frozen=True)
class CodeConfig:
    """Settings: up to ``1 + iterations`` refinement rounds per problem (the paper: 4);
    each test may run ``per_test_seconds``, in ``memory_mb`` of memory. ``isolation`` is the
    sandbox (see ``asynctg.runs.sandbox``): "bubblewrap", or "unsafe-no-sandbox" to run
    model-written code without one. ``eval_tier`` is the service tier of each problem's first
    (baseline) program (``asynctg.engine.tiers``); the refinement rounds stay standard."""

    iterations: int = 4
    per_test_seconds: float = 5.0
    memory_mb: int = 1024
    budget: Budget = field(default_factory=Budget)
    isolation: Isolation = "bubblewrap"
    eval_tier: str = "standard"

    def __post_init__(self) -> None:
        require_int("iterations", self.iterations, 0)
        check_tier(self.eval_tier)

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "per_test_seconds": self.per_test_seconds,
            "memory_mb": self.memory_mb,
        }


@dataclass
class CodeResult:
    """Per-problem records; pass rates (every test passed) of the first and the final programs."""

    task: str
    problems: list[dict[str, Any]]
    first_pass_rate: float | None
    final_pass_rate: float | None
    pass_rate_by_round: list[float | None]
    status: str
    stop_reason: str | None
    failed: int
    usage: dict[str, Any]
    config: dict[str, Any]
    isolation: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _run_record(code: str, run: TestRun) -> dict[str, Any]:
    return {
        "code": code,
        "passed": list(run.passed),
        "all_passed": run.all_passed,
        "feedback": run.feedback(),
        "isolation": run.isolation,
    }


async def _refine(
    problem: CodeProblem,
    engine: Engine,
    runner: CodeRunner,
    loss_fn: CodeTestTimeLoss,
    iterations: int,
    eval_tier: str = "standard",
) -> dict[str, Any]:
    # each problem's first program is the report's baseline column, scored like an
    # evaluation: it takes the evaluation tier; the refinement rounds stay standard
    with use_tier(eval_tier):
        first = await engine.generate(
            problem.prompt, system_prompt=prompts.CODE_FIRST_SYSTEM_PROMPT
        )
    runs: dict[str, TestRun] = {}

    async def test(value: str) -> tuple[str, TestRun]:
        code = extract_code(value)
        if code not in runs:  # the same program gives the same results: run it once
            runs[code] = await runner.run(code, problem.tests)
        return code, runs[code]

    async def critique(program: Variable, tested: tuple[str, TestRun]) -> Variable:
        return await loss_fn(problem.prompt, program, tested[1].feedback())

    def passes(done: int, tested: tuple[str, TestRun]) -> bool:
        return done > 0 and tested[1].all_passed  # the first round always optimises

    tested = await refine(
        engine,
        extract_code(first),
        role=prompts.CODE_ROLE,
        constraints=prompts.CODE_CONSTRAINTS,
        rounds=1 + iterations,
        evaluate=test,
        loss=critique,
        until=passes,
    )
    rounds = [_run_record(code, run) for code, run in tested]
    return {
        "task_id": problem.task_id,
        "rounds": rounds,
        "first_passed": rounds[0]["all_passed"],
        "final_passed": rounds[-1]["all_passed"],
        "final_code": rounds[-1]["code"],
    }


def _pass_rate(records: list[dict[str, Any]], key: str) -> float | None:
    done = [r for r in records if "error" not in r]
    return round(sum(bool(r[key]) for r in done) / len(done), 6) if done else None


def pass_rate_by_round(records: list[dict[str, Any]], width: int) -> list[float | None]:
    """Share of problems whose program passes every test after each round (the last program
    carried forward once a problem stopped early)."""
    done = [r["rounds"] for r in records if "error" not in r]
    if not done:
        return [None] * width
    rates: list[float | None] = []
    for i in range(width):
        passing = sum(bool(rounds[min(i, len(rounds) - 1)]["all_passed"]) for rounds in done)
        rates.append(round(passing / len(done), 6))
    return rates


async def optimize_code(
    task: CodeTask,
    engine: Engine,
    *,
    config: CodeConfig | None = None,
    runner: CodeRunner | None = None,
    checkpoint: Checkpoint | None = None,
    on_event: EventSink | None = None,
) -> CodeResult:
    """Refine a program for every problem of ``task``; see the module docstring.

    ``runner`` runs the tests (default: a ``CodeRunner`` with the config's limits and
    isolation); where its isolation does not work, ``SandboxUnavailableError`` is raised before
    any call is made or any code runs. With
    ``checkpoint``, each finished problem is saved and a resumed run skips it; the calls of
    unfinished problems are replayed from the journal. A problem whose calls fail for good is
    recorded with its error and the others go on.
    """
    async with run_host(engine).job(f"optimize_code {task.name}") as job:
        return await _optimize_code(task, job, config, runner, checkpoint, on_event)


async def _optimize_code(
    task: CodeTask,
    engine: Job,
    config: CodeConfig | None,
    runner: CodeRunner | None,
    checkpoint: Checkpoint | None,
    on_event: EventSink | None,
) -> CodeResult:
    """The run, inside its job."""
    config = config or CodeConfig()
    runner = runner or CodeRunner(
        per_test_seconds=config.per_test_seconds,
        memory_mb=config.memory_mb,
        isolation=config.isolation,
    )
    isolation = await runner.ensure_ready()
    run = ItemRun(
        engine,
        noun="problems",
        total=len(task.problems),
        budget=config.budget,
        checkpoint=checkpoint,
        on_event=on_event,
    )
    loss_fn = CodeTestTimeLoss(engine)
    width = config.iterations + 2
    run.start(
        f"refining programs for {run.total} problems of {task.name}, up to "
        f"{config.iterations + 1} rounds each",
        f"; tests run in {isolation}",
    )

    async def solve(i: int) -> dict[str, Any]:
        problem = task.problems[i]
        return await _refine(problem, engine, runner, loss_fn, config.iterations, config.eval_tier)

    def failed(i: int, exc: Exception) -> dict[str, Any]:
        return {"task_id": task.problems[i].task_id, "error": f"{exc}"}

    def describe(i: int, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if "error" in record:
            outcome = "error"
        else:
            verdict = "passes" if record["final_passed"] else "fails"
            outcome = f"{verdict} after {len(record['rounds']) - 1} rounds"
        accuracy = _pass_rate(list(run.records.values()), "final_passed")
        return f"problem {task.problems[i].task_id}: {outcome}", {"accuracy": accuracy}

    status = await run.run(solve, failed, describe)
    ordered = run.ordered()
    first, final = _pass_rate(ordered, "first_passed"), _pass_rate(ordered, "final_passed")
    shown = ", ".join(
        f"{label} {value:.3f}"
        for label, value in (("first", first), ("final", final))
        if value is not None
    )
    run.emit("done", f"{status}: pass rate {shown or 'n/a'}", status=status)
    return CodeResult(
        task=task.name,
        problems=ordered,
        first_pass_rate=first,
        final_pass_rate=final,
        pass_rate_by_round=pass_rate_by_round(ordered, width),
        status=status,
        stop_reason=run.stop_reason,
        failed=run.failed(),
        usage=run.meter.total(),
        config=config.fingerprint_fields(),
        isolation=isolation,
    )
