"""Helpers shared by the tests: canned provider answers for the in-memory transport."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


def engine_with(
    transport: MockTransport,
    *,
    clock: FakeClock | None = None,
    retry: RetryPolicy | None = None,
    **options: Any,
) -> ChatEngine:
    return get_engine(
        "m",
        base_url=BASE_URL,
        api_key="sk-test",
        transport=transport,
        clock=clock or FakeClock(),
        retry=retry or RetryPolicy(testing=True),
        **options,
    )


def sent_bodies(transport: MockTransport) -> list[dict[str, Any]]:
    return [msgspec.json.decode(r.body) for r in transport.requests]


Handler = Callable[[HTTPRequest], HTTPResponse]
