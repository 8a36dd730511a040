"""Every benchmark runs at its smallest size, so none of them rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_budget_benchmark_runs(tmp_path: Path) -> None:
    """`bench budget` at a tiny size prints its table and writes budget.json."""
    out = _bench(tmp_path, "budget", "--calls", "12", "--rpm", "1200", "--latency", "0")
    assert "told rpm" in out
    data = json.loads((tmp_path / "budget.json").read_text())
    assert all(row["ok"] == 12 for row in data["results"]["rows"])
    assert data["machine"]["versions"]["asynctg"]


@pytest.mark.slow
def test_overhead_benchmark_runs(tmp_path: Path) -> None:
    """`bench overhead` at a tiny size measures all three clients."""
    out = _bench(tmp_path, "overhead", "--calls", "50", "--rounds", "1", "--loops", "asyncio")
    assert "openai AsyncOpenAI" in out
    data = json.loads((tmp_path / "overhead.json").read_text())
    assert {row["client"] for row in data["results"]["rows"]} == {
        "asynctg",
        "openai AsyncOpenAI",
        "bare aiohttp",
    }
