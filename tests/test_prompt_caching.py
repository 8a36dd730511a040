"""Prompt caching in the accounting: cached reads and cache writes in usage, prices, cost,
stats, telemetry and the dollar cap, compared with the simulator's provider-side bill; and the
prompt_cache_key the engine sends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
from support import BASE_URL, engine_with

import asynctg as tg
from asynctg.engine import cache_key, cache_scope
from asynctg.engine.types import request_key
from asynctg.engine.usage import nano_dollars
from asynctg.errors import ConfigError
from asynctg.sim import SimServer
from asynctg.sim.billing import Prices
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

MakeSim = Callable[..., Awaitable[SimServer]]

#: about 1,500 tokens of shared text: above both providers' minimum cacheable length
SHARED = "Answer the question step by step, then give the final answer. " * 95
OPENAI_SIM = Prices(input=2.5, output=10, cached_input=1.25, cache_write=2.5)
OPENAI_PRICE = tg.Price(input=2.5, output=10, cached_input=1.25, cache_write=None)
ANTHROPIC_SIM = Prices(input=3, output=15, cached_input=0.3, cache_write=3.75)
ANTHROPIC_PRICE = tg.Price(input=3, output=15, cached_input=0.3, cache_write=3.75)


def _engine(sim: SimServer, model: str = "sim-1", **options: Any) -> tg.ChatEngine:
    return tg.get_engine(
        model,
        base_url=sim.base_url,
        api_key="sk-test",
        retry=tg.RetryPolicy(testing=True),
        **options,
    )


async def _ask_many(engine: tg.Engine, n: int, *, start: int = 0) -> None:
    """One call to warm the cache, then ``n - 1`` at once: each a shared long system prompt
    and its own question (the paper's forward calls' shape)."""
    await engine.generate(f"question {start}", system_prompt=SHARED)
    await asyncio.gather(
        *(engine.generate(f"question {start + i}", system_prompt=SHARED) for i in range(1, n))
    )


# --------------------------------------------------------------------------- prices


def test_price_forms_and_defaults() -> None:
    """tg.Price takes cached-input and cache-write prices (None: the input price); the
    two-number form stays; the table prices OpenAI cached reads at a discount without a write
    surcharge and Anthropic reads at 0.1x and writes at 1.25x the input price."""
    engine = tg.get_engine("m", base_url=BASE_URL, price=(1.0, 2.0))
    assert engine.config.price == tg.Price(1.0, 2.0)
    assert engine.config.price.read == 1.0 and engine.config.price.write == 1.0
    gpt = tg.get_engine("gpt-4o-2024-08-06", base_url=BASE_URL).config.price
    assert gpt == tg.Price(2.5, 10.0, cached_input=1.25, cache_write=None)
    claude = tg.get_engine("claude-sonnet-4-5", base_url=BASE_URL).config.price
    assert claude is not None
    assert claude.read == pytest.approx(0.1 * claude.input)
    assert claude.write == pytest.approx(1.25 * claude.input)
    assert claude.prompt_ceiling == claude.write
    with pytest.raises(ConfigError, match="finite"):
        tg.Price(1.0, 2.0, cached_input=float("nan"))
    with pytest.raises(ConfigError, match="price"):
        tg.get_engine("m", base_url=BASE_URL, price=(1.0, 2.0, 3.0))


def test_nano_dollars_prices_reads_and_writes() -> None:
    """A call's cost prices uncached prompt tokens at input, cached reads at cached_input,
    cache writes at cache_write and the reply at output."""
    price = tg.Price(3.0, 15.0, cached_input=0.3, cache_write=3.75)
    # 1000 prompt tokens: 600 read, 300 written, 100 plain; 50 reply tokens
    assert nano_dollars(price, 1000, 50, 600, 300) == int(
        (100 * 3.0 + 600 * 0.3 + 300 * 3.75 + 50 * 15.0) * 1000
    )
    assert nano_dollars((3.0, 15.0), 1000, 50, 600, 300) == (1000 * 3 + 50 * 15) * 1000


def _usage_reply(request: HTTPRequest, *, cached: int, written: int) -> HTTPResponse:
    body = msgspec.json.decode(request.body)
    prompt = sum(len(m["content"]) for m in body["messages"])
    return HTTPResponse(
        200,
        {},
        msgspec.json.encode(
            {
                "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": 1,
                    "total_tokens": prompt + 1,
                    "prompt_tokens_details": {
                        "cached_tokens": cached,
                        "cache_write_tokens": written,
                    },
                },
            }
        ),
    )


async def test_openai_usage_reads_cached_and_written_tokens() -> None:
    """The OpenAI adapter reads prompt_tokens_details.cached_tokens (and cache_write_tokens
    where a server reports it) into Usage and the engine's counters, and prices them."""
    transport = MockTransport(lambda r: _usage_reply(r, cached=400, written=100))
    price = tg.Price(1.0, 2.0, cached_input=0.5, cache_write=1.5)
    engine = engine_with(transport, price=price)
    result = await engine.chat([{"role": "user", "content": "x" * 1000}])
    assert (result.usage.cached_tokens, result.usage.cache_write_tokens) == (400, 100)
    stats = engine.stats()
    assert stats["cached_tokens"] == 400 and stats["cache_write_tokens"] == 100
    assert stats["prompt_tokens"] == 1000
    expected = (500 * 1.0 + 400 * 0.5 + 100 * 1.5 + 1 * 2.0) / 1e6
    assert stats["cost_usd"] == pytest.approx(expected)


