"""The paper's loops end to end against the simulator, and the pieces they are made of:
checkpoints, budgets, the code sandbox, progress display and reports."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import asynctg as tg
from asynctg import apps, tasks
from asynctg.apps.report import diff_html, line_chart_svg, write_report
from asynctg.engine import RetryPolicy
from asynctg.engine.client import ChatEngine
from asynctg.errors import ConfigError
from asynctg.runs.checkpoint import Checkpoint
from asynctg.sim import SimConfig, SimServer

Responder = Callable[[Mapping[str, Any]], "str | None"]


def _text(request: Mapping[str, Any]) -> str:
    parts = []
    for message in request.get("messages", []):
        content = message.get("content")
        parts.append(content if isinstance(content, str) else json.dumps(content))
    return "\n".join(parts)


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[SimServer] = []

    async def make(responder: Responder | None = None, **options: Any) -> SimServer:
        server = SimServer(SimConfig(responder=responder, **options))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.aclose()


def _engine(sim: SimServer, **options: Any) -> ChatEngine:
    return tg.get_engine("sim-1", base_url=sim.base_url, retry=RetryPolicy(testing=True), **options)


def _counting(train: int = 8, val: int = 6, test: int = 6) -> tasks.PromptTask:
    task = tasks.get_task("object_counting", train_size=train, val_size=val, test_size=test)
    assert isinstance(task, tasks.PromptTask)
    return task


# --- prompt optimization --------------------------------------------------------------------


async def test_prompt_optimization_makes_the_papers_calls(sim_factory: Any) -> None:
    """Each step makes B answers, 2B feedback calls and one rewrite, then evaluates val and test;
    before training, val and test are evaluated once."""
    sim = await sim_factory()
    events: list[apps.RunEvent] = []
    async with _engine(sim) as engine:
        config = apps.PromptConfig(batch_size=4, epochs=1, steps_per_epoch=2, validate=True)
        result = await apps.optimize_prompt(
            _counting(), engine, config=config, on_event=events.append
        )
        stats = engine.stats()
    assert result.status == "completed"
    assert [row["step"] for row in result.history] == [0, 1, 2]
    assert stats["calls"] == (6 + 6) + 2 * (4 + 2 * 4 + 1 + 6 + 6)
    for row in result.history:
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["validation_accuracy"] <= 1
    assert result.history[0]["prompt"] == tg.prompts.NUMERIC_TASK_DESCRIPTION
    kept = [row for row in result.history[1:] if not row["reverted"]]
    assert all(row["prompt"] != result.history[0]["prompt"] for row in kept)
    assert result.final_prompt == result.history[-1]["prompt"]
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 3
    assert events[-2].data["progress"] == "step 2/2 done"


async def test_prompt_optimization_with_the_llm_judge(sim_factory: Any) -> None:
    """Word sorting is judged by an LLM: every answer costs a judge call, training and tests."""
    sim = await sim_factory(record=True)
    task = tasks.get_task("word_sorting", train_size=3, val_size=0, test_size=5)
    assert isinstance(task, tasks.PromptTask) and task.evaluation == "judge"
    async with _engine(sim) as engine:
        config = apps.PromptConfig(batch_size=3, epochs=1, steps_per_epoch=1)
        result = await apps.optimize_prompt(task, engine, config=config)
        stats = engine.stats()
    # before: 5 answers + 5 verdicts; the step: 3 + 3 verdicts + 2 * 3 feedback + 1 rewrite,
    # then 5 + 5 again
    assert stats["calls"] == 10 + (3 + 3 + 6 + 1) + 10
    judged = [r for r in sim.requests if "<ACCURACY>" in _text(r) and "<OBJECTIVE" not in _text(r)]
    assert len(judged) == 5 + 3 + 5
    assert "**ground truth answer**" in _text(judged[0])
    assert result.history[-1]["test_accuracy"] is not None


async def test_validation_rejects_a_worse_prompt(sim_factory: Any) -> None:
    """A rewrite that lowers validation accuracy is reverted, as in the paper's script."""

    def responder(request: Mapping[str, Any]) -> str | None:
        text = _text(request)
        if "<IMPROVED_VARIABLE>" in text:
            return "<IMPROVED_VARIABLE>BAD PROMPT</IMPROVED_VARIABLE>"
        system = request["messages"][0]["content"] if request["messages"] else ""
        if system == "BAD PROMPT":
            return "I do not know.\nAnswer: 0"  # always wrong: counts are >= 2
        return None

    sim = await sim_factory(responder)
    async with _engine(sim) as engine:
        config = apps.PromptConfig(batch_size=4, epochs=1, steps_per_epoch=1, validate=True)
        result = await apps.optimize_prompt(_counting(), engine, config=config)
    first, step = result.history
    assert step["reverted"] is True
    assert step["prompt"] == first["prompt"] == result.final_prompt
    assert step["validation_accuracy"] == first["validation_accuracy"]


