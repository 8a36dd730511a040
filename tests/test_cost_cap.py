"""A dollar cap bounds spending without changing what is sent."""

from __future__ import annotations

import asyncio

import pytest
from support import completion, engine_with, scripted

import asynctg as tg
from asynctg.engine.types import request_key
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport


async def test_a_capped_engine_sends_the_same_bytes_as_an_uncapped_one() -> None:
    """With max_cost set, every request body (and so every journal and cache key) is
    byte-identical to the uncapped engine's: the cap adds no max_tokens, nor anything else."""
    plain_t = scripted([], then=tg_ok())
    capped_t = scripted([], then=tg_ok())
    plain = engine_with(plain_t, price=(1.0, 2.0))
    capped = engine_with(capped_t, price=(1.0, 2.0), max_cost=10.0)
    for engine in (plain, capped):
        await engine.generate("question", system_prompt="be brief")
        await engine.chat([{"role": "user", "content": "q2"}], temperature=0.5)
    assert [r.body for r in capped_t.requests] == [r.body for r in plain_t.requests]
    assert b"max_tokens" not in capped_t.requests[0].body
    request = capped.request([{"role": "user", "content": "q"}])
    assert request_key(request, endpoint=None) == request_key(
        plain.request([{"role": "user", "content": "q"}]), endpoint=None
    )


def tg_ok() -> HTTPResponse:
    return HTTPResponse(200, {}, completion("hello"))


async def test_the_reserve_is_the_model_reply_cap_and_the_cap_is_never_passed() -> None:
    """Without max_tokens, a call reserves the model's table reply cap (gpt-4o: 16,384 tokens,
    not a smaller default): replies that long, at 16 calls at once, never take spending past
    the cap; the calls that would are refused unsent."""
    longest = 16_384

    def handler(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(200, {}, completion("x", prompt_tokens=20, completion_tokens=longest))

    transport = MockTransport(handler)
    cap = 0.5  # dollars: room for a few worst-case gpt-4o calls ($0.16 each at $10/M out)
    engine = tg.get_engine(
        "gpt-4o",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-test",
        transport=transport,
        max_cost=cap,
    )
    assert engine.cost_reserve_tokens == longest
    results = await asyncio.gather(
        *(engine.generate(f"q{i}") for i in range(16)), return_exceptions=True
    )
    refused = sum(isinstance(r, tg.BudgetExceededError) for r in results)
    assert refused > 0 and len(transport.requests) + refused == 16
    assert engine.usage.cost is not None and engine.usage.cost <= cap
    await engine.aclose()


async def test_an_unknown_model_reserves_cost_reserve_tokens() -> None:
    """For a model the table does not know, the reserve is cost_reserve_tokens (default 4096),
    and it is what the worst case prices; the request still carries no max_tokens."""
    transport = scripted([], then=tg_ok())
    default = engine_with(transport, price=(0.0, 1.0), max_cost=1.0)
    assert default.cost_reserve_tokens == 4096
    chosen = engine_with(transport, price=(0.0, 1.0), max_cost=1.0, cost_reserve_tokens=100)
    request = chosen.request([{"role": "user", "content": "q"}])
    assert chosen.worst_case_usd(request) == pytest.approx(100 / 1e6, abs=1e-8)
    assert request.max_tokens is None
    await chosen.generate("q")
    assert b"max_tokens" not in transport.requests[-1].body
