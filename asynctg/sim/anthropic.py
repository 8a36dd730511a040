"""Anthropic's Messages API wire format, as the simulator reads and writes it.

Pure functions: validate a ``POST /v1/messages`` body into a :class:`MessagesRequest` (with the
OpenAI-shaped view :mod:`asynctg.sim.answers` answers, and the blocks the prefix cache hashes),
and build the reply, the stream events and the error bodies in Anthropic's shapes. The server
(:mod:`asynctg.sim.server`) adds budgets, faults, latency, the cache and the bill.

Token estimate: as on the OpenAI path (about 4 characters a token, 4 tokens of framing per
message, a fixed ``IMAGE_TOKENS`` per image); the system prompt has no framing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from asynctg.sim.prefix_cache import CacheBlock
from asynctg.sim.tokens import IMAGE_TOKENS, MESSAGE_OVERHEAD_TOKENS

__all__ = [
    "MAX_CACHE_BREAKPOINTS",
    "MAX_MESSAGES",
    "MessagesRequest",
    "error_body",
    "parse_messages_request",
    "stream_events",
]

MAX_CACHE_BREAKPOINTS = 4
#: the provider's own cap on messages per request; blocks per request are capped likewise
MAX_MESSAGES = 100_000
MAX_BLOCKS = 200_000
MAX_STOP_SEQUENCES = 1_000

_encode = msgspec.json.Encoder().encode


class AnthropicRequestError(Exception):
    """A client error found in a Messages body; becomes a 400 ``invalid_request_error``.

    Internal to the simulator: it never leaves the request handler.
    """


@dataclass(slots=True)
class MessagesRequest:
    """A validated Messages request."""

    model: str
    max_tokens: int
    stream: bool
    stop_sequences: list[str]
    input_tokens: int
    #: the same request in chat-completions shape, for the answer rules
    chat: dict[str, Any]
    blocks: list[CacheBlock] = field(default_factory=list)


def _text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _cache_control(where: str, block: dict[str, Any]) -> bool:
    control = block.get("cache_control")
    if control is None:
        return False
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise AnthropicRequestError(f"{where}.cache_control: expected {{'type': 'ephemeral'}}")
    ttl = control.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise AnthropicRequestError(f"{where}.cache_control.ttl: expected '5m' or '1h'")
    return True


def _block(where: str, block: Any) -> tuple[str, bytes, int, bool]:
    """(text for the answer rules, canonical bytes, tokens, cache breakpoint) of one block."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise AnthropicRequestError(f"{where}: expected an object with a 'type'")
    kind = block["type"]
    mark = _cache_control(where, block)
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise AnthropicRequestError(f"{where}.text: Field required")
        return text, b"t" + text.encode("utf-8", "surrogatepass"), _text_tokens(text), mark
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
            raise AnthropicRequestError(
                f"{where}.source: expected a base64 or url image source object"
            )
        data = source.get("data") if source["type"] == "base64" else source.get("url")
        if not isinstance(data, str):
            raise AnthropicRequestError(f"{where}.source: the image data must be a string")
        digest = hashlib.blake2b(data.encode(), digest_size=16).digest()
        return "", b"i" + digest, IMAGE_TOKENS, mark
    # documents, tool results and the like: accepted, framed, not counted
    return "", b"o" + kind.encode(), 0, mark


