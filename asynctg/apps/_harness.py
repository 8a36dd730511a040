"""Child-process side of the code runner (``asynctg.apps.sandbox``); not imported by asynctg.

Run as ``python -I _harness.py``. Reads one JSON object on stdin::

    {"code": str, "tests": [str], "per_test_seconds": float, "memory_bytes": int,
     "cpu_seconds": int, "file_bytes": int}

sets resource limits, installs an audit hook that refuses sockets, new processes, signals to
other processes, native-library loading and file writes outside the working folder, and then,
for each test, executes the code in a fresh namespace and the test after it. One JSON line per
test goes to the original stdout as soon as the test is done (what the code prints is
discarded), so a parent that has to kill the process still has the results so far.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import resource
import signal
import sys
from typing import Any

_BLOCKED_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "pty.",
    "ctypes.",
    "_posixsubprocess",
    "webbrowser",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class TestTimeout(BaseException):
    """Raised by the alarm; a BaseException so the code's ``except Exception`` cannot eat it."""


class _Capped(io.TextIOBase):
    """Where the code's prints go: kept up to a few KiB, the rest dropped."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.size += len(text)
        return len(text)


def _guard(workdir: str) -> None:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(_BLOCKED_PREFIXES):
            raise PermissionError(f"{event} is not allowed when running tests (sandbox)")
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writing and isinstance(path, str | bytes):
                full = os.path.abspath(os.fsdecode(path))
                if not full.startswith(workdir + os.sep) and full != os.devnull:
                    raise PermissionError(f"writing {full} is not allowed (sandbox)")

    sys.addaudithook(hook)


def _limit(memory_bytes: int, cpu_seconds: int, file_bytes: int) -> None:
    for which, value in (
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_FSIZE, file_bytes),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            _, hard = resource.getrlimit(which)
            soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass  # a platform without this limit: the parent's timeout still applies


_fired = [False]


def _alarm(signum: int, frame: Any) -> None:
    _fired[0] = True
    raise TestTimeout


def _timed(seconds: float, fn: Any) -> Any:
    _fired[0] = False
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        value = fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if _fired[0]:  # the code caught the alarm's exception and went on: still a timeout
        raise TestTimeout
    return value


def _short(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _describe(exc: BaseException, seconds: float, memory_bytes: int) -> str:
    if isinstance(exc, TestTimeout):
        return f"no result within {seconds:g} s (time limit)"
    if isinstance(exc, MemoryError):
        return f"ran out of memory (limit {memory_bytes // (1 << 20)} MiB)"
    text = str(exc)
    return f"raised {type(exc).__name__}" + (f": {_short(text)}" if text else "")


def _run_test(payload: dict[str, Any], code: Any, test: str) -> dict[str, Any]:
    seconds = float(payload["per_test_seconds"])
    memory = int(payload["memory_bytes"])
    result: dict[str, Any] = {"test": test, "passed": False}
    namespace: dict[str, Any] = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        _timed(seconds, lambda: exec("from typing import *", namespace))
        _timed(seconds, lambda: exec(code, namespace))
    except BaseException as exc:  # the code itself fails before any test runs
        result["message"] = "the code fails before the test runs: " + _describe(
            exc, seconds, memory
        )
        return result
    try:
        compiled = compile(test, "<test>", "exec")
    except SyntaxError as exc:
        result["message"] = f"the test does not compile: {exc.msg}"
        return result
    try:
        _timed(seconds, lambda: exec(compiled, namespace))
    except AssertionError:
        result["message"] = _assertion_message(test, namespace, seconds, memory)
    except BaseException as exc:
        result["message"] = _describe(exc, seconds, memory)
    else:
        result["passed"] = True
    return result


def _assertion_message(test: str, namespace: dict[str, Any], seconds: float, memory: int) -> str:
    try:
        node = ast.parse(test).body[0]
    except (SyntaxError, IndexError):
        return "the assertion does not hold"
    if (
        isinstance(node, ast.Assert)
        and isinstance(node.test, ast.Compare)
        and len(node.test.ops) == 1
        and isinstance(node.test.ops[0], ast.Eq)
    ):
        left = compile(ast.Expression(node.test.left), "<test>", "eval")
        expected = ast.get_source_segment(test, node.test.comparators[0]) or "?"
        try:
            actual = _timed(seconds, lambda: eval(left, namespace))
        except BaseException as exc:
            return _describe(exc, seconds, memory)
        return f"the code returned {_short(repr(actual))}, expected {_short(expected)}"
    return "the assertion does not hold"


def main() -> None:
    payload = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = sys.stderr = _Capped()
    sys.stdin = io.StringIO("")
    signal.signal(signal.SIGALRM, _alarm)
    _limit(int(payload["memory_bytes"]), int(payload["cpu_seconds"]), int(payload["file_bytes"]))
    try:
        code: Any = compile(payload["code"], "<solution>", "exec")
    except SyntaxError as exc:
        code = None
        reason = f"the code does not compile: {exc.msg} (line {exc.lineno})"
    except ValueError as exc:  # e.g. NUL bytes
        code = None
        reason = f"the code does not compile: {exc}"
    _guard(os.path.abspath(os.getcwd()))
    for test in payload["tests"]:
        if code is None:
            line = {"test": test, "passed": False, "message": reason}
        else:
            line = _run_test(payload, code, test)
        out.write(json.dumps(line) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