# --------------------------------------------------------------------------- the bill


async def test_cost_matches_the_openai_bill_with_cached_reads(make_sim: MakeSim) -> None:
    """On the OpenAI path, with cached reads, the engine's cost equals the simulator's bill
    within 1%, and its cached-token count is the bill's."""
    sim = await make_sim(openai_prices=OPENAI_SIM)
    async with _engine(sim, price=OPENAI_PRICE) as engine:
        await _ask_many(engine, 12)
        stats = engine.stats()
    bill = sim.bill()["openai"]
    assert bill["cached_input_tokens"] > 0
    assert stats["cached_tokens"] == bill["cached_input_tokens"]
    assert stats["prompt_tokens"] == bill["input_tokens"] + bill["cached_input_tokens"]
    assert engine.usage.cost_nano == pytest.approx(bill["nano_dollars"], rel=0.01)
    # the uncached list price would have been well above the bill
    list_price = nano_dollars((2.5, 10.0), stats["prompt_tokens"], stats["completion_tokens"])
    assert list_price > 1.2 * bill["nano_dollars"]


async def test_cost_matches_the_anthropic_bill_with_reads_and_writes(make_sim: MakeSim) -> None:
    """On the Anthropic path, with cache writes and cached reads, the engine's cost equals the
    simulator's bill within 1%."""
    sim = await make_sim(anthropic_prices=ANTHROPIC_SIM)
    engine = _engine(sim, "claude-sonnet-4-5", provider="anthropic", price=ANTHROPIC_PRICE)
    async with engine:
        await _ask_many(engine, 12)
        stats = engine.stats()
    bill = sim.bill()["anthropic"]
    assert bill["cache_write_tokens"] > 0 and bill["cached_input_tokens"] > 0
    assert stats["cached_tokens"] == bill["cached_input_tokens"]
    assert stats["cache_write_tokens"] == bill["cache_write_tokens"]
    assert engine.usage.cost_nano == pytest.approx(bill["nano_dollars"], rel=0.01)


# --------------------------------------------------------------------------- the dollar cap


def test_the_worst_case_prices_every_prompt_token_as_a_cache_write() -> None:
    """A dollar cap reserves each prompt token at max(input, cache_write) and the reply cap at
    output: a provider that writes the whole prompt to its cache cannot pass it."""
    price = tg.Price(3.0, 15.0, cached_input=0.3, cache_write=3.75)
    engine = tg.get_engine("m", base_url=BASE_URL, price=price, max_tokens=10)
    request = engine.request([{"role": "user", "content": "x" * 1000}])
    prompt = 1000 + 8
    assert engine.worst_case_usd(request) == pytest.approx(
        (prompt * 3.75 + 10 * 15.0) / 1e6, abs=2e-9
    )


async def _spend_until_refused(job: tg.Engine, label: str) -> int:
    """Calls ``job`` until the shared cap refuses one; returns the calls answered."""
    answered = 0
    for i in range(200):  # far more than any cap in these tests admits
        try:
            await job.generate(f"{label} question {i}", system_prompt=SHARED)
        except tg.BudgetExceededError:
            return answered
        answered += 1
    raise AssertionError("the cap never refused a call")


