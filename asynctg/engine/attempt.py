"""One attempt of a call: one HTTP request, unary or streamed, read by the provider adapter.

``ChatEngine._call`` (``asynctg.engine.client``, the retry loop) makes each attempt with
``one_attempt``: it sends the request through the engine's transport, lets the scheduler learn
limits from the answer's rate-limit headers, and records how the attempt ended in an
``Outcome`` (the answer, or the error with the wait it asked for). A stream's text deltas are
yielded as they arrive; a failure after the first of them is ``StreamInterruptedError`` (not
retried: part of the answer was already read).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from asynctg.engine.streaming import ChatStream
from asynctg.engine.types import ChatRequest, ChatResult
from asynctg.engine.usage import UsageStats
from asynctg.errors import APIError, ResponseParseError, StreamInterruptedError
from asynctg.transport import HTTPRequest, HTTPResponse

if TYPE_CHECKING:
    from asynctg.engine.client import ChatEngine

__all__ = ["Outcome", "one_attempt"]


class Outcome:
    """What one attempt ended with: the answer, or the error and the wait it asked for."""

    __slots__ = ("error", "result", "wait")

    def __init__(self) -> None:
        self.result: ChatResult | None = None
        self.error: APIError | None = None
        self.wait: float | None = None


async def one_attempt(
    engine: ChatEngine,
    http: HTTPRequest,
    request: ChatRequest,
    stream: ChatStream | None,
    sent_at: float,
    outcome: Outcome,
    usage: UsageStats,
) -> AsyncGenerator[list[str], None]:
    """One HTTP request, unary or streamed; its end goes into ``outcome`` (the answer, or
    the error to retry or raise). A stream's text deltas are yielded as they arrive."""
    provider, clock = engine.provider, engine.clock
    if stream is None:
        try:
            response = await engine.transport.send(http)
        except APIError as exc:  # connection failures, timeouts, an oversized body
            outcome.error = exc
            return
        if engine._learn:
            engine.scheduler.learn_limits(provider.rate_limits(response.headers))
        if response.status != 200:
            engine._failed(response, outcome)
            return
        try:
            outcome.result = provider.parse(response)
        except ResponseParseError as exc:
            outcome.error = exc
        return
    stream.sent(sent_at)
    committed = False
    try:
        async with engine.transport.stream(http) as streamed:  # type: ignore[attr-defined]
            if engine._learn:
                engine.scheduler.learn_limits(provider.rate_limits(streamed.headers))
            if streamed.status != 200:
                whole = HTTPResponse(streamed.status, streamed.headers, await streamed.read())
                engine._failed(whole, outcome)
                return
            decoder = provider.decoder()
            async for block in streamed.chunks():
                deltas = decoder.feed(block)
                if deltas:
                    stream.deltas(clock.now(), len(deltas))
                    committed = True
                    yield deltas
                if decoder.done and streamed.at_eof():
                    break  # (else read to the end: the connection is reused)
            if decoder.plain:  # one JSON answer, not an event stream
                answer = provider.parse(HTTPResponse(200, streamed.headers, decoder.body()))
                if answer.text:
                    stream.deltas(clock.now())
                    committed = True
                    yield [answer.text]
                outcome.result = answer
            else:
                request_id = streamed.headers.get("x-request-id")
                outcome.result, stream.usage_estimated = decoder.result(request, request_id)
    except APIError as exc:
        if committed:
            usage.failures += 1
            raise StreamInterruptedError(
                f"{engine.model}: the stream broke after {len(stream.delta_at)} deltas "
                f"({exc}); not retried, as part of the answer was already read",
            ) from exc
        outcome.error = exc
