"""The engine against the simulator over loopback HTTP: faults, errors, budgets, cancellation.

No test here measures or depends on the machine's speed: pacing runs on a fake clock that both
sides read, and cancellation waits until the simulator has the requests in hand.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pytest

import asynctg as tg
from asynctg.engine import FakeClock, RetryPolicy
from asynctg.sim import SimConfig, SimServer
from asynctg.sim.buckets import RateLimiter

FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=10)
T = TypeVar("T")


def _engine(sim: SimServer, **options: object) -> tg.ChatEngine:
    options.setdefault("retry", FAST_RETRY)
    return tg.get_engine("sim-1", base_url=sim.base_url, api_key="sk-test", **options)  # type: ignore[arg-type]


def _arrivals(n: int) -> tuple[asyncio.Event, Callable[[Mapping[str, Any]], None]]:
    """An event set once ``n`` requests have reached the simulator, and the responder (leaving
    the simulator's answers as they are) that counts them."""
    arrived = asyncio.Event()
    count = 0

    def responder(request: Mapping[str, Any]) -> None:
        nonlocal count
        count += 1
        if count >= n:
            arrived.set()

    return arrived, responder


async def _in_lockstep(clock: FakeClock, engine: tg.ChatEngine, aw: Awaitable[T]) -> T:
    """Run ``aw``, moving ``clock`` to its next timer only while no request is in flight.

    Every request then reaches the simulator at the fake instant the engine sent it, however
    long connecting and serving take on this machine: both sides see the same times.
    """
    task = asyncio.ensure_future(aw)
    try:
        while not task.done():
            await clock.settle()
            deadline = clock.next_deadline()
            if engine.scheduler.in_flight or deadline is None:
                await asyncio.wait([task], timeout=0.005)  # a request is out: real time passes
            else:
                await clock.advance(max(0.0, deadline - clock.now()))
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_every_retryable_fault_kind_is_recovered_and_counted() -> None:
    """At a 30% mix of every fault kind but "slow" (next test), all calls succeed and retries
    equal faults injected (no timeout is tight enough for a loaded machine to trip it)."""
    kinds = (
        *("500", "502", "503", "504", "drop", "malformed"),
        *("truncated", "empty_choices", "no_content"),
    )
    config = SimConfig(fault_rate=0.3, faults=kinds, seed=7)
    async with SimServer(config) as sim, _engine(sim) as engine:
        texts = await asyncio.gather(*(engine.generate(f"question {i}") for i in range(80)))
        assert all(isinstance(t, str) and t for t in texts)
        stats = sim.stats()
        eng = engine.stats()
    assert stats["faults_total"] > 10
    assert set(stats["faults"]) >= {"500", "drop", "malformed"}
    assert eng["retries"] == stats["faults_total"]
    assert eng["requests"] == stats["requests"]
    assert eng["calls"] == 80
    assert eng["failures"] == 0


async def test_a_slow_answer_is_timed_out_and_retried() -> None:
    """A reply slower than the timeout is given up on and the call retried until a reply comes
    in time: the one slow fault injected is recovered, every request but the last retried."""
    async with SimServer(SimConfig(fault_rate=1.0, faults=("slow",), slow_seconds=60.0)) as sim:

        def only_the_first_is_slow(request: Mapping[str, Any]) -> None:
            sim.update(fault_rate=0.0)  # read by the requests after this one

        sim.update(responder=only_the_first_is_slow)
        async with _engine(sim, timeout=1.0) as engine:
            assert await engine.generate("question")
            stats = sim.stats()
            eng = engine.stats()
    assert stats["faults"] == {"slow": 1}
    # a loaded machine may time out a normal reply too: then that one is retried as well
    assert eng["retries"] == stats["requests"] - 1 >= 1
    assert eng["requests"] == stats["requests"]
    assert (eng["calls"], eng["failures"]) == (1, 0)


async def test_unauthorized_fails_at_once_with_a_hint() -> None:
    """A 401 from the provider is an AuthenticationError after exactly one request."""
    async with SimServer(SimConfig(api_key="sk-right")) as sim, _engine(sim) as engine:
        with pytest.raises(tg.AuthenticationError, match="api_key") as info:
            await engine.generate("hi")
        assert info.value.status == 401
        assert sim.stats()["requests"] == 1


async def test_insufficient_quota_fails_at_once() -> None:
    """A quota 429 is InsufficientQuotaError, not retried."""
    async with SimServer(SimConfig(quota_tokens=1)) as sim, _engine(sim) as engine:
        await engine.generate("spend the quota")
        with pytest.raises(tg.InsufficientQuotaError, match="Waiting will not help"):
            await engine.generate("over quota")
        assert sim.stats()["requests"] == 2


async def test_context_window_overflow_is_context_length_error() -> None:
    """A prompt over the context window is ContextLengthError, not retried."""
    async with SimServer(SimConfig(context_window=50)) as sim, _engine(sim) as engine:
        with pytest.raises(tg.ContextLengthError):
            await engine.generate("word " * 400)
        assert sim.stats()["requests"] == 1


async def test_unknown_budget_is_learned_and_all_calls_succeed() -> None:
    """With no rpm given, 12 calls against rpm=240 all succeed; the limit is learned."""
    async with SimServer(SimConfig(rpm=240)) as sim, _engine(sim) as engine:
        await asyncio.gather(*(engine.generate(f"q{i}") for i in range(12)))
        stats = engine.stats()
        assert stats["calls"] == 12
        assert stats["scheduler"]["learned_rpm"] == 240
        assert sim.stats()["ok"] == 12


async def test_told_budget_earns_no_429() -> None:
    """Told rpm=240, the engine paces 12 calls (4 at once, then one per 0.25 s) so the
    simulator's bucket for rpm=240, on the same clock, answers no 429."""
    clock = FakeClock()
    async with SimServer(SimConfig()) as sim, _engine(sim, rpm=240, clock=clock) as engine:
        # the simulator's rpm=240 buckets, read on the engine's fake clock (no early tolerance
        # is needed: a request arrives at the fake instant it was sent)
        sim._limiter = RateLimiter.from_limits(240, None, clock.now)
        calls = asyncio.gather(*(engine.generate(f"q{i}") for i in range(12)))
        await _in_lockstep(clock, engine, calls)
        assert sim.stats()["ok"] == 12
        assert sim.stats()["rate_limited"] == 0
        assert engine.stats()["rate_limited"] == 0
        assert clock.now() == pytest.approx((12 - 4) * 0.25)  # paced at the rate, no slower


async def _fan_out_against_untold_budget(config: SimConfig) -> tuple[int, float, float]:
    """150 calls at once against the simulator's rpm=600, which the engine is not told, on a
    clock both share: (429s answered, finish time, floor). The floor is the simulator's bucket
    drained at its rate: its capacity goes at once, the rest at ``rate`` a second."""
    clock = FakeClock()
    async with SimServer(config) as sim, _engine(sim, clock=clock) as engine:
        sim._limiter = RateLimiter.from_limits(600, None, clock.now)
        bucket = sim._limiter.requests
        assert bucket is not None
        calls = asyncio.gather(*(engine.generate(f"q{i}") for i in range(150)))
        await _in_lockstep(clock, engine, calls)
        assert sim.stats()["ok"] == 150
        assert engine.stats()["rate_limited"] == sim.stats()["rate_limited"]
        return sim.stats()["rate_limited"], clock.now(), (150 - bucket.capacity) / bucket.rate


async def test_a_lone_limit_header_paces_a_fan_out_with_few_429s() -> None:
    """Only x-ratelimit-limit-requests on answers (no remaining/reset): 150 calls at once
    take at most 10 429s and finish within 1.1x the floor (14 s)."""
    config = SimConfig(rate_limit_headers_limit_only=True)
    refused, finished, floor = await _fan_out_against_untold_budget(config)
    assert floor == pytest.approx(14.0)
    assert refused <= 10
    assert finished <= 1.1 * floor


async def test_a_budget_without_headers_is_learned_from_pacing_with_few_429s() -> None:
    """No rate-limit headers at all, a 429 carrying only retry-after in whole seconds: 150
    calls at once take at most 10 429s and finish within 1.1x the floor (14 s)."""
    config = SimConfig(rate_limit_headers=False, retry_after_whole_seconds=True)
    refused, finished, floor = await _fan_out_against_untold_budget(config)
    assert refused <= 10
    assert finished <= 1.1 * floor


async def test_single_flight_over_http_sends_one_request() -> None:
    """Twenty identical concurrent calls reach the server as one request."""
    async with SimServer(SimConfig(latency="50ms")) as sim, _engine(sim) as engine:
        texts = await asyncio.gather(*(engine.generate("same question") for _ in range(20)))
        assert len(set(texts)) == 1
        assert sim.stats()["requests"] == 1


async def test_cancellation_mid_request_leaves_nothing_behind() -> None:
    """Cancelling calls in flight frees every slot; the engine works after; aclose closes all."""
    arrived, responder = _arrivals(4)
    async with SimServer(SimConfig(latency="5s", responder=responder)) as sim:
        engine = _engine(sim, max_concurrency=4)
        tasks = [asyncio.create_task(engine.generate(f"q{i}")) for i in range(10)]
        await arrived.wait()  # four requests are being served
        assert sim.stats()["in_flight"] == 4
        assert engine.scheduler.in_flight == 4
        assert engine.scheduler.queued == 6
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert engine.scheduler.in_flight == 0
        assert engine.scheduler.queued == 0
        sim.update(latency="0")
        assert await engine.generate("after") != ""
        session = engine.transport._session  # type: ignore[attr-defined]
        await engine.aclose()
        assert session.closed
    gc.collect()
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


async def test_cancellation_through_anyio_cancel_scope() -> None:
    """An anyio cancel scope around a fan-out cancels it cleanly; nothing stays in flight."""
    import anyio

    arrived, responder = _arrivals(5)
    config = SimConfig(latency="5s", responder=responder)
    async with SimServer(config) as sim, _engine(sim) as engine:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                for i in range(5):
                    group.start_soon(engine.generate, f"q{i}")
                await arrived.wait()  # all five are being served
                scope.cancel()
        assert scope.cancelled_caught
        assert engine.scheduler.in_flight == 0
