"""What the two adapters share: request headers, the framing of an event stream, the result
of a whole stream, and the errors whose wording does not depend on the provider.

Each adapter keeps what its wire format decides (event syntax, error classification, the
names of its headers); these are the pieces that were written twice the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from asynctg._version import __version__
from asynctg.engine.providers import CallSite
from asynctg.engine.types import ChatRequest, ChatResult, Usage, estimate_tokens
from asynctg.errors import (
    AuthenticationError,
    ContextLengthError,
    PermissionDeniedError,
    RedirectError,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "EventBuffer",
    "auth_error",
    "base_headers",
    "context_error",
    "forbidden_error",
    "redirect_error",
    "stream_result",
]

#: One event (or a whole answer sent unstreamed) past this is a misbehaving server: a chat
#: chunk is a few hundred bytes, a whole long completion a few hundred KiB.
MAX_EVENT_BYTES = 8 * 1024 * 1024


def base_headers() -> dict[str, str]:
    """The headers every request carries, whatever the provider."""
    return {"content-type": "application/json", "user-agent": f"asynctg/{__version__}"}


class EventBuffer:
    """The framing state of a streamed answer read as it arrives: the unfinished event (a
    ``plain`` answer: the body so far), a ``"\\r"`` that may be half of a ``"\\r\\n"`` split
    across blocks, and whether the body is one JSON document instead of an event stream."""

    __slots__ = ("_buf", "_cr", "max_event_bytes", "plain")

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = bytearray()  # the unfinished event (plain: the body so far)
        self._cr = False  # the last block ended with "\r", maybe half of a "\r\n"
        self.max_event_bytes = max_event_bytes
        self.plain: bool | None = None  # None until the body's first byte that is not space

    def _fold(self, block: bytes) -> bytes:
        """``block`` with its line ends made ``"\\n"`` (a trailing ``"\\r"`` held back for
        the next block); the first byte that is not space decides ``plain``."""
        if self._cr:
            block = b"\r" + block
            self._cr = False
        if b"\r" in block:
            if block.endswith(b"\r"):  # its "\n" may come in the next block
                block = block[:-1]
                self._cr = True
            block = block.replace(b"\r\n", b"\n")
        if self.plain is None:
            first = block.lstrip()[:1]
            if first:
                self.plain = first == b"{"
        return block

    def body(self) -> bytes:
        """The whole body of a ``plain`` answer."""
        return bytes(self._buf)


def stream_result(
    request: ChatRequest,
    request_id: str | None,
    parts: list[str],
    usage: Usage | None,
    model: str,
    reason: str | None,
    pieces: int,
) -> tuple[ChatResult, bool]:
    """A whole stream's ``ChatResult`` and whether its usage was estimated: with no usage
    reported (or all zero), the prompt is estimated and the reply counted as ``pieces``."""
    estimated = usage is None or usage.total_tokens == 0
    if estimated:
        usage = Usage(prompt_tokens=estimate_tokens(request.messages), completion_tokens=pieces)
    assert usage is not None
    result = ChatResult(
        texts=("".join(parts),),
        usage=usage,
        model=model,
        finish_reasons=(reason,),
        request_id=request_id,
    )
    return result, estimated


def auth_error(
    where: str, message: str, site: CallSite, env: str, kwargs: dict[str, Any]
) -> AuthenticationError:
    """A 401, with a hint naming the key's environment variable ``env``."""
    hint = (
        f"check the key passed as api_key= or in {env}"
        if site.has_key
        else f"pass api_key=... to get_engine() or set {env}"
    )
    return AuthenticationError(f"{where}: {message or 'unauthorized'}; {hint}.", **kwargs)


def forbidden_error(
    where: str, message: str, site: CallSite, kwargs: dict[str, Any]
) -> PermissionDeniedError:
    """A 403: the key may not use the model."""
    return PermissionDeniedError(
        f"{where}: {message or 'forbidden'}; this key may not use model {site.model!r}.",
        **kwargs,
    )


def redirect_error(where: str, headers: Mapping[str, str], kwargs: dict[str, Any]) -> RedirectError:
    """A 3xx: never followed (it would send the prompt elsewhere)."""
    target = urlsplit(headers.get("location", ""))
    # the origin only: a Location's path or query may carry anything
    origin = f"{target.scheme}://{target.netloc}" if target.netloc else "the same server"
    return RedirectError(
        f"{where}: the endpoint redirects API calls (to {origin}); asynctg does not follow "
        "redirects, which would send the prompt elsewhere. Set base_url to the final address.",
        **kwargs,
    )


def context_error(
    where: str, message: str, window_in_message: re.Pattern[str], kwargs: dict[str, Any]
) -> tuple[ContextLengthError, int | None]:
    """A prompt past the context window, and the window the message names (the first group
    of ``window_in_message``; at least 16 tokens, else None)."""
    window = None
    named = window_in_message.search(message)
    if named is not None and int(named.group(1)) >= 16:
        window = int(named.group(1))
    error = ContextLengthError(
        f"{where}: the prompt does not fit the model's context window ({message}). "
        "Shorten the inputs or lower max_tokens.",
        **kwargs,
    )
    return error, window
