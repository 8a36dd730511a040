"""Functions the worker-pool tests run in other processes (importable by spawned workers and
Dask workers; not a test module)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_STATE: dict[str, object] = {}


def init(tag: str) -> None:
    _STATE["tag"] = tag
    _STATE["inits"] = int(_STATE.get("inits", 0)) + 1  # type: ignore[call-overload]


def whoami(x: int) -> dict[str, object]:
    """Which process answered, how it was initialised, and its thread settings."""
    return {
        "x": x,
        "pid": os.getpid(),
        "tag": _STATE.get("tag"),
        "inits": _STATE.get("inits"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }


def square(x: int, *, offset: int = 0) -> int:
    return x * x + offset


def spin(seconds: float) -> float:
    """Burn CPU for ``seconds`` (a stand-in for a docking run)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds


def marked_sleep(marker: str, seconds: float) -> int:
    """Write our pid to ``marker``, then sleep: the test can see the worker and that it died."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def die_once(marker: str) -> str:
    """Kill our own process the first time (as an OOM killer or a crash would); then succeed."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def always_die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail(message: str) -> None:
    raise ValueError(message)


def bad_init() -> None:
    raise RuntimeError("receptor file missing")


def shout(text: str) -> str:
    """A graph function run in a worker: it gets the variable's value (text)."""
    return f"{text.upper()} from pid {os.getpid()}"
