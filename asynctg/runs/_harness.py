"""Sandbox side of the code runner (``asynctg.runs.sandbox``); never imported by asynctg.

The parent runs this file's text as ``python -I -S -c SOURCE`` inside the sandbox, hands it the
write end of a private pipe (the *result channel*, its number in the payload) and writes one
JSON object to its stdin::

    {"code": str, "checks": [{"exprs": [str, ...]} | {"stmt": str}, ...], "result_fd": int,
     "per_test_seconds": float, "limits": {name: int}, "tripwire": bool}

Two processes share the work, and only one of them ever runs model-written code:

- the *reporter* (this process) makes itself non-dumpable (so no other process of the same user
  can open its descriptors under ``/proc`` or read or write its memory), sets hard resource
  limits (inherited, never raisable), forks the *runner* and then only relays: it reads the
  runner's lines from a pipe of their own, checks each is the next check's and of that check's
  kind (values of the right arity for an expression check, ``done`` only for a statement),
  and writes it again, re-encoded by itself, to the result channel. A line out of place, too
  long, of the wrong kind or after the last check ends the relay with ``{"tampered": true}``.
- the *runner* holds nothing but the write end of that pipe (the result channel, stdin and every
  other descriptor are closed; fds 0-2 are ``/dev/null``), then, for each check, executes the
  code in a fresh namespace and evaluates the check's expressions (or runs its statement) under
  a per-test alarm, writing one line per check::

    {"i": n, "values": [value, ...]}  |  {"i": n, "done": true}  |  {"i": n, "error": str}

Values are *plain data* only (None, bool, int, float, str, bytes, list, tuple, dict, set,
frozenset, deque, complex, and subclasses of these read through the base type's own methods),
encoded with type tags so the parent rebuilds the same Python value. An object of any other type
is reported as an error. The code under test controls the runner completely and may send any
line it likes; that is why nothing here is a verdict. The parent compares values with the test's
expected side, which never enters the sandbox, and counts ``done`` only for statement tests.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import resource
import select
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


# --- the runner: the only process that runs the code under test ------------------------------


def _run(payload: dict[str, Any], channel: int) -> None:
    """Run every check and write its line to ``channel``; the code can reach all of this."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    # nothing of the reporter's stays open here: not the result channel, not its read end
    os.closerange(3, channel)
    os.closerange(channel + 1, 1 << 16)
    out = os.fdopen(channel, "w", buffering=1, encoding="utf-8")
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


# --- the reporter: relays the runner's lines, never runs the code ----------------------------


def _protect() -> None:
    """Make this process non-dumpable: then a process of the same user without CAP_SYS_PTRACE
    (every process in the sandbox) can neither ptrace it, nor read or write its memory, nor
    open its descriptors through /proc/PID/fd."""
    import ctypes  # only here: the runner's tripwire (unsafe mode) forbids it to the code

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_dumpable = 4
    if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a plain JSON value")


def _small_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # a record has two keys and a tag one: no object the parent will hash key by key is large
    if len(pairs) > 2:
        raise ValueError("a JSON object with more than two keys")
    return dict(pairs)


def _relayed(line: bytes, i: int, check: dict[str, Any]) -> str | None:
    """The runner's line for check ``i``, re-encoded; None when it is not that check's."""
    if len(line) > _RECORD_BYTES:
        return None
    try:
        record = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_small_object)
    except (ValueError, RecursionError):
        return None
    if type(record) is not dict or len(record) != 2 or type(record.get("i")) is not int:
        return None
    if record["i"] != i:
        return None
    kept: dict[str, Any]
    if type(record.get("error")) is str:
        kept = {"i": i, "error": record["error"][:400]}
    elif record.get("done") is True and "stmt" in check:
        kept = {"i": i, "done": True}
    elif (
        "exprs" in check
        and type(record.get("values")) is list
        and len(record["values"]) == len(check["exprs"])
    ):
        kept = {"i": i, "values": record["values"]}
    else:
        return None
    try:
        return json.dumps(kept, allow_nan=False)
    except (ValueError, RecursionError):
        return None


def _relay(source: int, sink: int, checks: list[dict[str, Any]]) -> bool:
    """Relay one line per check from ``source`` to ``sink``; False once a line is out of place.

    Returns True at the end of the runner's lines (all checks answered, or the runner gone).
    """
    pending = b""
    i = 0
    while i < len(checks):
        chunk = os.read(source, 1 << 16)
        if not chunk:
            return not pending  # a cut-off last line: the runner died writing it, or forged it
        pending += chunk
        while (cut := pending.find(b"\n")) >= 0:
            if i >= len(checks):
                return False
            text = _relayed(pending[:cut], i, checks[i])
            if text is None:
                return False
            _send(sink, (text + "\n").encode())
            pending = pending[cut + 1 :]
            i += 1
        if len(pending) > _RECORD_BYTES:
            return False
    return not pending


def _send(sink: int, data: bytes) -> None:
    while data:
        data = data[os.write(sink, data) :]


def _settle(source: int, pid: int) -> tuple[bool, int]:
    """Wait for the runner to end, reading on; (no byte came past the last check's line, its
    wait status). A duplicate, or the real line after one forged ahead of it, shows up here."""
    while True:
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            os.set_blocking(source, False)
            try:
                extra = os.read(source, 1)
            except BlockingIOError:
                extra = b""
            return not extra, status
        readable, _, _ = select.select([source], [], [], 0.05)
        if readable:
            if os.read(source, 1 << 16):
                os.kill(pid, signal.SIGKILL)
                return False, os.waitpid(pid, 0)[1]
            return True, os.waitpid(pid, 0)[1]  # end of file: nothing more can come


def _exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def main() -> None:
    payload = json.loads(sys.stdin.read())
    sink = int(payload["result_fd"])
    checks: list[dict[str, Any]] = payload["checks"]
    try:
        _protect()
    except (OSError, ImportError, AttributeError) as exc:
        # without it the code could write to the result channel through /proc: run nothing
        for i in range(len(checks)):
            error = f"the sandbox cannot shield its result channel here ({exc})"
            _send(sink, (json.dumps({"i": i, "error": error[:300]}) + "\n").encode())
        os._exit(1)
    _set_limits(payload["limits"])  # before the fork: the runner inherits them, cannot raise them
    source, channel = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(source)
            os.close(sink)
            _run(payload, channel)
        finally:
            os._exit(0)
    os.close(channel)
    fair = _relay(source, sink, checks)
    if fair:
        fair, status = _settle(source, pid)
    else:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if not fair:
        _send(sink, b'{"tampered": true}\n')
    os._exit(_exit_status(status))


main()
