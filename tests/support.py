"""Helpers shared by the tests: canned provider answers for the in-memory transport, and the
simulator as a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from asynctg.engine import FakeClock, RetryPolicy, get_engine
from asynctg.engine.client import ChatEngine
from asynctg.errors import APIConnectionError, APITimeoutError
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

BASE_URL = "http://127.0.0.1:9/v1"


def completion(text: str = "hello", prompt_tokens: int = 10, completion_tokens: int = 2) -> bytes:
    return msgspec.json.encode(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def ok(text: str = "hello", headers: dict[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(200, {"x-request-id": "req-1", **(headers or {})}, completion(text))


def error(
    status: int, message: str = "boom", code: str | None = None, **headers: str
) -> HTTPResponse:
    body = msgspec.json.encode({"error": {"message": message, "type": "x", "code": code}})
    return HTTPResponse(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


Step = HTTPResponse | type[Exception] | Exception


def scripted(steps: Iterable[Step], then: HTTPResponse | None = None) -> MockTransport:
    """A transport answering with ``steps`` in order (raising exception steps), then ``then``."""
    queue = list(steps)

    def handler(request: HTTPRequest) -> HTTPResponse:
        if queue:
            step = queue.pop(0)
        elif then is not None:
            step = then
        else:
            raise AssertionError("the transport was called more often than scripted")
        if isinstance(step, type) and issubclass(step, Exception):
            if issubclass(step, APITimeoutError | APIConnectionError):
                raise step("scripted failure")
            raise step()
        if isinstance(step, Exception):
            raise step
        return step

    return MockTransport(handler)


def one_slow_rest_fail(
    is_slow: Callable[[str], bool], answered: Callable[[str], bool] = lambda text: False
) -> tuple[MockTransport, list[str]]:
    """A provider for "a failure cancels its siblings": a request whose body is ``answered``
    gets "answer"; the first ``is_slow`` one hangs for 30 s (and appends "slow" to the returned
    list if it ever finishes); every other waits until that one is running, then gets a 400."""
    started = asyncio.Event()
    finished: list[str] = []

    async def handler(request: HTTPRequest) -> HTTPResponse:
        text = request.body.decode()
        if answered(text):
            return ok("answer")
        if is_slow(text) and not started.is_set():
            started.set()
            await asyncio.sleep(30)
            finished.append("slow")
            return ok("late")
        await started.wait()
        return error(400, "bad request")

    return MockTransport(handler), finished


def engine_with(
    transport: MockTransport,
    *,
    clock: FakeClock | None = None,
    retry: RetryPolicy | None = None,
    base_url: str = BASE_URL,
    **options: Any,
) -> ChatEngine:
    return get_engine(
        "m",
        base_url=base_url,
        api_key="sk-test",
        transport=transport,
        clock=clock or FakeClock(),
        retry=retry or RetryPolicy(testing=True),
        **options,
    )


def sent_bodies(transport: MockTransport) -> list[dict[str, Any]]:
    return [msgspec.json.decode(r.body) for r in transport.requests]


Handler = Callable[[HTTPRequest], HTTPResponse]


class SimProcess:
    """``python -m asynctg sim --port 0 ARGS`` in a subprocess, with its control routes.

    ``log``: where the simulator's stderr goes (default: discarded). Stop it with ``close()``.
    """

    def __init__(self, *args: str, log: Path | None = None) -> None:
        self._log = log.open("w") if log is not None else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asynctg", "sim", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the base URL, printed once serving
        if not line.startswith("http"):
            self.close()
            why = log.read_text() if log is not None else f"exit code {self.proc.returncode}"
            raise RuntimeError(f"the simulator did not start: {why}")
        self.base_url = line
        self.root = line.rsplit("/v1", 1)[0]

    def _call(self, path: str, method: str = "GET") -> Any:
        data = b"{}" if method == "POST" else None  # the admin routes take JSON bodies only
        request = urllib.request.Request(
            self.root + path,
            method=method,
            data=data,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def requests(self) -> list[dict[str, Any]]:
        """The recorded request bodies (the simulator must run with ``--record``)."""
        recorded: list[dict[str, Any]] = self._call("/sim/requests")
        return recorded

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._call("/sim/stats")
        return stats

    def reset(self) -> None:
        self._call("/sim/reset", "POST")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()


def message_text(content: Any) -> str:
    """A message's text: the string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))


def request_kind(request: dict[str, Any]) -> str:
    """ "optimizer", "backward" or "forward", told apart by the tag protocol."""
    text = "\n".join(message_text(m.get("content")) for m in request["messages"])
    if "<IMPROVED_VARIABLE>" in text:
        return "optimizer"
    if "<OBJECTIVE_FUNCTION>" in text:
        return "backward"
    return "forward"
