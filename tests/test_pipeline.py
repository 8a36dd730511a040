"""Prompt optimization as a pipeline: the scoring before training runs beside the first step,
a step's decision is taken as soon as its missing validation answers cannot change it, and
two steps' test scorings may run at once; the rows, checkpoints and requests equal the
one-after-another loop's. Held answers prove each overlap (a loop that runs them one after
another waits for a gate that never opens: it fails after 20 s, it does not hang)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import engine_with, ok, request_kind

from asynctg import apps, tasks
from asynctg.apps import prompt as prompt_app
from asynctg.apps.prompt_pipeline import Tally
from asynctg.errors import BudgetExceededError
from asynctg.runs.checkpoint import Checkpoint
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

#: (optimizer calls seen so far, system prompt, split, question index) -> the optimizer call to
#: wait for before answering (None: answer now)
Hold = Callable[[int, str, str, int], "int | None"]


class _Provider:
    """Answers a prompt run: the optimizer with v1, v2, ... in turn, feedback with a critique,
    questions with their answer, except under prompt ``bad`` (always wrong, so validation
    rejects it) and for the (prompt, split, index) in ``wrong``. ``hold`` keeps chosen answers back
    until an optimizer request has arrived (at most ``patience`` seconds); ``refuse`` then
    raises a cap's error for one."""

    def __init__(
        self,
        task: tasks.PromptTask,
        *,
        wrong: frozenset[tuple[str, str, int]] = frozenset(),
        hold: Hold | None = None,
        refuse: Callable[[str, str, int], bool] | None = None,
        patience: float = 20.0,
        bad: str | None = "v2",
    ) -> None:
        self.splits = {"train": task.train, "validation": task.val, "test": task.test}
        self.initial = task.system_prompt
        self.wrong, self.hold, self.refuse = wrong, hold, refuse
        self.patience = patience  # seconds a held answer waits at most
        self.bad = bad  # the prompt under which every answer is wrong
        self.optimizer_calls = 0
        self.seen = [asyncio.Event() for _ in range(12)]  # [n]: optimizer n+1 arrived
        self.log: list[str] = []
        self.bodies: list[bytes] = []

    def _where(self, text: str) -> tuple[str, int, str]:
        for split, examples in self.splits.items():
            for i, qa in enumerate(examples):
                if qa.question in text:
                    return split, i, qa.answer
        raise AssertionError(f"an unknown question: {text[:80]!r}")

    async def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.bodies.append(request.body)
        body = msgspec.json.decode(request.body)
        kind = request_kind(body)
        if kind == "optimizer":
            self.optimizer_calls += 1
            self.log.append(f"optimizer {self.optimizer_calls}")
            self.seen[self.optimizer_calls - 1].set()
            return ok(f"<IMPROVED_VARIABLE>v{self.optimizer_calls}</IMPROVED_VARIABLE>")
        if kind == "backward":
            return ok("count more carefully")
        system = body["messages"][0].get("content")
        prompt = "v0" if system == self.initial else str(system)
        split, index, answer = self._where(body["messages"][-1]["content"])
        name = f"{split} {index} under {prompt}"
        self.log.append(f"asked {name}")
        after = self.hold(self.optimizer_calls, prompt, split, index) if self.hold else None
        if after is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.seen[after - 1].wait(), self.patience)
            self.log.append(f"answered {name} after {self.optimizer_calls} optimizer")
        if self.refuse is not None and self.refuse(prompt, split, index):
            raise BudgetExceededError("cap reached", limit="max_calls")
        if prompt == self.bad or (prompt, split, index) in self.wrong:
            answer = "-1"
        return ok(f"Answer: {answer}")

    def before(self, first: str, then: str) -> bool:
        return self.log.index(first) < self.log.index(then)


def _task() -> tasks.PromptTask:
    task = tasks.get_task("object_counting", train_size=12, val_size=4, test_size=4)
    assert isinstance(task, tasks.PromptTask)
    return task


async def _run(
    provider: _Provider,
    folder: Path,
    *,
    steps: int = 3,
    resume: bool = False,
    **loop: Any,
) -> apps.PromptResult:
    task = _task()
    loop = {"epochs": 1, "validate": True, **loop}
    config = apps.PromptConfig(batch_size=2, steps_per_epoch=steps, **loop)
    ckpt = Checkpoint(folder, {"task": task.name, "data": task.source}, resume=resume)
    ckpt.open()
    try:
        async with engine_with(MockTransport(provider), price=(1.0, 2.0)) as engine:
            return await apps.optimize_prompt(task, engine, config=config, checkpoint=ckpt)
    finally:
        ckpt.close()


def _without_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def _saved(folder: Path) -> Any:
    return _without_seconds(json.loads((folder / "state.json").read_text())["state"])


