"""What runs say and record: error notes that do not vary between runs, messages that name
only options a command has, and a prompt validation rejected kept in the history and report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import asynctg as tg
from asynctg import apps, tasks
from asynctg.apps.report import write_report
from asynctg.cli import main
from asynctg.engine import RetryPolicy
from asynctg.errors import first_error
from asynctg.sim import SimConfig, SimServer


async def _fail_together(n: int) -> BaseException:
    async def fail(i: int) -> None:
        raise tg.RateLimitError(f"call {i}", status=429)

    try:
        with first_error():
            async with asyncio.TaskGroup() as group:
                for i in range(n):
                    group.create_task(fail(i))
    except tg.RateLimitError as exc:
        return exc
    raise AssertionError("no error left the group")


async def test_the_note_on_other_errors_does_not_depend_on_how_many_failed() -> None:
    """A group where 2 tasks failed and one where 7 did leave with the same note (the others'
    kinds; how many fail before the cancellation lands is timing, not information)."""
    two, seven = await _fail_together(2), await _fail_together(7)
    assert (
        two.__notes__ == seven.__notes__ == ["(more errors in the same task group: RateLimitError)"]
    )


def test_an_option_of_other_commands_is_named_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    """`asynctg bench --checkpoint DIR` says bench has no --checkpoint (and who has), instead
    of "did you mean --checkpoint?"; a real typo still gets its suggestion."""
    with pytest.raises(SystemExit):
        main(["bench", "--checkpoint", "x"])
    err = capsys.readouterr().err
    assert "this command has no --checkpoint; asynctg optimize" in err
    assert "did you mean" not in err
    with pytest.raises(SystemExit):
        main(["optimize", "--sim", "--chekpoint", "x"])
    assert "did you mean --checkpoint?" in capsys.readouterr().err


def test_ctrl_c_in_bench_advertises_no_checkpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C in `asynctg bench` (which has no --checkpoint/--resume) exits 130 with a plain
    "interrupted", not advice about options the command does not have."""
    from asynctg.cli import bench as bench_cli

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_cli, "run", interrupted)
    assert main(["bench", "--sim"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--checkpoint" not in err and "--resume" not in err


def _text(request: Mapping[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in request.get("messages", []))


async def test_a_prompt_rejected_by_validation_is_in_the_history_and_report(
    tmp_path: Path,
) -> None:
    """The candidate validation turns down is recorded with its score and accepted: false in
    the step's history row, and shown (with the score) in the report."""

    def responder(request: Mapping[str, Any]) -> str | None:
        if "<IMPROVED_VARIABLE>" in _text(request):
            return "<IMPROVED_VARIABLE>BAD PROMPT</IMPROVED_VARIABLE>"
        system = request["messages"][0]["content"] if request["messages"] else ""
        if system == "BAD PROMPT":
            return "I do not know.\nAnswer: 0"  # always wrong: counts are >= 2
        return None

    task = tasks.get_task("object_counting", train_size=8, val_size=6, test_size=6)
    assert isinstance(task, tasks.PromptTask)
    async with SimServer(SimConfig(responder=responder, latency="0")) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, retry=RetryPolicy(testing=True))
        async with engine:
            config = apps.PromptConfig(batch_size=4, epochs=1, steps_per_epoch=1, validate=True)
            result = await apps.optimize_prompt(task, engine, config=config)
    first, step = result.history
    assert step["reverted"] is True and step["accepted"] is False
    assert step["prompt"] == first["prompt"]
    assert step["rejected"] == {
        "prompt": "BAD PROMPT",
        "validation_accuracy": 0.0,
        "accepted": False,
    }
    _, html_path = write_report(tmp_path / "r", "optimize", result.to_json(), {})
    page = html_path.read_text()
    assert "<ins>BAD</ins>" in page and "validation accuracy 0.000" in page
    assert "yes (0.000)" in page  # the table's "rejected" column, with the score
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["result"]["history"][1]["rejected"]["prompt"] == "BAD PROMPT"
