"""The simulated provider (OpenAI- and Anthropic-compatible): an aiohttp.web server and its
statistics.

Routes::

    POST /v1/chat/completions   (also /chat/completions)   the simulated model
    GET  /v1/models             (also /models)             the one model it serves
    GET  /sim/stats                                        SimServer.stats() as JSON
    GET  /sim/requests                                     recorded request bodies (record=True)
    POST /sim/reset                                        SimServer.reset_stats()
    POST /sim/config                                       SimServer.update(**body)
    GET  /sim/bill                                         SimServer.bill(): the provider's bill
    POST /sim/advance   {"seconds": N}                     SimServer.advance(N): fast-forward
    POST /v1/messages                                      Anthropic's Messages API
    /v1/files, /v1/batches, /v1/messages/batches           batch APIs (asynctg.sim.batches)

The ``/sim/*`` admin routes take the same ``Authorization: Bearer KEY`` as the model when an
``api_key`` is set (401 without it), and their POSTs must say ``Content-Type:
application/json`` (415 otherwise, whatever the body): a web page can send a cross-origin
``text/plain`` POST without asking first, but not a JSON one, so no page a user opens can
reset or reconfigure a simulator on their machine.

A chat request goes through, in order: authentication (401), body validation (400), context
window (400 ``context_length_exceeded``), quota (429 ``insufficient_quota``), the answer (known
before replying, so its tokens can be charged), the rate limiter (429 ``rate_limit_exceeded``,
nothing charged), a fault draw, the latency sleep, and the reply. Every admitted request sleeps
its drawn latency (plus ``completion_tokens / tokens_per_second``), faulty ones included, since
real failures cost time too; a "slow" fault sleeps ``slow_seconds`` on top.

The hot path is kept lean because benchmarks measure the client's CPU per call against this
server: one msgspec decode of the body, one encode of a Struct reply, no access log, and no
sleep at all when the latency is zero.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import math
import random
import time
from types import TracebackType
from typing import Any

import msgspec
from aiohttp import web

from asynctg.sim import anthropic as wire
from asynctg.sim.answers import default_answer
from asynctg.sim.batches import BatchStore
from asynctg.sim.billing import Bill, Prices
from asynctg.sim.buckets import InputOutputLimiter, RateLimiter, TokenBucket, format_duration
from asynctg.sim.config import SimConfig
from asynctg.sim.prefix_cache import OPENAI_MIN_CACHED_TOKENS, PrefixCache, anthropic_min_tokens
from asynctg.sim.tokens import message_text, prompt_tokens

__all__ = ["SimServer"]

_JSON = "application/json"
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode

#: Largest accepted request body; image parts arrive base64-encoded, so allow generously.
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_N = 128

_MALFORMED_BODY = b'{"id": "chatcmpl-sim", "object": "chat.completion", <html>upstream error</html>'
_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
#: faults a stream shows in its body (the others answer before it starts)
_STREAM_FAULTS = frozenset({"slow", "malformed", "truncated", "drop"})
_SERVER_ERRORS: dict[str, tuple[int, str]] = {
    "500": (500, "The server had an error while processing your request. Sorry about that!"),
    "502": (502, "Bad gateway."),
    "504": (504, "Gateway timeout."),
}
# proxies in front of real providers answer 503 in plain text, not the provider's JSON
_PLAIN_503 = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


_SERVICE_TIERS = ("auto", "default", "flex", "priority")
# the provider documents flex refusals as "429 Resource Unavailable"; not billed
_FLEX_MESSAGE = (
    "Resource unavailable: flex processing has no capacity for this request right now. "
    "Retry later, or send it without service_tier 'flex'. You were not charged."
)


def _canonical_prompt(messages: list[Any]) -> str:
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


class _Message(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str


class _Choice(msgspec.Struct, kw_only=True):
    index: int
    message: _Message
    logprobs: None = None
    finish_reason: str


class _PromptDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class _Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails = msgspec.field(default_factory=_PromptDetails)


class _Completion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[_Choice]
    usage: _Usage
    system_fingerprint: str = "fp_sim"
    service_tier: str = "default"


class _Counters:
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


class _BadRequest(Exception):
    """A client error found while reading the body; becomes a 400 answer."""


class SimServer:
    """An OpenAI-compatible simulated provider listening on a loopback port.

    >>> async with SimServer(SimConfig(latency="50ms", rpm=600)) as sim:   # doctest: +SKIP
    ...     client = SomeClient(base_url=sim.base_url)

    ``port=0`` picks a free port; read it back from :attr:`port` or :attr:`base_url`.
    ``shutdown_timeout`` bounds how long :meth:`aclose` waits for requests still being served
    (a "slow" fault may be sleeping) before cancelling them.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 1.0,
    ) -> None:
        self._config = config if config is not None else SimConfig()
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._limiter = RateLimiter(None, None)
        self._base_now = time.monotonic
        # seconds the clock was moved forward by advance(): batches, cache TTLs and buckets
        # all read _now(), so tests fast-forward instead of sleeping
        self._skew = 0.0
        self._t0 = 0.0
        self._started_at = time.time()
        self._seq = 0
        self._quota_used = 0
        self._counters = _Counters()
        # second offset -> [requests_ok, tokens_ok, rate_limited]
        self._timeline: dict[int, list[int]] = {}
        self._requests: list[Any] = []
        self._anthropic = _Counters()
        self._bill = Bill()
        cfg = self._config
        self._openai_cache = PrefixCache(
            ttl=cfg.prompt_cache_ttl,
            max_entries=cfg.prompt_cache_max_entries,
            shards=cfg.prompt_cache_shards,
            now=self._now,
        )
        self._anthropic_cache = PrefixCache(
            ttl=cfg.prompt_cache_ttl, max_entries=cfg.prompt_cache_max_entries, now=self._now
        )
        self._anthropic_limiter = InputOutputLimiter(None, None, None, self._now)
        self._batches = BatchStore(self)
        self._seed_rngs()

    def _now(self) -> float:
        return self._base_now() + self._skew

    def _wall(self) -> float:
        """Unix time on the simulator's clock (advance() moves it too)."""
        return time.time() + self._skew

    def advance(self, seconds: float) -> float:
        """Move the simulator's clock forward by ``seconds`` (budgets refill, cached prefixes
        age, batches progress) and return the total advance so far.

        Tests use it (or ``POST /sim/advance``) instead of sleeping.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"seconds must be a number, got {seconds!r}")
        if not 0 <= seconds < math.inf:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        self._skew += seconds
        return self._skew

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the port and start serving (inside the running event loop)."""
        if self._runner is not None:
            raise RuntimeError("SimServer is already started")
        loop = asyncio.get_running_loop()
        self._base_now = loop.time
        self._t0 = self._now()
        self._started_at = time.time()
        self._limiter = RateLimiter.from_limits(self._config.rpm, self._config.tpm, self._now)
        self._build_anthropic_limiter()

        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_post("/v1/messages", self._messages)
        self._batches.add_routes(app)
        app.router.add_get("/sim/bill", self._bill_route)
        app.router.add_post("/sim/advance", self._advance_route)
        app.router.add_get("/sim/stats", self._stats_route)
        app.router.add_get("/sim/requests", self._requests_route)
        app.router.add_post("/sim/reset", self._reset_route)
        app.router.add_post("/sim/config", self._config_route)
        # No access log: formatting a log line per request would dominate the per-request cost.
        # Handler cancellation: when a client gives up (timeout, cancelled call), its request
        # stops sleeping here instead of lingering as a task nobody will ever read.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=self._shutdown_timeout,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def aclose(self) -> None:
        """Stop serving and release the port; requests in progress are given
        ``shutdown_timeout`` seconds, then cancelled. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- public state

    @property
    def config(self) -> SimConfig:
        """The live settings (change them with :meth:`update`)."""
        return self._config

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError("SimServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` without the ``/v1`` suffix."""
        host = self._host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. ``http://127.0.0.1:8000/v1``."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[Any]:
        """Decoded bodies of the chat requests received, in order (only when ``record=True``)."""
        return self._requests

    def update(self, **changes: Any) -> SimConfig:
        """Change settings while serving, e.g. ``sim.update(fault_rate=0.2, rpm=600)``.

        The new settings are validated like a new :class:`SimConfig` (``ValueError`` if bad, and
        nothing changes). Changing ``rpm`` or ``tpm`` rebuilds the buckets (full); changing
        ``seed`` reseeds every random stream.
        """
        accepted = SimConfig.field_names()
        unknown = sorted(set(changes) - set(accepted))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
            )
        old = self._config
        new = dataclasses.replace(old, **changes)
        self._config = new
        if (new.rpm, new.tpm) != (old.rpm, old.tpm):
            self._limiter = RateLimiter.from_limits(new.rpm, new.tpm, self._now)
        if new.seed != old.seed:
            self._seed_rngs()
        if (new.anthropic_rpm, new.anthropic_itpm, new.anthropic_otpm) != (
            old.anthropic_rpm,
            old.anthropic_itpm,
            old.anthropic_otpm,
        ):
            self._build_anthropic_limiter()
        for cache in (self._openai_cache, self._anthropic_cache):
            cache.ttl = new.prompt_cache_ttl
            cache.max_entries = new.prompt_cache_max_entries
        self._openai_cache.shards = new.prompt_cache_shards
        return new

    def _build_anthropic_limiter(self) -> None:
        cfg = self._config
        self._anthropic_limiter = InputOutputLimiter(
            cfg.anthropic_rpm, cfg.anthropic_itpm, cfg.anthropic_otpm, self._now
        )

    def reset_stats(self) -> None:
        """Zero the counters, the timeline, the recorded requests and the quota used."""
        self._counters = _Counters(self._counters.in_flight)
        self._timeline = {}
        self._requests = []
        self._quota_used = 0
        self._anthropic = _Counters(self._anthropic.in_flight)
        self._bill = Bill()
        self._batches.reset_counts()
        # the remembered prefixes stay (a provider's cache does not empty when you look away)
        for cache in (self._openai_cache, self._anthropic_cache):
            cache.hits = cache.writes = 0
        self._t0 = self._now()
        self._started_at = time.time()

    def stats(self) -> dict[str, Any]:
        """A snapshot of what the server has seen since start (or the last reset).

        ``requests`` counts every chat POST; each ends as one of ``ok`` (a normal answer,
        including one delayed by a "slow" fault), ``rate_limited``, ``quota_exceeded``,
        ``bad_request`` (``context_length_exceeded`` included), ``unauthorized``, or a fault
        other than "slow"; those still running are ``in_flight``. Token counts cover normal
        answers. ``timeline`` has one row per second since start:
        ``[second_offset, requests_ok, tokens_ok, rate_limited]``.
        """
        c = self._counters
        last = max(self._timeline, default=-1)
        timeline = [[s, *self._timeline.get(s, (0, 0, 0))] for s in range(last + 1)]
        return {
            "requests": c.requests,
            "ok": c.ok,
            "streams": c.streams,
            "rate_limited": c.rate_limited,
            "rate_limited_requests": c.rate_limited_requests,
            "rate_limited_tokens": c.rate_limited_tokens,
            "quota_exceeded": c.quota_exceeded,
            "bad_request": c.bad_request,
            "context_length_exceeded": c.context_length_exceeded,
            "unauthorized": c.unauthorized,
            "faults": dict(c.faults),
            "faults_total": sum(c.faults.values()),
            "prompt_tokens": c.prompt_tokens,
            "max_prompt_tokens": c.max_prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
            "quota_used": self._quota_used,
            "in_flight": c.in_flight,
            "max_in_flight": c.max_in_flight,
            "started_at": self._started_at,
            "elapsed": self._now() - self._t0,
            "timeline": timeline,
            "flex_unavailable": c.flex_unavailable,
            "anthropic": self._counter_view(self._anthropic),
            "prompt_cache": {
                "openai": self._openai_cache.stats(),
                "anthropic": self._anthropic_cache.stats(),
            },
            "batches": self._batches.stats(),
            "bill": self._bill.snapshot(),
            "clock_advanced": self._skew,
        }

    @staticmethod
    def _counter_view(c: _Counters) -> dict[str, Any]:
        return {
            "requests": c.requests,
            "ok": c.ok,
            "streams": c.streams,
            "rate_limited": c.rate_limited,
            "bad_request": c.bad_request,
            "context_length_exceeded": c.context_length_exceeded,
            "unauthorized": c.unauthorized,
            "faults": dict(c.faults),
            "input_tokens": c.prompt_tokens,
            "output_tokens": c.completion_tokens,
            "in_flight": c.in_flight,
            "max_in_flight": c.max_in_flight,
        }

    def bill(self) -> dict[str, Any]:
        """The provider-side bill since start (or the last reset); see :mod:`.billing`."""
        cfg = self._config
        out = self._bill.snapshot()
        out["prices"] = {
            "openai": Prices.from_value(cfg.openai_prices).to_dict(),
            "anthropic": Prices.from_value(cfg.anthropic_prices).to_dict(),
        }
        return out

    # ----------------------------------------------------------------- internals

    def _seed_rngs(self) -> None:
        seed = self._config.seed
        # separate streams, so e.g. adding latency does not change which requests fault
        self._fault_rng = random.Random(f"asynctg-sim:{seed}:faults")
        self._flex_rng = random.Random(f"asynctg-sim:{seed}:flex")
        self._latency_rng = random.Random(f"asynctg-sim:{seed}:latency")
        self._answer_rng = random.Random()
        self._answer_hash = hashlib.blake2b(f"asynctg-sim:{seed}:answer".encode(), digest_size=8)

    def _tick(self) -> list[int]:
        second = int(self._now() - self._t0)
        row = self._timeline.get(second)
        if row is None:
            row = self._timeline[second] = [0, 0, 0]
        return row

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str]) -> web.Response:
        headers["Content-Type"] = _JSON
        return web.Response(status=status, body=_encode(payload), headers=headers)

    def _error(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> web.Response:
        out = headers if headers is not None else {}
        out["x-request-id"] = f"req_sim{self._next_id():012x}"
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return self._json(status, body, out)

    def _bad_request(self, message: str, code: str | None = None) -> web.Response:
        self._counters.bad_request += 1
        return self._error(400, message, "invalid_request_error", code)

    def _limit_headers(self, headers: dict[str, str]) -> None:
        for suffix, bucket in (
            ("requests", self._limiter.requests),
            ("tokens", self._limiter.tokens),
        ):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{suffix}"] = str(bucket.limit)
                if self._config.rate_limit_headers_limit_only:
                    continue
                headers[f"x-ratelimit-remaining-{suffix}"] = str(bucket.remaining())
                headers[f"x-ratelimit-reset-{suffix}"] = format_duration(bucket.reset_seconds())

    def _rate_limited(self, which: str, wait: float, tokens: int, model: str) -> web.Response:
        c = self._counters
        c.rate_limited += 1
        if which == "requests":
            c.rate_limited_requests += 1
        else:
            c.rate_limited_tokens += 1
        self._tick()[2] += 1
        bucket: TokenBucket | None = getattr(self._limiter, which)
        assert bucket is not None  # admit() names only a bucket that exists
        unit, requested = ("RPM", 1) if which == "requests" else ("TPM", tokens)
        used = bucket.limit - bucket.remaining()
        message = (
            f"Rate limit reached for {model} in organization org-sim on {which} per min "
            f"({unit}): Limit {bucket.limit}, Used {used}, Requested {requested}. "
            f"Please try again in {format_duration(wait)}. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers = {
            # ceil: a client sleeping the advertised time must find room
            "retry-after": str(max(1, math.ceil(wait))),
        }
        if not self._config.retry_after_whole_seconds:
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        if self._config.rate_limit_headers:
            self._limit_headers(headers)
        return self._error(429, message, which, "rate_limit_exceeded", headers)

    def _parse(self, body: bytes) -> tuple[dict[str, Any], int, int, int | None]:
        """Decode and validate a chat body: (request, prompt_tokens, n, max_tokens)."""
        try:
            req = _decode(body)
        except msgspec.DecodeError as exc:
            raise _BadRequest(
                f"We could not parse the JSON body of your request. ({exc}) The OpenAI API "
                "expects a JSON payload."
            ) from None
        if not isinstance(req, dict):
            raise _BadRequest("The request body must be a JSON object.")
        messages = req.get("messages")
        if messages is None:
            raise _BadRequest("Missing required parameter: 'messages'.")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("Invalid 'messages': expected a non-empty array of messages.")
        try:
            ptoks = prompt_tokens(messages)
        except ValueError as exc:
            raise _BadRequest(f"Invalid 'messages': {exc}.") from None
        n = req.get("n")
        if n is None:
            n = 1
        elif isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise _BadRequest(f"Invalid 'n': expected an integer from 1 to {MAX_N}.")
        max_tokens = req.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = req.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise _BadRequest("Invalid 'max_tokens': expected a positive integer.")
        if req.get("stream") and n != 1:
            raise _BadRequest("The simulator streams one choice: 'n' must be 1 with 'stream'.")
        return req, ptoks, n, max_tokens

    # ----------------------------------------------------------------- handlers

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        c = self._counters
        c.requests += 1
        c.in_flight += 1
        if c.in_flight > c.max_in_flight:
            c.max_in_flight = c.in_flight
        try:
            return await self._complete(request)
        finally:
            # a reset may have swapped the counters while this request was in flight
            self._counters.in_flight -= 1

    def _authorized(self, request: web.Request) -> bool:
        key = self._config.api_key
        if key is None:
            return True
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {key}".encode())

    def _unauthorized(self) -> web.Response:
        return self._error(
            401,
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def _admin_refusal(self, request: web.Request) -> web.Response | None:
        """Why an admin request is refused (see the module docstring), or None."""
        if not self._authorized(request):
            self._counters.unauthorized += 1
            return self._unauthorized()
        if request.method == "POST" and request.content_type != _JSON:
            return self._error(
                415,
                f"/sim/* POSTs need 'Content-Type: {_JSON}', got {request.content_type!r}",
                "invalid_request_error",
                None,
            )
        return None

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        cfg = self._config
        if not self._authorized(request):
            self._counters.unauthorized += 1
            return self._unauthorized()
        body = await request.read()
        try:
            req, ptoks, n, max_tokens = self._parse(body)
        except _BadRequest as exc:
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
        if req.get("stream") or "stream_options" in req or "service_tier" in req:
            # a streamed request gets the answer the same request unstreamed gets, and a
            # request's tier changes its price and speed, never its answer
            dropped = ("stream", "stream_options", "service_tier")
            plain = {k: v for k, v in req.items() if k not in dropped}
            choices, ctoks = self._answer(req, _encode(plain), n, max_tokens)
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
                usage = _Usage(
                    prompt_tokens=ptoks,
                    completion_tokens=ctoks,
                    total_tokens=total,
                    prompt_tokens_details=_PromptDetails(cached_tokens=cached),
                )
            return await self._stream(request, seq, model, choices[0], usage, headers, fault)
        if fault is None or fault == "slow":
            completion = _Completion(
                id=f"chatcmpl-sim{seq:012x}",
                created=int(time.time()),
                model=model,
                choices=choices,
                usage=_Usage(
                    prompt_tokens=ptoks,
                    completion_tokens=ctoks,
                    total_tokens=total,
                    prompt_tokens_details=_PromptDetails(cached_tokens=cached),
                ),
                service_tier="flex" if flex else "default",
            )
            return self._json(200, completion, headers)
        return self._fault_response(fault, request, seq, model, choices, ptoks, ctoks, headers)

    def _answer(
        self, req: dict[str, Any], digest_of: bytes, n: int, max_tokens: int | None
    ) -> tuple[list[_Choice], int]:
        """The ``n`` choices for a chat request and their completion tokens; the answer is
        seeded from the seed and ``digest_of`` (the request's bytes), so it is repeatable."""
        cfg = self._config
        rng = self._answer_rng
        digest = self._answer_hash.copy()
        digest.update(digest_of)
        rng.seed(int.from_bytes(digest.digest(), "big"))
        limit_chars = max_tokens * 4 if max_tokens is not None else None
        responder = cfg.responder
        choices: list[_Choice] = []
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
            message = _Message(content=text)
            choices.append(_Choice(index=index, message=message, finish_reason=finish))
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
        keys = cache.openai_keys(_canonical_prompt(req["messages"]), shard=shard)
        cached = cache.openai_lookup(keys, ptoks)
        cache.openai_commit(keys, cached)
        return cached

    async def _stream(
        self,
        request: web.Request,
        seq: int,
        model: str,
        choice: _Choice,
        usage: _Usage | None,
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
            return b"data: " + _encode({**base, "model": model, **payload}) + b"\n\n"

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
        response = web.StreamResponse(
            status=200,
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        self._counters.streams += 1
        gap = 1.0 / self._config.tokens_per_second if self._config.tokens_per_second else 0.0
        sent = events if cut is None else events[:cut]
        if gap == 0.0:
            await response.write(b"".join(sent))
        else:
            for i, chunk in enumerate(sent):
                if 1 < i <= len(pieces):  # between content chunks
                    await asyncio.sleep(gap)
                await response.write(chunk)
        if fault == "drop":
            transport = request.transport
            if transport is not None:
                transport.close()
            return response
        await response.write_eof()
        return response

    def _fault_response(
        self,
        fault: str,
        request: web.Request,
        seq: int,
        model: str,
        choices: list[_Choice],
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
            return web.Response(status=503, body=_PLAIN_503, headers=headers)
        if fault == "malformed":
            headers["Content-Type"] = _JSON
            return web.Response(status=200, body=_MALFORMED_BODY, headers=headers)
        usage = _Usage(prompt_tokens=ptoks, completion_tokens=ctoks, total_tokens=ptoks + ctoks)
        completion = _Completion(
            id=f"chatcmpl-sim{seq:012x}",
            created=int(time.time()),
            model=model,
            choices=[] if fault == "empty_choices" else choices,
            usage=usage,
        )
        if fault == "truncated":
            full = _encode(completion)
            headers["Content-Type"] = _JSON
            return web.Response(status=200, body=full[: len(full) // 2], headers=headers)
        if fault == "empty_choices":
            return self._json(200, completion, headers)
        # "no_content": the message carries a role and nothing else
        payload = msgspec.to_builtins(completion)
        for choice in payload["choices"]:
            del choice["message"]["content"]
        return self._json(200, payload, headers)

    # ----------------------------------------------------------------- Anthropic Messages

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
            parsed = wire.parse_messages_request(_decode(body))
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
        text, reason, stop, otoks = self.anthropic_message(parsed, _encode(plain))

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
            return web.Response(status=503, body=_PLAIN_503, headers=headers)
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
            headers["Content-Type"] = _JSON
            return web.Response(status=200, body=_MALFORMED_BODY, headers=headers)
        if fault == "truncated":
            full = _encode(message)
            headers["Content-Type"] = _JSON
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
        response = web.StreamResponse(
            status=200,
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        self._anthropic.streams += 1
        sent = events if cut is None else events[:cut]
        gap = 1.0 / self._config.tokens_per_second if self._config.tokens_per_second else 0.0
        if gap == 0.0:
            await response.write(b"".join(sent))
        else:
            for i, chunk in enumerate(sent):
                if 3 < i <= 3 + deltas:
                    await asyncio.sleep(gap)
                await response.write(chunk)
        if fault == "drop":
            transport = request.transport
            if transport is not None:
                transport.close()
            return response
        await response.write_eof()
        return response

    # ----------------------------------------------------------------- batch work

    def wall(self) -> float:
        """Unix time on the simulator's clock."""
        return self._wall()

    def now(self) -> float:
        """The simulator's monotonic clock (the event loop's, plus :meth:`advance`)."""
        return self._now()

    def openai_refusal(self, request: web.Request) -> web.Response | None:
        """401 when the request lacks the bearer key the sim requires; else None."""
        if not self._authorized(request):
            self._counters.unauthorized += 1
            return self._unauthorized()
        return None

    def openai_error(self, status: int, message: str, code: str | None = None) -> web.Response:
        """An error response in OpenAI's shape."""
        return self._error(status, message, "invalid_request_error", code)

    def anthropic_error(self, status: int, kind: str, message: str) -> web.Response:
        """An error response in Anthropic's shape."""
        return self._anthropic_error(status, kind, message)

    def json_response(self, payload: Any, status: int = 200) -> web.Response:
        """A JSON response."""
        return self._json(status, payload, {})

    def batch_chat(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Serve one OpenAI batch line's body: ``(status_code, response body)``, billed at the
        batch discount; no budgets, faults or latency (the batch's delay stands for them)."""
        try:
            req, ptoks, n, max_tokens = self._parse(_encode(body))
        except _BadRequest as exc:
            error = {"message": str(exc), "type": "invalid_request_error"}
            return 400, {"error": {**error, "param": None, "code": None}}
        choices, ctoks = self._answer(req, _encode(req), n, max_tokens)
        model = req.get("model") if isinstance(req.get("model"), str) else self._config.model_name
        self._bill.charge(
            "openai",
            "batch",
            Prices.from_value(self._config.openai_prices),
            input=ptoks,
            output=ctoks,
        )
        completion = _Completion(
            id=f"chatcmpl-sim{self._next_id():012x}",
            created=int(self._wall()),
            model=str(model),
            choices=choices,
            usage=_Usage(prompt_tokens=ptoks, completion_tokens=ctoks, total_tokens=ptoks + ctoks),
            service_tier="batch",
        )
        return 200, msgspec.to_builtins(completion)

    def batch_message(self, params: Any) -> tuple[bool, dict[str, Any]]:
        """Serve one Anthropic batch request: ``(succeeded, message or error body)``, billed at
        the batch discount."""
        try:
            parsed = wire.parse_messages_request(params)
        except wire.AnthropicRequestError as exc:
            return False, wire.error_body("invalid_request_error", str(exc))
        text, reason, stop, otoks = self.anthropic_message(parsed, _encode(parsed.chat))
        itoks = parsed.input_tokens
        self._bill.charge(
            "anthropic",
            "batch",
            Prices.from_value(self._config.anthropic_prices),
            input=itoks,
            output=otoks,
        )
        use = wire.usage(itoks, otoks, 0, 0)
        ident = f"msg_sim{self._next_id():016x}"
        return True, wire.message_body(ident, parsed.model, text, reason, stop, use)

    # ----------------------------------------------------------------- small routes

    async def _bill_route(self, request: web.Request) -> web.Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        return self._json(200, self.bill(), {})

    async def _advance_route(self, request: web.Request) -> web.Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        try:
            payload = _decode(await request.read())
            if not isinstance(payload, dict) or set(payload) != {"seconds"}:
                raise ValueError('expected {"seconds": N}')
            total = self.advance(payload["seconds"])
        except (ValueError, msgspec.DecodeError) as exc:
            return self._error(400, str(exc), "invalid_request_error", None)
        return self._json(200, {"advanced": total}, {})

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": self._config.model_name, "object": "model", "owned_by": "asynctg-sim"}
        return self._json(200, {"object": "list", "data": [model]}, {})

    async def _stats_route(self, request: web.Request) -> web.Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        return self._json(200, self.stats(), {})

    async def _requests_route(self, request: web.Request) -> web.Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        return self._json(200, self._requests, {})

    async def _reset_route(self, request: web.Request) -> web.Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        self.reset_stats()
        return self._json(200, {"reset": True}, {})

    async def _config_route(self, request: web.Request) -> web.Response:
        if (refusal := self._admin_refusal(request)) is not None:
            return refusal
        try:
            changes = _decode(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of settings")
            if "responder" in changes:
                raise ValueError("the responder cannot be set over HTTP")
            self.update(**changes)
        except (ValueError, TypeError, msgspec.DecodeError) as exc:
            return self._error(400, str(exc), "invalid_request_error", None)
        return self._json(200, self._config.to_dict(), {})