async def test_budget_stop_then_resume_matches_an_uninterrupted_run(
    sim_factory: Any, tmp_path: Path
) -> None:
    """--max-calls stops cleanly after a step; resuming with a larger budget ends in the same
    state as a run never stopped, and re-sends nothing that had been answered."""
    sim = await sim_factory(latency="0", record=True)
    task = _counting(train=8, val=4, test=4)
    base = {"batch_size": 2, "epochs": 2, "steps_per_epoch": 2, "validate": True}
    fp = {"task": task.name, "data": task.source}

    async def run(folder: Path, budget: apps.Budget, resume: bool) -> apps.PromptResult:
        ckpt = Checkpoint(folder, fp, resume=resume)
        ckpt.open()
        try:
            async with _engine(sim) as engine:
                config = apps.PromptConfig(**base, budget=budget)  # type: ignore[arg-type]
                return await apps.optimize_prompt(task, engine, config=config, checkpoint=ckpt)
        finally:
            ckpt.close()

    full = await run(tmp_path / "full", apps.Budget(), resume=False)
    full_requests = sim.stats()["requests"]
    sim.reset_stats()
    stopped = await run(tmp_path / "part", apps.Budget(max_calls=25), resume=False)
    assert stopped.status == "stopped" and stopped.stop_reason == "max_calls"
    assert 1 <= len(stopped.history) - 1 < 4
    first_part = sim.stats()["requests"]
    state = json.loads((tmp_path / "part" / "state.json").read_text())["state"]
    assert state["status"] == "stopped"
    resumed = await run(tmp_path / "part", apps.Budget(), resume=True)
    assert resumed.status == "completed"
    assert sim.stats()["requests"] == full_requests  # in two sessions, nothing twice

    def essence(result: apps.PromptResult) -> list[tuple[Any, ...]]:
        keys = ("step", "prompt", "train_accuracy", "validation_accuracy", "test_accuracy")
        return [(*(row[k] for k in keys), row["reverted"]) for row in result.history]

    assert essence(resumed) == essence(full)
    assert resumed.final_prompt == full.final_prompt
    assert first_part < full_requests


async def test_max_cost_needs_a_price(sim_factory: Any) -> None:
    """A cost cap on a model without a price is refused before any call."""
    sim = await sim_factory()
    async with _engine(sim) as engine:
        config = apps.PromptConfig(budget=apps.Budget(max_cost=1.0))
        with pytest.raises(ConfigError, match="--price"):
            await apps.optimize_prompt(_counting(), engine, config=config)
        assert engine.stats()["calls"] == 0


async def test_max_cost_stops_a_priced_run(sim_factory: Any) -> None:
    """With a price, the run stops once the cap is reached, after a whole step."""
    sim = await sim_factory()
    async with _engine(sim, price=(1000.0, 1000.0)) as engine:
        config = apps.PromptConfig(
            batch_size=2, epochs=1, steps_per_epoch=4, budget=apps.Budget(max_cost=1.0)
        )
        result = await apps.optimize_prompt(_counting(), engine, config=config)
    assert result.status == "stopped" and result.stop_reason == "max_cost"
    assert 1 <= len(result.history) - 1 < 4
    assert result.usage["cost_usd"] >= 1.0


# --- solution optimization ------------------------------------------------------------------

_ARITH = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")
_OPTION = re.compile(r"^\(([A-D])\) (-?\d+)$", re.MULTILINE)


