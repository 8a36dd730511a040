"""429 storms on a fake clock: every ``retry-after`` is honoured exactly by the whole engine;
a quota 429 fails at once, typed, and a run it hits changes nothing.

(Split from the former ``tests/test_reliability.py``; shared helpers in
``tests/reliability_support.py``.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from reliability_support import (
    Trainer,
    _batch,
    _is_optimizer_call,
    _no_backward_engine,  # noqa: F401  (autouse fixture)
    _scripted_reply,
    _user_text,
)
from support import engine_with, error, ok

import asynctg as tg
from asynctg.engine import FakeClock, RetryPolicy
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

# --- 2. 429 storms on a fake clock -----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry_after_ms": "1"}, 0.001),
        ({"retry_after_ms": "250"}, 0.25),
        ({"retry_after": "1"}, 1.0),
        ({"retry_after": "7"}, 7.0),
        ({"retry_after": "30"}, 30.0),
        ({"retry_after_ms": "30000"}, 30.0),
        ({"retry_after_ms": "1500", "retry_after": "2"}, 1.5),
    ],
    ids=["1ms", "250ms", "1s", "7s", "30s", "30000ms", "ms-before-s"],
)
async def test_429_storm_is_waited_out_exactly_by_the_whole_engine(
    headers: dict[str, str], wait: float
) -> None:
    """16 calls all answered 429 "wait W": all retry at exactly W, and a call started during
    the cool-down (which was never told anything) is not sent before W either."""
    clock = FakeClock()
    log: list[tuple[float, int]] = []

    async def handler(request: HTTPRequest) -> HTTPResponse:
        now = clock.now()
        over = now < wait - 1e-12  # the provider's budget is spent until `wait`
        log.append((now, 429 if over else 200))
        await asyncio.sleep(0)  # answer after the others are sent: a storm, not a queue
        if over:
            return error(429, "Rate limit reached", "rate_limit_exceeded", **headers)
        return ok("done")

    engine = engine_with(MockTransport(handler), clock=clock)

    async def storm() -> list[str]:
        async with asyncio.TaskGroup() as group:
            calls = [group.create_task(engine.generate(f"q{i}")) for i in range(16)]
            await clock.sleep(wait / 2)
            late = group.create_task(engine.generate("started during the cool-down"))
        return [t.result() for t in [*calls, late]]

    assert await clock.drive(storm()) == ["done"] * 17
    assert [t for t, s in log if s == 429] == [0.0] * 16
    assert [t for t, s in log if s == 200] == pytest.approx([wait] * 17, abs=1e-9)
    assert clock.now() == pytest.approx(wait, abs=1e-9)
    stats = engine.stats()
    assert (stats["rate_limited"], stats["retries"], stats["requests"]) == (16, 16, 33)
    assert stats["scheduler"]["cool_downs"] >= 1


async def test_429_sequence_from_1ms_to_30s_is_honoured_and_bystanders_wait_too() -> None:
    """One call told to wait 1 ms, 250 ms, 1 s, 7 s, 30 s in turn retries at exactly those
    moments; a bystander call started inside each cool-down goes only when it ends."""
    clock = FakeClock()
    waits = [
        ({"retry_after_ms": "1"}, 0.001),
        ({"retry_after_ms": "250"}, 0.25),
        ({"retry_after": "1"}, 1.0),
        ({"retry_after": "7"}, 7.0),
        ({"retry_after_ms": "30000", "retry_after": "60"}, 30.0),
    ]
    script = list(waits)
    sent: dict[str, list[float]] = {}

    def handler(request: HTTPRequest) -> HTTPResponse:
        text = msgspec.json.decode(request.body)["messages"][-1]["content"]
        sent.setdefault(text, []).append(clock.now())
        if text == "victim" and script:
            headers, _ = script.pop(0)
            return error(429, "slow down", "rate_limit_exceeded", **headers)
        return ok(text)

    engine = engine_with(MockTransport(handler), clock=clock)
    ends = [sum(w for _, w in waits[: i + 1]) for i in range(len(waits))]
    starts = [0.0, *ends[:-1]]

    async def run() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(engine.generate("victim"))
            for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
                await clock.sleep(start + (end - start) / 2 - clock.now())
                group.create_task(engine.generate(f"bystander {i}"))

    await clock.drive(run())
    assert sent["victim"] == pytest.approx([0.0, *ends], abs=1e-9)
    for i, end in enumerate(ends):
        assert sent[f"bystander {i}"] == pytest.approx([end], abs=1e-9)
    assert clock.now() == pytest.approx(38.251, abs=1e-9)
    assert engine.stats()["rate_limited"] == 5


_WAITS = [0.001, 0.02, 0.25, 1.0, 2.0, 5.0, 30.0]


async def test_429_storm_over_training_steps_nothing_is_sent_inside_a_cool_down() -> None:
    """Two B=8 steps while 30% of requests get a 429 with a wait from 1 ms to 30 s: the steps
    complete, every 429 is retried, and no request is sent inside any announced wait."""
    clock = FakeClock()
    rng = random.Random(429)
    log: list[tuple[float, float | None]] = []  # (sent at, wait announced or None)

    def handler(request: HTTPRequest) -> HTTPResponse:
        now = clock.now()
        if rng.random() < 0.3:
            wait = rng.choice(_WAITS)
            log.append((now, wait))
            if rng.random() < 0.5:
                return error(429, "busy", "rate_limit_exceeded", retry_after_ms=f"{wait * 1000:g}")
            return error(429, "busy", "rate_limit_exceeded", retry_after=f"{wait:g}")
        log.append((now, None))
        return ok(_scripted_reply(request))

    engine = engine_with(
        MockTransport(handler),
        clock=clock,
        retry=RetryPolicy(testing=True, max_total_seconds=3600, max_rate_limit_attempts=100),
    )
    trainer = Trainer(engine)

    async def run() -> None:
        for step in range(2):
            before = trainer.values()
            await trainer.step(_batch(step, 8))
            assert trainer.gradient_counts() == (8, 8)
            assert all(new != old for old, new in zip(before, trainer.values(), strict=True))

    await clock.drive(run())
    told = [(t, w) for t, w in log if w is not None]
    for i, (t, wait) in enumerate(log):
        if wait is None:
            continue
        for later, _ in log[i + 1 :]:
            # sends at the same fake instant were admitted before this 429 was read
            assert later == pytest.approx(t, abs=1e-12) or later >= t + wait - 1e-9
    stats = engine.stats()
    assert len(told) >= 10
    assert stats["rate_limited"] == stats["retries"] == len(told)
    assert stats["calls"] == 2 * trainer.calls_per_step(8)
    assert stats["failures"] == stats["faults"] == 0
    print(
        f"\nRELIABILITY 429-storm: {len(told)} 429s honoured over {len(log)} requests, "
        f"{clock.now():.1f} fake seconds waited"
    )


def _quota_error() -> HTTPResponse:
    return error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        retry_after="20",
    )


async def test_quota_429_is_raised_at_once_typed_and_nobody_waits() -> None:
    """insufficient_quota (even with a retry-after) is not retried and cools nothing down."""
    clock = FakeClock()
    sent: list[tuple[str, float]] = []

    def handler(request: HTTPRequest) -> HTTPResponse:
        text = msgspec.json.decode(request.body)["messages"][-1]["content"]
        sent.append((text, clock.now()))
        return _quota_error() if text == "spend" else ok("fine")

    engine = engine_with(MockTransport(handler), clock=clock)

    async def run() -> tuple[BaseException | str, ...]:
        spend = asyncio.ensure_future(engine.generate("spend"))
        await asyncio.sleep(0)
        other = asyncio.ensure_future(engine.generate("other"))
        return tuple(await asyncio.gather(spend, other, return_exceptions=True))

    quota, other = await clock.drive(run())
    assert isinstance(quota, tg.InsufficientQuotaError)
    assert isinstance(quota, tg.RateLimitError)
    assert quota.status == 429 and quota.code == "insufficient_quota"
    assert "add credit" in str(quota) and "another API key" in str(quota)
    assert other == "fine"
    assert sent == [("spend", 0.0), ("other", 0.0)]
    assert clock.now() == 0.0
    stats = engine.stats()
    assert (stats["retries"], stats["failures"], stats["scheduler"]["cool_downs"]) == (0, 1, 0)


async def test_quota_429_in_a_backward_or_a_step_changes_nothing() -> None:
    """A quota error hitting a backward pass leaves no gradient; hitting one of a step's two
    optimizer calls leaves both parameters as they were; after a top-up the run goes on."""
    quota_on: Callable[[dict[str, Any]], bool] = lambda body: False  # noqa: E731
    seen: list[dict[str, Any]] = []

    def handler(request: HTTPRequest) -> HTTPResponse:
        body = msgspec.json.decode(request.body)
        seen.append(body)
        return _quota_error() if quota_on(body) else ok(_scripted_reply(request))

    engine = engine_with(MockTransport(handler))
    trainer = Trainer(engine)
    total = await trainer.losses(_batch(0, 4))
    start = trainer.values()

    # the sixth feedback request of the pass (a second-level one, after others succeeded)
    feedback_seen = 0

    def sixth_feedback(body: dict[str, Any]) -> bool:
        nonlocal feedback_seen
        if "<OBJECTIVE_FUNCTION>" not in _user_text(body):
            return False
        feedback_seen += 1
        return feedback_seen == 6

    quota_on = sixth_feedback
    with pytest.raises(tg.InsufficientQuotaError, match="add credit"):
        await total.backward(engine)
    assert feedback_seen >= 6
    assert trainer.gradient_counts() == (0, 0)
    assert trainer.values() == start

    quota_on = lambda body: False  # noqa: E731
    await total.backward(engine)
    assert trainer.gradient_counts() == (4, 4)

    quota_on = lambda body: (  # noqa: E731
        _is_optimizer_call(body) and "<ROLE>instruction" in _user_text(body)
    )
    with pytest.raises(tg.InsufficientQuotaError):
        await trainer.optimizer.step()
    assert trainer.values() == start
    assert trainer.optimizer.steps == 0
    assert trainer.gradient_counts() == (4, 4)  # kept, so the step can be retried

    quota_on = lambda body: False  # noqa: E731
    await trainer.optimizer.step()
    assert all(new != old for old, new in zip(start, trainer.values(), strict=True))
    assert engine.stats()["retries"] == 0
