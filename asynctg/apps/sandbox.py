"""Running model-written code against its tests: a child process with limits, killed on timeout.

Each run starts a fresh ``python -I`` (isolated: no user site, no environment variables read)
in a new, empty temporary folder with a minimal environment, as the leader of a new process
group, and feeds it the code and the tests. The child (``asynctg/apps/_harness.py``):

- sets ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_FSIZE`` (file size) and
  no core dumps;
- installs an audit hook that refuses sockets, starting processes, signalling other processes,
  loading native libraries through ctypes, and writing files outside its folder;
- runs each test with its own wall-clock alarm, and reports one line per test as it goes.

No network: where unprivileged user namespaces work (most Linux systems), the child also runs
under ``unshare --user --net``, in a network namespace with no interfaces, so even code that
slips past the audit hook cannot reach the network. Where they do not, the audit hook is the
only guard. The parent kills the whole process group with SIGKILL when the run exceeds its
time limit, and every test without a result is reported as timed out.

This keeps honest-but-buggy code from hanging the loop, eating the machine's memory or
touching the network; it is not a security boundary against code written to escape (Python's
audit hooks are not one). Run untrusted code in a container or VM.

>>> # result = await run_tests("def f(x):\\n    return x + 1", ["assert f(1) == 2"])
>>> # result.all_passed -> True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from asynctg import prompts
from asynctg.errors import ConfigError

__all__ = ["CodeRunner", "TestOutcome", "TestRun", "extract_code", "run_tests"]

HARNESS = Path(__file__).with_name("_harness.py")
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
_unshare_works: bool | None = None


@dataclass(frozen=True)
class TestOutcome:
    """One test: the assert line, whether it passed, and why not."""

    __test__ = False  # not a pytest test class, whatever its name

    test: str
    passed: bool
    message: str = ""

    def line(self) -> str:
        return self.test if self.passed else f"{self.test}  # fails: {self.message}"


@dataclass(frozen=True)
class TestRun:
    """The outcome of running code against its tests."""

    __test__ = False

    outcomes: tuple[TestOutcome, ...]
    seconds: float
    timed_out: bool
    network: Literal["namespace", "audit-hook"]

    @property
    def passed(self) -> tuple[bool, ...]:
        return tuple(o.passed for o in self.outcomes)

    @property
    def all_passed(self) -> bool:
        return all(self.passed) and bool(self.outcomes)

    def feedback(self) -> str:
        """The test results as the code evaluator reads them."""
        return prompts.unit_test_report(
            [o.line() for o in self.outcomes if o.passed],
            [o.line() for o in self.outcomes if not o.passed],
        )


def extract_code(text: str) -> str:
    """The code of a reply: the first ```python block, else the first ``` block, else the text.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nDone.")
    'x = 1'
    """
    for fence in ("```python", "```py", "```"):
        start = text.find(fence)
        if start >= 0:
            start = text.find("\n", start)
            if start < 0:
                break
            end = text.find("```", start + 1)
            return (text[start + 1 :] if end < 0 else text[start + 1 : end]).strip("\n")
    return text.strip()


async def _can_unshare() -> bool:
    global _unshare_works
    if _unshare_works is None:
        path = shutil.which("unshare")
        ok = False
        if path is not None and sys.platform.startswith("linux"):
            try:
                proc = await asyncio.create_subprocess_exec(
                    path,
                    "--user",
                    "--net",
                    "true",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                ok = await asyncio.wait_for(proc.wait(), 10) == 0
            except (OSError, TimeoutError):
                ok = False
        _unshare_works = ok
    return _unshare_works


class CodeRunner:
    """Runs code against tests in child processes; at most ``max_parallel`` at a time.

    ``per_test_seconds`` is each test's wall-clock limit; the whole run gets
    ``per_test_seconds * tests + startup_seconds`` before the process group is killed.
    ``memory_mb`` caps the child's address space. ``network="auto"`` uses a network namespace
    when the system allows it, ``"audit-hook"`` never tries.
    """

    def __init__(
        self,
        *,
        per_test_seconds: float = 5.0,
        memory_mb: int = 1024,
        startup_seconds: float = 5.0,
        max_parallel: int | None = None,
        network: Literal["auto", "audit-hook"] = "auto",
    ) -> None:
        if not per_test_seconds > 0:
            raise ConfigError(f"per_test_seconds must be > 0, got {per_test_seconds!r}")
        if not isinstance(memory_mb, int) or memory_mb < 64:
            raise ConfigError(f"memory_mb must be an integer >= 64, got {memory_mb!r}")
        if network not in ("auto", "audit-hook"):
            raise ConfigError("network must be 'auto' or 'audit-hook'")
        self.per_test_seconds = float(per_test_seconds)
        self.memory_mb = memory_mb
        self.startup_seconds = startup_seconds
        self.network = network
        self._slots = asyncio.Semaphore(max_parallel or os.cpu_count() or 2)

    async def run(self, code: str, tests: Sequence[str]) -> TestRun:
        """Run ``code`` against ``tests``; never raises for anything the code does."""
        async with self._slots:
            return await self._run(code, list(tests))

    async def _run(self, code: str, tests: list[str]) -> TestRun:
        isolate = self.network == "auto" and await _can_unshare()
        limit = self.per_test_seconds * max(1, len(tests)) + self.startup_seconds
        payload = json.dumps(
            {
                "code": code,
                "tests": tests,
                "per_test_seconds": self.per_test_seconds,
                "memory_bytes": self.memory_mb << 20,
                "cpu_seconds": math.ceil(limit) + 1,
                "file_bytes": 16 << 20,
            }
        ).encode()
        command = [sys.executable, "-I", str(HARNESS)]
        if isolate:
            command = ["unshare", "--user", "--net", *command]
        started = time.monotonic()
        lines: list[dict[str, Any]] = []
        timed_out = False
        with tempfile.TemporaryDirectory(prefix="asynctg-run-") as workdir:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=workdir,
                env=_ENV,
                start_new_session=True,  # its own process group, killed as a whole
            )
            try:
                timed_out = not await _collect(proc, payload, lines, limit)
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
        outcomes = []
        for i, test in enumerate(tests):
            if i < len(lines) and lines[i].get("test") == test:
                outcomes.append(
                    TestOutcome(test, bool(lines[i]["passed"]), str(lines[i].get("message", "")))
                )
            elif timed_out:
                outcomes.append(
                    TestOutcome(test, False, f"no result: the run was stopped after {limit:g} s")
                )
            else:
                outcomes.append(
                    TestOutcome(
                        test,
                        False,
                        f"no result: the process ended early (exit status {proc.returncode}; "
                        "out of memory or CPU time?)",
                    )
                )
        return TestRun(
            tuple(outcomes),
            round(time.monotonic() - started, 3),
            timed_out,
            "namespace" if isolate else "audit-hook",
        )


async def _collect(
    proc: asyncio.subprocess.Process,
    payload: bytes,
    lines: list[dict[str, Any]],
    limit: float,
) -> bool:
    """Feed the payload and read result lines; False if the time limit ran out first."""
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout

    async def talk() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(payload)
            await proc.stdin.drain()
            proc.stdin.close()
        while raw := await stdout.readline():
            with contextlib.suppress(json.JSONDecodeError):
                lines.append(json.loads(raw))
        await proc.wait()

    try:
        await asyncio.wait_for(talk(), limit)
    except TimeoutError:
        return False
    return True


async def run_tests(
    code: str,
    tests: Sequence[str],
    *,
    per_test_seconds: float = 5.0,
    memory_mb: int = 1024,
) -> TestRun:
    """Run ``code`` against assert-line ``tests`` once (see ``CodeRunner``)."""
    return await CodeRunner(per_test_seconds=per_test_seconds, memory_mb=memory_mb).run(code, tests)