def _right_letter(text: str) -> str | None:
    match = _ARITH.search(text)
    if match is None:
        return None
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    value = a + b if op == "+" else a - b if op == "-" else a * b
    for letter, option in _OPTION.findall(text):
        if int(option) == value:
            return str(letter)
    return None


async def test_solution_optimization_refines_and_votes(sim_factory: Any) -> None:
    """Per question: a zero-shot answer, then per round a loss, its feedback and a rewrite; the
    vote over every round's answer is scored too."""

    def responder(request: Mapping[str, Any]) -> str | None:
        text = _text(request)
        if "<IMPROVED_VARIABLE>" in text:  # the optimizer gets it right
            return f"<IMPROVED_VARIABLE>Checked.\nAnswer: {_right_letter(text)}</IMPROVED_VARIABLE>"
        return None

    sim = await sim_factory(responder)
    task = tasks.get_task("arithmetic_choice", limit=4)
    assert isinstance(task, tasks.SolutionTask)
    async with _engine(sim) as engine:
        result = await apps.optimize_solutions(
            task, engine, config=apps.SolutionConfig(iterations=2)
        )
        calls = engine.stats()["calls"]
    assert calls == 4 * (1 + 2 * 3)
    assert result.labels == ["zero-shot", "round 1", "round 2", "majority vote"]
    assert result.accuracy[1:] == [1.0, 1.0, 1.0]
    assert result.failed == 0 and result.status == "completed"
    for q in result.questions:
        assert len(q["predictions"]) == 3 and q["vote"] == q["answer"]


async def test_solution_errors_are_recorded_per_question(sim_factory: Any) -> None:
    """A question whose optimizer never answers in format fails alone; the others finish."""

    def responder(request: Mapping[str, Any]) -> str | None:
        text = _text(request)
        if "<IMPROVED_VARIABLE>" in text and "What is" in text:
            match = _ARITH.search(text)
            if match and int(match.group(1)) % 2:
                return "no tags at all"
        return None

    sim = await sim_factory(responder)
    task = tasks.get_task("arithmetic_choice", limit=6)
    assert isinstance(task, tasks.SolutionTask)
    async with _engine(sim) as engine:
        result = await apps.optimize_solutions(
            task, engine, config=apps.SolutionConfig(iterations=1)
        )
    assert 0 < result.failed < 6
    assert all("error" in q for q in result.questions if not q.get("scores"))


async def test_solution_budget_stop_and_resume(sim_factory: Any, tmp_path: Path) -> None:
    """A budget stop cancels the questions in progress; the resumed run skips the finished ones,
    replays the journaled calls and ends like a run never stopped."""
    sim = await sim_factory(latency="0", record=True)
    task = tasks.get_task("arithmetic_choice", limit=6)
    assert isinstance(task, tasks.SolutionTask)

    async def run(folder: Path, budget: apps.Budget, resume: bool) -> apps.SolutionResult:
        ckpt = Checkpoint(folder, {"task": task.name}, resume=resume)
        ckpt.open()
        try:
            async with _engine(sim, max_concurrency=2) as engine:
                config = apps.SolutionConfig(iterations=2, budget=budget)
                return await apps.optimize_solutions(task, engine, config=config, checkpoint=ckpt)
        finally:
            ckpt.close()

    full = await run(tmp_path / "full", apps.Budget(), resume=False)
    everything = sim.stats()["requests"]
    sim.reset_stats()
    stopped = await run(tmp_path / "part", apps.Budget(max_calls=10), resume=False)
    assert stopped.status == "stopped" and 1 <= len(stopped.questions) < 6
    resumed = await run(tmp_path / "part", apps.Budget(), resume=True)
    assert resumed.status == "completed"
    assert sim.stats()["requests"] <= everything + 2  # at most the calls in flight at the stop
    assert [q["predictions"] for q in resumed.questions] == [
        q["predictions"] for q in full.questions
    ]
    assert resumed.accuracy == full.accuracy


# --- code optimization ----------------------------------------------------------------------

