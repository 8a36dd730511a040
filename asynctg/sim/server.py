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
from asynctg.sim.batches import BatchStore
from asynctg.sim.billing import Bill, Prices
from asynctg.sim.buckets import InputOutputLimiter, RateLimiter, TokenBucket, format_duration
from asynctg.sim.chat_route import NOT_IN_ANSWER, ChatRoute, Completion, WireUsage
from asynctg.sim.config import SimConfig
from asynctg.sim.messages_route import MessagesRoute
from asynctg.sim.prefix_cache import PrefixCache
from asynctg.sim.state import JSON, BadRequest, Counters, decode, encode
from asynctg.sim.tokens import prompt_tokens

__all__ = ["SimServer"]


#: Largest accepted request body; image parts arrive base64-encoded, so allow generously.
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_N = 128


class SimServer(ChatRoute, MessagesRoute):
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
        self._counters = Counters()
        # second offset -> [requests_ok, tokens_ok, rate_limited]
        self._timeline: dict[int, list[int]] = {}
        self._requests: list[Any] = []
        self._anthropic = Counters()
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
        self._counters = Counters(self._counters.in_flight)
        self._timeline = {}
        self._requests = []
        self._quota_used = 0
        self._anthropic = Counters(self._anthropic.in_flight)
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
    def _counter_view(c: Counters) -> dict[str, Any]:
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
        headers["Content-Type"] = JSON
        return web.Response(status=status, body=encode(payload), headers=headers)

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
            req = decode(body)
        except msgspec.DecodeError as exc:
            raise BadRequest(
                f"We could not parse the JSON body of your request. ({exc}) The OpenAI API "
                "expects a JSON payload."
            ) from None
        if not isinstance(req, dict):
            raise BadRequest("The request body must be a JSON object.")
        messages = req.get("messages")
        if messages is None:
            raise BadRequest("Missing required parameter: 'messages'.")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("Invalid 'messages': expected a non-empty array of messages.")
        try:
            ptoks = prompt_tokens(messages)
        except ValueError as exc:
            raise BadRequest(f"Invalid 'messages': {exc}.") from None
        n = req.get("n")
        if n is None:
            n = 1
        elif isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise BadRequest(f"Invalid 'n': expected an integer from 1 to {MAX_N}.")
        max_tokens = req.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = req.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise BadRequest("Invalid 'max_tokens': expected a positive integer.")
        if req.get("stream") and n != 1:
            raise BadRequest("The simulator streams one choice: 'n' must be 1 with 'stream'.")
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
        if request.method == "POST" and request.content_type != JSON:
            return self._error(
                415,
                f"/sim/* POSTs need 'Content-Type: {JSON}', got {request.content_type!r}",
                "invalid_request_error",
                None,
            )
        return None

    # ----------------------------------------------------------------- Anthropic Messages

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
            req, ptoks, n, max_tokens = self._parse(encode(body))
        except BadRequest as exc:
            error = {"message": str(exc), "type": "invalid_request_error"}
            return 400, {"error": {**error, "param": None, "code": None}}
        # the answer the same request gets synchronously (a routing key changes nothing)
        plain = {k: v for k, v in req.items() if k not in NOT_IN_ANSWER}
        choices, ctoks = self._answer(req, encode(plain), n, max_tokens)
        model = req.get("model") if isinstance(req.get("model"), str) else self._config.model_name
        self._bill.charge(
            "openai",
            "batch",
            Prices.from_value(self._config.openai_prices),
            input=ptoks,
            output=ctoks,
        )
        completion = Completion(
            id=f"chatcmpl-sim{self._next_id():012x}",
            created=int(self._wall()),
            model=str(model),
            choices=choices,
            usage=WireUsage(
                prompt_tokens=ptoks, completion_tokens=ctoks, total_tokens=ptoks + ctoks
            ),
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
        text, reason, stop, otoks = self.anthropic_message(parsed, encode(parsed.chat))
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
            payload = decode(await request.read())
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
            changes = decode(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of settings")
            if "responder" in changes:
                raise ValueError("the responder cannot be set over HTTP")
            self.update(**changes)
        except (ValueError, TypeError, msgspec.DecodeError) as exc:
            return self._error(400, str(exc), "invalid_request_error", None)
        return self._json(200, self._config.to_dict(), {})
