"""Request and response types shared by every transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

__all__ = ["HTTPRequest", "HTTPResponse", "StreamResponse", "StreamingTransport", "Transport"]


class HTTPRequest:
    """One POST (or GET) with a ready-encoded body."""

    __slots__ = ("body", "headers", "method", "timeout", "url")

    def __init__(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes = b"",
        timeout: float | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"HTTPRequest({self.method} {self.url}, {len(self.body)} bytes)"


class HTTPResponse:
    """A complete response. ``headers`` answers lookups by lower-case name (a dict with
    lower-case keys, or a case-insensitive mapping such as aiohttp's)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"HTTPResponse({self.status}, {len(self.body)} bytes)"


@runtime_checkable
class Transport(Protocol):
    """Anything that can send an ``HTTPRequest`` and return the whole ``HTTPResponse``."""

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        """Send one request; raise APIConnectionError/APITimeoutError if no full response came."""
        ...

    async def aclose(self) -> None:
        """Release connections; the transport may be reopened by a later ``send``."""
        ...


class StreamResponse(Protocol):
    """A response read as it arrives: its status and headers first, then its body's lines."""

    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]:
        """The body in the blocks it arrives in (lines may be split across blocks)."""
        ...

    async def read(self) -> bytes:
        """The whole (rest of the) body: for error answers, which are not streamed."""
        ...

    def at_eof(self) -> bool:
        """Whether the whole body has been read (a reader that stops early closes the
        connection instead of reusing it)."""
        ...


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A transport that can also stream a response (``engine.stream`` needs one)."""

    def stream(self, request: HTTPRequest) -> AbstractAsyncContextManager[StreamResponse]:
        """Send ``request``; the context holds the open response (closed on exit)."""
        ...