async def _same_as_sequential(
    pipelined: _Provider,
    result: apps.PromptResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wrong: frozenset[tuple[str, str, int]] = frozenset(),
    **loop: Any,
) -> apps.PromptResult:
    """The same run one step after another: same requests, rows, checkpoint and prompt."""
    monkeypatch.setattr(prompt_app._PromptRun, "pipelined", False)
    plain = _Provider(_task(), wrong=wrong, bad=pipelined.bad)
    sequential = await _run(plain, tmp_path / "sequential", **loop)
    assert sorted(pipelined.bodies) == sorted(plain.bodies)
    assert _without_seconds(result.history) == _without_seconds(sequential.history)
    assert _saved(tmp_path / "pipelined") == _saved(tmp_path / "sequential")
    assert result.final_prompt == sequential.final_prompt
    return sequential


async def test_the_scoring_before_training_runs_beside_the_first_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 0's test answers are held until step 1's optimizer request has arrived; the run
    equals the sequential one."""

    def hold(_: int, prompt: str, split: str, index: int) -> int | None:
        return 1 if (prompt, split) == ("v0", "test") else None

    provider = _Provider(_task(), hold=hold)
    result = await _run(provider, tmp_path / "pipelined")
    assert provider.before("optimizer 1", "answered test 0 under v0 after 1 optimizer")
    await _same_as_sequential(provider, result, tmp_path, monkeypatch)


async def test_a_step_is_decided_before_its_last_validation_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation under v0 is 3/4, so v1's third right answer decides its acceptance: its
    fourth is held until step 2's optimizer request. v2 answers wrong: its first wrong answer
    decides its rejection, and its others are held until step 3's. Rows (the rejected
    candidate's accuracy included) equal the sequential run's."""
    wrong = frozenset({("v0", "validation", 0)})

    def hold(_: int, prompt: str, split: str, index: int) -> int | None:
        if split != "validation":
            return None
        if prompt == "v1" and index == 3:
            return 2
        if prompt == "v2" and index > 0:
            return 3
        return None

    provider = _Provider(_task(), wrong=wrong, hold=hold)
    result = await _run(provider, tmp_path / "pipelined")
    assert provider.before("optimizer 2", "answered validation 3 under v1 after 2 optimizer")
    assert provider.before("optimizer 3", "answered validation 1 under v2 after 3 optimizer")
    sequential = await _same_as_sequential(provider, result, tmp_path, monkeypatch, wrong)
    rows = sequential.history
    assert [row["validation_accuracy"] for row in rows] == [0.75, 1.0, 1.0, 1.0]
    assert [row["reverted"] for row in rows] == [False, False, True, False]
    assert rows[2]["rejected"]["validation_accuracy"] == 0.0
    assert result.final_prompt == "v3"


async def test_a_tie_waits_for_every_validation_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 must reach v0's 4/4, so only its last answer decides: held until step 2's optimizer
    request (for 1 s at most), it is answered before that request (a decision taken early would
    send it first)."""

    def hold(_: int, prompt: str, split: str, index: int) -> int | None:
        return 2 if (prompt, split, index) == ("v1", "validation", 3) else None

    provider = _Provider(_task(), hold=hold, patience=1.0)
    result = await _run(provider, tmp_path / "pipelined", steps=2)
    assert "answered validation 3 under v1 after 1 optimizer" in provider.log
    await _same_as_sequential(provider, result, tmp_path, monkeypatch, steps=2)


async def test_two_steps_test_scorings_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every prompt answers right (each step kept, so each test scoring asks new requests).
    Step 1's test answers are held until step 3's optimizer request: step 2's test scoring
    starts meanwhile (two rows pending), and the rows still come in order."""

    def hold(_: int, prompt: str, split: str, index: int) -> int | None:
        return 3 if (prompt, split) == ("v1", "test") else None

    provider = _Provider(_task(), hold=hold, bad=None)
    result = await _run(provider, tmp_path / "pipelined")
    assert provider.before("asked test 0 under v2", "answered test 0 under v1 after 3 optimizer")
    assert [row["step"] for row in result.history] == [0, 1, 2, 3]
    await _same_as_sequential(provider, result, tmp_path, monkeypatch)


async def test_at_most_two_rows_wait_for_their_scores(tmp_path: Path) -> None:
    """Step 1's test answers are held until step 4's optimizer request (for 1 s at most): step
    3's test scoring waits for them (two rows pending are the most), so they are answered
    before step 4 trains and before step 3's test is asked."""

    def hold(_: int, prompt: str, split: str, index: int) -> int | None:
        return 4 if (prompt, split) == ("v1", "test") else None

    provider = _Provider(_task(), hold=hold, bad=None, patience=1.0)
    result = await _run(provider, tmp_path / "pipelined", steps=4)
    assert result.status == "completed"
    released = "answered test 0 under v1 after 3 optimizer"
    assert provider.before("asked test 0 under v2", released)
    assert provider.before(released, "asked test 0 under v3")


