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
from typing import TYPE_CHECKING, Any

import msgspec

from asynctg.engine.types import ChatRequest, ChatResult, Usage, estimate_tokens
from asynctg.errors import ResponseParseError

if TYPE_CHECKING:
    from asynctg.engine.client import ChatEngine

__all__ = ["ChatStream", "SSEParser"]


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: Usage | None = None
    model: str = ""


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


class SSEParser:
    """Reads an OpenAI chat-completion event stream line by line.

    ``feed(line)`` returns the content deltas that line carried; ``done`` turns true at
    ``data: [DONE]``; ``result()`` is the ``ChatResult`` of the whole stream.
    """

    __slots__ = ("chunks", "done", "finish", "model", "parts", "usage")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.model = ""
        self.finish: str | None = None
        self.done = False
        self.chunks = 0  # chunks that carried content

    def feed(self, line: bytes) -> list[str]:
        line = line.strip()
        if not line.startswith(b"data:"):
            return []  # blank separators, ": comments", "event:" / "id:" fields
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return []
        try:
            chunk = _decode_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ResponseParseError(
                f"a streamed chunk is not a chat-completion chunk: {exc}",
                body=data[:2000].decode("utf-8", "replace"),
            ) from exc
        if chunk.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        out: list[str] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # n > 1 is not streamed here: the first choice is the answer
            if choice.finish_reason is not None:
                self.finish = choice.finish_reason
            delta = choice.delta
            if delta is not None and delta.content:
                out.append(delta.content)
        if out:
            self.chunks += 1
            self.parts.extend(out)
        return out

    def result(self, request: ChatRequest, request_id: str | None) -> tuple[ChatResult, bool]:
        """The stream's result, and whether its usage was estimated (the server sent none)."""
        if not self.done and self.finish is None:
            raise ResponseParseError("the stream ended before its last chunk", body="")
        usage = self.usage
        estimated = usage is None or usage.total_tokens == 0
        if estimated:
            usage = Usage(
                prompt_tokens=estimate_tokens(request.messages), completion_tokens=self.chunks
            )
        assert usage is not None
        result = ChatResult(
            texts=("".join(self.parts),),
            usage=usage,
            model=self.model,
            finish_reasons=(self.finish,),
            request_id=request_id,
        )
        return result, estimated


class ChatStream:
    """``engine.stream(...)``: iterate it for the text deltas; afterwards ``result``,
    ``usage``, ``text`` and the timings are set (see the module docstring)."""

    def __init__(self, engine: ChatEngine, request: ChatRequest, priority: int) -> None:
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
        self._gen: AsyncIterator[str] | None = None

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        if self._gen is None:
            self._gen = self.engine._stream_iter(self.request, self.priority, self)
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop reading (the connection closes, the engine's slot is released)."""
        gen = self._gen
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
        async with self:
            async for _ in self:
                pass
        assert self.result is not None
        return self.result

    # --- what the engine records ---------------------------------------------------------------

    def _sent(self, now: float) -> None:
        self.attempts += 1
        self.sent_at = now
        self.first_at = None
        self.delta_at.clear()

    def _delta(self, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
        self.delta_at.append(now)

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
