"""Anthropic's Messages API: the ``Provider`` adapter for Claude models.

Everything Anthropic-specific the engine needs, as pure functions on one immutable object
(``AnthropicMessages``; ``ANTHROPIC`` has prompt caching on). Budgets, retries, the cache and
journal, single-flight, usage and telemetry are the engine's, the same as for OpenAI.

Wire format (``POST {base_url}/v1/messages``; a ``base_url`` that already ends in ``/v1``, as the
simulator's does, gets ``/messages`` only):

- headers ``x-api-key`` (the key), ``anthropic-version: 2023-06-01``, ``content-type`` and
  ``user-agent``;
- leading ``system``/``developer`` messages become the top-level ``system`` field, a list of
  text blocks (a system message after the first turn is a ``ConfigError``: Anthropic has no
  place for it, and moving it to the front would reorder the prompt silently);
- ``max_tokens`` is always sent: the request's, else ``DEFAULT_MAX_TOKENS`` (the engine makes it
  a default of every request, so budgets and cache keys see it). Anthropic charges
  ``max_tokens`` against the output-token rate limit when the request is admitted, so the
  model's whole reply cap would waste that budget;
- ``temperature`` (at most 1 on Anthropic), ``top_p``, ``stop`` -> ``stop_sequences``; ``seed`` is
  dropped (Anthropic has none; it stays in the cache key); ``n`` > 1 and ``response_format``
  are ``ConfigError`` before anything is sent (neither exists; ignoring them would return
  something other than what was asked); any ``extra`` parameter (``top_k``, ``metadata``, ...)
  is merged into the body as given;
- image parts (OpenAI ``image_url``) become ``image`` blocks: a data URL as a ``base64`` source
  with its media type, an http(s) URL as a ``url`` source; ``detail`` has no equivalent;
- streaming reads Anthropic's events (``message_start``, ``content_block_start``,
  ``content_block_delta``, ``content_block_stop``, ``message_delta``, ``message_stop``,
  ``ping``, ``error``; unknown events are skipped, as Anthropic says new ones may appear).

Prompt caching (``prompt_cache=True``, the default): ``cache_control: {"type": "ephemeral"}``
breakpoints on the stable prefix of a request, only where that prefix reaches the model's
minimum cacheable length (``min_cacheable_tokens``; estimated with ``estimate_tokens``), so a
cache write (25% dearer than plain input) is made only for text that can be read back:

1. the last block of the system prompt, when the system prompt alone is long enough (it is
   what a step's forward calls, or every backward call, share);
2. the last block of the conversation before the final message (earlier turns of a
   multi-turn request), when everything up to it is long enough.

The final message is never marked: the engine cannot know which of its parts other requests
share (a multimodal backward request puts the sample's own images first). A content part that
carries its own ``cache_control`` is sent with it; Anthropic allows 4 breakpoints a request,
the caller's come first and automatic ones are dropped past 4 (``ConfigError`` if the
caller's alone pass it). Nothing is reordered: see docs/engine.md for what caching gets with
the paper's prompts as they stand.

Usage (``Usage``): ``prompt_tokens`` = ``input_tokens`` + ``cache_read_input_tokens`` +
``cache_creation_input_tokens``; ``cached_tokens`` = the reads, ``cache_write_tokens`` = the
writes. Stop reasons are given in OpenAI's words (``end_turn``/``stop_sequence`` -> "stop",
``max_tokens`` -> "length", ``tool_use`` -> "tool_calls", ``refusal`` -> "content_filter"), as
the rest of asynctg reads them.

Errors: ``overloaded_error`` (529) and ``api_error`` (500) are ``ServerError`` (retried);
``rate_limit_error`` (429) a ``RateLimitError`` with ``retry-after`` (or, without it, the
earliest reset of an exhausted limit); ``invalid_request_error`` "prompt is too long" a
``ContextLengthError`` (the window it names is learned); a low credit balance (400)
``InsufficientQuotaError`` (never retried); 401/403/404 as for OpenAI. An ``error`` event in a
stream is the same error (before the first delta it is retried; after it the engine raises
``StreamInterruptedError``).

Rate limits: ``anthropic-ratelimit-requests-*``, ``-input-tokens-*`` and ``-output-tokens-*``
are given to the scheduler as ``x-ratelimit-{limit,remaining}-requests``, ``-input-tokens``
and ``-output-tokens``: separate input and output token buckets. The combined
``anthropic-ratelimit-tokens-*`` (the tighter of the two) is not used, as it would pace the
same tokens twice; the ``-reset`` times (RFC 3339) are used only for a 429's wait.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any

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
from asynctg.engine.types import ChatRequest, ChatResult, Usage, decode_error, estimate_tokens
from asynctg.errors import (
    APIStatusError,
    BadRequestError,
    ConfigError,
    InsufficientQuotaError,
    RateLimitError,
    ResponseParseError,
    ServerError,
    StreamEventTooLargeError,
)
from asynctg.transport import HTTPResponse

__all__ = [
    "ANTHROPIC",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "MAX_BREAKPOINTS",
    "AnthropicMessages",
    "EventParser",
    "min_cacheable_tokens",
    "read_error",
]

#: Where the Messages API is when no base URL is given (``ANTHROPIC_BASE_URL`` overrides).
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
#: The API version every request names (the one the Messages API was released with).
ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` when neither the request nor the engine sets one: above what the paper's
#: prompts elicit (a few hundred tokens), far below the models' reply caps, which Anthropic
#: would charge in full against the output-token rate limit before answering.
DEFAULT_MAX_TOKENS = 4096
#: Anthropic's cap on ``cache_control`` breakpoints in one request.
MAX_BREAKPOINTS = 4

_EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
_TOO_LONG = re.compile(r"prompt is too long|too many tokens|context window", re.IGNORECASE)
#: "prompt is too long: 210000 tokens > 200000 maximum"
_WINDOW_IN_MESSAGE = re.compile(r">\s*(\d+)\s*maximum")
_LOW_CREDIT = "credit balance is too low"
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: error types of an ``error`` stream event, as the HTTP status the same error has
_EVENT_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
#: the scheduler's names for Anthropic's rate-limit headers
_LIMIT_HEADERS = {
    f"anthropic-ratelimit-{kind}-{field}": f"x-ratelimit-{field}-{kind}"
    for kind in ("requests", "input-tokens", "output-tokens")
    for field in ("limit", "remaining")
}


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix Anthropic caches for ``model``, in tokens (a shorter one is sent
    uncached, at no error): 4,096 for Opus 4.5/4.6 and Haiku 4.5, 2,048 for Sonnet 4.6 and the
    Haiku 3 models, 1,024 for the other Sonnet and Opus models."""
    name = model.lower()
    if any(k in name for k in ("opus-4-5", "opus-4-6", "haiku-4-5", "haiku-4.5")):
        return 4096
    if "haiku" in name or "sonnet-4-6" in name:
        return 2048
    return 1024