_SOLUTIONS = {
    "second_largest": (
        "from typing import List\n\ndef second_largest(nums: List[int]) -> int:\n"
        "    return sorted(set(nums))[-2]\n"
    ),
    "run_length": (
        "from itertools import groupby\n\ndef run_length(s: str) -> str:\n"
        "    return ''.join(f'{k}{len(list(g))}' for k, g in groupby(s))\n"
    ),
}


async def test_code_optimization_runs_tests_and_stops_when_they_pass(sim_factory: Any) -> None:
    """The first program fails its tests; the rewrite passes and ends the refinement; a
    problem that never passes uses every round."""

    def responder(request: Mapping[str, Any]) -> str | None:
        text = _text(request)
        if "<IMPROVED_VARIABLE>" in text:
            for name, code in _SOLUTIONS.items():
                if f"def {name}(" in text:
                    return f"<IMPROVED_VARIABLE>{code}</IMPROVED_VARIABLE>"
        return None

    sim = await sim_factory(responder)
    task = tasks.get_task("python_basics", limit=3)
    assert isinstance(task, tasks.CodeTask)
    async with _engine(sim) as engine:
        result = await apps.optimize_code(
            task, engine, config=apps.CodeConfig(iterations=1, per_test_seconds=2)
        )
        calls = engine.stats()["calls"]
    solved, also_solved, unsolved = result.problems
    for record in (solved, also_solved):
        assert [r["all_passed"] for r in record["rounds"]] == [False, True]
        assert record["final_passed"] and not record["first_passed"]
    assert [r["all_passed"] for r in unsolved["rounds"]] == [False, False, False]
    assert "fails: the code returned" in unsolved["rounds"][0]["feedback"]
    # first program + (loss, feedback, rewrite) per optimizing round: 4 + 4 + 7
    assert calls == 4 + 4 + 7
    assert result.first_pass_rate == 0.0 and result.final_pass_rate == pytest.approx(2 / 3)
    assert result.pass_rate_by_round == [0.0, pytest.approx(2 / 3), pytest.approx(2 / 3)]


async def test_code_loss_sees_problem_program_and_test_results(sim_factory: Any) -> None:
    """The code evaluator's request carries the problem, the program and the test report."""
    sim = await sim_factory(record=True)
    task = tasks.get_task("python_basics", limit=1)
    assert isinstance(task, tasks.CodeTask)
    async with _engine(sim) as engine:
        await apps.optimize_code(task, engine, config=apps.CodeConfig(iterations=0))
    evaluations = [
        r
        for r in sim.requests
        if "Results of the unit tests" in _text(r)
        and "<OBJECTIVE_FUNCTION>" not in _text(r)
        and "<IMPROVED_VARIABLE>" not in _text(r)
    ]
    assert len(evaluations) == 1
    text = _text(evaluations[0])
    assert "def second_largest" in text and "**Tests the code failed:**" in text
    assert evaluations[0]["messages"][0]["content"] == tg.prompts.CODE_EVALUATOR_SYSTEM_PROMPT


# --- code extraction ------------------------------------------------------------------------


def test_extract_code_from_replies() -> None:
    """Code comes out of ```python fences, plain fences, or the bare reply."""
    assert apps.extract_code("```python\ndef f():\n    return 1\n```") == "def f():\n    return 1"
    assert apps.extract_code("Sure:\n```\nx = 1\n```\nbye") == "x = 1"
    assert apps.extract_code("  x = 2  ") == "x = 2"


# --- checkpoints, progress, reports ---------------------------------------------------------


