"""``RecordingTransport``: the production transport, recording every HTTP exchange.

Wrapped under an engine, it sees what the server sees: each request's start and end on the
loop's clock, its status (or the connection error), and its kind, told from the tag protocol
(an optimizer request carries ``<IMPROVED_VARIABLE>``, a backward one ``<OBJECTIVE_FUNCTION>``,
a reduce one ``<FEEDBACK>``; anything else is a forward call). Load reports draw the in-flight
timeline and the 429s from it, whatever the workload; the demo's latency summary reads it too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from asynctg.errors import APIError
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse

__all__ = ["Exchange", "RecordingTransport", "request_kind"]


def request_kind(body: bytes) -> str:
    """forward / backward / optimizer / reduce, from the request's tags."""
    if b"<IMPROVED_VARIABLE>" in body:
        return "optimizer"
    if b"<OBJECTIVE_FUNCTION>" in body:
        return "backward"
    if b"<FEEDBACK>" in body:
        return "reduce"
    return "forward"


@dataclass
class Exchange:
    """One HTTP request and how it ended (``status`` None: no response, see ``error``)."""

    start: float
    end: float
    status: int | None
    error: str | None
    kind: str

    @property
    def latency(self) -> float:
        return self.end - self.start


class RecordingTransport:
    """Sends through ``inner`` (default: ``AiohttpTransport``) and records each exchange."""

    def __init__(self, inner: Any = None, *, clock: Any = time.perf_counter) -> None:
        self.inner = inner if inner is not None else AiohttpTransport()
        self.clock = clock
        self.exchanges: list[Exchange] = []

    @property
    def latencies(self) -> list[float]:
        return [e.latency for e in self.exchanges]

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        started = self.clock()
        status: int | None = None
        error: str | None = None
        try:
            response: HTTPResponse = await self.inner.send(request)
            status = response.status
            return response
        except APIError as exc:
            error = type(exc).__name__
            raise
        finally:
            self.exchanges.append(
                Exchange(started, self.clock(), status, error, request_kind(request.body))
            )

    def stream(self, request: HTTPRequest) -> _Recorded:
        return _Recorded(self, request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Recorded:
    """One streamed exchange, recorded when its context closes."""

    __slots__ = ("_inner", "_owner", "_request", "_start", "_status")

    def __init__(self, owner: RecordingTransport, request: HTTPRequest) -> None:
        self._owner = owner
        self._request = request
        self._inner: Any = None
        self._start = 0.0
        self._status: int | None = None

    async def __aenter__(self) -> Any:
        self._start = self._owner.clock()
        self._inner = self._owner.inner.stream(self._request)
        try:
            response = await self._inner.__aenter__()
        except APIError as exc:
            self._record(type(exc).__name__)
            raise
        self._status = response.status
        return response

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        error = None
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except APIError as raised:
            error = type(raised).__name__
            raise
        finally:
            if error is None and isinstance(exc, APIError):
                error = type(exc).__name__
            self._record(error)

    def _record(self, error: str | None) -> None:
        owner = self._owner
        owner.exchanges.append(
            Exchange(
                self._start, owner.clock(), self._status, error, request_kind(self._request.body)
            )
        )