async def test_cap_holds_when_every_prompt_token_is_a_cache_write() -> None:
    """8 concurrent jobs sharing one engine cap, against a provider that writes every prompt
    token to its cache at 2x the input price: what it bills never passes the cap."""
    billed: list[int] = []
    price = tg.Price(100.0, 200.0, cached_input=10.0, cache_write=200.0)

    def handler(request: HTTPRequest) -> HTTPResponse:
        body = msgspec.json.decode(request.body)
        # the most tokens a prompt can be: a token per character plus message framing
        prompt = sum(len(m["content"]) + 8 for m in body["messages"])
        billed.append(nano_dollars(price, prompt, 10, 0, prompt))
        return _usage_reply(request, cached=0, written=prompt)

    cap = 20.0  # about 16 calls' worth
    engine = engine_with(MockTransport(handler), price=price, max_cost=cap, max_tokens=10)

    async def one(i: int) -> int:
        async with engine.job(f"tenant-{i}") as job:
            return await _spend_until_refused(job, f"t{i}")

    answered = await asyncio.gather(*(one(i) for i in range(8)))
    assert sum(answered) == len(billed) > 8
    assert sum(billed) <= cap * 1e9
    assert engine.usage.cost_nano == pytest.approx(sum(billed), rel=0.01)


async def test_cap_holds_at_the_simulator_with_prompt_caching(make_sim: MakeSim) -> None:
    """8 concurrent jobs sharing one engine cap against the simulator with prompt caching on:
    the simulator's bill stays within the cap, and the engine's cost matches the bill."""
    prices = Prices(input=100, output=400, cached_input=50, cache_write=100)
    sim = await make_sim(openai_prices=prices)
    cap = 4.0
    price = tg.Price(100, 400, cached_input=50)
    async with _engine(sim, price=price, max_cost=cap, max_tokens=64) as engine:

        async def one(i: int) -> int:
            async with engine.job(f"tenant-{i}") as job:
                return await _spend_until_refused(job, f"t{i}")

        answered = await asyncio.gather(*(one(i) for i in range(8)))
    bill = sim.bill()["openai"]
    assert sum(answered) == bill["requests"] > 8
    assert bill["cached_input_tokens"] > 0
    assert bill["nano_dollars"] <= cap * 1e9
    assert engine.usage.cost_nano == pytest.approx(bill["nano_dollars"], rel=0.01)


async def test_cap_holds_at_the_simulator_with_anthropic_cache_writes(make_sim: MakeSim) -> None:
    """8 concurrent jobs sharing one engine cap against the simulator's Messages API, whose
    cache writes cost 1.25x input: the bill stays within the cap."""
    prices = Prices(input=100, output=400, cached_input=10, cache_write=125)
    sim = await make_sim(anthropic_prices=prices)
    cap = 4.0
    price = tg.Price(100, 400, cached_input=10, cache_write=125)
    engine = _engine(
        sim, "claude-sonnet-4-5", provider="anthropic", price=price, max_cost=cap, max_tokens=64
    )
    async with engine:

        async def one(i: int) -> int:
            async with engine.job(f"tenant-{i}") as job:
                return await _spend_until_refused(job, f"t{i}")

        answered = await asyncio.gather(*(one(i) for i in range(8)))
    bill = sim.bill()["anthropic"]
    assert sum(answered) == bill["requests"] > 8
    assert bill["cache_write_tokens"] > 0
    assert bill["nano_dollars"] <= cap * 1e9


# --------------------------------------------------------------------------- prompt_cache_key


async def test_prompt_cache_key_per_scope_and_not_in_the_request_key() -> None:
    """Inside cache_scope(run) / cache_scope(variable) requests carry a hashed
    prompt_cache_key (no raw text), the same for the same scope and different for another
    variable; it does not change request_key; prompt_cache=False sends none."""
    transport = MockTransport(lambda r: _usage_reply(r, cached=0, written=0))
    engine = engine_with(transport)
    messages = [{"role": "user", "content": "q"}]
    with cache_scope("run-secret-name"), cache_scope("system prompt"):
        one = engine.request(messages)
        again = engine.request(messages)
        await engine.send(one)
    with cache_scope("run-secret-name"), cache_scope("answer"):
        other = engine.request(messages)
    plain = engine.request(messages)
    assert (
        one.prompt_cache_key
        == again.prompt_cache_key
        == cache_key("run-secret-name", "system prompt")
    )
    assert other.prompt_cache_key not in (None, one.prompt_cache_key)
    assert plain.prompt_cache_key is None
    assert "secret" not in (one.prompt_cache_key or "")
    assert request_key(one) == request_key(plain) == request_key(other)
    sent = msgspec.json.decode(transport.requests[0].body)
    assert sent["prompt_cache_key"] == one.prompt_cache_key
    off = engine_with(transport, prompt_cache=False)
    with cache_scope("run"):
        assert off.request(messages).prompt_cache_key is None
        assert off.request(messages, prompt_cache_key="k").prompt_cache_key is None
    with pytest.raises(ConfigError, match="prompt_cache_key"):
        engine.request(messages, prompt_cache_key="x" * 65)
    with pytest.raises(ConfigError, match="prompt_cache"):
        engine_with(transport, prompt_cache="yes")
