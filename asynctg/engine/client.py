"""The OpenAI-compatible chat engine: one request in, a completion out, within budget.

Every call goes the same way: validate, answer from the cache or from an identical request
already in flight if allowed, wait for the scheduler's admission, send through the transport,
classify the answer, and retry what the policy says to retry. The graph layer builds requests
and hands them here; nothing above this module talks HTTP, sleeps or retries.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import msgspec

from asynctg import telemetry
from asynctg._version import __version__
from asynctg.engine.cache import ResponseCache, ResponseStore
from asynctg.engine.clock import Clock, LoopClock
from asynctg.engine.jobs import Job, current_job
from asynctg.engine.models import context_window_for, max_output_tokens_for
from asynctg.engine.retry import DEFAULT_RETRY, RetryPolicy, retry_after_seconds
from asynctg.engine.scheduler import QueueTimeout, Scheduler
from asynctg.engine.shared import CostCap, Reservation, SharedBudget
from asynctg.engine.streaming import ChatStream, SSEParser, check_streaming
from asynctg.engine.types import (
    ChatRequest,
    ChatResult,
    Usage,
    decode_completion,
    decode_error,
    endpoint_key,
    estimate_tokens,
    request_key,
    validate_messages,
)
from asynctg.engine.usage import UsageStats, check_price, micro_dollars, price_for
from asynctg.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BudgetTimeoutError,
    ConfigError,
    ContextBudgetError,
    ContextLengthError,
    InsufficientQuotaError,
    PermissionDeniedError,
    RateLimitError,
    RedirectError,
    ReplayMissError,
    ResponseParseError,
    ServerError,
    StreamInterruptedError,
    require_int,
)
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse, Transport

__all__ = ["DEFAULT_TIMEOUT", "ChatEngine", "get_engine"]

#: Seconds one HTTP attempt may take; a long completion from a slow model fits in it.
DEFAULT_TIMEOUT = 120.0
#: The OpenAI API, used when a key is known but no base URL is.
OPENAI_BASE_URL = "https://api.openai.com/v1"
#: What ``cache_mode`` may be (see ``ChatEngine.cache_mode``).
CACHE_MODES = ("readwrite", "record", "replay")
#: Reply tokens a dollar cap reserves for a request without ``max_tokens`` to a model the table
#: (``asynctg.engine.models.MAX_OUTPUT_TOKENS``) does not know. Nothing is added to the request
#: (a cap must not change what is sent: journals and caches would miss), so this is an
#: assumption, not a bound: 4096 is the reply cap of most chat models of the 2023-24 generation
#: and of common local-server defaults, and far above what the paper's prompts elicit (a few
#: hundred tokens). A model that may write more should be given ``max_tokens`` or
#: ``cost_reserve_tokens``.
DEFAULT_COST_RESERVE_TOKENS = 4096
#: Completion size assumed for the token budget before any answer has been seen.
_INITIAL_COMPLETION_ESTIMATE = 64

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

_SAMPLING_KEYS = frozenset(
    {"temperature", "top_p", "max_tokens", "seed", "stop", "n", "response_format"}
)


class _SecretHeaders(dict[str, str]):
    """Request headers whose ``authorization`` never shows (``repr``, ``vars(engine)``, logs)
    and never pickles: a copied or pickled engine has no key, not a leaked one."""

    def __repr__(self) -> str:
        return repr({k: ("***" if k == "authorization" else v) for k, v in self.items()})

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SecretHeaders, ({k: v for k, v in self.items() if k != "authorization"},))


class _Shared:
    """Outcome slot of a request being sent once for several identical callers."""

    __slots__ = ("done", "error", "result", "waiters")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.result: ChatResult | None = None
        self.error: BaseException | None = None
        self.waiters = 0


class ChatEngine:
    """An OpenAI-compatible chat-completions client with budgets, retries and a cache.

    Create one with ``asynctg.get_engine``. Use it as ``async with engine: ...`` or call
    ``await engine.aclose()`` when done; the HTTP session opens lazily in the running loop.

    >>> import asynctg as tg
    >>> engine = tg.get_engine("sim-1", base_url="http://127.0.0.1:8000/v1")
    >>> engine.model
    'sim-1'
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrency: int = 64,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        cache: ResponseStore | str | os.PathLike[str] | None = None,
        cache_sampled: bool = False,
        price: tuple[float, float] | None = None,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        seed: int | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        context_window: int | None = None,
        cache_mode: str = "readwrite",
        max_cost: float | CostCap | None = None,
        input_tpm: float | None = None,
        output_tpm: float | None = None,
        redis_url: str | None = None,
        redis_namespace: str = "asynctg",
        reservation_ttl: float | None = None,
        cost_reserve_tokens: int | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("model must be a non-empty string, e.g. get_engine('gpt-4o')")
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ConfigError(
                    f"{name} must be a positive number (or None to learn it), got {value!r}"
                )
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be positive seconds or None, got {timeout!r}")
        require_int("context_window", context_window, 16, optional=True)
        require_int("cost_reserve_tokens", cost_reserve_tokens, 1, optional=True)
        if price is not None:
            price = check_price(price)
        self.model = model
        self.base_url = _check_base_url(base_url)
        self._url = self.base_url + "/chat/completions"
        self.timeout = timeout
        self.retry = retry
        self.defaults: dict[str, Any] = {}
        if temperature is not None:
            self.defaults["temperature"] = temperature
        if max_tokens is not None:
            self.defaults["max_tokens"] = max_tokens
        if seed is not None:
            self.defaults["seed"] = seed
        headers = _SecretHeaders(
            {"content-type": "application/json", "user-agent": f"asynctg/{__version__}"}
        )
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._has_key = bool(api_key)
        self.clock: Clock = clock or LoopClock()
        # With a shared budget, Redis paces rpm/tpm for every process; locally only the
        # in-flight cap (and 429-driven concurrency) apply.
        local_rpm, local_tpm = (None, None) if redis_url else (rpm, tpm)
        local_split = (None, None) if redis_url else (input_tpm, output_tpm)
        self.scheduler = Scheduler(
            rpm=local_rpm,
            tpm=local_tpm,
            max_concurrency=max_concurrency,
            clock=self.clock,
            input_tpm=local_split[0],
            output_tpm=local_split[1],
            # no budget at all: probe it and learn its rate (a shared one is Redis's to pace)
            learn_rate=redis_url is None,
        )
        self._split = input_tpm is not None or output_tpm is not None
        self._learn = rpm is None or tpm is None
        self.transport: Transport = transport or AiohttpTransport()
        self.cache: ResponseStore | None
        if cache is None or isinstance(cache, str | os.PathLike):
            self.cache = None if cache is None else ResponseCache(cache)
        else:
            self.cache = cache  # ResponseCache, or any store with get / put / close
        if cache_mode not in CACHE_MODES:
            raise ConfigError(
                f"cache_mode must be one of {', '.join(CACHE_MODES)}, got {cache_mode!r}"
            )
        if cache_mode != "readwrite" and self.cache is None:
            raise ConfigError(f"cache_mode={cache_mode!r} needs cache=PATH (the journal)")
        if (
            cache_mode == "replay"
            and isinstance(cache, str | os.PathLike)
            and not len(
                self.cache  # type: ignore[arg-type]
            )
        ):
            raise ConfigError(f"cache_mode='replay': the journal {cache} holds no call to replay")
        #: "readwrite": answer from the cache at temperature 0 (or always, with cache_sampled)
        #: and store new answers; "record": send every call and store every answer; "replay":
        #: answer every call from the cache, never send, ``ReplayMissError`` on a miss.
        self.cache_mode = cache_mode
        self.cache_sampled = cache_sampled or cache_mode == "record"
        #: The endpoint that keys cached answers with the request (``request_key``), so a
        #: cache shared by several servers (or filled by someone else) never answers for
        #: another one. None for a run's journal ("record", "replay", and checkpoints, which
        #: set it so): that holds one run's own answers, replayed whatever address the server
        #: had then (a simulator on another port, a replay that contacts nothing).
        self.cache_endpoint: str | None = (
            endpoint_key(self.base_url) if cache_mode == "readwrite" else None
        )
        self.usage = UsageStats(price if price is not None else price_for(model))
        #: Tokens a request (prompt and reply) may use: given, from the model table, or learned
        #: from the provider's first context-length error that names it; None: unknown.
        self.context_window: int | None = (
            context_window if context_window is not None else context_window_for(model)
        )
        self._cost_cap: CostCap | None = None
        self.shared: SharedBudget | None = None
        if max_cost is not None:
            if self.usage.price is None:
                raise ConfigError(
                    f"max_cost needs a price for {model!r}: pass price=(dollars per 1M prompt "
                    "tokens, per 1M completion tokens) to get_engine()"
                )
        #: Reply tokens the dollar cap reserves for a request without ``max_tokens``: given, the
        #: model's reply cap from the table, else ``DEFAULT_COST_RESERVE_TOKENS``. Reserved only,
        #: never sent: a cap does not change requests (replays and caches of uncapped runs hit).
        self.cost_reserve_tokens: int = (
            cost_reserve_tokens or max_output_tokens_for(model) or DEFAULT_COST_RESERVE_TOKENS
        )
        if redis_url is not None:
            self.shared = SharedBudget(
                redis_url,
                model=model,
                clock=self.clock,
                rpm=rpm,
                tpm=tpm,
                max_cost=max_cost.cap / 1e9 if isinstance(max_cost, CostCap) else max_cost,
                namespace=redis_namespace,
                reservation_ttl=reservation_ttl or max(900.0, self.retry.max_total_seconds + 60),
                input_tpm=input_tpm,
                output_tpm=output_tpm,
                endpoint=endpoint_key(self.base_url),
            )
        elif max_cost is not None:
            # A CostCap given by the caller is shared with its other engines (one run's cap).
            self._cost_cap = max_cost if isinstance(max_cost, CostCap) else CostCap(max_cost)
        self._shared: dict[str, _Shared] = {}
        self._completion_estimate = float(_INITIAL_COMPLETION_ESTIMATE)
        self._rng = random.Random()
        host = urlsplit(self.base_url).hostname or ""
        #: gen_ai.provider.name: "openai" for OpenAI's API, else the server's host name.
        self._provider_name = "openai" if host == "api.openai.com" else host
        telemetry.track(self)
        #: Whether image parts may be sent (custom engines say so with ``is_multimodal``).
        self.multimodal = True

    # --- TextGrad-compatible names -------------------------------------------------------------

    @property
    def model_string(self) -> str:
        """TextGrad's name for the model."""
        return self.model

    @property
    def is_multimodal(self) -> bool:
        """Whether this engine takes image parts (TextGrad's ``engine.is_multimodal``)."""
        return self.multimodal

    def __repr__(self) -> str:
        return f"<ChatEngine {self.model!r} at {self.base_url}>"

    # --- jobs ----------------------------------------------------------------------------------

    def job(
        self,
        name: str | None = None,
        *,
        weight: float = 1.0,
        max_cost: float | None = None,
        max_calls: int | None = None,
        deadline: float | None = None,
        max_concurrency: int | None = None,
    ) -> Job:
        """A job on this engine: use it as ``async with engine.job(...) as job:``; it is an
        ``Engine`` with its own usage, caps, deadline and fair share (``asynctg.engine.jobs``).

        >>> # async with engine.job("tenant-a", max_cost=0.5, deadline=30) as job:
        >>> #     text = await job.generate("What is 2+2?")
        """
        return Job(
            self,
            name,
            weight=weight,
            max_cost=max_cost,
            max_calls=max_calls,
            deadline=deadline,
            max_concurrency=max_concurrency,
        )

    def _charged(self) -> UsageStats:
        """The counters the running call changes: the engine's, and its job's if it has one."""
        job = current_job(self)
        return self.usage if job is None else job.charged

    # --- building requests ---------------------------------------------------------------------

    def request(self, messages: Any, **params: Any) -> ChatRequest:
        """A validated ``ChatRequest`` for ``messages`` with this engine's defaults applied.

        ``params`` are sampling parameters (temperature, top_p, max_tokens, seed, stop, n,
        response_format); anything else goes into the body as a provider-specific extra.
        """
        msgs = validate_messages(messages)
        merged = {**self.defaults, **params}
        extra = {k: v for k, v in merged.items() if k not in _SAMPLING_KEYS}
        fields = {k: v for k, v in merged.items() if k in _SAMPLING_KEYS and v is not None}
        _check_params(fields)
        if isinstance(fields.get("stop"), list):
            fields["stop"] = tuple(fields["stop"])
        return ChatRequest(model=self.model, messages=msgs, extra=extra or None, **fields)

    # --- calling -------------------------------------------------------------------------------

    async def chat(self, messages: Any, *, priority: int = 0, **params: Any) -> ChatResult:
        """One chat call: ``messages`` (OpenAI format, images allowed) -> ``ChatResult``."""
        return await self.send(self.request(messages, **params), priority=priority)

    async def generate(
        self,
        content: str | Sequence[Any],
        system_prompt: str | None = None,
        **params: Any,
    ) -> str:
        """One user turn (text, or a list of text and image parts) -> the completion text.

        >>> # text = await engine.generate("What is 2+2?", system_prompt="Be brief.")
        """
        messages: list[dict[str, Any]] = []
        if system_prompt is not None:
            messages.append({"role": "system", "content": system_prompt})
        if isinstance(content, str):
            messages.append({"role": "user", "content": content})
        else:
            messages.append({"role": "user", "content": list(content)})
        priority = params.pop("priority", 0)
        result = await self.send(self.request(messages, **params), priority=priority)
        return result.text

    __call__ = generate

    def stream(
        self,
        messages: str | Sequence[Any],
        system_prompt: str | None = None,
        *,
        priority: int = 0,
        **params: Any,
    ) -> ChatStream:
        """A streamed chat call: iterate the result for text deltas as they arrive
        (``asynctg.engine.streaming``). ``messages`` is a user turn's text or OpenAI messages.

        >>> # async with engine.stream("Tell me a story") as s:
        >>> #     async for delta in s: print(delta, end="")
        """
        if isinstance(messages, str):
            turns: list[Any] = [{"role": "user", "content": messages}]
        else:
            turns = list(messages)
        if system_prompt is not None:
            turns.insert(0, {"role": "system", "content": system_prompt})
        check_streaming(self.transport)
        return ChatStream(self, self.request(turns, **params), priority)

    def _open_stream(self, sink: ChatStream) -> AsyncIterator[Any]:
        """What a ``ChatStream`` reads: lists of text deltas, then the ``ChatResult``."""
        request = sink.request
        self.check_fits(request)
        if self.cache_mode == "replay":
            return self._replayed_stream(sink)
        sink._rspan = telemetry.request_span(self.model, self._provider_name, request.messages)
        return self._attempt_iter(request, sink.priority, sink._rspan, sink)

    def _stream_done(self, sink: ChatStream, result: ChatResult) -> None:
        """A finished stream: its answer goes into the journal like any call's (streams are
        not served from the cache, but a recorded run must replay them); its span closes."""
        request = sink.request
        if (
            not result.cached
            and self.cache is not None
            and self.cache_mode != "replay"
            and self._cacheable(request)
        ):
            self.cache.put(self._cache_key(request), result)
        rspan, sink._rspan = sink._rspan, None
        if rspan is not None:
            self._finish_span(rspan, result)

    async def _replayed_stream(self, sink: ChatStream) -> AsyncIterator[Any]:
        result = self._replay(sink.request)
        now = self.clock.now()
        sink._sent(now)
        sink._delta(now)
        sink.ended_at = now
        yield [result.text]
        yield result

    def _cache_key(self, request: ChatRequest) -> str:
        return request_key(request, endpoint=self.cache_endpoint)

    def _cacheable(self, request: ChatRequest) -> bool:
        return request.temperature == 0 or self.cache_sampled

    def request_tokens(self, request: ChatRequest) -> int:
        """The estimated prompt tokens of ``request`` plus the reply tokens it reserves."""
        return estimate_tokens(request.messages) + (request.max_tokens or 0) * (request.n or 1)

    def check_fits(self, request: ChatRequest, *, variable: str | None = None) -> None:
        """``ContextBudgetError`` if ``request`` cannot fit the known context window."""
        window = self.context_window
        if window is None:
            return
        tokens = self.request_tokens(request)
        if tokens > window:
            what = f" for {variable!r}" if variable else ""
            raise ContextBudgetError(
                f"{self.model}: a request{what} of about {tokens} tokens (prompt and reply "
                f"reserve) does not fit the {window}-token context window; it was not sent. "
                "Shorten the inputs, lower max_tokens, or let the optimizer aggregate feedback "
                "(aggregation='auto' or 'tree').",
                tokens=tokens,
                window=window,
                variable=variable,
            )

    async def send(self, request: ChatRequest, *, priority: int = 0) -> ChatResult:
        """Send a built request (see ``request``); higher ``priority`` is admitted first.

        A request that cannot fit the model's known context window raises
        ``ContextBudgetError`` without being sent.
        """
        self.check_fits(request)
        if self.cache_mode == "replay":
            return self._replay(request)
        if not self._cacheable(request):
            return await self._send(request, priority)
        key = self._cache_key(request)
        if self.cache is not None and self.cache_mode == "readwrite":
            hit = self.cache.get(key)
            if hit is not None:
                usage = self._charged()
                usage.cache_hits += 1
                usage.calls += 1
                telemetry.cache_hit(self.model)
                return msgspec.structs.replace(hit, cached=True)
        while True:
            shared = self._shared.get(key)
            if shared is None:
                return await self._lead(key, request, priority)
            shared.waiters += 1
            try:
                await shared.done.wait()
            finally:
                shared.waiters -= 1
            if shared.result is not None:
                usage = self._charged()
                usage.coalesced += 1
                usage.calls += 1
                return shared.result
            if shared.error is not None:
                raise shared.error
            # The request's owner was cancelled before an answer: try again ourselves.

    def _replay(self, request: ChatRequest) -> ChatResult:
        assert self.cache is not None
        key = self._cache_key(request)
        hit = self.cache.get(key)
        usage = self._charged()
        if hit is None:
            usage.failures += 1
            last = request.messages[-1].get("content") if request.messages else ""
            text = last if isinstance(last, str) else str(last)[:200]
            raise ReplayMissError(
                f"{self.model}: no journaled answer for request {key[:16]}... (last message: "
                f"{' '.join(text.split())[:120]!r}); a replay sends nothing, so the run's "
                "requests must be exactly the recorded ones (same configuration, same data)",
                key=key,
            )
        usage.cache_hits += 1
        usage.calls += 1
        return msgspec.structs.replace(hit, cached=True)

    async def _lead(self, key: str, request: ChatRequest, priority: int) -> ChatResult:
        shared = self._shared[key] = _Shared()
        try:
            result = await self._send(request, priority)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            shared.error = exc
            raise
        else:
            shared.result = result
            if self.cache is not None:
                self.cache.put(key, result)
            return result
        finally:
            del self._shared[key]
            shared.done.set()

    async def _send(self, request: ChatRequest, priority: int) -> ChatResult:
        """One call to the provider (retries included), inside its telemetry span if any."""
        rspan = telemetry.request_span(self.model, self._provider_name, request.messages)
        if rspan is None:
            return await self._attempts(request, priority, None)
        try:
            result = await self._attempts(request, priority, rspan)
        except BaseException as exc:
            rspan.finish(error=exc)
            raise
        self._finish_span(rspan, result)
        return result

    def _finish_span(self, rspan: telemetry.RequestSpan, result: ChatResult) -> None:
        """Close a request's span with its usage and its price (0 when unpriced)."""
        price = self.usage.price
        cost = 0.0
        if price is not None:
            u = result.usage
            cost = micro_dollars(price, u.prompt_tokens, u.completion_tokens) / 1e6
        rspan.finish(result, cost=cost)

    async def _attempts(
        self, request: ChatRequest, priority: int, rspan: telemetry.RequestSpan | None
    ) -> ChatResult:
        result: Any = None
        async for item in self._attempt_iter(request, priority, rspan, None):
            result = item  # without a stream the only item is the result
        return result  # type: ignore[no-any-return]

    async def _attempt_iter(
        self,
        request: ChatRequest,
        priority: int,
        rspan: telemetry.RequestSpan | None,
        sink: ChatStream | None,
    ) -> AsyncIterator[Any]:
        """Send ``request`` until it succeeds or may not be retried; the one loop of budgets,
        cost reservations, retries and accounting. Yields the ``ChatResult`` last; with a
        ``sink`` (a ``ChatStream``) the request streams and each text delta is yielded as it
        arrives (a list: those of one network read), and a failure after the first delta is
        not retried (``StreamInterruptedError``)."""
        body = request.body()
        if sink is not None:  # the same JSON object with the two streaming fields added
            body = body[:-1] + _STREAM_FIELDS
        http = HTTPRequest(
            "POST", self._url, headers=self._headers, body=body, timeout=self.timeout
        )
        completion = request.max_tokens or int(self._completion_estimate)
        prompt_estimate = estimate_tokens(request.messages)
        tokens = prompt_estimate + completion * (request.n or 1)
        parts = (prompt_estimate, completion * (request.n or 1)) if self._split else None
        scheduler = self.scheduler
        clock = self.clock
        job = current_job(self)
        usage = self.usage
        flow = None
        caps: tuple[CostCap, ...] = () if self._cost_cap is None else (self._cost_cap,)
        if job is not None:
            job.start_call()  # max_calls
            usage, flow, caps = job.charged, job.flow, job.caps + caps
        nano = self._worst_case_nano(request) if caps or self.shared is not None else 0
        policy = self.retry
        started = now = clock.now()
        attempts = 0
        rate_limited = 0
        while True:
            left = policy.max_total_seconds - (now - started)
            try:
                await scheduler.acquire(tokens, priority, max_wait=left, parts=parts, flow=flow)
            except QueueTimeout as exc:
                usage.failures += 1
                raise BudgetTimeoutError(
                    f"{self.model}: waited {clock.now() - started:.1f} s for the engine's "
                    f"budget (rpm/tpm, in-flight cap, cool-downs) without being sent; the limit "
                    f"is RetryPolicy.max_total_seconds ({policy.max_total_seconds:g} s). Raise "
                    "it, or lower the load (fewer calls at once, a larger rpm/tpm if allowed)."
                ) from exc
            reservation = None
            if self.shared is not None or caps:
                try:
                    reservation = await self._reserve(tokens, started, parts, caps, nano, usage)
                except BaseException:
                    scheduler.release(tokens, None, parts=parts, flow=flow, sent=False)
                    raise
            sent_at = clock.now()
            actual: int | None = None
            actual_parts: tuple[int, int] | None = None
            settled = False
            done: ChatResult | None = None
            try:
                usage.requests += 1
                if sink is None:
                    try:
                        response = await self.transport.send(http)
                    except APIError as exc:  # connection failures, timeouts, an oversized body
                        error: APIError = exc
                        wait = None
                    else:
                        if self._learn:
                            scheduler.learn_limits(response.headers)
                        if response.status == 200:
                            try:
                                done = self._parse(response)
                            except ResponseParseError as exc:
                                error, wait = exc, None
                        else:
                            error = self._status_error(response)
                            wait = retry_after_seconds(response.headers)
                else:
                    sink._sent(sent_at)
                    committed = False
                    try:
                        async with self.transport.stream(http) as streamed:  # type: ignore[attr-defined]
                            if self._learn:
                                scheduler.learn_limits(streamed.headers)
                            if streamed.status != 200:
                                whole = HTTPResponse(
                                    streamed.status, streamed.headers, await streamed.read()
                                )
                                error = self._status_error(whole)
                                wait = retry_after_seconds(streamed.headers)
                            else:
                                parser = SSEParser()
                                async for block in streamed.chunks():
                                    deltas = parser.feed(block)
                                    if deltas:
                                        sink._delta(clock.now(), len(deltas))
                                        committed = True
                                        yield deltas
                                    if parser.done and streamed.at_eof():
                                        break  # (else read to the end: the connection is reused)
                                if parser.plain:  # one JSON answer, not an event stream
                                    answer = self._parse(
                                        HTTPResponse(200, streamed.headers, parser.body())
                                    )
                                    if answer.text:
                                        sink._delta(clock.now())
                                        committed = True
                                        yield [answer.text]
                                    done = answer
                                else:
                                    done, sink.usage_estimated = parser.result(
                                        request, streamed.headers.get("x-request-id")
                                    )
                    except APIError as exc:
                        if committed:
                            usage.failures += 1
                            raise StreamInterruptedError(
                                f"{self.model}: the stream broke after "
                                f"{len(sink.delta_at)} deltas ({exc}); not retried, as part "
                                "of the answer was already read",
                            ) from exc
                        error, wait = exc, None
                if done is not None:
                    actual = done.usage.total_tokens or None
                    if actual is not None:
                        u = done.usage
                        actual_parts = (u.prompt_tokens, u.completion_tokens)
                    scheduler.on_success(sent_at)
                    self._account(done, usage)
                    if reservation is not None:
                        settled = True
                        await self._settle(reservation, tokens, done, parts, caps, nano)
            finally:
                scheduler.release(tokens, actual, parts=parts, actual_parts=actual_parts, flow=flow)
                if reservation is not None and not settled:
                    for cap in caps:  # at once: a stopped job leaves no reservation behind
                        cap.settle(nano, 0)
                    if self.shared is not None:
                        await asyncio.shield(self._settle(reservation, tokens, None, parts))
            if done is not None:
                if sink is not None:
                    sink.ended_at = clock.now()
                yield done
                return

            if isinstance(error, RateLimitError) and not isinstance(error, InsufficientQuotaError):
                rate_limited += 1
                usage.rate_limited += 1
                exhausted = rate_limited >= policy.max_rate_limit_attempts
                delay = wait if wait is not None else policy.backoff(rate_limited, self._rng)
            elif _retryable(error):
                attempts += 1
                usage.faults += 1
                if isinstance(error, APIConnectionError):
                    usage.connection_errors += 1
                exhausted = attempts >= policy.max_attempts
                delay = wait if wait is not None else policy.backoff(attempts, self._rng)
            else:
                usage.failures += 1
                raise error
            if exhausted or clock.now() + delay - started > policy.max_total_seconds:
                usage.failures += 1
                raise error
            usage.retries += 1
            if rspan is not None:
                kind = (
                    "asynctg.rate_limited" if isinstance(error, RateLimitError) else "asynctg.retry"
                )
                rspan.event(kind, delay_s=delay, error__type=type(error).__name__)
            if isinstance(error, RateLimitError):
                # The budget is shared: everyone waits, not only the request that was told.
                scheduler.cool_down(delay)
                scheduler.on_rate_limited(sent_at)
                if self.shared is not None:
                    await self.shared.cool_down(delay)
            elif delay > 0:
                await clock.sleep(delay)
            now = clock.now()

    def _worst_case_nano(self, request: ChatRequest) -> int:
        """A call's highest possible price in nano-dollars: every prompt character a token (no
        tokenizer does worse on text), the reply at its cap (``max_tokens``, else
        ``cost_reserve_tokens``)."""
        price = self.usage.price
        if price is None:
            return 0
        prompt = len(request.text()) + 8 * len(request.messages)
        reply = (request.max_tokens or self.cost_reserve_tokens) * (request.n or 1)
        return int(micro_dollars(price, prompt, reply) * 1000) + 1

    def worst_case_usd(self, request: ChatRequest) -> float | None:
        """The most ``request`` can cost in dollars (what a dollar cap reserves before sending
        it), or None without a price."""
        if self.usage.price is None:
            return None
        return self._worst_case_nano(request) / 1e9

    async def _reserve(
        self,
        tokens: int,
        started: float,
        parts: tuple[int, int] | None,
        caps: tuple[CostCap, ...],
        nano: int,
        usage: UsageStats,
    ) -> Reservation:
        """Reserve ``nano`` (the call's worst case) from every dollar cap in ``caps`` (a job's,
        innermost first, then the engine's), waiting while other calls' reservations fill
        one, then from the shared budget if any; all or nothing."""
        left = self.retry.max_total_seconds - (self.clock.now() - started)
        held = 0
        try:
            for cap in caps:
                await cap.acquire(nano, self.model, clock=self.clock, max_wait=left)
                held += 1
            if self.shared is None:
                return Reservation(tokens, nano)
            left = self.retry.max_total_seconds - (self.clock.now() - started)
            return await self.shared.reserve(tokens, nano, left, parts or (0, 0))
        except BaseException as exc:
            for cap in caps[:held]:
                cap.settle(nano, 0)
            if not isinstance(exc, QueueTimeout):
                raise
            usage.failures += 1
            which = "dollar cap" if held < len(caps) else "shared budget"
            raise BudgetTimeoutError(
                f"{self.model}: the {which} held this call past RetryPolicy.max_total_seconds "
                f"({self.retry.max_total_seconds:g} s): {exc}"
            ) from exc

    async def _settle(
        self,
        reservation: Reservation,
        tokens: int,
        result: ChatResult | None,
        parts: tuple[int, int] | None = None,
        caps: tuple[CostCap, ...] = (),
        nano: int = 0,
    ) -> None:
        spent = 0
        price = self.usage.price
        if result is not None and price is not None:
            u = result.usage
            spent = int(micro_dollars(price, u.prompt_tokens, u.completion_tokens) * 1000)
        for cap in caps:
            cap.settle(nano, spent)
        if self.shared is None:
            return
        await self.shared.settle(reservation, spent if result is not None else None)
        if result is not None:
            u = result.usage
            await self.shared.adjust_tokens(
                tokens,
                u.total_tokens or None,
                parts or (0, 0),
                (u.prompt_tokens, u.completion_tokens) if parts and u.total_tokens else None,
            )
            stats = self.scheduler.statistics()
            if stats["learned_rpm"] or stats["learned_tpm"]:
                await self.shared.publish_limits(stats["learned_rpm"], stats["learned_tpm"])

    def _parse(self, response: HTTPResponse) -> ChatResult:
        try:
            completion = decode_completion(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ResponseParseError(
                f"the server's answer is not a chat completion: {exc}", body=response.text()[:2000]
            ) from exc
        if not completion.choices:
            raise ResponseParseError(
                "the server's answer has no choices", body=response.text()[:2000]
            )
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
        usage = completion.usage or Usage()
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
        )

    def _account(self, result: ChatResult, usage: UsageStats) -> None:
        prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
        for counters in usage.targets:  # the engine's, and a job's (its own and enclosing ones)
            counters.calls += 1
            counters.prompt_tokens += prompt
            counters.completion_tokens += completion
        if completion:
            # A running estimate of answer length sizes the token charge made before sending.
            self._completion_estimate += (
                completion / len(result.texts) - self._completion_estimate
            ) / 16

    def _status_error(self, response: HTTPResponse) -> APIStatusError:
        status = response.status
        message, code = decode_error(response.body)
        request_id = response.headers.get("x-request-id")
        body = response.text()[:2000]
        where = f"{status} from {self._url}"
        kwargs: dict[str, Any] = {
            "status": status,
            "request_id": request_id,
            "body": body,
            "code": code,
        }
        if status == 429:
            if code == "insufficient_quota" or "insufficient_quota" in body:
                return InsufficientQuotaError(
                    f"{where}: out of quota ({message}). Waiting will not help: add credit to "
                    "the account or use another API key.",
                    **kwargs,
                )
            return RateLimitError(
                f"{where}: rate limited ({message}). Lower rpm/tpm or max_concurrency, or allow "
                "more retry time (RetryPolicy.max_total_seconds).",
                **kwargs,
            )
        if status == 401:
            hint = (
                "pass api_key=... to get_engine() or set OPENAI_API_KEY"
                if not self._has_key
                else "check the key passed as api_key= or in OPENAI_API_KEY"
            )
            return AuthenticationError(f"{where}: {message or 'unauthorized'}; {hint}.", **kwargs)
        if status == 403:
            return PermissionDeniedError(
                f"{where}: {message or 'forbidden'}; this key may not use model {self.model!r}.",
                **kwargs,
            )
        if status >= 500:
            return ServerError(f"{where}: {message or 'server error'}", **kwargs)
        if 300 <= status < 400:
            return RedirectError(_redirect_message(where, response.headers), **kwargs)
        lowered = f"{code or ''} {message}".lower()
        if status in (400, 413) and any(h in lowered for h in _CONTEXT_HINTS):
            learned = _WINDOW_IN_MESSAGE.search(message)
            if learned is not None:
                window = int(learned.group(1))
                if 16 <= window and (self.context_window is None or window < self.context_window):
                    self.context_window = window
            return ContextLengthError(
                f"{where}: the prompt does not fit the model's context window ({message}). "
                "Shorten the inputs or lower max_tokens.",
                **kwargs,
            )
        if status == 404:
            return BadRequestError(
                f"{where}: {message or 'not found'}. Check the model name ({self.model!r}) and "
                "base_url (OpenAI-compatible servers usually serve under /v1).",
                **kwargs,
            )
        if status in (408, 409):
            return ServerError(f"{where}: {message}", **kwargs)
        return BadRequestError(f"{where}: {message or 'bad request'}", **kwargs)

    # --- inspection and lifetime ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since creation: calls, retries, 429s, tokens, cache hits, cost, scheduler."""
        out = self.usage.snapshot()
        out["scheduler"] = self.scheduler.statistics()
        out["model"] = self.model
        return out

    async def aclose(self) -> None:
        """Close the HTTP session and the cache file; both reopen if the engine is used again."""
        await self.transport.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        if self.cache is not None:
            self.cache.close()

    async def __aenter__(self) -> ChatEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


