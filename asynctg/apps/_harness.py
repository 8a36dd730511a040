"""Child side of the code runner (``asynctg.apps.sandbox``); never imported by asynctg.

The parent runs this file's text as ``python -I -S -c SOURCE`` inside the sandbox and writes one
JSON object to its stdin::

    {"code": str, "checks": [{"exprs": [str, ...]} | {"stmt": str}, ...],
     "per_test_seconds": float, "limits": {name: int}, "tripwire": bool}

The harness sets hard resource limits (the code cannot raise them again), moves its result
channel off fd 1, points fds 1 and 2 at /dev/null and then, for each check, executes the code in
a fresh namespace and evaluates the check's expressions (or runs its statement) under a
per-test alarm. It writes one JSON line per check::

    {"i": n, "values": [value, ...]}  |  {"i": n, "done": true}  |  {"i": n, "error": str}

Values are *plain data* only (None, bool, int, float, str, bytes, list, tuple, dict, set,
frozenset, deque, complex, and subclasses of these read through the base type's own methods),
encoded with type tags so the parent rebuilds the same Python value. An object of any other type
is reported as an error, never compared here: the parent compares the values with the test's
expected side, which it never sends. Nothing this process reports is a verdict; the code under
test runs in this same process and can write to the channel too, which the parent detects.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import resource
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

_RECORD_BYTES = 64 << 10
_MAX_NODES = 100_000
_MAX_DEPTH = 100

_LIMITS = {
    "memory_bytes": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "file_bytes": resource.RLIMIT_FSIZE,
    "processes": resource.RLIMIT_NPROC,
    "open_files": resource.RLIMIT_NOFILE,
    "core_bytes": resource.RLIMIT_CORE,
}


class TestTimeout(BaseException):
    """Raised by the alarm; a BaseException so the code's ``except Exception`` cannot eat it."""


class Unreportable(Exception):
    """A value that is not plain data, or too large to report."""


