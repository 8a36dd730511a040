"""The engine against the simulator over loopback HTTP: faults, errors, budgets, cancellation."""

from __future__ import annotations

import asyncio
import gc

import pytest

import asynctg as tg
from asynctg.engine import RetryPolicy
from asynctg.sim import SimConfig, SimServer

FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=10)


def _engine(sim: SimServer, **options: object) -> tg.ChatEngine:
    options.setdefault("retry", FAST_RETRY)
    return tg.get_engine("sim-1", base_url=sim.base_url, api_key="sk-test", **options)  # type: ignore[arg-type]


async def test_every_retryable_fault_kind_is_recovered_and_counted() -> None:
    """At a 30% mix of every fault kind, all calls succeed and retries equal faults injected."""
    kinds = (
        *("500", "502", "503", "504", "drop", "malformed"),
        *("truncated", "empty_choices", "no_content", "slow"),
    )
    config = SimConfig(fault_rate=0.3, faults=kinds, slow_seconds=5.0, seed=7)
    async with SimServer(config) as sim, _engine(sim, timeout=0.5) as engine:
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
    """Told rpm=240, the engine paces 12 calls so the simulator answers no 429."""
    async with SimServer(SimConfig(rpm=240)) as sim, _engine(sim, rpm=240) as engine:
        await asyncio.gather(*(engine.generate(f"q{i}") for i in range(12)))
        assert sim.stats()["rate_limited"] == 0
        assert engine.stats()["rate_limited"] == 0


async def test_single_flight_over_http_sends_one_request() -> None:
    """Twenty identical concurrent calls reach the server as one request."""
    async with SimServer(SimConfig(latency="50ms")) as sim, _engine(sim) as engine:
        texts = await asyncio.gather(*(engine.generate("same question") for _ in range(20)))
        assert len(set(texts)) == 1
        assert sim.stats()["requests"] == 1


async def test_cancellation_mid_request_leaves_nothing_behind() -> None:
    """Cancelling calls in flight frees every slot; the engine works after; aclose closes all."""
    async with SimServer(SimConfig(latency="5s")) as sim:
        engine = _engine(sim, max_concurrency=4)
        tasks = [asyncio.create_task(engine.generate(f"q{i}")) for i in range(10)]
        await asyncio.sleep(0.2)
        assert engine.scheduler.in_flight == 4
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

    async with SimServer(SimConfig(latency="5s")) as sim, _engine(sim) as engine:
        with anyio.move_on_after(0.2) as scope:
            async with anyio.create_task_group() as group:
                for i in range(5):
                    group.start_soon(engine.generate, f"q{i}")
        assert scope.cancelled_caught
        assert engine.scheduler.in_flight == 0
