"""``RecordingTransport``: the production transport, recording every HTTP exchange.

Wrapped under an engine, it sees what the server sees: each request's start and end on the
loop's clock, its status (or the connection error), and its kind, told from the tag protocol
(an optimizer request carries ``<IMPROVED_VARIABLE>``, a backward one ``<OBJECTIVE_FUNCTION>``,
a reduce one ``<FEEDBACK>``; anything else is a forward call). Load reports draw the in-flight
timeline and the 429s from it, whatever the workload; the demo's latency summary reads it too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
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

    @contextlib.asynccontextmanager
    async def stream(self, request: HTTPRequest) -> AsyncIterator[Any]:
        started = self.clock()
        status: int | None = None
        error: str | None = None
        try:
            async with self.inner.stream(request) as response:
                status = response.status
                yield response
        except APIError as exc:
            error = type(exc).__name__
            raise
        finally:
            self.exchanges.append(
                Exchange(started, self.clock(), status, error, request_kind(request.body))
            )

    async def aclose(self) -> None:
        await self.inner.aclose()