def test_checkpoint_refuses_another_configuration(tmp_path: Path) -> None:
    """A folder made for one configuration refuses another, and a run without --resume."""
    folder = tmp_path / "ck"
    first = Checkpoint(folder, {"seed": 1, "batch_size": 3}, resume=False)
    first.open()
    first.save({"step": 2})
    first.close()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ConfigError, match=r"another configuration.*batch_size: 3 there, 4 here"):
        Checkpoint(folder, {"seed": 1, "batch_size": 4}, resume=True)
    with pytest.raises(ConfigError, match="pass --resume"):
        Checkpoint(folder, {"seed": 1, "batch_size": 3}, resume=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    again = Checkpoint(folder, {"seed": 1, "batch_size": 3}, resume=True)
    assert again.state == {"step": 2}


def test_checkpoint_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while saving leaves the previous state whole (the new one goes to a temp file
    that replaces the old only once written and synced)."""
    import os

    ckpt = Checkpoint(tmp_path / "ck", {"a": 1}, resume=False)
    ckpt.open()
    ckpt.save({"step": 1})

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        ckpt.save({"step": 2})
    monkeypatch.undo()
    ckpt.close()
    assert Checkpoint(tmp_path / "ck", {"a": 1}, resume=True).state == {"step": 1}
    assert [p.name for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")] == []


def test_checkpoint_and_report_folders_must_be_writable(tmp_path: Path) -> None:
    """A folder below a file cannot be created: a clear ConfigError, not an OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="checkpoint"):
        Checkpoint(blocker / "ck", {}, resume=False)
    with pytest.raises(ConfigError, match="report folder"):
        apps.report.prepare_report_dir(blocker / "report")


def test_progress_plain_tty_and_quiet() -> None:
    """Off a terminal one line per event; on one, a status line redrawn with \\r; quiet: none."""

    def usage() -> dict[str, Any]:
        return {"calls": 7, "in_flight": 2, "total_tokens": 99, "cost_usd": None, "rate_limited": 1}

    event = apps.RunEvent("step", "step 1/3: test 0.500", {"progress": "step 1/3", "accuracy": 0.5})
    plain = io.StringIO()
    apps.Progress(usage, stream=plain)(event)
    line = plain.getvalue()
    assert line.count("\n") == 1 and "step 1/3: test 0.500" in line and "7 calls" in line
    assert "1x429" in line and "\r" not in line

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    progress = apps.Progress(usage, stream=tty)
    progress(event)
    progress.close()
    shown = tty.getvalue()
    assert "\r" in shown and "acc 0.500" in shown and "2 in flight" in shown
    quiet = io.StringIO()
    apps.Progress(usage, stream=quiet, quiet=True)(event)
    assert quiet.getvalue() == ""


def test_report_files(tmp_path: Path) -> None:
    """report.json holds everything; report.html has the SVG plot and a diff per step."""
    history = [
        {"step": 0, "prompt": "Count.", "test_accuracy": 0.5, "reverted": False},
        {"step": 1, "prompt": "Count carefully.", "test_accuracy": 0.75, "reverted": False},
        {"step": 2, "prompt": "Count carefully.", "test_accuracy": 0.7, "reverted": True},
    ]
    result = {"task": "t", "final_prompt": "Count carefully.", "history": history, "usage": {}}
    json_path, html_path = write_report(tmp_path / "r", "optimize", result, {"task": "t"})
    assert json.loads(json_path.read_text())["result"]["history"][1]["test_accuracy"] == 0.75
    page = html_path.read_text()
    svg = re.search(r"<svg.*?</svg>", page, re.DOTALL)
    assert svg is not None
    ET.fromstring(svg.group(0))  # well-formed
    assert "<del>Count.</del><ins>Count carefully.</ins>" in page
    assert "rejected by validation" in page


def test_diff_and_chart_helpers() -> None:
    """Word diffs mark removals and additions; the chart skips missing points."""
    assert diff_html("a b c", "a x c") == "a <del>b</del><ins>x</ins> c"
    assert "&lt;tag&gt;" in diff_html("<tag>", "<tag> more")
    svg = line_chart_svg({"s": [0.1, None, 0.9]}, x_labels=["0", "1", "2"])
    root = ET.fromstring(svg)
    assert len([e for e in root.iter() if e.tag.endswith("circle")]) == 2


def test_prompt_optimization_example_runs_and_resumes(tmp_path: Path) -> None:
    """examples/prompt_optimization.py runs on the simulator; run again, it resumes from its
    checkpoint and sends nothing new."""
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "prompt_optimization.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    outputs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, str(script), "--out", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            env=env,
            timeout=50,
        )
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout)
    assert "final prompt:" in outputs[0]
    assert outputs[0] == outputs[1]
    assert (tmp_path / "run" / "report" / "report.html").exists()
