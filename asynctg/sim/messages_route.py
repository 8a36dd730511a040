"""The simulator's Anthropic Messages route (``POST /v1/messages``): answers, Anthropic's
error shapes and rate-limit headers, and its event stream.

A mixin of ``SimServer`` (``asynctg.sim.server``), which holds the state it reads; the wire
shapes themselves are in ``asynctg.sim.anthropic``.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from typing import Any

import msgspec
from aiohttp import web

from asynctg.sim import anthropic as wire
from asynctg.sim.billing import Prices
from asynctg.sim.prefix_cache import anthropic_min_tokens
from asynctg.sim.state import (
    JSON,
    MALFORMED_BODY,
    PLAIN_503,
    SimState,
    decode,
    encode,
    write_event_stream,
)


class MessagesRoute(SimState):
    """``POST /v1/messages`` and what the batch API reuses of it."""

    def _anthropic_error(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        out = headers if headers is not None else {}
        out["request-id"] = f"req_sim{self._next_id():012x}"
        return self._json(status, wire.error_body(kind, message), out)

    def anthropic_refusal(self, request: web.Request) -> web.Response | None:
        """401 without the right ``x-api-key`` (when the sim has a key), 400 without an
        ``anthropic-version`` header; None when the request may proceed."""
        key = self._config.api_key
        if key is not None:
            given = request.headers.get("x-api-key", "").encode()
            if not hmac.compare_digest(given, key.encode()):
                return self._anthropic_error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._anthropic_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        return None

    def _rfc3339(self, seconds_from_now: float) -> str:
        moment = self._wall() + max(0.0, seconds_from_now)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(moment)))

    def _anthropic_limit_headers(self, headers: dict[str, str]) -> None:
        for name, bucket in self._anthropic_limiter.buckets():
            if bucket is not None:
                prefix = f"anthropic-ratelimit-{name}"
                headers[f"{prefix}-limit"] = str(bucket.limit)
                headers[f"{prefix}-remaining"] = str(bucket.remaining())
                headers[f"{prefix}-reset"] = self._rfc3339(bucket.reset_seconds())

    def anthropic_message(
        self, parsed: wire.MessagesRequest, digest_of: bytes
    ) -> tuple[str, str, str | None, int]:
        """The answer to a Messages request: ``(text, stop_reason, stop_sequence, tokens)``."""
        (choice,), _ = self._answer(parsed.chat, digest_of, 1, None)
        text, reason, stop = wire.finish(
            choice.message.content, parsed.max_tokens, parsed.stop_sequences
        )
        return text, reason, stop, (len(text) + 3) // 4

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        c = self._anthropic
        c.requests += 1
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        try:
            return await self._message(request)
        finally:
            self._anthropic.in_flight -= 1

    async def _message(self, request: web.Request) -> web.StreamResponse:
        cfg = self._config
        c = self._anthropic
        if (refusal := self.anthropic_refusal(request)) is not None:
            if refusal.status == 401:
                c.unauthorized += 1
            else:
                c.bad_request += 1
            return refusal
        body = await request.read()
        try:
            parsed = wire.parse_messages_request(decode(body))
        except (msgspec.DecodeError, wire.AnthropicRequestError) as exc:
            c.bad_request += 1
            return self._anthropic_error(400, "invalid_request_error", str(exc))
        if cfg.record:
            self._requests.append(parsed.chat)
        itoks = parsed.input_tokens
        if cfg.context_window is not None and itoks + parsed.max_tokens > cfg.context_window:
            c.bad_request += 1
            c.context_length_exceeded += 1
            return self._anthropic_error(
                400,
                "invalid_request_error",
                f"prompt is too long: {itoks} tokens + {parsed.max_tokens} max_tokens > "
                f"{cfg.context_window} maximum",
            )
        if cfg.quota_tokens is not None and self._quota_used >= cfg.quota_tokens:
            c.bad_request += 1
            return self._anthropic_error(
                400,
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans "
                "& Billing to upgrade or purchase credits.",
            )
        plain = {k: v for k, v in parsed.chat.items()}
        text, reason, stop, otoks = self.anthropic_message(parsed, encode(plain))

        read = written = 0
        keys: list[bytes] = []
        if cfg.prompt_cache:
            read, written, keys = self._anthropic_cache.anthropic_plan(
                parsed.blocks, anthropic_min_tokens(parsed.model)
            )
        limiter = self._anthropic_limiter
        if not limiter.unlimited:
            which, wait = limiter.admit(itoks - read, parsed.max_tokens)
            if which is not None:
                c.rate_limited += 1
                headers = {"retry-after": str(max(1, math.ceil(wait)))}
                if cfg.rate_limit_headers:
                    self._anthropic_limit_headers(headers)
                return self._anthropic_error(
                    429,
                    "rate_limit_error",
                    f"This request would exceed the rate limit for your organization of "
                    f"{which.replace('-', ' ')} per minute. Please retry after the time in "
                    "the retry-after header.",
                    headers,
                )

        fault: str | None = None
        if cfg.fault_rate and self._fault_rng.random() < cfg.fault_rate:
            fault = self._fault_rng.choice(cfg.faults)
        latency = cfg.latency_model
        delay = 0.0 if latency.is_zero else latency.draw(self._latency_rng)
        if cfg.tokens_per_second and not parsed.stream:
            delay += otoks / cfg.tokens_per_second
        stream_error = parsed.stream and fault in ("500", "529")
        served = fault is None or fault == "slow" or stream_error
        if served:
            if keys:
                self._anthropic_cache.anthropic_commit(read, written, keys)
            self._bill.charge(
                "anthropic",
                "standard",
                Prices.from_value(cfg.anthropic_prices),
                input=itoks - read - written,
                cached=read,
                written=written,
                output=otoks,
            )
            c.ok += 1
            c.prompt_tokens += itoks
            c.completion_tokens += otoks
            self._quota_used += itoks + otoks
        if fault is not None:
            c.faults[fault] = c.faults.get(fault, 0) + 1
            if fault == "slow":
                delay += cfg.slow_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        if not limiter.unlimited:
            limiter.settle(parsed.max_tokens, otoks if served else 0)

        seq = self._next_id()
        headers = {"request-id": f"req_sim{seq:012x}"}
        if cfg.rate_limit_headers and not limiter.unlimited:
            self._anthropic_limit_headers(headers)
        use = wire.usage(itoks - read - written, otoks, read, written)
        message = wire.message_body(f"msg_sim{seq:016x}", parsed.model, text, reason, stop, use)
        if fault in ("500", "502", "504") and not stream_error:
            status = int(fault)
            return self._anthropic_error(status, "api_error", "Internal server error", headers)
        if fault == "529" and not stream_error:
            return self._anthropic_error(529, "overloaded_error", "Overloaded", headers)
        if fault == "503":
            headers["Content-Type"] = "text/plain"
            return web.Response(status=503, body=PLAIN_503, headers=headers)
        if fault == "drop" and not parsed.stream:
            return self._fault_response("drop", request, seq, parsed.model, [], 0, 0, headers)
        if parsed.stream:
            error = None
            if stream_error:
                error = (
                    ("overloaded_error", "Overloaded")
                    if fault == "529"
                    else (
                        "api_error",
                        "Internal server error",
                    )
                )
            return await self._anthropic_stream(request, message, headers, fault, error)
        if fault == "malformed":
            headers["Content-Type"] = JSON
            return web.Response(status=200, body=MALFORMED_BODY, headers=headers)
        if fault == "truncated":
            full = encode(message)
            headers["Content-Type"] = JSON
            return web.Response(status=200, body=full[: len(full) // 2], headers=headers)
        if fault in ("empty_choices", "no_content"):
            message["content"] = []
        return self._json(200, message, headers)

    async def _anthropic_stream(
        self,
        request: web.Request,
        message: dict[str, Any],
        headers: dict[str, str],
        fault: str | None,
        error: tuple[str, str] | None,
    ) -> web.StreamResponse:
        """Anthropic's event stream (see :func:`asynctg.sim.anthropic.stream_events`); faults
        as on the OpenAI path: "malformed" a broken event, "truncated" stops halfway,
        "drop" closes the connection halfway; "500"/"529" end with an ``error`` event."""
        events, deltas = wire.stream_events(message, error=error)
        cut = None
        if fault in ("truncated", "drop"):
            cut = 3 + deltas // 2
        elif fault == "malformed":
            events.insert(3 + deltas // 2, b'event: content_block_delta\ndata: {"type": <html>\n\n')
        gap = 1.0 / self._config.tokens_per_second if self._config.tokens_per_second else 0.0
        return await write_event_stream(
            request,
            headers,
            events if cut is None else events[:cut],
            self._anthropic,
            paced=range(4, 4 + deltas),  # between text deltas
            gap=gap,
            drop=fault == "drop",
        )
