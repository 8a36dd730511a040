"""What every benchmark shares: a simulator in a subprocess, machine facts, result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: Where results go; tests point BENCH_RESULTS elsewhere so smoke runs leave the real ones alone.
RESULTS = Path(os.environ.get("BENCH_RESULTS", Path(__file__).parent / "results"))
_URL = re.compile(r"(http://[0-9.:a-z\[\]]+/v1)")


@contextlib.contextmanager
def simulator(*args: str, timeout: float = 20.0) -> Iterator[str]:
    """Run ``asynctg sim --port 0 ARGS`` in a subprocess; yield its base URL; stop it after.

    A separate process keeps the server's CPU out of the client's measurements.
    """
    cmd = [sys.executable, "-m", "asynctg", "sim", "--port", "0", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = _URL.search(line)
            if match:
                url = match.group(1)
                break
        if url is None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"the simulator did not start: {' '.join(cmd)}\n{err}")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sim_stats(base_url: str) -> dict[str, Any]:
    """The simulator's /sim/stats, fetched with the standard library (no client under test)."""
    import urllib.request

    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(root + "/sim/stats", timeout=10) as resp:
        return json.loads(resp.read())


def sim_reset(base_url: str) -> None:
    import urllib.request

    root = base_url.rsplit("/v1", 1)[0]
    req = urllib.request.Request(root + "/sim/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": {
            name: _version(name)
            for name in ("asynctg", "aiohttp", "msgspec", "uvloop", "openai", "httpx", "textgrad")
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, settings: dict[str, Any], results: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "settings": settings, "results": results}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    head = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([head, rule, *body])
