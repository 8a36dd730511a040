"""The chat engine: one request in, a completion out, within budget.

A call is a small pipeline, each stage a separate piece:

1. **Config** (``asynctg.engine.config.EngineConfig``): every option, validated once when the
   engine is built.
2. **Request**: ``engine.request(messages, **params)`` validates messages and parameters and
   applies the defaults; ``send`` refuses a request past the known context window.
3. **Cache and single-flight**: answered from the cache or the journal, or from an identical
   request already in flight, when allowed (``asynctg.engine.single_flight``).
4. **Budgets** (``asynctg.engine.budget``): one ``reserve(estimate) -> Permit`` /
   ``permit.settle(spent)`` protocol; the chain is the local scheduler, the caps of the call's
   job, and the engine's dollar cap or its Redis-shared budget.
5. **Attempt** (``asynctg.engine.attempt``): one HTTP request, unary or streamed, read by the
   provider adapter (``asynctg.engine.providers``: wire format, errors, usage, rate-limit headers).
6. **Retry** (``_call``): reserve, attempt, settle; then the policy (``asynctg.engine.retry``)
   says whether and when to try again.

The graph layer builds requests and hands them here; nothing above this module talks HTTP,
sleeps or retries.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from asynctg import telemetry
from asynctg.engine.attempt import Outcome, one_attempt
from asynctg.engine.batch import BatchRunner
from asynctg.engine.budget import (
    Budget,
    Budgets,
    CapBudget,
    CostCap,
    Estimate,
    FlexBudget,
    SchedulerBudget,
    Spent,
    held_too_long,
)
from asynctg.engine.cache import ResponseCache, ResponseStore
from asynctg.engine.clock import Clock, LoopClock
from asynctg.engine.config import CACHE_MODES, DEFAULT_TIMEOUT, EngineConfig, check_params
from asynctg.engine.factory import OPENAI_BASE_URL, get_engine
from asynctg.engine.jobs import Job, current_job
from asynctg.engine.models import context_window_for, max_output_tokens_for
from asynctg.engine.prompt_cache import MAX_KEY_CHARS, current_key
from asynctg.engine.providers import CallSite, SecretHeaders, provider
from asynctg.engine.retry import Retrying, RetryPolicy
from asynctg.engine.scheduler import QueueTimeout, Scheduler, ticket
from asynctg.engine.shared import SharedBudget
from asynctg.engine.single_flight import InFlight, cached, coalesce, replay
from asynctg.engine.streaming import ChatStream, check_streaming
from asynctg.engine.tiers import (
    FlexAllowance,
    FlexCapacity,
    FlexRetry,
    count_tier,
    current_tier,
    flex_body,
    flex_unavailable,
    saved_nano,
    served_tier,
    use_tier,
)
from asynctg.engine.types import (
    ChatRequest,
    ChatResult,
    Usage,
    endpoint_key,
    estimate_tokens,
    request_key,
    user_turn,
    validate_messages,
)
from asynctg.engine.usage import UsageStats, nano_dollars
from asynctg.errors import (
    ConfigError,
    ContextBudgetError,
    RateLimitError,
)
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse, Transport

__all__ = [
    "CACHE_MODES",
    "DEFAULT_TIMEOUT",
    "OPENAI_BASE_URL",
    "ChatEngine",
    "EngineConfig",
    "get_engine",
]

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

_SAMPLING_KEYS = frozenset(
    {"temperature", "top_p", "max_tokens", "seed", "stop", "n", "response_format"}
)


class ChatEngine:
    """A chat-completions client with budgets, retries and a cache.

    Create one with ``asynctg.get_engine`` (or ``ChatEngine(EngineConfig(...))``; keyword
    options build the config). Use it as ``async with engine: ...`` or call
    ``await engine.aclose()`` when done; the HTTP session opens lazily in the running loop.

    >>> import asynctg as tg
    >>> engine = tg.get_engine("sim-1", base_url="http://127.0.0.1:8000/v1")
    >>> engine.model
    'sim-1'
    """

    def __init__(self, model: str | EngineConfig, **options: Any) -> None:
        if isinstance(model, EngineConfig):
            if options:
                raise TypeError("ChatEngine(config) takes no other options")
            config = model
        else:
            config = EngineConfig(model=model, **options)
        #: the options, without the API key (which lives only in the request headers)
        self.config = dataclasses.replace(config, api_key=None)
        self.model = model = config.model
        self.base_url = config.base_url
        self.provider = provider(config.provider, prompt_cache=config.prompt_cache)
        self._url = self.provider.url(self.base_url)
        self.timeout = config.timeout
        self.retry: RetryPolicy = config.retry
        # the provider's own defaults (Anthropic: max_tokens) under the engine's
        self.defaults: dict[str, Any] = {**self.provider.defaults, **config.defaults}
        #: The server and the wire format, for keys: a Claude answer is not an OpenAI answer
        #: even from one address (the simulator serves both APIs on one port).
        endpoint = endpoint_key(self.base_url)
        if self.provider.name != "openai":
            endpoint = f"{self.provider.name}+{endpoint}"
        self._headers = SecretHeaders(self.provider.headers(config.api_key))
        self._site = CallSite(self._url, model, bool(config.api_key))
        self.clock: Clock = config.clock or LoopClock()
        redis_url = config.redis_url
        # With a Redis budget, Redis paces rpm/tpm for every process; locally only the
        # in-flight cap (and 429-driven concurrency) apply.
        local = redis_url is None
        self.scheduler = Scheduler(
            rpm=config.rpm if local else None,
            tpm=config.tpm if local else None,
            max_concurrency=config.max_concurrency,
            clock=self.clock,
            input_tpm=config.input_tpm if local else None,
            output_tpm=config.output_tpm if local else None,
            # no budget at all: probe it and learn its rate (a shared one is Redis's to pace)
            learn_rate=local,
        )
        self._split = config.input_tpm is not None or config.output_tpm is not None
        self._learn = config.rpm is None or config.tpm is None
        self.transport: Transport = config.transport or AiohttpTransport()
        cache = config.cache
        self.cache: ResponseStore | None
        if cache is None or isinstance(cache, str | os.PathLike):
            self.cache = None if cache is None else ResponseCache(cache)
        else:
            self.cache = cache  # ResponseCache, or any store with get / put / close
        if config.cache_mode == "replay" and isinstance(self.cache, ResponseCache):
            if isinstance(cache, str | os.PathLike) and not len(self.cache):
                raise ConfigError(
                    f"cache_mode='replay': the journal {cache} holds no call to replay"
                )
        #: "readwrite": answer from the cache at temperature 0 (or always, with cache_sampled)
        #: and store new answers; "record": send every call and store every answer; "replay":
        #: answer every call from the cache, never send, ``ReplayMissError`` on a miss.
        self.cache_mode = config.cache_mode
        self.cache_sampled = config.cache_sampled or config.cache_mode == "record"
        #: The endpoint that keys cached answers with the request (``request_key``), so a
        #: cache shared by several servers (or filled by someone else) never answers for
        #: another one. None for a run's journal ("record", "replay", and checkpoints, which
        #: set it so): that holds one run's own answers, replayed whatever address the server
        #: had then (a simulator on another port, a replay that contacts nothing).
        self.cache_endpoint: str | None = endpoint if config.cache_mode == "readwrite" else None
        self.usage = UsageStats(config.price)
        #: Tokens a request (prompt and reply) may use: given, from the model table, or learned
        #: from the provider's first context-length error that names it; None: unknown.
        self.context_window: int | None = config.context_window or context_window_for(model)
        #: Reply tokens the dollar cap reserves for a request without ``max_tokens``: given, the
        #: model's reply cap from the table, else ``DEFAULT_COST_RESERVE_TOKENS``. Reserved only,
        #: never sent: a cap does not change requests (replays and caches of uncapped runs hit).
        self.cost_reserve_tokens: int = (
            config.cost_reserve_tokens
            or max_output_tokens_for(model)
            or DEFAULT_COST_RESERVE_TOKENS
        )
        max_cost = config.max_cost
        self._cost_cap: CostCap | None = None
        #: rpm/tpm, cool-downs and the dollar cap shared through Redis (``redis_url``), or None
        self.redis_budget: SharedBudget | None = None
        if redis_url is not None:
            self.redis_budget = SharedBudget(
                redis_url,
                model=model,
                clock=self.clock,
                rpm=config.rpm,
                tpm=config.tpm,
                max_cost=max_cost.cap / 1e9 if isinstance(max_cost, CostCap) else max_cost,
                namespace=config.redis_namespace,
                reservation_ttl=config.reservation_ttl
                or max(900.0, self.retry.max_total_seconds + 60),
                input_tpm=config.input_tpm,
                output_tpm=config.output_tpm,
                endpoint=endpoint,
            )
            self.redis_budget.learned = self._learned_limits
        elif max_cost is not None:
            # A CostCap given by the caller is shared with its other engines (one run's cap).
            self._cost_cap = max_cost if isinstance(max_cost, CostCap) else CostCap(max_cost)
        self._local = SchedulerBudget(self.scheduler)
        # Flex calls have an in-flight allowance of their own: flex capacity is the
        # provider's, and a flex answer takes several times a standard one's latency, so in
        # the standard cap they would hold its slots (Little's law) and queue the run behind
        # them. They still draw on the account's rpm/tpm through the standard scheduler.
        # Unless flex_concurrency fixes it, the allowance follows the measured latency ratio.
        self._flex_allowance: FlexAllowance | None = None
        if config.flex_concurrency is None:
            self._flex_allowance = FlexAllowance(config.max_concurrency)
        flex_slots = config.flex_concurrency or config.max_concurrency
        self.flex_scheduler = Scheduler(
            max_concurrency=flex_slots, clock=self.clock, adaptive=False
        )
        self._flex = FlexBudget(self.flex_scheduler, self.scheduler)
        self._flex_capacity = FlexCapacity()  # whether refused flex calls back off
        #: the budgets after a job's own caps: the engine's dollar cap, or its Redis budget
        self._outer: tuple[Budget, ...] = ()
        if self._cost_cap is not None:
            self._outer = (CapBudget(self._cost_cap, model, self.clock),)
        elif self.redis_budget is not None:
            self._outer = (self.redis_budget,)
        self._budget: Budget = Budgets((self._local, *self._outer)) if self._outer else self._local
        self._in_flight: dict[str, InFlight] = {}
        self._completion_estimate = float(_INITIAL_COMPLETION_ESTIMATE)
        self._rng = random.Random()
        #: gen_ai.provider.name: "openai" for OpenAI's API, else the server's host name.
        self._provider_name = self.provider.system(self.base_url)
        telemetry.track(self)
        #: Whether image parts may be sent (custom engines say so with ``is_multimodal``).
        self.multimodal = True
        #: batch-tier fan-outs (``asynctg.engine.batch``); a checkpoint gives it a ledger
        self.batches = BatchRunner(self)

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
        priority: int = 0,
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
            priority=priority,
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
        ``prompt_cache_key`` (default: the current ``asynctg.engine.prompt_cache`` scope's) is
        the provider's prompt-cache routing hint; none is sent with ``prompt_cache=False``.
        """
        msgs = validate_messages(messages)
        key = params.pop("prompt_cache_key", None)
        if key is None:
            key = current_key()
        elif not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
            raise ConfigError(
                f"prompt_cache_key must be a string of 1 to {MAX_KEY_CHARS} characters "
                "(e.g. asynctg.engine.prompt_cache.cache_key(run_id, variable))"
            )
        if not self.config.prompt_cache:
            key = None
        merged = {**self.defaults, **params}
        extra = {k: v for k, v in merged.items() if k not in _SAMPLING_KEYS}
        fields = {k: v for k, v in merged.items() if k in _SAMPLING_KEYS and v is not None}
        check_params(fields)
        if isinstance(fields.get("stop"), list):
            fields["stop"] = tuple(fields["stop"])
        return ChatRequest(
            model=self.model, messages=msgs, extra=extra or None, prompt_cache_key=key, **fields
        )

    # --- calling -------------------------------------------------------------------------------

    async def chat(
        self, messages: Any, *, priority: int = 0, tier: str | None = None, **params: Any
    ) -> ChatResult:
        """One chat call: ``messages`` (OpenAI format, images allowed) -> ``ChatResult``;
        ``tier`` is "standard", "flex" or "batch" (None: ``asynctg.engine.tiers``'s rule)."""
        with use_tier(tier):
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
        messages = user_turn(content, system_prompt)
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

    def open_stream(self, stream: ChatStream) -> AsyncIterator[list[str] | ChatResult]:
        """The ``StreamSource`` side of a ``ChatStream``: lists of text deltas, then the
        ``ChatResult`` (see ``asynctg.engine.streaming``)."""
        self.check_fits(stream.request)
        if self.cache_mode == "replay":
            return self._replayed_stream(stream)
        return self._streamed(stream)

    async def _streamed(self, stream: ChatStream) -> AsyncIterator[list[str] | ChatResult]:
        request = stream.request
        rspan = telemetry.request_span(self.model, self._provider_name, request.messages)
        items = self._call(request, stream.priority, rspan, stream)
        try:
            async for item in items:
                if isinstance(item, ChatResult):
                    # Streams are not served from the cache, but a recorded run must replay
                    # them: the answer goes into the journal like any call's.
                    if self.cache is not None and self._cacheable(request):
                        self.cache.put(self._cache_key(request), item)
                    if rspan is not None:
                        self._finish_span(rspan, item)
                        rspan = None
                yield item
        except GeneratorExit:
            raise  # the reader stopped: not a failed call
        except BaseException as exc:
            if rspan is not None:
                rspan.finish(error=exc)
            raise
        finally:
            await items.aclose()  # at once: the attempt's connection and budgets go back

    async def _replayed_stream(self, stream: ChatStream) -> AsyncIterator[list[str] | ChatResult]:
        result = self._replay(stream.request)
        now = self.clock.now()
        stream.sent(now)
        stream.deltas(now)
        stream.ended(now)
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
        usage = self._charged()
        if self.cache is not None and self.cache_mode == "readwrite":
            hit = cached(self.cache, key, usage, self.model)
            if hit is not None:
                return hit
        return await coalesce(self, key, request, priority, usage)

    def _replay(self, request: ChatRequest) -> ChatResult:
        assert self.cache is not None
        return replay(self.cache, self._cache_key(request), request, self._charged(), self.model)

    def _keep(self, key: str, result: ChatResult) -> None:
        """Store a new answer (unless the batch fan-out's ledger already journaled it)."""
        if self.cache is not None and not self.batches.journaled(key):
            self.cache.put(key, result)

    async def _send(self, request: ChatRequest, priority: int) -> ChatResult:
        """One call to the provider (retries included), inside its telemetry span if any; at
        the batch tier, an answer from the fan-out's provider batch when it makes one."""
        tier = current_tier() or self.config.tier
        if tier == "batch":
            answer = await self.batches.answer(self._cache_key(request), request)
            if answer is not None:
                return answer
            tier = "standard"  # too small a fan-out, or a failed batch item: an ordinary call
        rspan = telemetry.request_span(self.model, self._provider_name, request.messages)
        try:
            result: Any = None
            async for item in self._call(request, priority, rspan, None, tier):
                result = item  # without a stream the only item is the result
        except BaseException as exc:
            if rspan is not None:
                rspan.finish(error=exc)
            raise
        if rspan is not None:
            self._finish_span(rspan, result, tier)
        return result  # type: ignore[no-any-return]

    def _finish_span(
        self, rspan: telemetry.RequestSpan, result: ChatResult, tier: str = "standard"
    ) -> None:
        """Close a request's span with its usage and its price at the tier it was served at
        (0 when unpriced)."""
        nano = self._nano(result.usage)
        nano -= saved_nano(nano, self.model, served_tier(result.service_tier, tier))
        rspan.finish(result, cost=nano / 1e9)

    def _nano(self, u: Usage) -> int:
        """What ``u`` costs at this engine's price, cached reads and writes included (0 when
        unpriced)."""
        price = self.usage.price
        if price is None:
            return 0
        return nano_dollars(
            price, u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens
        )

    # --- the retry loop and one attempt --------------------------------------------------------

    async def _call(
        self,
        request: ChatRequest,
        priority: int,
        rspan: telemetry.RequestSpan | None,
        stream: ChatStream | None,
        tier: str = "standard",
    ) -> AsyncGenerator[list[str] | ChatResult, None]:
        """Send ``request`` until it succeeds or may not be retried: reserve the budgets,
        make one attempt, settle, and ask the retry policy. Yields the ``ChatResult`` last;
        with a ``stream`` each network read's text deltas are yielded first (a list), and a
        failure after the first delta is not retried (``StreamInterruptedError``). At the
        flex tier, "resource unavailable" refusals are retried until ``flex_deadline``, then
        the call goes at standard (``asynctg.engine.tiers``)."""
        http = self._http(request, stream, tier)
        job = current_job(self)
        usage, flow = self.usage, None
        if job is not None:
            job.start_call()  # max_calls
            usage, flow = job.charged, job.flow
        budget = self._budget_of(job, tier)
        priced = budget is not self._local and budget is not self._flex
        estimate = self._estimate(request, priority, flow, priced)
        clock, scheduler = self.clock, self.scheduler
        retrying = Retrying(self.retry, self._rng, clock.now())
        flex = FlexRetry(clock.now(), self.config.flex_deadline) if tier == "flex" else None
        while True:
            try:
                permit = await budget.reserve(estimate)
            except QueueTimeout as exc:
                usage.failures += 1
                limit = self.retry.max_total_seconds
                raise held_too_long(exc, estimate, self.model, limit, clock.now()) from exc
            sent_at = clock.now()
            outcome = Outcome()
            spent = None
            try:
                usage.requests += 1
                attempt = one_attempt(self, http, request, stream, sent_at, outcome, usage)
                try:
                    async for deltas in attempt:
                        yield deltas
                finally:
                    if stream is not None:
                        await attempt.aclose()
                done = outcome.result
                if done is not None:
                    scheduler.on_success(sent_at)
                    if flex is not None:
                        self._flex_capacity.record(False)
                    served = served_tier(done.service_tier, tier)
                    self._observe_latency(served, clock.now() - sent_at)
                    self._account(done, usage, served)
                    spent = self._spent(done, served)
            finally:
                await permit.settle(spent)
            if done is not None:
                if stream is not None:
                    stream.ended(clock.now())
                yield done
                return
            error = outcome.error
            assert error is not None
            if flex is not None and flex_unavailable(error):
                # No flex capacity: not the account's rate budget, so nobody else waits.
                usage.retries += 1
                capacity = self._flex_capacity
                capacity.record(True)
                wait = flex.next_wait(clock.now(), self._rng, capacity.scarce())
                if wait is None:  # past flex_deadline: a run never stalls on capacity
                    usage.flex_fallbacks += 1
                    flex, tier = None, "standard"
                    http = self._http(request, stream, tier)
                    budget = self._budget_of(job, tier)
                else:
                    await clock.sleep(wait)
                continue
            delay = retrying.delay(error, outcome.wait, clock.now(), usage)
            if rspan is not None:
                kind = (
                    "asynctg.rate_limited" if isinstance(error, RateLimitError) else "asynctg.retry"
                )
                rspan.event(kind, delay_s=delay, error__type=type(error).__name__)
            if isinstance(error, RateLimitError):
                # The budget is shared: everyone waits, not only the request that was told.
                scheduler.cool_down(delay)
                scheduler.on_rate_limited(sent_at)
                if self.redis_budget is not None:
                    await self.redis_budget.cool_down(delay)
            elif delay > 0:
                await clock.sleep(delay)

    def _observe_latency(self, tier: str, seconds: float) -> None:
        """Count an answer's latency in the flex allowance (``asynctg.engine.tiers``), and
        resize the flex scheduler when the allowance changes."""
        allowance = self._flex_allowance
        if allowance is not None and allowance.observe(tier, seconds):
            self.flex_scheduler.resize(allowance.slots)

    def _budget_of(self, job: Job | None, tier: str) -> Budget:
        """What a call of ``job`` at ``tier`` reserves from: the local budget (the standard
        scheduler, or the flex allowance), then the job's caps, then the engine's."""
        local: Budget = self._flex if tier == "flex" else self._local
        inner = job.budgets if job is not None else ()
        if not inner and local is self._local:
            return self._budget
        return Budgets((local, *inner, *self._outer)) if inner or self._outer else local

    def _http(self, request: ChatRequest, stream: ChatStream | None, tier: str) -> HTTPRequest:
        """The HTTP request of one call at ``tier`` ("standard" or "flex")."""
        body = self.provider.body(request, stream=stream is not None)
        timeout = self.timeout
        if tier == "flex":
            body = flex_body(self.provider.name, body)
            timeout = self.config.flex_timeout
        return HTTPRequest("POST", self._url, headers=self._headers, body=body, timeout=timeout)

    def _failed(self, response: HTTPResponse, outcome: Outcome) -> None:
        """A non-200 answer: the adapter reads it; a context window it names is learned here
        (the smallest one named wins), not while building the error."""
        report = self.provider.error(response, self._site)
        window = report.context_window
        if window is not None and (self.context_window is None or window < self.context_window):
            self.context_window = window
        outcome.error, outcome.wait = report.error, report.retry_after

    # --- budgets -------------------------------------------------------------------------------

    def _estimate(self, request: ChatRequest, priority: int, flow: Any, priced: bool) -> Estimate:
        """What ``request`` reserves: its estimated tokens (the reply at ``max_tokens``, else
        the running average) and, when a cap or a Redis budget will hold it, its worst case."""
        n = request.n or 1
        completion = (request.max_tokens or int(self._completion_estimate)) * n
        prompt = estimate_tokens(request.messages)
        split = self._split or self.scheduler.split_learned
        return Estimate(
            prompt + completion,
            (prompt, completion) if split else None,
            self._worst_case_nano(request) if priced else 0,
            self.clock.now() + self.retry.max_total_seconds,
            priority,
            flow,
            ticket(),  # a retry (after an error, a 429, a flex refusal) keeps its place in line
        )

    def _spent(self, result: ChatResult, tier: str = "standard") -> Spent:
        u = result.usage
        total = u.total_tokens or None
        nano = self._nano(u)  # at standard, cached reads and writes included
        nano -= saved_nano(nano, self.model, tier)
        return Spent(total, (u.prompt_tokens, u.completion_tokens) if total else None, nano)

    def _learned_limits(self) -> tuple[float | None, float | None]:
        stats = self.scheduler.statistics()
        return stats["learned_rpm"], stats["learned_tpm"]

    def _worst_case_nano(self, request: ChatRequest) -> int:
        """A call's highest possible price in nano-dollars: every prompt character a token (no
        tokenizer does worse on text), each priced as a cache write when that costs more than
        plain input (a provider may write every prompt token to its cache: Anthropic at 1.25x),
        the reply at its cap (``max_tokens``, else ``cost_reserve_tokens``)."""
        price = self.usage.price
        if price is None:
            return 0
        prompt = len(request.text()) + 8 * len(request.messages)
        reply = (request.max_tokens or self.cost_reserve_tokens) * (request.n or 1)
        return int((prompt * price.prompt_ceiling + reply * price.output) * 1000) + 1

    def worst_case_usd(self, request: ChatRequest) -> float | None:
        """The most ``request`` can cost in dollars (what a dollar cap reserves before sending
        it), or None without a price."""
        if self.usage.price is None:
            return None
        return self._worst_case_nano(request) / 1e9

    def _account(self, result: ChatResult, usage: UsageStats, tier: str = "standard") -> None:
        u = result.usage
        completion = u.completion_tokens
        for counters in usage.targets:  # the engine's, and a job's (its own and enclosing ones)
            counters.calls += 1
            counters.prompt_tokens += u.prompt_tokens
            counters.completion_tokens += completion
            counters.cached_tokens += u.cached_tokens
            counters.cache_write_tokens += u.cache_write_tokens
        if tier != "standard":
            count_tier(usage, self.model, tier, u)
        if completion:
            # A running estimate of answer length sizes the token charge made before sending.
            self._completion_estimate += (
                completion / len(result.texts) - self._completion_estimate
            ) / 16

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
        if self.redis_budget is not None:
            await self.redis_budget.aclose()
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
