"""The engine's pipeline pieces on their own: the typed config, the OpenAI adapter's pure
functions (parse, error reports carrying learned data), the Budget protocol and how budgets
compose, and the ChatStream's callback interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from support import BASE_URL, completion, engine_with, error, ok, scripted
from test_shared_budget import RedisServer, redis_server  # noqa: F401

from asynctg.engine import FakeClock, Price
from asynctg.engine.budget import (
    NANO,
    Budgets,
    BudgetWaitTimeout,
    CapBudget,
    CostCap,
    Estimate,
    Permit,
    Spent,
)
from asynctg.engine.client import ChatEngine, get_engine
from asynctg.engine.config import EngineConfig
from asynctg.engine.providers import CallSite, provider
from asynctg.engine.providers.openai import OPENAI, parse_completion, read_error
from asynctg.engine.scheduler import QueueTimeout
from asynctg.engine.streaming import ChatStream
from asynctg.engine.types import ChatRequest, ChatResult, Usage
from asynctg.engine.usage import nano_dollars
from asynctg.errors import (
    BadRequestError,
    BudgetExceededError,
    ConfigError,
    ContextLengthError,
    InsufficientQuotaError,
    RateLimitError,
    ResponseParseError,
)
from asynctg.transport import HTTPResponse, MockTransport

SITE = CallSite(url=f"{BASE_URL}/chat/completions", model="m", has_key=True)

# --- the config --------------------------------------------------------------------------------


def test_config_is_validated_once_when_built() -> None:
    """EngineConfig checks its values when built: a bad one is a ConfigError there, and the
    one it keeps is normalised (base URL without trailing slash, the table's price)."""
    with pytest.raises(ConfigError, match="max_concurrency"):
        EngineConfig(model="m", base_url=BASE_URL, max_concurrency=0)
    with pytest.raises(ConfigError, match="cache_mode"):
        EngineConfig(model="m", base_url=BASE_URL, cache_mode="bogus")
    with pytest.raises(ConfigError, match="needs a price"):
        EngineConfig(model="unpriced-model", base_url=BASE_URL, max_cost=1.0)
    config = EngineConfig(model="gpt-4o", base_url=BASE_URL + "/")
    assert config.base_url == BASE_URL and config.price == Price(2.5, 10.0, cached_input=1.25)


def test_get_engine_builds_a_config_the_engine_keeps_without_its_key() -> None:
    """get_engine's options become the engine's EngineConfig; the key is only in the headers."""
    engine = get_engine("m", base_url=BASE_URL, api_key="sk-secret-1", rpm=60, max_tokens=9)
    assert isinstance(engine.config, EngineConfig)
    assert engine.config.rpm == 60 and engine.config.api_key is None
    assert engine.defaults == {"temperature": 0.0, "max_tokens": 9}
    again = ChatEngine(engine.config)
    assert again.model == "m" and "sk-secret-1" not in repr(engine.config)


def test_an_unknown_provider_is_a_config_error() -> None:
    """A provider without an adapter is refused when the engine is built."""
    with pytest.raises(ConfigError, match="provider"):
        get_engine("m", base_url=BASE_URL, provider="nobody")
    assert provider("openai") is OPENAI


# --- the OpenAI adapter's pure functions -------------------------------------------------------


def test_parse_completion_reads_texts_usage_and_request_id() -> None:
    """A 200 completion becomes a ChatResult with its text, usage and x-request-id."""
    result = parse_completion(HTTPResponse(200, {"x-request-id": "r9"}, completion("hi", 7, 3)))
    assert result.text == "hi" and result.request_id == "r9"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (7, 3)


def test_parse_completion_refuses_an_answer_without_choices() -> None:
    """An answer with no choices (or not JSON) is a ResponseParseError, nothing else."""
    empty = msgspec.json.encode({"choices": [], "model": "m"})
    with pytest.raises(ResponseParseError, match="no choices"):
        parse_completion(HTTPResponse(200, {}, empty))
    with pytest.raises(ResponseParseError, match="not a chat completion"):
        parse_completion(HTTPResponse(200, {}, b"<html>"))


def test_an_error_report_carries_the_window_a_400_names_as_data() -> None:
    """read_error on a context-length 400 returns the ContextLengthError and the window the
    message names; it is pure: the same answer gives an equal report every time."""
    response = error(400, "This model's maximum context length is 8192 tokens", code="x")
    report = read_error(response, SITE)
    assert isinstance(report.error, ContextLengthError) and report.context_window == 8192
    again = read_error(response, SITE)
    assert again.context_window == 8192 and str(again.error) == str(report.error)
    assert read_error(error(400, "maximum context length is 8 tokens"), SITE).context_window is None


def test_an_error_report_carries_the_wait_a_429_asks_for() -> None:
    """A 429 is a RateLimitError with retry-after-ms read as seconds; insufficient_quota is
    its own error; a 404 names the model."""
    report = read_error(error(429, "slow down", retry_after_ms="1500"), SITE)
    assert isinstance(report.error, RateLimitError) and report.retry_after == 1.5
    quota = read_error(error(429, "no money", code="insufficient_quota"), SITE)
    assert isinstance(quota.error, InsufficientQuotaError)
    missing = read_error(error(404, "no such model"), SITE)
    assert isinstance(missing.error, BadRequestError) and "'m'" in str(missing.error)


async def test_the_engine_learns_the_smallest_window_from_error_reports() -> None:
    """The engine keeps the window a context-length 400 names, and never raises it again
    from a later report naming a larger one."""
    transport = scripted(
        [
            error(400, "maximum context length is 4096 tokens"),
            error(400, "maximum context length is 9000 tokens"),
        ]
    )
    engine = engine_with(transport)
    for _ in range(2):
        with pytest.raises(ContextLengthError):
            await engine.generate("q")
    assert engine.context_window == 4096


def test_openai_rate_limit_headers_are_the_scheduler_vocabulary() -> None:
    """The OpenAI adapter hands rate-limit headers to the scheduler as they are."""
    headers = {"x-ratelimit-limit-requests": "60"}
    assert OPENAI.rate_limits(headers) is headers
    assert OPENAI.body(
        ChatRequest(model="m", messages=({"role": "user", "content": "x"},)), stream=True
    ).endswith(b'"stream":true,"stream_options":{"include_usage":true}}')


def test_money_is_integer_nano_dollars() -> None:
    """A call's price is an integer of nano-dollars (1000 per dollar-per-million token)."""
    assert nano_dollars((2.5, 10.0), 1000, 100) == 3_500_000
    assert isinstance(nano_dollars((0.15, 0.6), 3, 7), int)


# --- budgets and their composition -------------------------------------------------------------


class _Recorder:
    """A budget that records reserve and settle in a shared log; it may refuse or wait."""

    def __init__(self, name: str, log: list[str], *, refuse: bool = False) -> None:
        self.label = f"budget {name}"
        self.name = name
        self.log = log
        self.refuse = refuse
        self.gate: asyncio.Event | None = None

    async def reserve(self, estimate: Estimate) -> Permit:
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            raise BudgetExceededError("no", cap=1.0, spent=1.0, limit="max_cost")
        self.log.append(f"reserve {self.name}")
        return _RecordedPermit(self)


class _RecordedPermit:
    def __init__(self, budget: _Recorder) -> None:
        self.budget = budget

    async def settle(self, spent: Spent | None) -> None:
        what = "release" if spent is None else f"settle {spent.nano}"
        self.budget.log.append(f"{what} {self.budget.name}")


def _estimate(nano: int = 10) -> Estimate:
    return Estimate(tokens=5, parts=None, nano=nano, deadline=60.0)


async def test_budgets_reserve_in_order_and_settle_in_reservation_order() -> None:
    """A chain reserves job, engine, Redis in order, and settles them in that order (the local
    ones first) with the real spend."""
    log: list[str] = []
    chain = Budgets([_Recorder(n, log) for n in ("job", "engine", "redis")])
    permit = await chain.reserve(_estimate())
    await permit.settle(Spent(tokens=7, parts=None, nano=3))
    assert log == [
        "reserve job",
        "reserve engine",
        "reserve redis",
        "settle 3 job",
        "settle 3 engine",
        "settle 3 redis",
    ]


async def test_a_refused_budget_releases_those_already_held() -> None:
    """When the outer budget refuses, the permits already taken are released (not spent)
    before the refusal propagates."""
    log: list[str] = []
    chain = Budgets(
        [_Recorder("job", log), _Recorder("engine", log), _Recorder("redis", log, refuse=True)]
    )
    with pytest.raises(BudgetExceededError):
        await chain.reserve(_estimate())
    assert log == ["reserve job", "reserve engine", "release job", "release engine"]


async def test_a_call_cancelled_while_waiting_releases_what_it_held() -> None:
    """A call cancelled while the engine's budget holds it hands back the job's permit."""
    log: list[str] = []
    engine_budget = _Recorder("engine", log)
    engine_budget.gate = asyncio.Event()
    chain = Budgets([_Recorder("job", log), engine_budget])
    task = asyncio.create_task(chain.reserve(_estimate()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["reserve job", "release job"]


async def test_a_timeout_names_the_budget_that_held_the_call() -> None:
    """A QueueTimeout inside a chain comes out as a BudgetWaitTimeout naming that budget,
    with the earlier permits released."""
    log: list[str] = []

    class Slow(_Recorder):
        async def reserve(self, estimate: Estimate) -> Permit:
            raise QueueTimeout("no room")

    with pytest.raises(BudgetWaitTimeout) as caught:
        await Budgets([_Recorder("job", log), Slow("cap", log)]).reserve(_estimate())
    assert caught.value.label == "budget cap" and log == ["reserve job", "release job"]


async def test_a_job_cap_inside_an_engine_cap_settles_both() -> None:
    """CapBudgets compose: a job's cap and the engine's each reserve the worst case, and
    settling spends the real price in both (a failure spends nothing in either)."""
    clock = FakeClock()
    job_cap, engine_cap = CostCap(1.0, job="j"), CostCap(2.0)
    chain = Budgets([CapBudget(job_cap, "m", clock), CapBudget(engine_cap, "m", clock)])
    permit = await chain.reserve(_estimate(nano=500))
    assert job_cap.reserved == engine_cap.reserved == 500
    await permit.settle(Spent(tokens=3, parts=None, nano=120))
    assert (job_cap.reserved, job_cap.spent, engine_cap.reserved, engine_cap.spent) == (
        0,
        120,
        0,
        120,
    )
    failed = await chain.reserve(_estimate(nano=500))
    await failed.settle(None)
    assert (job_cap.reserved, job_cap.spent, engine_cap.spent) == (0, 120, 120)
    assert job_cap.cap == NANO


async def test_a_job_cap_inside_a_redis_budget_spends_once_in_each(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """A call of a capped job on a Redis-shared engine reserves from the job's cap and the
    shared cap, and both count its real price once it is answered."""
    transport = MockTransport(lambda request: ok("a"))
    engine = engine_with(
        transport,
        price=(1000.0, 1000.0),
        max_tokens=5,
        max_cost=1.0,
        redis_url=redis_server.url,
        redis_namespace="compose",
    )
    async with engine, engine.job("j", max_cost=0.5) as job:
        assert await job.generate("q") == "a"
        spent = int(redis_server.command("GET", "compose:cost:spent").split(b"\r\n")[1])
    assert job.cost_cap is not None and job.cost_cap.reserved == 0
    assert spent == job.cost_cap.spent == nano_dollars((1000.0, 1000.0), 10, 2)


async def test_a_failed_call_leaves_no_reservation_in_any_cap() -> None:
    """A call that fails for good settles the job's and the engine's caps with nothing spent."""
    engine = engine_with(scripted([error(400, "bad")]), price=(1.0, 1.0), max_cost=1.0)
    async with engine.job("j", max_cost=0.5) as job:
        with pytest.raises(BadRequestError):
            await job.generate("q")
    assert engine._cost_cap is not None and job.cost_cap is not None
    assert (engine._cost_cap.reserved, engine._cost_cap.spent) == (0, 0)
    assert (job.cost_cap.reserved, job.cost_cap.spent) == (0, 0)
    assert engine.scheduler.in_flight == 0


# --- the stream's callback interface -----------------------------------------------------------


async def test_a_chat_stream_reads_any_stream_source() -> None:
    """ChatStream needs only a clock and open_stream(stream): deltas, then the result."""
    clock = FakeClock()
    answer = ChatResult(texts=("ab",), usage=Usage(prompt_tokens=1, completion_tokens=2))

    class Source:
        def __init__(self) -> None:
            self.clock = clock

        async def open_stream(self, stream: ChatStream) -> AsyncIterator[list[str] | ChatResult]:
            stream.sent(clock.now())
            stream.deltas(clock.now(), 2)
            yield ["a", "b"]
            stream.ended(clock.now())
            yield answer

    request = ChatRequest(model="m", messages=({"role": "user", "content": "x"},))
    stream = ChatStream(Source(), request, 0)
    seen: list[Any] = [delta async for delta in stream]
    assert seen == ["a", "b"] and stream.result is answer
    assert stream.attempts == 1 and stream.ttft == 0.0 and stream.latency == 0.0


async def test_stopping_a_stream_returns_its_slot_at_once() -> None:
    """Closing a stream after its first delta frees the engine's slot before aclose returns
    (the attempt inside the retry loop is closed with it, not left to the garbage collector)."""
    events = [{"choices": [{"index": 0, "delta": {"content": c}}]} for c in "xy"]
    body = b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events)
    engine = engine_with(
        MockTransport(lambda request: HTTPResponse(200, {}, body + b"data: [DONE]\n\n"))
    )
    stream = engine.stream("q")
    assert await stream.__anext__() == "x"
    assert engine.scheduler.in_flight == 1
    await stream.aclose()
    assert engine.scheduler.in_flight == 0
