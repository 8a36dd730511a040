"""The asynctg command line: the demo, the three loops, checkpoints and resume (kill -9
included), reports, and bad input (exit 2, nothing overwritten)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from asynctg.cli import main
from asynctg.engine.cache import ResponseCache
from asynctg.engine.types import ChatRequest, request_key
from asynctg.sim import SimConfig, SimServer

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ASYNCTG_"))}


@pytest.fixture(autouse=True)
def _no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ASYNCTG_MODEL"):
        monkeypatch.delenv(name, raising=False)


def _exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


# --- the demo -------------------------------------------------------------------------------


def test_demo_runs_prompt_optimization_on_the_simulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`asynctg demo --json` optimizes a prompt for a few steps on the in-process simulator."""
    code = main(
        [
            "demo",
            "--json",
            "--quiet",
            "--latency",
            "2ms",
            "--fault-rate",
            "0",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--test-size",
            "8",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["steps"] == 2 and len(out["test_accuracy"]) == 3
    # 8 test answers before training; per step 4 answers, 8 feedback calls, 1 rewrite, 8 tests
    assert out["calls"] == 8 + 2 * (4 + 8 + 1 + 8)
    assert out["simulator"]["ok"] == out["requests"]
    assert out["final_prompt"] != out["initial_prompt"]


def test_default_demo_finishes_well_under_a_minute(capsys: pytest.CaptureFixture[str]) -> None:
    """With no arguments the demo (3 steps of 16, faults and a budget) takes seconds."""
    assert main(["demo", "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 3 and out["batch_size"] == 16
    assert out["wall_seconds"] < 30
    assert out["latency_p50_ms"] > 0


def test_demo_prints_a_human_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the demo prints accuracy, throughput, latency and 429 counts."""
    args = ["demo", "--quiet", "--latency", "0", "--steps", "1", "--batch-size", "2"]
    assert main([*args, "--test-size", "4"]) == 0
    out = capsys.readouterr().out
    for phrase in ("test accuracy", "throughput", "request latency", "429s answered"):
        assert phrase in out


# --- the three loops ------------------------------------------------------------------------


def test_optimize_with_checkpoint_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`asynctg optimize --sim` runs, checkpoints every step and writes a report."""
    args = [
        "optimize",
        "--sim",
        "--task",
        "object_counting",
        "--batch-size",
        "3",
        "--steps",
        "2",
        "--epochs",
        "1",
        "--validate",
        "--val-size",
        "4",
        "--test-size",
        "4",
        "--checkpoint",
        str(tmp_path / "ck"),
        "--report",
        str(tmp_path / "report"),
        "--json",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["status"] == "completed" and len(out["history"]) == 3
    assert "step 2/2" in captured.err  # the progress display, on stderr
    assert (tmp_path / "ck" / "journal.bin").stat().st_size > 0
    state = json.loads((tmp_path / "ck" / "state.json").read_text())["state"]
    assert state["status"] == "completed" and len(state["history"]) == 3
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["result"]["final_prompt"] == out["final_prompt"]
    assert "<svg" in (tmp_path / "report" / "report.html").read_text()
    # resuming a finished run changes nothing and answers every call from the journal
    assert main([*args, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["history"] == out["history"]


def test_an_unusable_optimizer_reply_costs_the_step_not_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Replies cut at --max-tokens lose their closing tag: the step keeps the prompt, the run
    completes (exit 0), and the history says which step had no usable update."""
    args = ["optimize", "--sim", "--steps", "2", "--epochs", "1", "--batch-size", "2"]
    assert main([*args, "--test-size", "4", "--max-tokens", "32", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    history = result["history"]
    assert [row["optimizer_reply_unusable"] for row in history] == [False, True, True]
    assert len({row["prompt"] for row in history}) == 1  # never half-applied, never changed


def test_solve_and_code_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`asynctg solve` and `asynctg code` run end to end on the simulator."""
    assert main(["solve", "--sim", "--limit", "3", "--iterations", "1", "--json", "--quiet"]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["labels"] == ["zero-shot", "round 1", "majority vote"]
    assert len(solved["questions"]) == 3 and solved["usage"]["provider_calls"] == 3 * 4
    report = tmp_path / "code-report"
    args = ["code", "--sim", "--limit", "2", "--iterations", "0", "--quiet", "--report"]
    assert main([*args, str(report)]) == 0
    printed = capsys.readouterr().out
    assert "final programs" in printed
    data = json.loads((report / "report.json").read_text())["result"]
    assert [p["task_id"] for p in data["problems"]] == ["second_largest", "run_length"]


def test_solve_reads_a_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`asynctg solve --task mmlu --data FILE` reads MMLU-format questions."""
    path = tmp_path / "mmlu.jsonl"
    rows = [{"question": f"{i}+1?", "choices": [str(i), str(i + 1)], "answer": 1} for i in range(2)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    args = ["solve", "--sim", "--task", "mmlu", "--data", str(path), "--iterations", "1"]
    assert main([*args, "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [q["answer"] for q in out["questions"]] == ["B", "B"]


def test_max_calls_stops_cleanly_and_resume_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-calls stops after a whole step with exit 0 and a checkpoint; --resume finishes."""
    base = ["optimize", "--sim", "--batch-size", "2", "--steps", "3", "--epochs", "1"]
    base += ["--test-size", "2", "--checkpoint", str(tmp_path / "ck"), "--json", "--quiet"]
    assert main([*base, "--max-calls", "8"]) == 0
    stopped = json.loads(capsys.readouterr().out)
    assert stopped["status"] == "stopped" and stopped["stop_reason"] == "max_calls"
    assert main([*base, "--resume"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["status"] == "completed" and len(done["history"]) == 4
    assert done["history"][: len(stopped["history"])] == stopped["history"]


def test_tasks_lists_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    """`asynctg tasks` names each task, its command and its data."""
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("object_counting", "word_sorting", "gsm8k", "mmlu", "gpqa", "leetcode_hard"):
        assert name in out


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimize", "--sim", "--task", "nope"], "unknown task 'nope'"),
        (["optimize", "--sim", "--task", "gsm8k", "--data", "/no/such/file.jsonl"], "not exist"),
        (["optimize", "--sim", "--task", "gsm8k"], "needs its data"),
        (["optimize", "--sim", "--batch-size", "-3"], "expected a number >= 1, got -3"),
        (["optimize", "--sim", "--steps", "zero"], "expected a whole number"),
        (["solve", "--sim", "--task", "object_counting"], "`asynctg optimize`"),
        (["optimize", "--sim", "--resume"], "--resume needs --checkpoint"),
        (["optimize", "--task", "object_counting"], "no endpoint"),
        (["optimize", "--base-url", "http://127.0.0.1:9/v1"], "--model"),
        (["optimize", "--sim", "--validate", "--val-size", "0"], "--validate needs"),
        (["optimize", "--sim", "--max-cost", "1"], "--price"),
        (["demo", "--steps", "0"], "expected a number >= 1"),
        (["demo", "--rpm", "-5"], "expected a finite number > 0"),
        (["demo", "--latency", "soon"], "latency"),
        (["demo", "--fault-rate", "2"], "--fault-rate"),
        (["demo", "--base-url", "http://127.0.0.1:9/v1"], "--model is required"),
        (["sim", "--rpm", "-1"], "rpm"),
        (["nope"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments and settings exit with code 2 and say what is wrong on stderr."""
    assert _exit_code(args) == 2
    err = capsys.readouterr().err
    assert "error" in err and message in err


def test_wrong_columns_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A data file with the wrong columns names the file, the row and the columns expected."""
    path = tmp_path / "counting.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n')
    assert _exit_code(["optimize", "--sim", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'input', 'target'" in err


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_checkpoint_of_another_configuration_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resuming with other settings, or reusing a run's folder without --resume, exits 2 and
    leaves every file of the checkpoint (and the report folder) as it was."""
    folder = tmp_path / "ck"
    base = ["optimize", "--sim", "--batch-size", "2", "--steps", "1", "--epochs", "1"]
    base += ["--test-size", "2", "--checkpoint", str(folder), "--quiet"]
    assert main([*base, "--seed", "1"]) == 0
    capsys.readouterr()
    before = _snapshot(folder)
    report = tmp_path / "report"
    assert _exit_code([*base, "--seed", "2", "--resume", "--report", str(report)]) == 2
    assert "another configuration (seed: 1 there, 2 here)" in capsys.readouterr().err
    assert _exit_code([*base, "--seed", "1"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _snapshot(folder) == before
    assert not (report / "report.json").exists()


def test_unwritable_report_folder_exits_2_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report folder that cannot be written is refused before any call or checkpoint."""
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    checkpoint = tmp_path / "ck"
    args = ["optimize", "--sim", "--report", str(blocker / "report")]
    assert _exit_code([*args, "--checkpoint", str(checkpoint)]) == 2
    assert "cannot write to the report folder" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"
    assert not checkpoint.exists()


def test_python_dash_m_asynctg_is_the_cli() -> None:
    """`python -m asynctg --version` runs the console script's code."""
    out = subprocess.run(
        [sys.executable, "-m", "asynctg", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
        timeout=30,
    )
    assert out.stdout.startswith("asynctg ")


# --- kill -9 and resume ---------------------------------------------------------------------

_RUN = [
    "optimize",
    "--task",
    "object_counting",
    "--batch-size",
    "4",
    "--steps",
    "3",
    "--epochs",
    "1",
    "--validate",
    "--val-size",
    "6",
    "--test-size",
    "6",
    "--model",
    "sim-1",
    "--quiet",
    "--json",
]


async def _cli(base_url: str, folder: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asynctg",
        *_RUN,
        "--base-url",
        base_url,
        "--checkpoint",
        str(folder),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )


async def _finish(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def _keys(requests: list[Any]) -> list[str]:
    return [request_key(msgspec.convert(body, ChatRequest)) for body in requests]


async def test_kill_9_then_resume_sends_no_completed_call_twice(tmp_path: Path) -> None:
    """A run killed with SIGKILL mid-step resumes from its last step; the resumed run sends no
    request whose answer the killed run had journaled, sends every other one exactly once, and
    ends in the same state as a run never interrupted."""
    async with SimServer(SimConfig(latency="25ms", record=True)) as sim:
        full = await _finish(await _cli(sim.base_url, tmp_path / "full"))
        everything = _keys(sim.requests)
        assert len(set(everything)) == len(everything)  # with a journal, nothing is sent twice
        sim.reset_stats()

        folder = tmp_path / "killed"
        proc = await _cli(sim.base_url, folder)
        state, journal = folder / "state.json", folder / "journal.bin"
        size_at_step: int | None = None
        for _ in range(4000):  # poll: kill once step 1 is saved and a call of step 2 journaled
            await asyncio.sleep(0.005)
            assert proc.returncode is None, "the run finished before it could be killed"
            if size_at_step is None:
                if state.exists():
                    saved = json.loads(state.read_text())["state"]
                    if len(saved["history"]) >= 2:
                        size_at_step = journal.stat().st_size
            elif journal.stat().st_size > size_at_step:
                proc.send_signal(signal.SIGKILL)
                break
        else:
            pytest.fail("the run never reached step 2")
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        killed_sent = _keys(sim.requests)
        cache = ResponseCache(journal)
        completed = {key for key in killed_sent if key in cache}
        cache.close()
        saved = json.loads(state.read_text())["state"]
        assert len(saved["history"]) == 2  # step 1 done; step 2 was in progress
        assert completed  # the journal holds the calls answered before the kill
        sim.reset_stats()

        resumed = await _finish(await _cli(sim.base_url, folder, "--resume"))
        resumed_sent = _keys(sim.requests)

    assert not completed & set(resumed_sent)  # no completed call re-sent
    assert len(resumed_sent) == len(set(resumed_sent))
    assert sorted(resumed_sent) == sorted(set(everything) - completed)

    def essence(result: dict[str, Any]) -> list[tuple[Any, ...]]:
        keys = ("step", "prompt", "train_accuracy", "validation_accuracy", "test_accuracy")
        return [(*(row[k] for k in keys), row["reverted"]) for row in result["history"]]

    assert essence(resumed) == essence(full)
    assert resumed["final_prompt"] == full["final_prompt"]


async def test_quota_exhausted_stops_with_a_message_and_a_checkpoint_to_resume(
    tmp_path: Path,
) -> None:
    """An `insufficient_quota` 429 mid-run stops it at once (exit 1) with a message that says
    what to do, keeps the last completed step, and --resume finishes once there is quota."""
    async with SimServer(SimConfig(latency="5ms", record=True, quota_tokens=15_000)) as sim:
        folder = tmp_path / "run"
        proc = await _cli(sim.base_url, folder)
        out, err = await asyncio.wait_for(proc.communicate(), 40)
        assert proc.returncode == 1
        message = err.decode()
        assert "out of quota" in message and "--resume" in message
        assert sim.stats()["quota_exceeded"] >= 1
        saved = json.loads((folder / "state.json").read_text())["state"]
        assert len(saved["history"]) >= 1  # at least the evaluation before training
        cache = ResponseCache(folder / "journal.bin")
        answered = {key for key in _keys(sim.requests) if key in cache}
        cache.close()
        assert answered  # the calls answered before the quota ran out are journaled

        sim.update(quota_tokens=None)  # credit added
        sim.reset_stats()
        resumed = await _finish(await _cli(sim.base_url, folder, "--resume"))
        resent = set(_keys(sim.requests))
    assert not answered & resent  # nothing answered before is sent again
    assert not out.strip()  # a failed run prints no result on stdout
    assert resumed["status"] == "completed"
