"""Cost estimates before a run: a dry run on a local simulator; nothing reaches the provider."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import SimProcess

RUN = ["optimize", "--steps", "3", "--epochs", "1", "--model", "sim-1", "--price", "1,2"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asynctg", *RUN, *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def sim() -> SimProcess:
    server = SimProcess("--latency", "0")
    yield server  # type: ignore[misc]
    server.close()


def test_the_estimate_sends_nothing_and_brackets_the_real_spend(sim: SimProcess) -> None:
    """`--estimate` prints calls, tokens and a dollar range without one request to the
    endpoint; the real run's cost lies in the range and within 25% of the expected value."""
    sim.reset()
    estimate = _cli("--base-url", sim.base_url, "--estimate", "--json")
    assert estimate.returncode == 0, estimate.stderr
    assert sim.stats()["requests"] == 0
    guess = json.loads(estimate.stdout)
    real = _cli("--base-url", sim.base_url, "--json", "--quiet")
    assert real.returncode == 0, real.stderr
    spent = json.loads(real.stdout)["usage"]["cost_usd"]
    assert guess["low_usd"] <= spent <= guess["high_usd"]
    assert abs(guess["expected_usd"] - spent) <= 0.25 * spent
    assert guess["calls"] == json.loads(real.stdout)["usage"]["calls"]


def test_a_max_cost_below_the_estimate_is_a_warning(sim: SimProcess) -> None:
    """A run whose --max-cost is below the estimate's low end is warned, not refused: it runs,
    stops at the cap (exit 0, `--json` status "stopped") and never spends past it."""
    sim.reset()
    proc = _cli("--base-url", sim.base_url, "--max-cost", "0.002", "--max-tokens", "32", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning: --max-cost $0.002 is below the low end" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "stopped" and out["stop_reason"] == "max_cost"
    assert out["usage"]["cost_usd"] <= 0.002


def test_a_resumed_run_calibrates_on_its_journal(sim: SimProcess, tmp_path: Path) -> None:
    """After a first step, the estimate uses the journal's real replies (and says so)."""
    folder = tmp_path / "run"
    first = subprocess.run(
        [sys.executable, "-m", "asynctg", "optimize", "--steps", "1", "--epochs", "1",
         "--model", "sim-1", "--price", "1,2", "--base-url", sim.base_url,
         "--checkpoint", str(folder), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        [sys.executable, "-m", "asynctg", "optimize", "--steps", "1", "--epochs", "2",
         "--model", "sim-1", "--price", "1,2", "--base-url", sim.base_url,
         "--checkpoint", str(folder), "--resume", "--estimate"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "calibrated on the journal's real replies" in again.stdout


_SMALL = [
    "optimize", "--sim", "--task", "object_counting", "--batch-size", "3", "--steps", "3",
    "--epochs", "1", "--test-size", "6", "--price", "1,2", "--max-concurrency", "2",
    "--quiet", "--json",
]  # fmt: skip


def _main_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from asynctg.cli import main

    assert main(args) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_the_high_end_counts_every_reply_at_its_cap(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --max-tokens the high end prices every reply at the reserve a dollar cap would
    hold (4096 tokens for a model the table does not know), not at twice the simulator's."""
    guess = _main_json([*_SMALL, "--estimate"], capsys)
    bound = guess["prompt_tokens"] * 1.25 / 1e6 + guess["calls"] * 4096 * 2 / 1e6
    assert guess["high_usd"] == pytest.approx(bound, abs=1e-5)


def test_the_printed_finish_cap_lets_the_run_finish(capsys: pytest.CaptureFixture[str]) -> None:
    """`--estimate` gives the smallest --max-cost that lets the run finish (in its line too);
    the run with that cap completes."""
    args = [*_SMALL, "--max-tokens", "64"]
    guess = _main_json([*args, "--estimate"], capsys)
    assert guess["finish_usd"] >= guess["high_usd"]
    done = _main_json([*args, "--max-cost", str(guess["finish_usd"])], capsys)
    assert done["status"] == "completed"
    from asynctg.cli import main

    assert main([*(a for a in args if a != "--json"), "--estimate"]) == 0
    assert f"--max-cost ${guess['finish_usd']:.4f} or more lets it finish" in (
        capsys.readouterr().out
    )


def test_a_resumed_estimate_counts_journal_hits_as_free(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The estimate of a resumed run resumes too: finished steps are skipped, the journal's
    calls are counted as hits and cost nothing, and calls minus hits is what the resumed run
    then sends; its spending lies in the range."""
    args = [*_SMALL, "--max-tokens", "64", "--checkpoint", str(tmp_path / "ck")]
    full = _main_json([*_SMALL, "--max-tokens", "64"], capsys)
    stopped = _main_json([*args, "--max-cost", str(full["usage"]["cost_usd"] / 2)], capsys)
    assert stopped["status"] == "stopped"
    guess = _main_json([*args, "--resume", "--estimate"], capsys)
    assert guess["journal_hits"] > 0
    done = _main_json([*args, "--resume"], capsys)
    assert done["status"] == "completed"
    sent = done["usage"]["provider_calls"] - stopped["usage"]["provider_calls"]
    assert guess["calls"] - guess["journal_hits"] == sent
    spent = done["usage"]["cost_usd"] - stopped["usage"]["cost_usd"]
    assert guess["low_usd"] <= spent <= guess["high_usd"]