#: appended to a request body's JSON object (in place of its closing brace) to stream it
_STREAM_FIELDS = b',"stream":true,"stream_options":{"include_usage":true}}'


def _retryable(error: APIError) -> bool:
    if isinstance(error, InsufficientQuotaError):
        return False
    if isinstance(error, APIStatusError):
        return RetryPolicy.is_retryable_status(error.status)
    return isinstance(error, APIConnectionError | ResponseParseError)


def _redirect_message(where: str, headers: Mapping[str, str]) -> str:
    location = headers.get("location", "")
    target = urlsplit(location)
    # the origin only: a Location's path or query may carry anything
    origin = f"{target.scheme}://{target.netloc}" if target.netloc else "the same server"
    return (
        f"{where}: the endpoint redirects API calls (to {origin}); asynctg does not follow "
        "redirects, which would send the prompt elsewhere. Set base_url to the final address."
    )


def _check_params(fields: Mapping[str, Any]) -> None:
    t = fields.get("temperature")
    if t is not None and (not isinstance(t, int | float) or not 0 <= t <= 2):
        raise ConfigError(f"temperature must be a number within [0, 2], got {t!r}")
    p = fields.get("top_p")
    if p is not None and (not isinstance(p, int | float) or not 0 <= p <= 1):
        raise ConfigError(f"top_p must be a number within [0, 1], got {p!r}")
    m = fields.get("max_tokens")
    if m is not None and (not isinstance(m, int) or m < 1):
        raise ConfigError(f"max_tokens must be an integer >= 1, got {m!r}")
    n = fields.get("n")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    s = fields.get("seed")
    if s is not None and not isinstance(s, int):
        raise ConfigError(f"seed must be an integer, got {s!r}")
    stop = fields.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list | tuple) and all(isinstance(x, str) for x in stop))
    ):
        raise ConfigError("stop must be a string or a list of strings")


