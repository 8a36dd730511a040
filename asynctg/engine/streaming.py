"""Streamed chat completions: ``engine.stream(...)``, an async iterator of text deltas.

::

    async with engine.stream("Write a haiku", max_tokens=64) as stream:
        async for delta in stream:
            print(delta, end="", flush=True)
    print(stream.usage, stream.ttft, stream.inter_token_latencies)

A stream goes through the engine's scheduler like any call (rpm/tpm, the in-flight cap,
priorities, the dollar cap, shared budgets) and holds its slot until the last byte. Failures
before the first delta (connection errors, 5xx, 429) are retried as for ``generate``; after it,
the caller has seen part of the answer, so a broken stream raises ``StreamInterruptedError``
instead. Streams are not cached or coalesced (each is a real request: what a load test wants);
in ``cache_mode="replay"`` the journal's answer comes back as one delta.

A server that answers the streaming request with one plain JSON completion instead of an
event stream (some proxies and older servers do) is read as that completion: its whole text
comes as one delta.

The body asks for usage in the last chunk (``stream_options.include_usage``, as OpenAI does);
a server that sends none (llama.cpp's Python server) gets the completion counted as one token
per content chunk and the prompt estimated, and ``usage_estimated`` says so.

Timings use the engine's clock (a fake one in tests): ``ttft`` is from sending the request that
answered (after any retries) to its first content delta; ``inter_token_latencies`` the gaps
between deltas; ``latency`` the whole call, from ``stream()`` to the end.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol

from asynctg.engine.clock import Clock

# The event-stream decoder is the OpenAI adapter's; it stays importable from here.
from asynctg.engine.providers.openai import MAX_EVENT_BYTES, SSEParser
from asynctg.engine.types import ChatRequest, ChatResult, Usage
from asynctg.errors import ConfigError

__all__ = ["MAX_EVENT_BYTES", "ChatStream", "SSEParser", "StreamSource", "check_streaming"]


class StreamSource(Protocol):
    """What a ``ChatStream`` needs of its engine: a clock, and ``open_stream(stream)``, the
    iterator of the call: lists of text deltas (those of one network read), then the
    ``ChatResult``. The engine records on the stream through ``sent``, ``deltas`` and
    ``ended`` (and sets ``usage_estimated``)."""

    clock: Clock

    def open_stream(self, stream: ChatStream) -> AsyncIterator[list[str] | ChatResult]: ...


class ChatStream:
    """``engine.stream(...)``: iterate it for the text deltas; afterwards ``result``,
    ``usage``, ``text`` and the timings are set (see the module docstring)."""

    def __init__(self, engine: StreamSource, request: ChatRequest, priority: int) -> None:
        self._ready: list[str] = []
        self.engine = engine
        self.request = request
        self.priority = priority
        self.result: ChatResult | None = None
        self.usage_estimated = False
        self.attempts = 0  # requests sent (1 + retries)
        self.started_at = engine.clock.now()
        self.sent_at: float | None = None
        self.first_at: float | None = None
        self.delta_at: list[float] = []
        self.ended_at: float | None = None
        self._gen: AsyncIterator[list[str] | ChatResult] | None = None

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        # the engine hands over every delta of a network read at once (they arrived together)
        while not self._ready:
            block = await self._next_block()
            if block is None:
                raise StopAsyncIteration
            self._ready = block[::-1]
        return self._ready.pop()

    async def _next_block(self) -> list[str] | None:
        """The next network read's deltas; None at the end (``result`` is then set)."""
        gen = self._gen
        if gen is None:
            if self.result is not None:
                return None
            gen = self._gen = self.engine.open_stream(self)
        try:
            item = await gen.__anext__()
        except StopAsyncIteration:
            return None
        if isinstance(item, list):
            return item
        self.result = item  # the last item: the whole answer
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Stop reading (the connection closes, the engine's slot is released)."""
        gen, self._gen = self._gen, None
        if gen is not None and hasattr(gen, "aclose"):
            await gen.aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def collect(self) -> ChatResult:
        """Read the whole stream; its ``ChatResult``."""
        try:
            while await self._next_block() is not None:
                pass  # whole blocks: no per-delta step
        finally:
            await self.aclose()
        assert self.result is not None
        return self.result

    # --- what the engine records (the StreamSource side) --------------------------------------

    def sent(self, now: float) -> None:
        """A request for this stream was sent at ``now`` (the first, or a retry)."""
        self.attempts += 1
        self.sent_at = now
        self.first_at = None
        self.delta_at.clear()

    def deltas(self, now: float, count: int = 1) -> None:
        """``count`` text deltas arrived at ``now``."""
        if self.first_at is None:
            self.first_at = now
        self.delta_at.extend([now] * count)

    def ended(self, now: float) -> None:
        """The answer is complete."""
        self.ended_at = now

    # --- what a caller reads -------------------------------------------------------------------

    @property
    def text(self) -> str:
        return self.result.text if self.result is not None else ""

    @property
    def usage(self) -> Usage | None:
        return self.result.usage if self.result is not None else None

    @property
    def ttft(self) -> float | None:
        """Seconds from sending the answering request to its first content delta."""
        if self.first_at is None or self.sent_at is None:
            return None
        return self.first_at - self.sent_at

    @property
    def inter_token_latencies(self) -> list[float]:
        """Seconds between consecutive content deltas."""
        at = self.delta_at
        return [b - a for a, b in itertools.pairwise(at)]

    @property
    def latency(self) -> float | None:
        """Seconds from ``stream()`` to the end of the stream (queueing and retries included)."""
        return None if self.ended_at is None else self.ended_at - self.started_at

    def stats(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "ttft": self.ttft,
            "latency": self.latency,
            "deltas": len(self.delta_at),
            "attempts": self.attempts,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "usage_estimated": self.usage_estimated,
        }


def check_streaming(transport: Any) -> None:
    """``ConfigError`` unless ``transport`` can stream (has ``stream()``)."""
    if not callable(getattr(transport, "stream", None)):
        raise ConfigError(f"{type(transport).__name__} cannot stream (it has no stream() method)")