def parse_messages_request(req: Any) -> MessagesRequest:
    """Validate a decoded ``POST /v1/messages`` body (:class:`AnthropicRequestError` if bad)."""
    if not isinstance(req, dict):
        raise AnthropicRequestError("The request body must be a JSON object.")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise AnthropicRequestError("model: Field required")
    max_tokens = req.get("max_tokens")
    if max_tokens is None:
        raise AnthropicRequestError("max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise AnthropicRequestError("max_tokens: Input should be a positive integer")
    temperature = req.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 1
    ):
        raise AnthropicRequestError("temperature: Input should be a number from 0 to 1")
    stops = req.get("stop_sequences") or []
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise AnthropicRequestError("stop_sequences: expected a list of non-empty strings")
    stream = req.get("stream", False)
    if not isinstance(stream, bool):
        raise AnthropicRequestError("stream: Input should be a valid boolean")

    blocks: list[CacheBlock] = []
    chat_messages: list[dict[str, Any]] = []
    tokens = 0

    system = req.get("system")
    if system is not None:
        system_parts = [{"type": "text", "text": system}] if isinstance(system, str) else system
        if not isinstance(system_parts, list):
            raise AnthropicRequestError("system: expected a string or a list of text blocks")
        if len(system_parts) > MAX_BLOCKS:
            raise AnthropicRequestError(f"system: at most {MAX_BLOCKS} blocks")
        texts = []
        for j, part in enumerate(system_parts):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise AnthropicRequestError(f"system.{j}: expected a text block")
            text, data, n, mark = _block(f"system.{j}", part)
            texts.append(text)
            blocks.append(CacheBlock(b"s" + data, n, mark))
            tokens += n
        chat_messages.append({"role": "system", "content": "\n".join(texts)})

    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise AnthropicRequestError("messages: Field required (a non-empty list)")
    if len(messages) > MAX_MESSAGES:
        raise AnthropicRequestError(f"messages: at most {MAX_MESSAGES} messages per request")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise AnthropicRequestError(f"messages.{i}: expected an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise AnthropicRequestError(f"messages.{i}.role: expected 'user' or 'assistant'")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise AnthropicRequestError(f"messages.{i}.content: expected a string or a list")
        if len(blocks) + len(parts) > MAX_BLOCKS:
            raise AnthropicRequestError(f"messages: at most {MAX_BLOCKS} content blocks in all")
        texts = []
        # the message's framing tokens ride on its first block, so prefixes count them
        framing = MESSAGE_OVERHEAD_TOKENS
        tokens += framing
        role_tag = b"u" if role == "user" else b"a"
        for j, part in enumerate(parts):
            text, data, n, mark = _block(f"messages.{i}.content.{j}", part)
            if text:
                texts.append(text)
            blocks.append(CacheBlock(role_tag + data, n + framing, mark))
            framing = 0
            tokens += n
        if not parts:  # an empty message still has its framing
            blocks.append(CacheBlock(role_tag, framing, False))
        chat_messages.append({"role": role, "content": "\n".join(texts)})

    marks = sum(1 for b in blocks if b.breakpoint)
    if marks > MAX_CACHE_BREAKPOINTS:
        raise AnthropicRequestError(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {marks}."
        )
    chat: dict[str, Any] = {"model": model, "messages": chat_messages, "max_tokens": max_tokens}
    if temperature is not None:
        chat["temperature"] = temperature
    if stops:
        chat["stop"] = stops
    return MessagesRequest(
        model=model,
        max_tokens=max_tokens,
        stream=stream,
        stop_sequences=list(stops),
        input_tokens=tokens,
        chat=chat,
        blocks=blocks,
    )


def finish(text: str, max_tokens: int, stops: Sequence[str]) -> tuple[str, str, str | None]:
    """Cut an answer at the first stop sequence or at ``max_tokens``:
    ``(text, stop_reason, stop_sequence)``."""
    first: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (first is None or at < first[0]):
            first = (at, stop)
    if first is not None and first[0] < max_tokens * 4:
        return text[: first[0]], "stop_sequence", first[1]
    if len(text) > max_tokens * 4:
        return text[: max_tokens * 4], "max_tokens", None
    return text, "end_turn", None


def usage(input_tokens: int, output_tokens: int, read: int, written: int) -> dict[str, int]:
    """Anthropic's usage object: ``input_tokens`` excludes cache reads and writes."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens,
    }


def message_body(
    ident: str,
    model: str,
    text: str,
    stop_reason: str,
    stop_sequence: str | None,
    use: dict[str, int],
) -> dict[str, Any]:
    """A complete Messages response."""
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": use,
    }


def error_body(kind: str, message: str) -> dict[str, Any]:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(payload) + b"\n\n"


def stream_events(
    message: dict[str, Any], *, error: tuple[str, str] | None = None
) -> tuple[list[bytes], int]:
    """The server-sent events of a streamed ``message`` (a complete response body), and how
    many of them are text deltas.

    ``message_start`` (no content, one output token so far), ``content_block_start``, ``ping``,
    one ``content_block_delta`` of type ``text_delta`` per piece of about one token,
    ``content_block_stop``, ``message_delta`` (stop reason and the final output tokens),
    ``message_stop``. With ``error=(type, message)`` the stream breaks halfway through the
    deltas with an ``error`` event instead, as a provider does when it fails mid-stream.
    """
    text = message["content"][0]["text"] if message["content"] else ""
    use = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**use, "output_tokens": 1}
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    events = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _event("ping", {"type": "ping"}),
    ]
    deltas = [
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in pieces
    ]
    if error is not None:
        half = deltas[: len(deltas) // 2]
        return [*events, *half, _event("error", error_body(*error))], len(half)
    events += deltas
    events += [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                },
                "usage": {"output_tokens": use["output_tokens"]},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]
    return events, len(deltas)
