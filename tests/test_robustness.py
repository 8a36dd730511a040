"""Defects found from outside (issue 13): bounded waits, typed errors, secrets, user slips."""

from __future__ import annotations

import inspect
import pickle

import pytest
from support import BASE_URL, completion, engine_with, ok, one_slow_rest_fail, scripted

import asynctg as tg
from asynctg.engine import FakeClock, RetryPolicy
from asynctg.runs.progress import format_counters
from asynctg.transport import HTTPResponse, http


async def test_absurd_rate_limit_headers_are_ignored() -> None:
    """`x-ratelimit-limit-requests: 1e-300` (or inf, nan, 0) is no budget: the next call goes
    at once instead of waiting 6e301 s."""
    clock = FakeClock()
    bad = {"x-ratelimit-limit-requests": "1e-300", "x-ratelimit-limit-tokens": "nan"}
    transport = scripted([ok(headers=bad), ok(headers={"x-ratelimit-limit-requests": "inf"})])
    engine = engine_with(transport, clock=clock)
    await clock.drive(engine.generate("a"))
    await clock.drive(engine.generate("b"))
    assert clock.now() == 0.0
    assert engine.scheduler.statistics()["learned_rpm"] is None


async def test_every_scheduler_wait_is_bounded_and_typed() -> None:
    """A request held by the budget past RetryPolicy.max_total_seconds raises
    BudgetTimeoutError, unsent, instead of waiting as long as the budget says."""
    clock = FakeClock()
    transport = scripted([ok()], then=ok())
    engine = engine_with(
        transport, clock=clock, rpm=1, retry=RetryPolicy(max_total_seconds=5, testing=True)
    )
    await clock.drive(engine.generate("first"))  # takes the one request of the bucket
    with pytest.raises(tg.BudgetTimeoutError, match="max_total_seconds"):
        await clock.drive(engine.generate("second"))
    assert clock.now() == pytest.approx(5.0)
    assert len(transport.requests) == 1
    assert engine.scheduler.statistics()["queued"] == 0


async def test_connection_failures_are_counted() -> None:
    """Connection errors are retried and counted in stats() (the progress line shows them)."""
    transport = scripted([tg.APIConnectionError, tg.APITimeoutError, ok()])
    engine = engine_with(transport)
    await engine.generate("x")
    stats = engine.stats()
    assert stats["connection_errors"] == 2 and stats["retries"] == 2
    assert format_counters(stats).endswith("2 retries  2 conn err")


def test_http_transport_has_a_connect_timeout_and_no_private_aiohttp_access() -> None:
    """An unreachable host fails within the connect timeout, not the whole request timeout;
    the transport uses no private aiohttp attribute (an upgrade cannot break it silently)."""
    transport = http.AiohttpTransport(connect_timeout=3)
    timeout = transport._timeout(120)
    assert timeout.sock_connect == 3 and timeout.total == 120
    source = inspect.getsource(http)
    for private in ("._conns", "._acquired", "._close(", "_call_connection_lost"):
        assert private not in source, private


async def test_negative_usage_is_a_malformed_answer() -> None:
    """A completion reporting negative token counts is a ResponseParseError (retried), never
    subtracted from the run's usage and cost."""
    bad = HTTPResponse(200, {}, completion("hi", prompt_tokens=-5, completion_tokens=2))
    transport = scripted([bad, ok()])
    engine = engine_with(transport)
    assert await engine.generate("x") == "hello"
    assert engine.stats()["prompt_tokens"] >= 0 and engine.stats()["faults"] == 1


def test_the_api_key_never_shows_or_pickles() -> None:
    """repr, vars() and pickle of an engine hold no API key."""
    engine = tg.get_engine("m", base_url=BASE_URL, api_key="sk-canary-123")
    assert "sk-canary-123" not in repr(engine)
    assert "sk-canary-123" not in repr(vars(engine))
    assert b"sk-canary-123" not in pickle.dumps(engine._headers)


async def test_a_failed_backward_leaves_no_request_running() -> None:
    """When one feedback call fails, its siblings are cancelled before backward raises."""
    transport, finished = one_slow_rest_fail(
        lambda text: "slow" in text, answered=lambda text: "<OBJECTIVE_FUNCTION>" not in text
    )
    engine = engine_with(transport, retry=RetryPolicy(testing=True))
    prompt = tg.Variable("p", requires_grad=True, role_description="system prompt")
    model = tg.BlackboxLLM(engine, prompt)
    losses = [
        await model(tg.Variable(q, requires_grad=False, role_description="query"))
        for q in ("slow question", "quick question")
    ]
    with pytest.raises(tg.BadRequestError):
        await tg.sum(losses).backward(engine)
    assert engine.scheduler.statistics()["in_flight"] == 0
    assert finished == []


async def test_a_coroutine_passed_as_a_variable_says_await() -> None:
    """`model(x)` without await, passed on, gets "await the call", not "wrap it"."""
    engine = engine_with(scripted([], then=ok()))
    model = tg.BlackboxLLM(engine, tg.Variable("s", requires_grad=False, role_description="sp"))
    x = tg.Variable("q", requires_grad=False, role_description="query")
    pending = model(x)  # forgot await
    with pytest.raises(tg.ConfigError, match="await the call"):
        await model(pending)  # type: ignore[arg-type]
    await pending


async def test_a_failed_feedback_call_cancels_its_sibling_of_the_same_node() -> None:
    """A call with two inputs that require gradients asks for both feedbacks at once; when one
    fails, the other is cancelled before backward raises (not left running on the loop)."""
    transport, finished = one_slow_rest_fail(
        lambda text: "<ROLE> role-of-the-slow-one </ROLE>" in text,
        answered=lambda text: "<OBJECTIVE_FUNCTION>" not in text,
    )
    engine = engine_with(transport, retry=RetryPolicy(testing=True))
    prompt = tg.Variable("p", requires_grad=True, role_description="role-of-the-slow-one")
    question = tg.Variable("q", requires_grad=True, role_description="role-of-the-failing-one")
    answer = await tg.autograd.LLMCall(engine, prompt)(question)
    answer.set_role_description("answer")
    with pytest.raises(tg.BadRequestError):
        await answer.backward(engine)
    assert engine.scheduler.statistics()["in_flight"] == 0
    assert finished == []
