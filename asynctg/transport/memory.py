"""An in-memory transport for tests: the real client runs on top of a Python handler."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from asynctg.transport.base import HTTPRequest, HTTPResponse

__all__ = ["Handler", "MockTransport"]

Handler = Callable[[HTTPRequest], HTTPResponse | Awaitable[HTTPResponse]]


class MockTransport:
    """Answers each request by calling ``handler(request)`` (sync or async).

    The handler may raise ``APIConnectionError``/``APITimeoutError`` to model network failures.
    ``requests`` keeps every request sent, in order.

    >>> import msgspec
    >>> t = MockTransport(lambda req: HTTPResponse(200, {}, b"{}"))
    """

    __slots__ = ("closed", "handler", "requests")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HTTPRequest] = []
        self.closed = False

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        self.closed = False
        self.requests.append(request)
        result = self.handler(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def aclose(self) -> None:
        self.closed = True
