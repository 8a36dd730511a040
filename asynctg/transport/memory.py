"""An in-memory transport for tests: the real client runs on top of a Python handler."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

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

    @contextlib.asynccontextmanager
    async def stream(self, request: HTTPRequest) -> AsyncIterator[_Whole]:
        """The handler's response, its body read line by line (an SSE body, for streams)."""
        yield _Whole(await self.send(request))

    async def aclose(self) -> None:
        self.closed = True


class _Whole:
    """A complete response as a ``StreamResponse``."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: HTTPResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._response.body

    def at_eof(self) -> bool:
        return True

    async def read(self) -> bytes:
        return self._response.body