# --- requests --------------------------------------------------------------------------------


def _image_block(part: Mapping[str, Any]) -> dict[str, Any]:
    url = str(part["image_url"]["url"])
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """A message's content (validated by ``validate_messages``) as Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    out = []
    for part in content:
        if part.get("type") == "image_url":
            block = _image_block(part)
        else:
            block = {"type": "text", "text": part["text"]}
        control = part.get("cache_control")
        if control is not None:
            block["cache_control"] = control
        out.append(block)
    return out


def _marks(blocks: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for b in blocks if "cache_control" in b)


class _Body:
    """A Messages body under construction: the system blocks and the turns."""

    __slots__ = ("messages", "system")

    def __init__(self, request: ChatRequest) -> None:
        self.system: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []  # content: a str, or a list of blocks
        for i, message in enumerate(request.messages):
            role = message.get("role")
            content = message["content"]
            if role in ("system", "developer"):
                if self.messages:
                    raise ConfigError(
                        f"messages[{i}]: Anthropic takes system text only before the first "
                        "turn (the top-level 'system' field); put it first or make it a user turn"
                    )
                self.system += _blocks(content)
            elif role in ("user", "assistant"):
                plain = isinstance(content, str)
                self.messages.append(
                    {"role": role, "content": content if plain else _blocks(content)}
                )
            else:
                raise ConfigError(f"messages[{i}]: role {role!r} is not supported on Anthropic")
        if not self.messages:
            raise ConfigError("an Anthropic request needs at least one user message")

    def add_breakpoints(self, minimum: int) -> None:
        """Mark the stable prefix (see the module) where it reaches ``minimum`` tokens."""
        free = MAX_BREAKPOINTS - _marks(self.system)
        free -= sum(_marks(m["content"]) for m in self.messages if isinstance(m["content"], list))
        if free < 0:
            raise ConfigError(
                f"at most {MAX_BREAKPOINTS} content parts may carry cache_control on Anthropic"
            )
        system_tokens = 0
        if self.system:
            system_tokens = estimate_tokens([{"role": "system", "content": self.system}])
            if free and system_tokens >= minimum and "cache_control" not in self.system[-1]:
                self.system[-1]["cache_control"] = _EPHEMERAL
                free -= 1
        if free and len(self.messages) > 1:
            history = self.messages[:-1]
            if system_tokens + estimate_tokens(history) >= minimum:
                last = history[-1]
                if isinstance(last["content"], str):
                    last["content"] = [{"type": "text", "text": last["content"]}]
                if last["content"] and "cache_control" not in last["content"][-1]:
                    last["content"][-1]["cache_control"] = _EPHEMERAL

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.system:
            out["system"] = self.system
        out["messages"] = self.messages
        return out


def build_body(request: ChatRequest, *, stream: bool, prompt_cache: bool = True) -> dict[str, Any]:
    """``request`` as a Messages body (a dict, in the order it is sent); ``ConfigError`` for
    what Anthropic cannot do (see the module)."""
    if request.n is not None and request.n > 1:
        raise ConfigError(
            f"n={request.n}: Anthropic returns one completion per request; make {request.n} "
            "calls (at a temperature above 0) instead"
        )
    if request.response_format is not None:
        raise ConfigError(
            "response_format is not supported on Anthropic: ask for the format in the prompt"
        )
    if request.temperature is not None and request.temperature > 1:
        raise ConfigError(
            f"temperature must be within [0, 1] on Anthropic, got {request.temperature}"
        )
    parts = _Body(request)
    if prompt_cache:
        parts.add_breakpoints(min_cacheable_tokens(request.model))
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    body.update(parts.fields())
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    stop = request.stop
    if stop is not None:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.extra:
        body.update(request.extra)
    if stream:
        body["stream"] = True
    return body


# --- answers ---------------------------------------------------------------------------------


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Block(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _Message(msgspec.Struct):
    content: list[_Block] = []
    model: str = ""
    stop_reason: str | None = None
    usage: _Usage | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
_encode = msgspec.json.Encoder().encode


def _usage(raw: _Usage | None) -> Usage | None:
    """Anthropic's usage in the engine's terms (see the module); None when there is none."""
    if raw is None:
        return None
    fresh = raw.input_tokens or 0
    read = raw.cache_read_input_tokens or 0
    written = raw.cache_creation_input_tokens or 0
    out = raw.output_tokens or 0
    if min(fresh, read, written, out) < 0:
        raise ResponseParseError("the server's answer reports negative token usage", body="")
    return Usage(
        prompt_tokens=fresh + read + written,
        completion_tokens=out,
        cached_tokens=read,
        cache_write_tokens=written,
    )


def parse_message(response: HTTPResponse) -> ChatResult:
    """A 200 answer as a ``ChatResult``; ``ResponseParseError`` if it is not a message with
    text (content blocks other than text, such as thinking, are skipped)."""
    try:
        message = _decode_message(response.body)
        texts = [b.text for b in message.content if b.type == "text" and b.text is not None]
        usage = _usage(message.usage)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ResponseParseError(
            f"the server's answer is not a message: {exc}", body=response.text()[:2000]
        ) from exc
    except ResponseParseError as exc:
        raise ResponseParseError(str(exc), body=response.text()[:2000]) from None
    if not texts:
        raise ResponseParseError(
            "the server's answer has no text block", body=response.text()[:2000]
        )
    return ChatResult(
        texts=("".join(texts),),
        usage=usage or Usage(),
        model=message.model,
        finish_reasons=(_STOP_REASONS.get(message.stop_reason or "", message.stop_reason),),
        request_id=response.headers.get("request-id"),
    )


class _Delta(msgspec.Struct):
    type: str = ""
    text: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    message: _Message | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None


_decode_event = msgspec.json.Decoder(_Event).decode

_STREAM_SITE = CallSite("the stream", "", True)


class EventParser(EventBuffer):
    """Reads an Anthropic event stream as it arrives (the ``StreamDecoder`` protocol).

    ``feed(block)`` takes the body as it arrives (blocks may end mid-line) and returns the text
    deltas of its complete events; ``done`` turns true at ``message_stop``; an ``error`` event
    raises the error it names (see ``read_error``). Each byte is scanned for the blank line
    that ends an event once; an event unfinished past ``max_event_bytes`` raises
    ``StreamEventTooLargeError``. A body that starts with ``{`` is a plain answer (``plain``;
    ``body()`` returns it).
    """

    __slots__ = ("done", "error", "finish", "model", "output", "parts", "prompt")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        super().__init__(max_event_bytes)
        self.parts: list[str] = []
        self.prompt: _Usage | None = None  # message_start's usage (the input side)
        self.output: int | None = None  # the last output_tokens reported (cumulative)
        self.model = ""
        self.finish: str | None = None
        self.done = False
        #: an ``error`` event read after text of the same block: raised by the next call
        self.error: APIStatusError | None = None

    def feed(self, block: bytes) -> list[str]:
        if self.error is not None:
            raise self.error
        block = self._fold(block)
        buf = self._buf
        if self.plain:
            buf += block
            if len(buf) > self.max_event_bytes:
                raise self._too_large("an unstreamed answer")
            return []
        start = max(0, len(buf) - 1)  # a blank line may straddle the old bytes and these
        buf += block
        end = buf.rfind(b"\n\n", start)  # events end with a blank line
        if end < 0:
            if len(buf) > self.max_event_bytes:
                raise self._too_large("one event")
            return []
        head = bytes(buf[:end])
        del buf[: end + 2]
        if len(buf) > self.max_event_bytes:
            raise self._too_large("one event")
        out: list[str] = []
        for event in head.split(b"\n\n"):
            if len(event) > self.max_event_bytes:
                raise self._too_large("one event")
            data = b"\n".join(
                line[5:].lstrip(b" ") for line in event.split(b"\n") if line[:5] == b"data:"
            )
            if data:
                self._event(data, out)
                if self.error is not None:
                    break  # nothing after an error event counts
        self.parts.extend(out)
        if self.error is not None and not out:
            raise self.error
        return out  # (the text before an error event first: the error comes next)

    def _event(self, data: bytes, out: list[str]) -> None:
        try:
            event = _decode_event(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ResponseParseError(
                f"a streamed event is not an Anthropic event: {exc}",
                body=data[:2000].decode("utf-8", "replace"),
            ) from exc
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            if delta is not None and delta.type == "text_delta" and delta.text:
                out.append(delta.text)
        elif kind == "message_start" and event.message is not None:
            self.model = event.message.model or self.model
            self.prompt = event.message.usage
            if event.message.usage is not None:
                self.output = event.message.usage.output_tokens
        elif kind == "message_delta":
            if event.delta is not None and event.delta.stop_reason is not None:
                self.finish = event.delta.stop_reason
            use = event.usage
            if use is not None:
                if use.output_tokens is not None:
                    self.output = use.output_tokens
                if use.input_tokens is not None and self.prompt is not None:
                    # newer servers repeat the (cumulative) input side here
                    self.prompt = msgspec.structs.replace(
                        self.prompt,
                        input_tokens=use.input_tokens,
                        cache_read_input_tokens=use.cache_read_input_tokens
                        if use.cache_read_input_tokens is not None
                        else self.prompt.cache_read_input_tokens,
                        cache_creation_input_tokens=use.cache_creation_input_tokens
                        if use.cache_creation_input_tokens is not None
                        else self.prompt.cache_creation_input_tokens,
                    )
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = _event_error(data)
        # ping, content_block_start/stop and event types added later: nothing to read

    def _too_large(self, what: str) -> StreamEventTooLargeError:
        return StreamEventTooLargeError(
            f"{what} of the streamed answer passed {self.max_event_bytes} bytes; an event is "
            "a few hundred: the server is misbehaving"
        )

    def result(self, request: ChatRequest, request_id: str | None) -> tuple[ChatResult, bool]:
        """The stream's result, and whether its usage was estimated (the server sent none)."""
        if self.error is not None:
            raise self.error
        if (self._buf.strip() or self._cr) and not self.done:  # a last event, unterminated
            self.feed(b"\n\n")
        if not self.done:
            raise ResponseParseError("the stream ended before message_stop", body="")
        usage = None
        if self.prompt is not None:
            usage = _usage(msgspec.structs.replace(self.prompt, output_tokens=self.output))
        reason = _STOP_REASONS.get(self.finish or "", self.finish)
        return stream_result(
            request, request_id, self.parts, usage, self.model, reason, len(self.parts)
        )


def _event_error(data: bytes) -> APIStatusError:
    """The error an ``error`` event names, as the same error over HTTP would be."""
    _, kind = decode_error(data)
    status = _EVENT_STATUS.get(kind or "", 500)
    return read_error(HTTPResponse(status, {}, data), _STREAM_SITE).error


# --- errors ----------------------------------------------------------------------------------


def _reset_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds until the earliest exhausted limit resets, on the server's own clock (its
    ``date`` header against the RFC 3339 ``-reset`` times): no clock skew between us and it."""
    date = headers.get("date")
    if date is None:
        return None
    try:
        now = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None
    waits = []
    for kind in ("requests", "input-tokens", "output-tokens", "tokens"):
        prefix = f"anthropic-ratelimit-{kind}"
        if headers.get(f"{prefix}-remaining", "").strip() != "0":
            continue
        raw = headers.get(f"{prefix}-reset", "").strip()
        try:
            reset = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        waits.append(max(0.0, reset - now))
    return min(waits) if waits else None


def read_error(response: HTTPResponse, site: CallSite) -> ErrorReport:
    """A non-200 answer as an ``ErrorReport``: its typed error, the wait it asks for, and the
    context window a "prompt is too long" names (see the module)."""
    status = response.status
    message, kind = decode_error(response.body)
    body = response.text()[:2000]
    where = f"{status} from {site.url}"
    kwargs: dict[str, Any] = {
        "status": status,
        "request_id": response.headers.get("request-id"),
        "body": body,
        "code": kind,
    }
    wait = retry_after_seconds(response.headers)
    error: APIStatusError
    window = None
    if status == 429:
        if wait is None:
            wait = _reset_wait(response.headers)
        error = RateLimitError(
            f"{where}: rate limited ({message}). Lower rpm or input_tpm/output_tpm, "
            "max_tokens or max_concurrency, or allow more retry time "
            "(RetryPolicy.max_total_seconds).",
            **kwargs,
        )
    elif status == 401:
        error = auth_error(where, message, site, "ANTHROPIC_API_KEY", kwargs)
    elif status == 403:
        error = forbidden_error(where, message, site, kwargs)
    elif status >= 500 or status in (408, 409):
        error = ServerError(f"{where}: {message or kind or 'server error'}", **kwargs)
    elif 300 <= status < 400:
        error = redirect_error(where, response.headers, kwargs)
    elif status == 400 and _LOW_CREDIT in message.lower():
        error = InsufficientQuotaError(
            f"{where}: out of credit ({message}). Waiting will not help: add credit to the "
            "account or use another API key.",
            **kwargs,
        )
    elif status in (400, 413) and _TOO_LONG.search(message):
        error, window = context_error(where, message, _WINDOW_IN_MESSAGE, kwargs)
    elif status == 404:
        error = BadRequestError(
            f"{where}: {message or 'not found'}. Check the model name ({site.model!r}) and "
            "base_url (Anthropic's API is https://api.anthropic.com).",
            **kwargs,
        )
    else:
        error = BadRequestError(f"{where}: {message or kind or 'bad request'}", **kwargs)
    return ErrorReport(error, wait, window)


# --- the adapter -----------------------------------------------------------------------------


class AnthropicMessages:
    """The Messages adapter (``asynctg.engine.providers.Provider``); immutable.

    ``prompt_cache`` turns the automatic ``cache_control`` breakpoints on (see the module).
    """

    __slots__ = ("prompt_cache",)
    name = "anthropic"
    defaults: Mapping[str, Any] = MappingProxyType({"max_tokens": DEFAULT_MAX_TOKENS})

    def __init__(self, *, prompt_cache: bool = True) -> None:
        self.prompt_cache = prompt_cache

    def url(self, base_url: str) -> str:
        return base_url + ("/messages" if base_url.endswith("/v1") else "/v1/messages")

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = base_headers()
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def body(self, request: ChatRequest, *, stream: bool) -> bytes:
        return _encode(build_body(request, stream=stream, prompt_cache=self.prompt_cache))

    def parse(self, response: HTTPResponse) -> ChatResult:
        return parse_message(response)

    def decoder(self) -> EventParser:
        return EventParser()

    def error(self, response: HTTPResponse, site: CallSite) -> ErrorReport:
        return read_error(response, site)

    def rate_limits(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        return {
            ours: headers[theirs] for theirs, ours in _LIMIT_HEADERS.items() if theirs in headers
        }

    def system(self, base_url: str) -> str:
        """``gen_ai.provider.name``: "anthropic" (the Messages API wherever it is served)."""
        return "anthropic"


#: The adapter with prompt caching on.
ANTHROPIC = AnthropicMessages()
