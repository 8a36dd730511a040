"""The OpenAI chat-completions wire format: the ``Provider`` adapter most servers speak.

Everything OpenAI-specific the engine needs, as pure functions on one stateless object
(``OPENAI``): the request's URL, headers and JSON body (``stream`` adds ``stream`` and
``stream_options.include_usage``), a completion parsed into a ``ChatResult``, server-sent
events decoded into text deltas and usage (``SSEParser``), an error body mapped onto the
error tree of ``asynctg.errors`` with the wait the answer asks for (``retry-after-ms``, then
``retry-after``) and any context window its message names, and the ``x-ratelimit-*`` headers
the scheduler learns limits from (OpenAI's names are the scheduler's: passed as they are).
See ``asynctg.engine.providers`` for the protocol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import msgspec

from asynctg.engine.providers import CallSite, ErrorReport
from asynctg.engine.providers._common import (
    MAX_EVENT_BYTES,
    EventBuffer,
    auth_error,
    base_headers,
    context_error,
    forbidden_error,
    redirect_error,
    stream_result,
)
from asynctg.engine.retry import retry_after_seconds
from asynctg.engine.types import (
    ChatRequest,
    ChatResult,
    Usage,
    WireUsage,
    decode_completion,
    decode_error,
)
from asynctg.errors import (
    APIStatusError,
    BadRequestError,
    InsufficientQuotaError,
    RateLimitError,
    ResponseParseError,
    ServerError,
    StreamEventTooLargeError,
)
from asynctg.transport import HTTPResponse

__all__ = ["MAX_EVENT_BYTES", "OPENAI", "OpenAIChat", "SSEParser", "parse_completion", "read_error"]

#: Phrases of a 400/413 that mean "the prompt does not fit the context window".
_CONTEXT_HINTS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context size",
    "maximum context",
    "too many tokens",
    "exceeds the context",
    "n_ctx",
    "prompt is too long",
)

#: "This model's maximum context length is 8192 tokens" (OpenAI, vLLM and the simulator).
_WINDOW_IN_MESSAGE = re.compile(r"(?:maximum context length|context window) (?:is|of) (\d+)")

#: appended to a request body's JSON object (in place of its closing brace) to stream it
_STREAM_FIELDS = b',"stream":true,"stream_options":{"include_usage":true}}'


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: WireUsage | None = None
    model: str = ""


_decode_chunks = msgspec.json.Decoder(list[_Chunk]).decode


class SSEParser(EventBuffer):
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

    __slots__ = ("chunks", "done", "examined", "finish", "model", "parts", "usage")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        super().__init__(max_event_bytes)
        self.examined = 0
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.model = ""
        self.finish: str | None = None
        self.done = False
        self.chunks = 0  # chunks that carried content

    def feed(self, block: bytes) -> list[str]:
        block = self._fold(block)
        buf = self._buf
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
            self.usage = usages[-1].normal()
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
        return stream_result(
            request, request_id, self.parts, self.usage, self.model, self.finish, self.chunks
        )


def parse_completion(response: HTTPResponse) -> ChatResult:
    """A 200 answer as a ``ChatResult``; ``ResponseParseError`` if it is not a usable
    chat completion (no choices, a choice without content, negative usage)."""
    try:
        completion = decode_completion(response.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ResponseParseError(
            f"the server's answer is not a chat completion: {exc}", body=response.text()[:2000]
        ) from exc
    if not completion.choices:
        raise ResponseParseError("the server's answer has no choices", body=response.text()[:2000])
    texts = []
    reasons = []
    for choice in completion.choices:
        if choice.message is None or choice.message.content is None:
            raise ResponseParseError(
                "a choice in the server's answer has no message content",
                body=response.text()[:2000],
            )
        texts.append(choice.message.content)
        reasons.append(choice.finish_reason)
    usage = completion.usage.normal() if completion.usage is not None else Usage()
    if min(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) < 0:
        raise ResponseParseError(
            "the server's answer reports negative token usage", body=response.text()[:2000]
        )
    return ChatResult(
        texts=tuple(texts),
        usage=usage,
        model=completion.model,
        finish_reasons=tuple(reasons),
        request_id=response.headers.get("x-request-id"),
        service_tier=completion.service_tier,
    )


def read_error(response: HTTPResponse, site: CallSite) -> ErrorReport:
    """A non-200 answer as an ``ErrorReport``: its typed error, the wait it asks for, and the
    context window a context-length error names (at least 16 tokens; None otherwise)."""
    status = response.status
    message, code = decode_error(response.body)
    body = response.text()[:2000]
    where = f"{status} from {site.url}"
    kwargs: dict[str, Any] = {
        "status": status,
        "request_id": response.headers.get("x-request-id"),
        "body": body,
        "code": code,
    }
    wait = retry_after_seconds(response.headers)
    error: APIStatusError
    window = None
    if status == 429:
        if code == "insufficient_quota" or "insufficient_quota" in body:
            error = InsufficientQuotaError(
                f"{where}: out of quota ({message}). Waiting will not help: add credit to "
                "the account or use another API key.",
                **kwargs,
            )
        else:
            error = RateLimitError(
                f"{where}: rate limited ({message}). Lower rpm/tpm or max_concurrency, or allow "
                "more retry time (RetryPolicy.max_total_seconds).",
                **kwargs,
            )
    elif status == 401:
        error = auth_error(where, message, site, "OPENAI_API_KEY", kwargs)
    elif status == 403:
        error = forbidden_error(where, message, site, kwargs)
    elif status >= 500:
        error = ServerError(f"{where}: {message or 'server error'}", **kwargs)
    elif 300 <= status < 400:
        error = redirect_error(where, response.headers, kwargs)
    elif status in (400, 413) and any(
        h in f"{code or ''} {message}".lower() for h in _CONTEXT_HINTS
    ):
        error, window = context_error(where, message, _WINDOW_IN_MESSAGE, kwargs)
    elif status == 404:
        error = BadRequestError(
            f"{where}: {message or 'not found'}. Check the model name ({site.model!r}) and "
            "base_url (OpenAI-compatible servers usually serve under /v1).",
            **kwargs,
        )
    elif status in (408, 409):
        error = ServerError(f"{where}: {message}", **kwargs)
    else:
        error = BadRequestError(f"{where}: {message or 'bad request'}", **kwargs)
    return ErrorReport(error, wait, window)


class OpenAIChat:
    """The chat-completions adapter (``asynctg.engine.providers.Provider``); stateless."""

    __slots__ = ()
    name = "openai"
    defaults: Mapping[str, Any] = MappingProxyType({})

    def url(self, base_url: str) -> str:
        return base_url + "/chat/completions"

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = base_headers()
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return headers

    def body(self, request: ChatRequest, *, stream: bool) -> bytes:
        body = request.body()
        # the same JSON object with the two streaming fields added
        return body[:-1] + _STREAM_FIELDS if stream else body

    def parse(self, response: HTTPResponse) -> ChatResult:
        return parse_completion(response)

    def decoder(self) -> SSEParser:
        return SSEParser()

    def error(self, response: HTTPResponse, site: CallSite) -> ErrorReport:
        return read_error(response, site)

    def rate_limits(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        return headers  # OpenAI's x-ratelimit-* names are the scheduler's

    def system(self, base_url: str) -> str:
        """``gen_ai.provider.name``: "openai" for OpenAI's API, else the server's host name."""
        host = urlsplit(base_url).hostname or ""
        return "openai" if host == "api.openai.com" else host


#: The adapter (stateless: one is enough for every engine).
OPENAI = OpenAIChat()
