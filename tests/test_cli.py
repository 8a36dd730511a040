"""The asynctg command line: demo and sim, success and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from asynctg.cli import main


def test_demo_runs_against_the_simulator_and_reports_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`asynctg demo --json` fans calls out to the in-process simulator and reports them all."""
    code = main(["demo", "--calls", "40", "--rpm", "6000", "--latency", "5ms", "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["succeeded"] == 40
    assert out["failed"] == 0
    assert out["engine"]["calls"] == 40
    assert out["simulator"]["ok"] == 40


def test_demo_prints_a_human_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the demo prints throughput, latency and 429 counts."""
    assert main(["demo", "--calls", "10", "--rpm", "6000", "--latency", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "throughput" in out
    assert "429s answered" in out


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--calls", "0"],
        ["demo", "--rpm", "-5"],
        ["demo", "--latency", "soon"],
        ["demo", "--fault-rate", "2"],
        ["demo", "--base-url", "http://127.0.0.1:9/v1"],
        ["sim", "--rpm", "-1"],
        ["nope"],
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments exit with code 2 and say what is wrong on stderr."""
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    assert "error" in capsys.readouterr().err


def test_python_dash_m_asynctg_is_the_cli() -> None:
    """`python -m asynctg --version` runs the console script's code."""
    out = subprocess.run(
        [sys.executable, "-m", "asynctg", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
        timeout=30,
    )
    assert out.stdout.startswith("asynctg ")