@pytest.mark.parametrize(("validate", "evaluate_test"), [(True, False), (False, True)])
async def test_either_scoring_alone_pipelines_to_the_sequential_run(
    validate: bool, evaluate_test: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation without test scoring, and test scoring without validation, over two epochs:
    the same requests, rows and checkpoint as one step after another."""
    loop = {"validate": validate, "evaluate_test": evaluate_test, "epochs": 2, "steps": 2}
    provider = _Provider(_task())
    result = await _run(provider, tmp_path / "pipelined", **loop)
    assert [row["step"] for row in result.history] == [0, 1, 2, 3, 4]
    await _same_as_sequential(provider, result, tmp_path, monkeypatch, **loop)


async def test_a_cap_in_the_first_scoring_stops_with_nothing_kept(tmp_path: Path) -> None:
    """A cap refusing row 0's test (step 1 already training) stops the run before any row, as
    the sequential loop does; resuming completes it as a run never stopped."""
    refused = {"done": False}

    def refuse(prompt: str, split: str, index: int) -> bool:
        if (prompt, split, index) == ("v0", "test", 3) and not refused["done"]:
            refused["done"] = True
            return True
        return False

    stopped = await _run(_Provider(_task(), refuse=refuse), tmp_path / "part")
    assert stopped.status == "stopped" and stopped.stop_reason == "max_calls"
    assert stopped.history == []
    full = await _run(_Provider(_task()), tmp_path / "full")
    resumed = await _run(_Provider(_task()), tmp_path / "part", resume=True)
    assert resumed.status == "completed"
    assert _without_seconds(resumed.history) == _without_seconds(full.history)


async def test_a_tally_decides_as_soon_as_the_missing_answers_cannot_change_it() -> None:
    tally = Tally(5)
    decision = asyncio.ensure_future(tally.decided(0.6))  # at least 3 of 5

    async def score(value: int) -> int:
        return value

    for value in (1, 0, 1):
        await tally.counted(score(value))
        await asyncio.sleep(0)
        assert not decision.done()
    await tally.counted(score(1))
    assert await decision is True
    assert tally.reaches(0.9) is False  # 3 right of 4, one missing: at most 0.8
    assert tally.reaches(0.8) is None
    failed = Tally(3)
    pending = asyncio.ensure_future(failed.decided(0.5))
    failed.close()  # the scoring ended without every answer (it failed)
    assert await pending is None


async def test_a_stop_in_a_pending_test_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    """Two epochs of two steps. A cap refusing step 3's test, once step 4 is training, stops
    the run after step 2, the checkpoint as of step 2's end; resuming ends as a run never
    stopped, re-sending less than the whole run."""
    loop: dict[str, Any] = {"epochs": 2, "steps": 2}
    full_provider = _Provider(_task())
    full = await _run(full_provider, tmp_path / "full", **loop)
    once = {"refused": False}

    def hold(_: int, prompt: str, split: str, index: int) -> int | None:
        return 4 if (prompt, split, index) == ("v3", "test", 0) else None

    def refuse(prompt: str, split: str, index: int) -> bool:
        if (prompt, split, index) != ("v3", "test", 0) or once["refused"]:
            return False
        once["refused"] = True
        return True

    refusing = _Provider(_task(), hold=hold, refuse=refuse)
    stopped = await _run(refusing, tmp_path / "part", **loop)
    assert stopped.status == "stopped" and stopped.stop_reason == "max_calls"
    assert "optimizer 4" in refusing.log  # step 4 was training when step 3's test failed
    assert len(stopped.history) == 3  # row 0, steps 1 and 2
    state = _saved(tmp_path / "part")
    assert state["history"] == _without_seconds(full.history[:3])
    assert state["epoch"] == 0 and state["step_in_epoch"] == 2
    assert state["optimizer"]["steps"] == 2 and state["optimizer"]["values"] == ["v1"]
    resumed_provider = _Provider(_task())
    resumed = await _run(resumed_provider, tmp_path / "part", resume=True, **loop)
    assert resumed.status == "completed"
    assert _without_seconds(resumed.history) == _without_seconds(full.history)
    assert resumed.final_prompt == full.final_prompt
    assert _saved(tmp_path / "part") == _saved(tmp_path / "full")
    assert len(resumed_provider.bodies) < len(full_provider.bodies)


async def test_a_pending_steps_time_ends_with_its_last_scoring() -> None:
    """A row's seconds run to its last scoring's end, not to the next step's decision:
    ``Pending.ended`` is None while a scoring runs, then the later of the two end times."""
    from asynctg.apps.prompt_pipeline import Pending, Scoring

    release = asyncio.Event()

    async def score(wait: bool) -> tuple[float | None, dict[str, Any]]:
        if wait:
            await release.wait()
        return 1.0, {}

    validation = Scoring(asyncio.ensure_future(score(False)), None)
    test = Scoring(asyncio.ensure_future(score(True)), None)
    pending = Pending({}, None, validation, test)
    await validation.task
    await asyncio.sleep(0)
    assert validation.finished is not None and pending.ended() is None
    release.set()
    await test.task
    await asyncio.sleep(0)
    assert test.finished is not None and test.finished >= validation.finished
    assert pending.ended() == test.finished
    assert Pending({}, None, None, None).ended() is None