def _check_base_url(base_url: str) -> str:
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError(
            "no base URL: pass base_url='http://host:port/v1' to get_engine() or set "
            "OPENAI_BASE_URL (for the built-in simulator: `asynctg sim --port 8000`, then "
            "http://127.0.0.1:8000/v1)"
        )
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
        )
    return base_url.strip().rstrip("/")


def get_engine(
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_concurrency: int = 64,
    **options: Any,
) -> ChatEngine:
    """An engine for any OpenAI-compatible chat-completions endpoint.

    ``base_url`` and ``api_key`` default to ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``; with a
    key but no URL, the OpenAI API is used. ``rpm``/``tpm`` are the provider's budgets (None:
    learned from rate-limit headers and 429s); ``max_concurrency`` caps requests in flight.
    Other options: ``timeout``, ``retry`` (a ``RetryPolicy``), ``cache`` (a path or a
    ``ResponseCache``), ``cache_sampled``, ``price``, ``temperature`` (default 0),
    ``max_tokens``, ``seed``, ``transport``, ``clock``, ``context_window`` (tokens; default:
    the model table, else learned from the provider's first context-length error),
    ``cache_mode`` ("readwrite", "record": send everything and journal it, "replay": answer
    everything from ``cache``, send nothing, ``ReplayMissError`` on a miss),
    ``max_cost`` (dollars, or a ``CostCap`` shared by several engines: each call's worst-case
    price is reserved before it is sent, so spending never passes it; a reservation that does
    not fit beside others outstanding waits for them to settle, and ``BudgetExceededError`` is
    raised only when the settled spending plus its worst case would pass the cap; the requests
    sent are the same as without a cap), ``cost_reserve_tokens`` (the reply tokens that cap
    reserves for a request without ``max_tokens``; default: the model's reply cap from
    ``asynctg.engine.models``, else 4096),
    ``input_tpm`` / ``output_tpm`` (separate input- and output-token budgets, for providers
    that have them), ``redis_url`` / ``redis_namespace`` / ``reservation_ttl`` (share rpm, tpm,
    cool-downs and the dollar cap with every process on that Redis:
    ``asynctg.engine.shared``).

    >>> engine = get_engine("gpt-4o", base_url="http://127.0.0.1:8000/v1", rpm=600)
    """
    if api_key is None:
        api_key = os.environ.get("OPENAI_API_KEY") or None
    if base_url is None:
        base_url = os.environ.get("OPENAI_BASE_URL") or (OPENAI_BASE_URL if api_key else "")
    return ChatEngine(
        model,
        base_url=base_url,
        api_key=api_key,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency,
        **options,
    )
