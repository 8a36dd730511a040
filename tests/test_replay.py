"""Exact replay: a finished run's journal answers every call of the same run again, with no
provider; a request the journal does not hold is a typed error naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import engine_with, ok, scripted

import asynctg as tg
from asynctg.engine import ResponseCache

RUN = ["optimize", "--steps", "2", "--epochs", "1", "--test-size", "20", "--json", "--quiet"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "asynctg", *RUN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(180)
def test_a_replayed_run_reproduces_the_original_and_a_missing_record_is_named(
    tmp_path: Path,
) -> None:
    """`--replay DIR` repeats a `--checkpoint DIR` run without an endpoint: the same final
    prompt and accuracy history, byte for byte, and no provider call; with one journal record
    removed, the replay stops with ReplayMissError naming the request."""
    folder = tmp_path / "run"
    original = _cli("--sim", "--checkpoint", str(folder))
    assert original.returncode == 0, original.stderr
    replayed = _cli("--replay", str(folder))
    assert replayed.returncode == 0, replayed.stderr
    a, b = json.loads(original.stdout), json.loads(replayed.stdout)
    assert json.dumps(a["final_prompt"]) == json.dumps(b["final_prompt"])
    keys = ("step", "prompt", "train_accuracy", "test_accuracy", "validation_accuracy")
    history = [[row.get(k) for k in keys] for row in a["history"]]
    assert json.dumps(history) == json.dumps([[row.get(k) for k in keys] for row in b["history"]])
    assert b["usage"]["provider_calls"] == 0

    journal = ResponseCache(folder / "journal.bin")
    kept = ResponseCache(tmp_path / "kept.bin")
    dropped = journal.keys()[-1]
    for key in journal.keys()[:-1]:
        result = journal.get(key)
        assert result is not None
        kept.put(key, result)
    journal.close()
    kept.close()
    (tmp_path / "kept.bin").replace(folder / "journal.bin")
    broken = _cli("--replay", str(folder))
    assert broken.returncode == 1
    assert "ReplayMissError" in broken.stderr and dropped[:16] in broken.stderr


async def test_record_mode_sends_everything_and_replay_sends_nothing(tmp_path: Path) -> None:
    """cache_mode="record" sends every call (even at temperature 1) and journals it; "replay"
    answers from the journal without a transport call."""
    path = tmp_path / "journal.bin"
    transport = scripted([ok("one"), ok("two")])
    recorder = engine_with(transport, cache=str(path), cache_mode="record", temperature=1.0)
    assert await recorder.generate("a") == "one"
    assert await recorder.generate("a") == "two"  # recorded, not answered from the journal
    await recorder.aclose()
    silent = scripted([])
    player = engine_with(silent, cache=str(path), cache_mode="replay", temperature=1.0)
    assert await player.generate("a") == "two"
    with pytest.raises(tg.ReplayMissError):
        await player.generate("never asked")
    assert silent.requests == []
    await player.aclose()


def test_replay_of_an_empty_journal_is_a_config_error(tmp_path: Path) -> None:
    """Replaying from a journal that holds nothing is refused at once."""
    with pytest.raises(tg.ConfigError, match="holds no call"):
        engine_with(scripted([]), cache=str(tmp_path / "none.bin"), cache_mode="replay")
