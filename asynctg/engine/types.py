"""Wire types: the chat request we send and the parts of the answer we read.

Everything here is a msgspec Struct: one module-level encoder/decoder each, and the response
decoder reads only the fields the engine uses (text, finish reason, usage, model), so a long
or exotic provider response costs no more than a short one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from asynctg.errors import ConfigError

__all__ = [
    "CONTEXT_FRACTION",
    "ChatRequest",
    "ChatResult",
    "Usage",
    "WireUsage",
    "endpoint_key",
    "estimate_tokens",
    "image_part",
    "request_key",
    "user_turn",
    "validate_messages",
]

_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})
_IMAGE_TOKENS = 85  # a low-detail image, as OpenAI prices it; an estimate only
#: Share of the context window a request the runtime builds or cuts is planned to use: estimates
#: are about 4 characters a token, and real tokenizers differ by a few percent either way.
CONTEXT_FRACTION = 0.85


class ChatRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The body of ``POST /chat/completions``, exactly as sent.

    Build one with ``ChatEngine.request(...)`` (which validates) or directly. ``extra`` holds
    provider-specific parameters, merged into the body. ``prompt_cache_key`` is OpenAI's
    prompt-cache routing hint (``asynctg.engine.prompt_cache``): sent, but not part of
    ``request_key`` (it does not change the answer).
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | tuple[str, ...] | None = None
    n: int | None = None
    response_format: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None
    prompt_cache_key: str | None = None

    def body(self) -> bytes:
        """The JSON body to send."""
        if self.extra is None:
            return _encode(self)
        merged = msgspec.to_builtins(msgspec.structs.replace(self, extra=None))
        merged.update(self.extra)
        return _encode(merged)

    def text(self) -> str:
        """All text in the messages, in order (for token estimates and inspection)."""
        return "\n".join(_iter_text(self.messages))


class Usage(msgspec.Struct, frozen=True):
    """Tokens the provider reports for one completion.

    ``prompt_tokens`` is always every prompt token, cached reads and cache writes included
    (each adapter normalises its provider's usage to that).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to the provider's cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one chat call returns: the completion text(s), usage and provenance."""

    texts: tuple[str, ...]
    usage: Usage
    model: str = ""
    finish_reasons: tuple[str | None, ...] = ()
    request_id: str | None = None
    cached: bool = False
    #: the tier the provider says it served the call at ("flex", "default", ...; None: not said)
    service_tier: str | None = None

    @property
    def text(self) -> str:
        """The first (usually the only) completion."""
        return self.texts[0]


# --- decoding: only what we read -------------------------------------------------------------


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0
    # not sent by OpenAI (whose cache writes cost the input price); some compatible servers do
    cache_write_tokens: int | None = 0


class WireUsage(msgspec.Struct):
    """``usage`` as OpenAI-compatible servers send it (cached tokens nested in
    ``prompt_tokens_details``); ``normal()`` is the engine's ``Usage``."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None

    def normal(self) -> Usage:
        """The engine's ``Usage``: cached reads and writes are part of ``prompt_tokens`` on
        the wire already; a count past the prompt is read as the whole prompt."""
        prompt = self.prompt_tokens
        details = self.prompt_tokens_details
        if details is None or prompt <= 0:
            return Usage(prompt, self.completion_tokens)
        cached = min(max(details.cached_tokens or 0, 0), prompt)
        written = min(max(details.cache_write_tokens or 0, 0), prompt - cached)
        return Usage(prompt, self.completion_tokens, cached, written)


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    usage: WireUsage | None = None
    model: str = ""
    service_tier: str | None = None


class _ErrorDetail(msgspec.Struct):
    message: str = ""
    code: str | int | None = None
    type: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | str | None = None


_encode = msgspec.json.Encoder().encode
_sorted_encode = msgspec.json.Encoder(order="sorted").encode
_decode_completion = msgspec.json.Decoder(_Completion).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode


def decode_completion(body: bytes) -> _Completion:
    """Decode a completion body; raises msgspec errors the client turns into ResponseParseError."""
    return _decode_completion(body)


def decode_error(body: bytes) -> tuple[str, str | None]:
    """Best-effort (message, code) from an error body, JSON or plain text."""
    try:
        parsed = _decode_error(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return body.decode("utf-8", "replace").strip()[:500], None
    err = parsed.error
    if isinstance(err, _ErrorDetail):
        code = err.code if isinstance(err.code, str) else err.type
        return err.message, code
    if isinstance(err, str):
        return err, None
    return body.decode("utf-8", "replace").strip()[:500], None


def request_key(request: ChatRequest, *, endpoint: str | None = None) -> str:
    """A stable hash of everything that changes the answer (model, messages, every parameter),
    and of the server that gives it when ``endpoint`` (an ``endpoint_key``) is given.

    The encoding sorts dict keys and struct fields, so equal requests built in any order hash
    the same, across processes and runs. Without ``endpoint`` the key is the request's alone
    (a run's journal: see ``ChatEngine.cache_endpoint``).
    """
    if request.prompt_cache_key is not None:  # a routing hint: the same answer without it
        request = msgspec.structs.replace(request, prompt_cache_key=None)
    digest = hashlib.sha256()
    if endpoint is not None:
        digest.update(endpoint.encode() + b"\n")  # no request encoding starts with a URL
    digest.update(_sorted_encode(request))
    return digest.hexdigest()


def endpoint_key(base_url: str) -> str:
    """One spelling of a base URL, for keys: scheme and host lower-cased, the port always
    written, no trailing slash, no credentials, query or fragment.

    >>> endpoint_key("HTTP://LocalHost/v1/")
    'http://localhost:80/v1'
    """
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


# --- validation and helpers ------------------------------------------------------------------

_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG, GIF or WebP bytes; None if the bytes are none of those."""
    for magic, mime in _IMAGE_MAGIC:
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_part(data: bytes, *, detail: str | None = None) -> dict[str, Any]:
    """A chat content part carrying an image as a base64 data URL.

    Raises ``ConfigError`` if the bytes are not a PNG, JPEG, GIF or WebP image.

    >>> image_part(b"GIF89a" + bytes(10))["image_url"]["url"][:22]
    'data:image/gif;base64,'
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ConfigError(f"an image must be bytes, got {type(data).__name__}")
    data = bytes(data)
    mime = sniff_image(data)
    if mime is None:
        raise ConfigError(f"image bytes are not PNG, JPEG, GIF or WebP (starts with {data[:11]!r})")
    url: dict[str, Any] = {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}
    if detail is not None:
        url["detail"] = detail
    return {"type": "image_url", "image_url": url}


def _check_image_url(url: Any, where: str) -> None:
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: image_url.url must be a non-empty string")
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise ConfigError(f"{where}: a data URL image must be base64-encoded")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"{where}: the image data URL is not valid base64") from exc
        if sniff_image(raw) is None:
            raise ConfigError(f"{where}: the data URL does not hold a PNG, JPEG, GIF or WebP image")
    elif not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: image URL must be http(s):// or a data: URL, got {url[:40]!r}")


def _normalize_content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if isinstance(content, bytes | bytearray | memoryview):
        return [image_part(bytes(content))]
    if isinstance(content, Sequence):
        parts: list[Any] = []
        for j, part in enumerate(content):
            here = f"{where}.content[{j}]"
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif isinstance(part, bytes | bytearray | memoryview):
                parts.append(image_part(bytes(part)))
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise ConfigError(f"{here}: a text part needs a string 'text'")
                elif kind == "image_url":
                    image = part.get("image_url")
                    if not isinstance(image, Mapping):
                        raise ConfigError(f"{here}: an image_url part needs an 'image_url' object")
                    _check_image_url(image.get("url"), here)
                else:
                    raise ConfigError(f"{here}: unknown content part type {kind!r}")
                parts.append(part)
            else:
                raise ConfigError(
                    f"{here}: a content part must be a str, image bytes or a dict, "
                    f"got {type(part).__name__}"
                )
        return parts
    raise ConfigError(
        f"{where}.content must be a string or a list of parts, got {type(content).__name__}"
    )


def validate_messages(messages: Any) -> tuple[Mapping[str, Any], ...]:
    """Check a messages list and return it as a tuple, images turned into data-URL parts.

    Each item must be a mapping with a known ``role`` and a ``content`` that is a string or a
    list of parts (text, ``image_url``, or raw image bytes).
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Iterable):
        raise ConfigError(
            "messages must be a list of {'role': ..., 'content': ...} items, "
            f"got {type(messages).__name__}"
        )
    out: list[Mapping[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise ConfigError(
                f"{where} must be a dict with 'role' and 'content', got {type(msg).__name__}"
            )
        role = msg.get("role")
        if role not in _ROLES:
            raise ConfigError(f"{where}.role must be one of {sorted(_ROLES)}, got {role!r}")
        if "content" not in msg:
            raise ConfigError(f"{where} has no 'content'")
        content = _normalize_content(msg["content"], where)
        out.append(msg if content is msg["content"] else {**msg, "content": content})
    if not out:
        raise ConfigError("messages is empty: a chat request needs at least one message")
    return tuple(out)


def _iter_text(messages: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list | tuple):
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "text":
                    yield str(part.get("text", ""))


def estimate_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """A cheap prompt-token estimate (about 4 characters a token) used before sending.

    The budget is corrected with the usage the provider reports, so this needs to be close,
    not exact.
    """
    total = 0
    for msg in messages:
        total += 4
        content = msg.get("content")
        if isinstance(content, str):
            total += (len(content) + 3) // 4
        elif isinstance(content, list | tuple):
            for part in content:
                if isinstance(part, Mapping):
                    if part.get("type") == "text":
                        total += (len(str(part.get("text", ""))) + 3) // 4
                    else:
                        total += _IMAGE_TOKENS
    return total + 3


def user_turn(
    content: str | Sequence[Any], system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """The messages of one user turn (text, or a list of text and image parts), after the
    system prompt if one is given: what ``generate`` sends (an engine's or a job's)."""
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    if isinstance(content, str):
        messages.append({"role": "user", "content": content})
    else:
        messages.append({"role": "user", "content": list(content)})
    return messages
