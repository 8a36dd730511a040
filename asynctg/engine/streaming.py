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
from typing import TYPE_CHECKING, Any

import msgspec

from asynctg.engine.types import ChatRequest, ChatResult, Usage, estimate_tokens
from asynctg.errors import ConfigError, ResponseParseError, StreamEventTooLargeError

if TYPE_CHECKING:
    from asynctg.engine.client import ChatEngine

__all__ = ["MAX_EVENT_BYTES", "ChatStream", "SSEParser", "check_streaming"]


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


_decode_chunks = msgspec.json.Decoder(list[_Chunk]).decode


#: One event (or a whole answer sent unstreamed) past this is a misbehaving server: a chat
#: chunk is a few hundred bytes, a whole long completion a few hundred KiB.
MAX_EVENT_BYTES = 8 * 1024 * 1024


class SSEParser:
    """Reads an OpenAI chat-completion event stream as it arrives.

    ``feed(block)`` takes the body as it arrives (blocks may end mid-line) and returns the
    content deltas its complete lines carried; ``done`` turns true at ``data: [DONE]``;
    ``result()`` is the ``ChatResult`` of the whole stream.

    Each byte is searched once (only a block's new bytes are scanned for the blank line that
    ends an event) and parsed once, so a body costs time linear in its size however it is cut
    into blocks; ``examined`` counts those bytes. An event still unfinished past
    ``max_event_bytes`` raises ``StreamEventTooLargeError``.

    A body whose first byte (after white space) is ``{`` is no event stream but one JSON
    document: a plain completion, as some proxies and older servers answer a streaming
    request. ``plain`` turns true, the body is kept whole (within the same cap) and ``body()``
    returns it, for the engine to read as an ordinary answer.
    """

    __slots__ = (
        "_buf",
        "_cr",
        "chunks",
        "done",
        "examined",
        "finish",
        "max_event_bytes",
        "model",
        "parts",
        "plain",
        "usage",
    )

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()  # the unfinished event (plain: the body so far)
        self._cr = False  # the last block ended with "\r", maybe half of a "\r\n"
        self.max_event_bytes = max_event_bytes
        self.plain: bool | None = None  # None until the body's first byte that is not space
        self.examined = 0
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.model = ""
        self.finish: str | None = None
        self.done = False
        self.chunks = 0  # chunks that carried content

    def feed(self, block: bytes) -> list[str]:
        if self._cr:
            block = b"\r" + block
            self._cr = False
        if b"\r" in block:
            if block.endswith(b"\r"):  # its "\n" may come in the next block
                block = block[:-1]
                self._cr = True
            block = block.replace(b"\r\n", b"\n")
        buf = self._buf
        if self.plain is None:
            first = block.lstrip()[:1]
            if first:
                self.plain = first == b"{"
        if self.plain:
            buf += block
            self.examined += len(block)
            if len(buf) > self.max_event_bytes:
                raise self._too_large("an unstreamed answer")
            return []
        start = max(0, len(buf) - 1)  # an event's blank line may straddle the old bytes and these
        buf += block
        self.examined += len(buf) - start
        end = buf.rfind(b"\n\n", start)  # events end with a blank line
        if end < 0:
            if len(buf) > self.max_event_bytes:
                raise self._too_large("one event")
            return []  # no complete event yet
        head = bytes(buf[:end])
        del buf[: end + 2]  # (from the front of a bytearray: no copy of the rest)
        self.examined += len(head)
        if len(buf) > self.max_event_bytes or (
            len(head) > self.max_event_bytes and b"\n\n" not in head
        ):
            raise self._too_large("one event")
        return self._events(head)

    def _too_large(self, what: str) -> StreamEventTooLargeError:
        return StreamEventTooLargeError(
            f"{what} of the streamed answer passed {self.max_event_bytes} bytes; a chat chunk "
            "is a few hundred: the server is misbehaving"
        )

    def body(self) -> bytes:
        """The whole body of a ``plain`` answer."""
        return bytes(self._buf)

    def _events(self, head: bytes) -> list[str]:
        """The deltas of ``head``: whole events, without the blank line after the last."""
        # The usual stream has one-line "data:" events only: split them in one C call and
        # check the result with one search; anything else (comments, other fields, events
        # of several lines) goes line by line.
        payloads = (b"\n\n" + head).split(b"\n\ndata:")
        if payloads[-1].strip() == b"[DONE]":  # the stream's end, in its usual place
            payloads.pop()
            self.done = True
        joined = b",".join(payloads[1:])
        if payloads[0] or b"\n" in joined or b"[DONE]" in joined:
            payloads = [line[5:] for line in head.split(b"\n") if line[:5] == b"data:"]
            stripped = [payload.strip() for payload in payloads]
            if b"[DONE]" in stripped:
                payloads = payloads[: stripped.index(b"[DONE]")]
                self.done = True
            joined = b",".join(payloads)
        else:
            del payloads[0]
        if not payloads:
            return []
        try:  # every chunk of the block in one decode
            chunks = _decode_chunks(b"[" + joined + b"]")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ResponseParseError(
                f"a streamed chunk is not a chat-completion chunk: {exc}",
                body=joined[:2000].decode("utf-8", "replace"),
            ) from exc
        # comprehensions, not a loop of appends: this runs for every block of every stream
        out = [
            c.delta.content
            for chunk in chunks
            for c in chunk.choices
            if c.index == 0 and c.delta is not None and c.delta.content
        ]  # (n > 1 is not streamed here: the first choice is the answer)
        finishes = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
        if finishes:
            self.finish = finishes[-1]
        usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
        if usages:
            self.usage = usages[-1]
        if chunks[-1].model:
            self.model = chunks[-1].model
        self.chunks += len(out)
        self.parts.extend(out)
        return out

    def result(self, request: ChatRequest, request_id: str | None) -> tuple[ChatResult, bool]:
        """The stream's result, and whether its usage was estimated (the server sent none)."""
        if (self._buf or self._cr) and not self.done:  # a last event without its blank line
            self.feed(b"\n\n")
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
        self._gen: AsyncIterator[Any] | None = None
        self._rspan: Any = None  # the request's telemetry span, if any

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
            gen = self._gen = self.engine._open_stream(self)
        try:
            item = await gen.__anext__()
        except StopAsyncIteration:
            return None
        except BaseException as exc:
            rspan, self._rspan = self._rspan, None
            if rspan is not None:
                rspan.finish(error=exc)
            raise
        if isinstance(item, list):
            return item
        self.result = item  # the last item: the whole answer
        await self.aclose()
        self.engine._stream_done(self, item)
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

    # --- what the engine records ---------------------------------------------------------------

    def _sent(self, now: float) -> None:
        self.attempts += 1
        self.sent_at = now
        self.first_at = None
        self.delta_at.clear()

    def _delta(self, now: float, count: int = 1) -> None:
        if self.first_at is None:
            self.first_at = now
        self.delta_at.extend([now] * count)

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
