"""What a new user hit on the command line (issue 13): messages that say what to do."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import SimProcess

from asynctg.runs.loop import RunEvent
from asynctg.runs.progress import Progress, format_counters
from asynctg.sim import SimConfig

CLI = [sys.executable, "-m", "asynctg"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_mistyped_flag_gets_a_suggestion() -> None:
    """`--bach-size` exits 2 and suggests `--batch-size`."""
    proc = _run("optimize", "--sim", "--bach-size", "3")
    assert proc.returncode == 2
    assert "did you mean --batch-size?" in proc.stderr


def test_an_infinite_timeout_is_refused_with_a_message() -> None:
    """`--test-timeout inf` is a usage error (exit 2), not an OverflowError traceback."""
    proc = _run("code", "--sim", "--test-timeout", "inf")
    assert proc.returncode == 2 and "finite number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_401_names_the_environment_variable_and_the_flag(tmp_path: Path) -> None:
    """A rejected key says to set $OPENAI_API_KEY (or --api-key-env), not to edit Python."""
    sim = SimProcess("--api-key", "right-key")
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MY_KEY": "wrong-key"}
        args = ["optimize", "--base-url", sim.base_url, "--model", "sim-1", "--steps", "1"]
        proc = _run(*args, "--epochs", "1", "--quiet", "--api-key-env", "MY_KEY", env=env)
    finally:
        sim.close()
    assert proc.returncode == 1
    assert "$MY_KEY" in proc.stderr and "--api-key-env" in proc.stderr
    assert "get_engine" not in proc.stderr


@pytest.mark.timeout(120)
def test_sigterm_stops_a_run_like_ctrl_c_and_says_how_to_resume(tmp_path: Path) -> None:
    """SIGTERM ends a run with exit 130 and the same "--resume" line as Ctrl-C."""
    folder = tmp_path / "run"
    cmd = [*CLI, "optimize", "--sim", "--sim-latency", "300ms", "--checkpoint", str(folder)]
    with subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the run is under way (an event, not a time)
            if "optimizing" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(60) == 130
    assert "--resume" in rest and str(folder) in rest


def test_the_status_line_fits_80_columns_with_time_and_accuracy_first() -> None:
    """A typical status line fits 80 columns; elapsed time and accuracy come before counters;
    "calls" counts provider calls, as the summary does."""
    usage = {
        "provider_calls": 1234,
        "calls": 1300,
        "cache_hits": 66,
        "coalesced": 0,
        "in_flight": 12,
        "total_tokens": 456_789,
        "cost_usd": 0.1234,
        "rate_limited": 3,
        "retries": 5,
    }
    progress = Progress(lambda: usage, stream=io.StringIO())
    progress.progress = "step 12/36 running"
    progress.accuracy = 0.771
    line = progress.status_line()[:79]  # what an 80-column terminal shows of it
    assert line.index(" s ") < line.index("acc 0.771") < line.index("1234 calls")
    assert "in flight" in line
    assert "(+66 cached)" in format_counters(usage)


def test_model_text_cannot_drive_the_terminal() -> None:
    """Escape sequences in an event message (window title, clipboard, clear screen) are
    stripped before printing."""
    out = io.StringIO()
    progress = Progress(lambda: {}, stream=out)
    progress(RunEvent("step", "prompt: \x1b]0;pwned\x07 \x1b]52;c;ZXZpbA==\x07 \x1b[2Jok", {}))
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "ok" in out.getvalue()


def test_the_simulators_default_faults_are_fast() -> None:
    """`--fault-rate` alone never holds a response 30 s: slow faults are opt-in."""
    assert "slow" not in SimConfig(fault_rate=0.1).faults
