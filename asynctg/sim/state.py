"""What the simulator's route mixins share with ``SimServer``: the JSON codec and the canned
fault bodies, the counters, the client-error exception, and (for the type checker only) the
state and helpers ``SimServer`` provides.

``SimServer`` (``asynctg.sim.server``) owns the state and the shared helpers; its wire-format
routes live in ``chat_route`` (OpenAI) and ``messages_route`` (Anthropic) as mixins of it.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

if TYPE_CHECKING:
    from asynctg.sim.billing import Bill
    from asynctg.sim.buckets import InputOutputLimiter, RateLimiter
    from asynctg.sim.chat_route import Choice
    from asynctg.sim.config import SimConfig
    from asynctg.sim.prefix_cache import PrefixCache

__all__ = [
    "JSON",
    "MALFORMED_BODY",
    "PLAIN_503",
    "BadRequest",
    "Counters",
    "SimState",
    "decode",
    "encode",
    "write_event_stream",
]

JSON = "application/json"
decode = msgspec.json.decode
encode = msgspec.json.Encoder().encode
#: a 200 whose body is not JSON, as a failing proxy sends (the "malformed" fault)
MALFORMED_BODY = b'{"id": "chatcmpl-sim", "object": "chat.completion", <html>upstream error</html>'
#: proxies in front of real providers answer 503 in plain text, not the provider's JSON
PLAIN_503 = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


class Counters:
    """Mutable counters; plain attributes so the hot path increments them cheaply."""

    __slots__ = (
        "bad_request",
        "completion_tokens",
        "context_length_exceeded",
        "faults",
        "flex_unavailable",
        "in_flight",
        "max_in_flight",
        "max_prompt_tokens",
        "ok",
        "prompt_tokens",
        "quota_exceeded",
        "rate_limited",
        "rate_limited_requests",
        "rate_limited_tokens",
        "requests",
        "streams",
        "unauthorized",
    )

    def __init__(self, in_flight: int = 0) -> None:
        self.requests = 0
        self.streams = 0  # ok answers sent as event streams
        self.ok = 0
        self.rate_limited = 0
        self.rate_limited_requests = 0
        self.rate_limited_tokens = 0
        self.quota_exceeded = 0
        self.bad_request = 0
        self.context_length_exceeded = 0
        self.flex_unavailable = 0
        self.unauthorized = 0
        self.faults: dict[str, int] = {}
        self.prompt_tokens = 0
        self.max_prompt_tokens = 0
        self.completion_tokens = 0
        # requests still being served survive a reset, so the gauge never goes negative
        self.in_flight = in_flight
        self.max_in_flight = in_flight


class BadRequest(Exception):
    """A client error found while reading the body; becomes a 400 answer."""


async def write_event_stream(
    request: web.Request,
    headers: dict[str, str],
    events: list[bytes],
    counters: Counters,
    *,
    paced: range,
    gap: float,
    drop: bool,
) -> web.StreamResponse:
    """Send ``events`` as a server-sent event stream (counted in ``counters.streams``): the
    chunks whose index is in ``paced`` wait ``gap`` seconds first (tokens_per_second); ``drop``
    closes the connection after the last one instead of ending the stream."""
    response = web.StreamResponse(
        status=200,
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
    )
    await response.prepare(request)
    counters.streams += 1
    if gap == 0.0:
        await response.write(b"".join(events))
    else:
        for i, chunk in enumerate(events):
            if i in paced:
                await asyncio.sleep(gap)
            await response.write(chunk)
    if drop:
        transport = request.transport
        if transport is not None:
            transport.close()
        return response
    await response.write_eof()
    return response


class SimState:
    """Empty at run time: ``SimServer`` provides everything declared here."""

    if TYPE_CHECKING:
        _config: SimConfig
        _counters: Counters
        _anthropic: Counters
        _quota_used: int
        _seq: int
        _requests: list[Any]
        _bill: Bill
        _limiter: RateLimiter
        _anthropic_limiter: InputOutputLimiter
        _openai_cache: PrefixCache
        _anthropic_cache: PrefixCache
        _fault_rng: random.Random
        _flex_rng: random.Random
        _latency_rng: random.Random
        _answer_rng: random.Random
        _answer_hash: Any

        def _now(self) -> float: ...
        def _wall(self) -> float: ...
        def _tick(self) -> list[int]: ...
        def _next_id(self) -> int: ...
        @staticmethod
        def _json(status: int, payload: Any, headers: dict[str, str]) -> web.Response: ...
        def _error(
            self,
            status: int,
            message: str,
            kind: str,
            code: str | None,
            headers: dict[str, str] | None = None,
            param: str | None = None,
        ) -> web.Response: ...
        def _bad_request(self, message: str, code: str | None = None) -> web.Response: ...
        def _limit_headers(self, headers: dict[str, str]) -> None: ...
        def _rate_limited(
            self, which: str, wait: float, tokens: int, model: str
        ) -> web.Response: ...
        def _parse(self, body: bytes) -> tuple[dict[str, Any], int, int, int | None]: ...
        def _authorized(self, request: web.Request) -> bool: ...
        def _unauthorized(self) -> web.Response: ...
        def _answer(
            self, req: dict[str, Any], digest_of: bytes, n: int, max_tokens: int | None
        ) -> tuple[list[Choice], int]: ...
        def _fault_response(
            self,
            fault: str,
            request: web.Request,
            seq: int,
            model: str,
            choices: list[Choice],
            ptoks: int,
            ctoks: int,
            headers: dict[str, str],
        ) -> web.StreamResponse: ...
