"""The simulator's OpenAI chat-completions route: the answer, its faults, its stream.

A mixin of ``SimServer`` (``asynctg.sim.server``), which holds the state it reads: kept apart
so each wire format of the simulator is one module.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import msgspec
from aiohttp import web

from asynctg.sim.answers import default_answer
from asynctg.sim.billing import Prices
from asynctg.sim.prefix_cache import OPENAI_MIN_CACHED_TOKENS
from asynctg.sim.state import (
    JSON,
    MALFORMED_BODY,
    PLAIN_503,
    BadRequest,
    SimState,
    encode,
    write_event_stream,
)
from asynctg.sim.tokens import message_text

_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
#: faults a stream shows in its body (the others answer before it starts)
_STREAM_FAULTS = frozenset({"slow", "malformed", "truncated", "drop"})
_SERVER_ERRORS: dict[str, tuple[int, str]] = {
    "500": (500, "The server had an error while processing your request. Sorry about that!"),
    "502": (502, "Bad gateway."),
    "504": (504, "Gateway timeout."),
}


_SERVICE_TIERS = ("auto", "default", "flex", "priority")
#: request fields that do not change the answer (its seed is the rest of the request): a
#: stream, the cache's routing key and the service tier change how and where an answer is
#: computed, its price and its speed, never what it is
NOT_IN_ANSWER = frozenset({"stream", "stream_options", "prompt_cache_key", "service_tier"})
# the provider documents flex refusals as "429 Resource Unavailable"; not billed
_FLEX_MESSAGE = (
    "Resource unavailable: flex processing has no capacity for this request right now. "
    "Retry later, or send it without service_tier 'flex'. You were not charged."
)


def canonical_prompt(messages: list[Any]) -> str:
    """The text the OpenAI prefix cache cuts into blocks: roles and contents in order (image
    parts by a hash of their URL), so equal prompts give equal text."""
    parts: list[str] = []
    for message in messages:
        parts.append(f"\x00{message.get('role')}\x01")
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    url = str(part.get("image_url"))
                    parts.append(f"\x02{hashlib.blake2b(url.encode(), digest_size=8).hexdigest()}")
        parts.append(message_text(content))
    return "".join(parts)


class WireMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str


class Choice(msgspec.Struct, kw_only=True):
    index: int
    message: WireMessage
    logprobs: None = None
    finish_reason: str


class PromptDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class WireUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptDetails = msgspec.field(default_factory=PromptDetails)


class Completion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: WireUsage
    system_fingerprint: str = "fp_sim"
    service_tier: str = "default"


class ChatRoute(SimState):
    """``POST /v1/chat/completions``: see ``asynctg.sim.server`` for the order of checks."""

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        cfg = self._config
        if not self._authorized(request):
            self._counters.unauthorized += 1
            return self._unauthorized()
        body = await request.read()
        try:
            req, ptoks, n, max_tokens = self._parse(body)
        except BadRequest as exc:
            return self._bad_request(str(exc))
        if cfg.record:
            self._requests.append(req)
        model = req.get("model")
        if not isinstance(model, str) or not model:
            model = cfg.model_name
        if cfg.context_window is not None and ptoks > cfg.context_window:
            self._counters.context_length_exceeded += 1
            return self._bad_request(
                f"This model's maximum context length is {cfg.context_window} tokens. However, "
                f"your messages resulted in {ptoks} tokens. Please reduce the length of the "
                "messages.",
                "context_length_exceeded",
            )
        if cfg.quota_tokens is not None and self._quota_used >= cfg.quota_tokens:
            self._counters.quota_exceeded += 1
            return self._error(429, _QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota")
        tier = req.get("service_tier")
        if tier is not None and tier not in _SERVICE_TIERS:
            return self._bad_request(
                f"Invalid 'service_tier': expected one of {', '.join(_SERVICE_TIERS)}."
            )
        flex = tier == "flex"
        if (
            flex
            and cfg.flex_unavailable_rate
            and (self._flex_rng.random() < cfg.flex_unavailable_rate)
        ):
            # flex capacity ran out: refused at once, nothing charged or billed
            self._counters.flex_unavailable += 1
            return self._error(429, _FLEX_MESSAGE, "resource_unavailable", "resource_unavailable")

        # The answer is computed before admission: the tokens bucket is charged with the whole
        # request (prompt + completion), as providers that know max_tokens up front do.
        if req.get("stream") or any(k in req for k in NOT_IN_ANSWER if k != "stream"):
            # the same request without them gets the same answer (see NOT_IN_ANSWER); a
            # plain "stream": false keeps its old answer
            plain = {k: v for k, v in req.items() if k not in NOT_IN_ANSWER}
            choices, ctoks = self._answer(req, encode(plain), n, max_tokens)
        else:
            choices, ctoks = self._answer(req, body, n, max_tokens)
        total = ptoks + ctoks

        limiter = self._limiter
        if not limiter.unlimited:
            which, wait = limiter.admit(total)
            if which is not None:
                return self._rate_limited(which, wait, total, model)

        fault: str | None = None
        if cfg.fault_rate and self._fault_rng.random() < cfg.fault_rate:
            fault = self._fault_rng.choice(cfg.faults)
        latency = cfg.latency_model
        delay = 0.0 if latency.is_zero else latency.draw(self._latency_rng)
        stream = bool(req.get("stream"))
        if cfg.tokens_per_second and not stream:  # a stream spaces its chunks instead
            delay += ctoks / cfg.tokens_per_second
        if flex:
            delay *= cfg.flex_latency_factor

        c = self._counters
        cached = 0
        if fault is None or fault == "slow":
            if cfg.prompt_cache and ptoks >= OPENAI_MIN_CACHED_TOKENS:
                cached = self._openai_cached(req, ptoks)
            self._bill.charge(
                "openai",
                "flex" if flex else "standard",
                Prices.from_value(cfg.openai_prices),
                input=ptoks - cached,
                cached=cached,
                output=ctoks,
            )
            c.ok += 1
            c.prompt_tokens += ptoks
            c.max_prompt_tokens = max(c.max_prompt_tokens, ptoks)
            c.completion_tokens += ctoks
            self._quota_used += total
            row = self._tick()
            row[0] += 1
            row[1] += total
        if fault is not None:
            c.faults[fault] = c.faults.get(fault, 0) + 1
            if fault == "slow":
                delay += cfg.slow_seconds
        if delay > 0:
            await asyncio.sleep(delay)

        seq = self._next_id()
        headers = {"x-request-id": f"req_sim{seq:012x}"}
        if cfg.rate_limit_headers and not limiter.unlimited:
            self._limit_headers(headers)
        if stream and (fault is None or fault in _STREAM_FAULTS):
            options = req.get("stream_options")
            usage = None
            if isinstance(options, dict) and options.get("include_usage"):
                usage = WireUsage(
                    prompt_tokens=ptoks,
                    completion_tokens=ctoks,
                    total_tokens=total,
                    prompt_tokens_details=PromptDetails(cached_tokens=cached),
                )
            return await self._stream(request, seq, model, choices[0], usage, headers, fault)
        if fault is None or fault == "slow":
            completion = Completion(
                id=f"chatcmpl-sim{seq:012x}",
                created=int(time.time()),
                model=model,
                choices=choices,
                usage=WireUsage(
                    prompt_tokens=ptoks,
                    completion_tokens=ctoks,
                    total_tokens=total,
                    prompt_tokens_details=PromptDetails(cached_tokens=cached),
                ),
                service_tier="flex" if flex else "default",
            )
            return self._json(200, completion, headers)
        return self._fault_response(fault, request, seq, model, choices, ptoks, ctoks, headers)

    def _answer(
        self, req: dict[str, Any], digest_of: bytes, n: int, max_tokens: int | None
    ) -> tuple[list[Choice], int]:
        """The ``n`` choices for a chat request and their completion tokens; the answer is
        seeded from the seed and ``digest_of`` (the request's bytes), so it is repeatable."""
        cfg = self._config
        rng = self._answer_rng
        digest = self._answer_hash.copy()
        digest.update(digest_of)
        rng.seed(int.from_bytes(digest.digest(), "big"))
        limit_chars = max_tokens * 4 if max_tokens is not None else None
        responder = cfg.responder
        choices: list[Choice] = []
        ctoks = 0
        for index in range(n):
            text = responder(req) if responder is not None else None
            if text is None:
                text = default_answer(req, rng, feedback_tokens=cfg.feedback_tokens)
            finish = "stop"
            if limit_chars is not None and len(text) > limit_chars:
                text = text[:limit_chars]
                finish = "length"
            ctoks += (len(text) + 3) // 4
            message = WireMessage(content=text)
            choices.append(Choice(index=index, message=message, finish_reason=finish))
        return choices, ctoks

    def _openai_cached(self, req: dict[str, Any], ptoks: int) -> int:
        """Cached prompt tokens of a served chat request; remembers its prefix blocks."""
        cache = self._openai_cache
        key = req.get("prompt_cache_key")
        if cache.shards == 1:
            shard = 0
        elif isinstance(key, str) and key:
            shard = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest()) % (
                cache.shards
            )
        else:
            shard = self._seq % cache.shards
        keys = cache.openai_keys(canonical_prompt(req["messages"]), shard=shard)
        cached = cache.openai_lookup(keys, ptoks)
        cache.openai_commit(keys, cached)
        return cached

    async def _stream(
        self,
        request: web.Request,
        seq: int,
        model: str,
        choice: Choice,
        usage: WireUsage | None,
        headers: dict[str, str],
        fault: str | None,
    ) -> web.StreamResponse:
        """Server-sent events in OpenAI's chunk format: the answer in pieces of about one
        token (4 characters), ``1 / tokens_per_second`` apart when that is set (the first after
        the latency already waited: the time to first token), the usage chunk when asked for,
        then ``[DONE]``. Faults: "malformed" sends a broken chunk, "truncated" stops halfway
        without the last chunk, "drop" closes the connection halfway."""
        ident = f"chatcmpl-sim{seq:012x}"
        created = int(time.time())
        text = choice.message.content
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)] or [""]

        def event(payload: dict[str, Any]) -> bytes:
            base = {"id": ident, "object": "chat.completion.chunk", "created": created}
            return b"data: " + encode({**base, "model": model, **payload}) + b"\n\n"

        events = [event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
        events += [event({"choices": [{"index": 0, "delta": {"content": p}}]}) for p in pieces]
        events.append(
            event({"choices": [{"index": 0, "delta": {}, "finish_reason": choice.finish_reason}]})
        )
        if usage is not None:
            events.append(event({"choices": [], "usage": msgspec.to_builtins(usage)}))
        events.append(b"data: [DONE]\n\n")
        cut = None
        if fault in ("truncated", "drop"):
            cut = 1 + len(pieces) // 2
        elif fault == "malformed":
            events.insert(1 + len(pieces) // 2, b'data: {"id": <html>upstream error</html>\n\n')
        gap = 1.0 / self._config.tokens_per_second if self._config.tokens_per_second else 0.0
        return await write_event_stream(
            request,
            headers,
            events if cut is None else events[:cut],
            self._counters,
            paced=range(2, len(pieces) + 1),  # between content chunks
            gap=gap,
            drop=fault == "drop",
        )

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
    ) -> web.StreamResponse:
        if fault == "drop":
            # Close without answering; aiohttp then fails to write the response below and
            # treats it as a premature disconnection, which is exactly what the client sees.
            transport = request.transport
            if transport is not None:
                transport.close()
            return web.Response(status=500)
        if fault in _SERVER_ERRORS:
            status, message = _SERVER_ERRORS[fault]
            return self._error(status, message, "server_error", None, headers)
        if fault == "529":
            # OpenAI has no 529: an overloaded OpenAI answers 503 with its JSON error body
            message = "The engine is currently overloaded, please try again later."
            return self._error(503, message, "server_error", None, headers)
        if fault == "503":
            headers["Content-Type"] = "text/plain"
            return web.Response(status=503, body=PLAIN_503, headers=headers)
        if fault == "malformed":
            headers["Content-Type"] = JSON
            return web.Response(status=200, body=MALFORMED_BODY, headers=headers)
        usage = WireUsage(prompt_tokens=ptoks, completion_tokens=ctoks, total_tokens=ptoks + ctoks)
        completion = Completion(
            id=f"chatcmpl-sim{seq:012x}",
            created=int(time.time()),
            model=model,
            choices=[] if fault == "empty_choices" else choices,
            usage=usage,
        )
        if fault == "truncated":
            full = encode(completion)
            headers["Content-Type"] = JSON
            return web.Response(status=200, body=full[: len(full) // 2], headers=headers)
        if fault == "empty_choices":
            return self._json(200, completion, headers)
        # "no_content": the message carries a role and nothing else
        payload = msgspec.to_builtins(completion)
        for choice in payload["choices"]:
            del choice["message"]["content"]
        return self._json(200, payload, headers)
