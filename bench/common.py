"""What every benchmark shares: a simulator in a subprocess, child processes measured with
``wait4``, machine facts, result files and tables."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: The repository root: children run with it as their working directory and on their path.
ROOT = Path(__file__).resolve().parents[1]
#: Where results go; tests point BENCH_RESULTS elsewhere so smoke runs leave the real ones alone.
RESULTS = Path(os.environ.get("BENCH_RESULTS", Path(__file__).parent / "results"))
_URL = re.compile(r"(http://[0-9.:a-z\[\]]+/v1)")
_VERSIONED = ("asynctg", "aiohttp", "msgspec", "uvloop", "openai", "httpx", "textgrad", "litellm")


@contextlib.contextmanager
def simulator(*args: str, timeout: float = 20.0) -> Iterator[str]:
    """Run ``asynctg sim --port 0 ARGS`` in a subprocess; yield its base URL; stop it after.

    A separate process keeps the server's CPU out of the client's measurements, and every
    client reaches it over loopback HTTP, as it would a real provider.
    """
    cmd = [sys.executable, "-m", "asynctg", "sim", "--port", "0", *args]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            yield _read_url(proc, timeout, cmd, log)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _read_url(proc: subprocess.Popen[str], timeout: float, cmd: list[str], log: Any) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = _URL.search(line)
        if match:
            return match.group(1)
    log.seek(0)
    err = log.read().decode(errors="replace")
    raise RuntimeError(f"the simulator did not start: {' '.join(cmd)}\n{err}")


def _sim_root(base_url: str) -> str:
    return base_url.rsplit("/v1", 1)[0]


def sim_stats(base_url: str) -> dict[str, Any]:
    """The simulator's /sim/stats, fetched with the standard library (no client under test)."""
    with urllib.request.urlopen(_sim_root(base_url) + "/sim/stats", timeout=10) as resp:
        stats: dict[str, Any] = json.loads(resp.read())
    return stats


def sim_reset(base_url: str) -> None:
    """Zero the simulator's counters and timeline."""
    req = urllib.request.Request(
        _sim_root(base_url) + "/sim/reset",
        method="POST",
        data=b"{}",
        headers={"Content-Type": "application/json"},  # the admin routes take JSON only
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def has_module(name: str) -> bool:
    """Whether ``name`` is importable here (checked without importing it)."""
    return importlib.util.find_spec(name) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Child:
    """What a measured child process left behind.

    No peak memory here: a child's ``ru_maxrss`` starts from its parent's resident size (Linux
    carries the high-water mark across fork and exec), so each child reports its own
    ``VmHWM`` instead (:func:`peak_rss_kib`).
    """

    returncode: int
    stdout: str
    stderr: str
    cpu_s: float  #: the child's user + system CPU time, all threads

    def json_line(self) -> dict[str, Any]:
        """The last line of stdout, decoded: how every child reports its numbers."""
        if self.returncode != 0:
            raise RuntimeError(f"child failed ({self.returncode}):\n{self.stderr[-4000:]}")
        lines = self.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"child printed nothing:\n{self.stderr[-4000:]}")
        out: dict[str, Any] = json.loads(lines[-1])
        return out


def run_child(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600.0,
) -> Child:
    """Run ``cmd`` to completion and return its output and CPU time.

    The child is reaped with ``os.wait4``, whose resource usage covers that one process only
    (``RUSAGE_CHILDREN`` would mix every child this process ever waited for).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, cwd=cwd or ROOT)
        status, usage = _reap(proc, timeout)
        out.seek(0)
        err.seek(0)
        return Child(
            returncode=status,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            cpu_s=usage.ru_utime + usage.ru_stime,
        )


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()  # reaped on the next turn, and reported as killed
            deadline = math.inf
        time.sleep(0.01)


def python_child(*args: str) -> list[str]:
    """``python ARGS`` with this interpreter."""
    return [sys.executable, *args]


def textgrad_env(scratch: Path, base_url: str) -> dict[str, str]:
    """Environment for a process that imports TextGrad 0.1.8, pointed at the simulator.

    TextGrad writes logs on import and keeps a disk cache of answers under the user cache
    folder, and so does ``asynctg.compat``: all go to ``scratch`` (fresh per run, so no answer
    is a cache hit). litellm,
    which TextGrad imports, would fetch a price list from the network unless told not to.
    """
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "sk-bench",
        "TEXTGRAD_LOG_DIR": str(scratch / "logs"),
        "XDG_CACHE_HOME": str(scratch / "cache"),
        "ASYNCTG_CACHE_DIR": str(scratch / "asynctg-cache"),  # compat caches as TextGrad does
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


def ratio(value: float, reference: float, digits: int = 2) -> float | None:
    """``value / reference`` rounded, or None when the reference is zero (e.g. zero latency)."""
    return round(value / reference, digits) if reference > 0 else None


def current_rss_kib() -> int | None:
    """This process's resident set size now (Linux), or None where /proc is missing."""
    return _proc_status_kib("VmRSS:")


def peak_rss_kib() -> int | None:
    """This process's peak resident set size since it started (Linux ``VmHWM``), or None."""
    return _proc_status_kib("VmHWM:")


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


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
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_average": _load_average(),
        "versions": {name: _version(name) for name in _VERSIONED},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor()


def _load_average() -> list[float] | None:
    # Other work on the machine skews timings; the load at write time says how busy it was.
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def write_result(name: str, settings: dict[str, Any], results: Any) -> Path:
    """Write ``RESULTS/NAME.json`` with the machine, the versions and the settings."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "settings": settings, "results": results}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def read_result(name: str) -> dict[str, Any] | None:
    """``RESULTS/NAME.json`` decoded, or None if that benchmark has not been run."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (also valid Markdown); None shows as a dash."""
    cells = [["-" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    head = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([head, rule, *body])


def save_plot(name: str) -> Path | None:
    """Draw ``RESULTS/NAME.png`` from its JSON if matplotlib is installed (the ``bench`` extra)."""
    from bench import plots

    path = plots.plot(name)
    if path is not None:
        print(f"wrote {path}")
    return path
