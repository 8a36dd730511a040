"""A run stopped by a cap ends like a finished one: checkpoint, `--json` and `--report`, and
until the stop it sends exactly the requests an uncapped run sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asynctg.cli import main
from asynctg.engine.cache import ResponseCache

# Few calls in flight and short replies: the worst case the cap reserves for each call in
# flight stays small next to the run's cost, so a cap at half that cost stops it midway.
_OPTIMIZE = [
    "optimize", "--sim", "--task", "object_counting", "--batch-size", "3", "--steps", "3",
    "--epochs", "1", "--test-size", "6", "--price", "1,2", "--max-tokens", "64",
    "--max-concurrency", "2", "--quiet", "--json",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ASYNCTG_MODEL"):
        monkeypatch.delenv(name, raising=False)


def _trajectory(result: dict[str, Any]) -> list[tuple[Any, ...]]:
    keys = ("prompt", "train_accuracy", "test_accuracy", "reverted")
    return [tuple(row[k] for k in keys) for row in result["history"]]


def _journal_keys(folder: Path) -> set[str]:
    journal = ResponseCache(folder / "journal.bin")
    try:
        return set(journal.keys())
    finally:
        journal.close()


def test_a_max_cost_stop_ends_like_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`optimize --max-cost X` at half an uncapped run's cost exits 0, spends between X/2 and
    X, prints `--json` with status "stopped" and stop_reason "max_cost", writes the report and
    the checkpoint, and every request it sent is one the uncapped run sent."""
    assert main([*_OPTIMIZE, "--checkpoint", str(tmp_path / "full")]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["status"] == "completed"
    cap = full["usage"]["cost_usd"] / 2
    args = [*_OPTIMIZE, "--checkpoint", str(tmp_path / "cap"), "--report", str(tmp_path / "r")]
    assert main([*args, "--max-cost", f"{cap:.6f}"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["status"] == "stopped" and out["stop_reason"] == "max_cost"
    assert cap / 2 <= out["usage"]["cost_usd"] <= cap
    assert "below the low end" in captured.err  # a warning, not a refusal
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["result"]["status"] == "stopped"
    assert (tmp_path / "r" / "report.html").exists()
    state = json.loads((tmp_path / "cap" / "state.json").read_text())["state"]
    assert state["status"] == "stopped" and state["history"] == out["history"]
    sent = _journal_keys(tmp_path / "cap")
    assert sent and sent < _journal_keys(tmp_path / "full")
    # the saved state is the last whole step's: resuming without the cap ends as the full run
    assert main([*_OPTIMIZE, "--checkpoint", str(tmp_path / "cap"), "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["final_prompt"] == full["final_prompt"]
    assert [r["prompt"] for r in resumed["history"]] == [r["prompt"] for r in full["history"]]


def test_a_max_cost_stop_of_solve_prints_json_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`solve --max-cost` refused mid-question ends with exit 0, `--json` status "stopped"
    (stop_reason "max_cost"), spending at most the cap, and the report written."""
    args = ["solve", "--sim", "--limit", "8", "--iterations", "2", "--price", "1,2"]
    args += ["--max-tokens", "64", "--max-concurrency", "2", "--quiet", "--json"]
    assert main([*args, "--max-cost", "0.004", "--report", str(tmp_path / "r")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "stopped" and out["stop_reason"] == "max_cost"
    assert 0 < out["usage"]["cost_usd"] <= 0.004
    assert json.loads((tmp_path / "r" / "report.json").read_text())["result"]["status"] == (
        "stopped"
    )


_UNCAPPED_REPLIES = [a for a in _OPTIMIZE if a not in ("--max-tokens", "64")]


def test_a_cap_added_later_changes_no_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An uncapped run's journal answers a `--replay` with `--max-cost` (nothing missing), and
    a run stopped by --max-calls resumed with a newly added `--max-cost` replays its calls and
    reaches the uncapped run's prompts (no --max-tokens: a cap once added one)."""
    folder = str(tmp_path / "full")
    assert main([*_UNCAPPED_REPLIES, "--checkpoint", folder]) == 0
    full = json.loads(capsys.readouterr().out)
    assert main([*_UNCAPPED_REPLIES, "--replay", folder, "--max-cost", "5"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert _trajectory(replayed) == _trajectory(full)
    part = str(tmp_path / "part")
    assert main([*_UNCAPPED_REPLIES, "--checkpoint", part, "--max-calls", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["stop_reason"] == "max_calls"
    assert main([*_UNCAPPED_REPLIES, "--checkpoint", part, "--resume", "--max-cost", "5"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["status"] == "completed"
    assert _trajectory(resumed) == _trajectory(full)
    assert _journal_keys(tmp_path / "part") == _journal_keys(tmp_path / "full")