class _Discard(io.TextIOBase):
    """Where the code's prints go."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


def _set_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        which = _LIMITS[name]
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # soft == hard: the code cannot raise either again (lowering the hard limit is final)
        resource.setrlimit(which, (value, value))


def _tripwire(workdir: str) -> None:
    """Only without the sandbox: refuse the obvious escapes (not a boundary, see sandbox.py)."""
    blocked = (
        "socket.",
        "subprocess.",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.kill",
        "pty.",
        "ctypes.",
        "_posixsubprocess",
    )
    writes = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(blocked):
            raise PermissionError(f"{event} is not allowed when running tests")
        if event == "open" and len(args) >= 3 and isinstance(args[0], str | bytes):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & writes
            ):
                full = os.path.realpath(os.fsdecode(args[0]))
                if not full.startswith(workdir + os.sep) and full != os.devnull:
                    raise PermissionError(f"writing {full} is not allowed when running tests")

    sys.addaudithook(hook)


_fired = [False]


def _alarm(signum: int, frame: FrameType | None) -> None:
    _fired[0] = True
    raise TestTimeout


def _timed(seconds: float, fn: Callable[[], Any]) -> Any:
    _fired[0] = False
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        value = fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if _fired[0]:  # the code caught the alarm's exception and went on: still a timeout
        raise TestTimeout
    return value


def _plain(value: Any, depth: int, count: list[int]) -> Any:
    count[0] += 1
    if count[0] > _MAX_NODES or depth > _MAX_DEPTH:
        raise Unreportable("a value too large or too deeply nested to report")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -(1 << 63) <= value < (1 << 63) else {"int": str(value)}
    if kind is float:
        return value if value - value == 0 else {"float": repr(value)}
    down = depth + 1
    if issubclass(kind, bool):
        return bool.__bool__(value)
    if issubclass(kind, int):
        return _plain(int.__index__(value), down, count)
    if issubclass(kind, float):
        return _plain(float.__float__(value), down, count)
    if issubclass(kind, str):
        return str.__str__(value)
    if issubclass(kind, bytes):
        return {"bytes": bytes.hex(value)}
    if issubclass(kind, complex):
        return {
            "complex": [
                _plain(complex.real.__get__(value), down, count),
                _plain(complex.imag.__get__(value), down, count),
            ]
        }
    if issubclass(kind, list):
        return [_plain(x, down, count) for x in list.__iter__(value)]
    if issubclass(kind, tuple):
        return {"tuple": [_plain(x, down, count) for x in tuple.__iter__(value)]}
    if issubclass(kind, collections.deque):
        return {"deque": [_plain(x, down, count) for x in collections.deque.__iter__(value)]}
    if issubclass(kind, frozenset):
        return {"frozenset": [_plain(x, down, count) for x in frozenset.__iter__(value)]}
    if issubclass(kind, set):
        return {"set": [_plain(x, down, count) for x in set.__iter__(value)]}
    if issubclass(kind, dict):
        return {
            "dict": [[_plain(k, down, count), _plain(v, down, count)] for k, v in dict.items(value)]
        }
    raise Unreportable(
        f"returned a {kind.__name__!s:.60} object; tests compare plain values only "
        "(numbers, strings, bytes, lists, tuples, dicts, sets, None)"
    )


def _short(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _describe(exc: BaseException, seconds: float, memory_bytes: int) -> str:
    if isinstance(exc, TestTimeout):
        return f"no result within {seconds:g} s (time limit)"
    if isinstance(exc, MemoryError):
        return f"ran out of memory (limit {memory_bytes >> 20} MiB)"
    if isinstance(exc, Unreportable):
        return str(exc)
    try:
        text = _timed(1.0, lambda: str(exc))
    except BaseException:
        text = ""
    name = type(exc).__name__
    return f"raised {name!s:.80}" + (f": {_short(text)}" if text else "")


def _check(code: Any, check: dict[str, Any], seconds: float, memory_bytes: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__solution__", "__builtins__": __builtins__}
    try:
        _timed(seconds, lambda: exec("from typing import *", namespace))
        _timed(seconds, lambda: exec(code, namespace))
    except BaseException as exc:  # the code itself fails before the test runs
        return {
            "error": "the code fails before the test runs: " + _describe(exc, seconds, memory_bytes)
        }
    try:
        if "stmt" in check:
            compiled = compile(check["stmt"], "<test>", "exec")
            _timed(seconds, lambda: exec(compiled, namespace))
            return {"done": True}
        values = []
        for source in check["exprs"]:
            compiled = compile(source, "<test>", "eval")
            value = _timed(seconds, functools.partial(eval, compiled, namespace))
            values.append(_timed(seconds, functools.partial(_plain, value, 0, [0])))
        return {"values": values}
    except BaseException as exc:
        return {"error": _describe(exc, seconds, memory_bytes)}


def _encode(record: dict[str, Any]) -> str:
    try:
        line = json.dumps(record, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        line = ""
    if not line or len(line) > _RECORD_BYTES:
        line = json.dumps({"i": record["i"], "error": "returned a value too large to report"})
    return line


def main() -> None:
    payload = json.loads(sys.stdin.read())
    _set_limits(payload["limits"])
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    sys.stdout = sys.stderr = _Discard()
    sys.stdin = io.StringIO("")
    signal.signal(signal.SIGALRM, _alarm)
    seconds = float(payload["per_test_seconds"])
    memory = int(payload["limits"]["memory_bytes"])
    reason = ""
    code: Any = None
    try:
        code = compile(payload["code"], "<solution>", "exec")
    except SyntaxError as exc:
        code, reason = None, f"the code does not compile: {exc.msg} (line {exc.lineno})"
    except ValueError as exc:  # e.g. NUL bytes
        code, reason = None, f"the code does not compile: {exc}"
    if payload.get("tripwire"):
        _tripwire(os.path.realpath(os.getcwd()))
    for i, check in enumerate(payload["checks"]):
        record: dict[str, Any] = (
            {"error": reason} if code is None else _check(code, check, seconds, memory)
        )
        record["i"] = i
        out.write(_encode(record) + "\n")
        out.flush()


main()
