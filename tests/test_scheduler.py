"""The scheduler's budgets, priorities and cool-downs, pinned with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from asynctg.engine import FakeClock, Scheduler, TokenBucket


async def _admit_times(
    sched: Scheduler, clock: FakeClock, n: int, tokens: int = 0, hold: float = 0.0
) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await sched.acquire(tokens)
        times.append(clock.now())
        if hold:
            await clock.sleep(hold)
        sched.release(tokens, tokens)

    async def all_() -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(one())

    await clock.drive(all_())
    return times


def test_bucket_refills_continuously_and_caps_at_one_second() -> None:
    """A 600/min bucket holds 10, refills 10 a second, and never exceeds its capacity."""
    bucket = TokenBucket(600, now=0.0)
    assert bucket.capacity == 10
    bucket.take(10)
    assert bucket.wait_time(1, 0.0) == pytest.approx(0.1)
    assert bucket.wait_time(1, 0.1) == 0
    bucket.refill(100.0)
    assert bucket.level == 10


def test_oversized_request_waits_for_full_bucket_then_goes_into_debt() -> None:
    """A request bigger than the bucket passes once the bucket is full, leaving debt."""
    bucket = TokenBucket(60_000, now=0.0)  # 1000 tokens a second, capacity 1000
    bucket.take(500)
    assert bucket.wait_time(5000, 0.0) == pytest.approx(0.5)
    bucket.refill(0.5)
    bucket.take(5000)
    assert bucket.level == pytest.approx(-4000)
    assert bucket.wait_time(1, 0.5) == pytest.approx(4.001)


async def test_rpm_paces_requests_after_one_second_burst() -> None:
    """rpm=120: two go at once (a second's worth), then one every half second."""
    clock = FakeClock()
    sched = Scheduler(rpm=120, clock=clock)
    times = await _admit_times(sched, clock, 6)
    assert times == pytest.approx([0, 0, 0.5, 1.0, 1.5, 2.0])


async def test_tpm_paces_by_tokens() -> None:
    """tpm=6000 (100 tokens/s): 50-token requests go two per second after the burst."""
    clock = FakeClock()
    sched = Scheduler(tpm=6000, clock=clock)
    times = await _admit_times(sched, clock, 4, tokens=50)
    assert times == pytest.approx([0, 0, 0.5, 1.0])


async def test_token_charge_is_corrected_by_reported_usage() -> None:
    """A request that used fewer tokens than estimated gives the difference back."""
    clock = FakeClock()
    sched = Scheduler(tpm=6000, clock=clock)
    await sched.acquire(100)
    sched.release(100, actual=20)
    assert sched._tpm is not None
    assert sched._tpm.level == pytest.approx(80)


async def test_concurrency_cap_holds_until_release() -> None:
    """With max_concurrency=2, a third request waits until one of the first two finishes."""
    clock = FakeClock()
    sched = Scheduler(max_concurrency=2, clock=clock)
    times = await _admit_times(sched, clock, 5, hold=1.0)
    assert times == pytest.approx([0, 0, 1, 1, 2])
    assert sched.max_in_flight == 2
    assert sched.in_flight == 0


async def test_higher_priority_is_admitted_first_when_budget_binds() -> None:
    """Waiting requests go highest priority first, then first come first served."""
    clock = FakeClock()
    sched = Scheduler(rpm=60, clock=clock)
    order: list[str] = []

    async def req(name: str, priority: int) -> None:
        await sched.acquire(0, priority)
        order.append(name)
        sched.release(0)

    async def main() -> None:
        await req("first", 0)  # spends the only request in the bucket
        async with asyncio.TaskGroup() as tg:
            tg.create_task(req("low-a", 0))
            tg.create_task(req("low-b", 0))
            tg.create_task(req("high", 5))
            tg.create_task(req("mid", 2))

    await clock.drive(main())
    assert order == ["first", "high", "mid", "low-a", "low-b"]


async def test_cool_down_holds_every_request() -> None:
    """After cool_down(2), no request is admitted for two seconds, whoever asks."""
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    sched.cool_down(2.0)
    times = await _admit_times(sched, clock, 3)
    assert times == pytest.approx([2, 2, 2])
    assert sched.cool_downs == 1


async def test_cancelled_waiter_leaves_queue_and_unblocks_others() -> None:
    """Cancelling a queued request removes it; the next one takes its turn."""
    clock = FakeClock()
    sched = Scheduler(max_concurrency=1, clock=clock)
    await sched.acquire()
    waiting = asyncio.create_task(sched.acquire(0, priority=9))
    other = asyncio.create_task(sched.acquire(0, priority=1))
    await clock.settle()
    assert sched.queued == 2
    waiting.cancel()
    await clock.settle()
    assert sched.queued == 1
    sched.release(0)
    await clock.settle()
    assert other.done()
    assert sched.in_flight == 1
    sched.release(0)
    assert sched.in_flight == 0


async def test_learns_limits_from_headers() -> None:
    """Without rpm given, x-ratelimit-limit-requests sets the pace (with a little headroom)."""
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    sched.learn_limits({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0"})
    assert sched.learned_rpm == 600
    times = await _admit_times(sched, clock, 3)
    step = 60 / (600 * 0.97)
    assert times == pytest.approx([step, 2 * step, 3 * step])


async def test_learned_bucket_starts_at_the_fraction_the_headers_report() -> None:
    """x-ratelimit-remaining is per-minute: 3000 of 6000 left means a half-full bucket."""
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    sched.learn_limits(
        {"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "3000"}
    )
    capacity = 6000 * 0.97 / 60
    times = await _admit_times(sched, clock, int(capacity) + 1)
    immediate = sum(1 for t in times if t == 0)
    assert immediate == pytest.approx(capacity / 2, abs=1)


async def test_given_limit_is_not_overridden_by_headers() -> None:
    """An rpm passed by the user wins over what headers say."""
    clock = FakeClock()
    sched = Scheduler(rpm=60, clock=clock)
    sched.learn_limits({"x-ratelimit-limit-requests": "6000"})
    assert sched.learned_rpm is None
    assert sched.statistics()["rpm_limit"] == 60


async def test_adaptive_concurrency_halves_once_per_window_and_grows_back() -> None:
    """429s cut the concurrency limit once per window (not once per 429); successes regrow it."""
    clock = FakeClock()
    sched = Scheduler(max_concurrency=64, clock=clock)
    for _ in range(40):
        await sched.acquire()
    sched.on_rate_limited(sent_at=0.0)
    assert sched.concurrency_limit == 20  # min(64, 41) / 2
    await clock.advance(1.0)
    sched.on_rate_limited(sent_at=0.0)  # sent before the cut: same window, no second cut
    assert sched.concurrency_limit == 20
    sched.on_rate_limited(sent_at=1.0)
    assert sched.concurrency_limit == 10
    for _ in range(40):
        sched.release(0)
    for _ in range(200):
        sched.on_success()
    assert sched.concurrency_limit > 20


async def test_a_lone_limit_header_starts_the_bucket_empty() -> None:
    """A limit header without remaining (gateways) paces from an empty bucket, not a burst."""
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    sched.learn_limits({"x-ratelimit-limit-requests": "600"})
    times = await _admit_times(sched, clock, 3)
    step = 60 / (600 * 0.97)
    assert times == pytest.approx([step, 2 * step, 3 * step])


async def test_unknown_budget_is_probed_with_a_bounded_first_burst() -> None:
    """learn_rate: with nothing known, 16 requests go at one instant, the rest wait."""
    clock = FakeClock()
    sched = Scheduler(clock=clock, learn_rate=True)
    for _ in range(16):
        await sched.acquire()
    waiter = asyncio.ensure_future(sched.acquire())
    await asyncio.sleep(0)
    assert not waiter.done() and sched.in_flight == 16
    waiter.cancel()


async def _first_epoch(sched: Scheduler, waiting: int) -> list[asyncio.Future[None]]:
    """16 sent at t=0 (the probe), 10 accepted, 6 refused and told to wait 1 s; ``waiting``
    requests queued behind them (so the refusals measure the provider, not our demand)."""
    for _ in range(16):
        await sched.acquire()
    waiters = [asyncio.ensure_future(sched.acquire()) for _ in range(waiting)]
    for waiter in waiters:  # answered at once (the refusals also cut concurrency, not tested)
        waiter.add_done_callback(lambda _: sched.release(0))
    await asyncio.sleep(0)
    for _ in range(10):
        sched.on_success(sent_at=0.0)
        sched.release(0)
    sched.cool_down(1.0)
    for _ in range(6):
        sched.on_rate_limited(sent_at=0.0)
        sched.release(0)
    return waiters


async def test_rate_is_learned_from_requests_accepted_before_a_429() -> None:
    """10 accepted then refusals at t=0, told to wait 1 s: the provider's bucket (taken as
    full at the start) gave 10 for 1 s' worth, so from t=1 the engine paces at 600/min (97%),
    its bucket refilled during the cool-down."""
    clock = FakeClock()
    sched = Scheduler(clock=clock, learn_rate=True)
    waiters = await _first_epoch(sched, 12)
    await clock.advance(0.999)
    assert sum(w.done() for w in waiters) == 0  # the cool-down holds everyone
    await clock.advance(0.001)
    assert sched.paced_rpm == pytest.approx(600)
    assert sched.statistics()["rpm_limit"] == pytest.approx(600 * 0.97)
    assert sum(w.done() for w in waiters) == 9  # 9.7 refilled since the refusal at t=0
    await clock.advance(0.1)
    assert sum(w.done() for w in waiters) == 10  # then about one per 0.103 s
    await clock.advance(0.25)
    assert all(w.done() for w in waiters)
    assert sched.rate_estimates == 1


async def test_a_paced_rate_probes_upward_while_nothing_is_refused() -> None:
    """After an estimate, the pace grows by 0.5% of itself per second without a 429."""
    clock = FakeClock()
    sched = Scheduler(clock=clock, learn_rate=True)
    waiters = await _first_epoch(sched, 1)
    await clock.advance(1.0)
    assert all(w.done() for w in waiters)
    base = sched.statistics()["rpm_limit"]
    assert base == pytest.approx(600 * 0.97)
    await clock.advance(10.0)
    await sched.acquire()
    assert sched.statistics()["rpm_limit"] == pytest.approx(base * 1.05)


async def test_a_429_with_nothing_waiting_teaches_no_rate() -> None:
    """A refusal while no request waits measures our demand, not the provider: no estimate,
    and the probe's bucket is dropped, so after the cool-down everyone goes at once."""
    clock = FakeClock()
    sched = Scheduler(clock=clock, learn_rate=True)
    await sched.acquire()
    sched.on_success(sent_at=0.0)
    sched.release(0)
    await sched.acquire()
    sched.cool_down(1.0)
    sched.on_rate_limited(sent_at=0.0)
    sched.release(0)
    times = await _admit_times(sched, clock, 40)
    assert times == [1.0] * 40
    assert sched.paced_rpm is None and sched.rate_estimates == 0


async def test_a_request_asking_again_with_its_ticket_goes_before_later_arrivals() -> None:
    """One slot: a request admitted with a ticket is released (its attempt failed) and asks
    again with the same ticket while a higher-priority request holds the slot: it is admitted
    next, before the two that asked after it first."""
    from asynctg.engine.scheduler import ticket

    sched = Scheduler(max_concurrency=1, clock=FakeClock())
    mine = ticket()
    await sched.acquire(place=mine)
    b = asyncio.ensure_future(sched.acquire())
    c = asyncio.ensure_future(sched.acquire())
    urgent = asyncio.ensure_future(sched.acquire(priority=1))
    await asyncio.sleep(0)
    sched.release(0)  # the first attempt failed: the higher priority goes first
    await asyncio.sleep(0)
    assert urgent.done() and not b.done()
    again = asyncio.ensure_future(sched.acquire(place=mine))
    await asyncio.sleep(0)
    sched.release(0)
    await asyncio.sleep(0)
    assert again.done() and not b.done() and not c.done()
    sched.release(0)
    await asyncio.sleep(0)
    assert b.done() and not c.done()
    sched.release(0)
    await asyncio.sleep(0)
    assert c.done()


async def test_an_unknown_budget_doubles_each_round_trip_under_a_backlog() -> None:
    """learn_rate with a backlog that never drains (answers 0.1 s after sending, nothing
    refused): as TCP's slow start, what is sent doubles each round trip from the first burst of
    16, although requests are always in flight (a round ends when one sent after it began is
    answered): over 1,000 sent within 0.7 s (a bucket growing by one a second per success sends
    about a hundred)."""
    clock = FakeClock()
    sched = Scheduler(clock=clock, learn_rate=True, max_concurrency=100_000)
    sent: list[float] = []

    async def call() -> None:
        await sched.acquire()
        at = clock.now()
        sent.append(at)
        await clock.sleep(0.1)
        sched.on_success(sent_at=at)
        sched.release(0)

    tasks = [asyncio.ensure_future(call()) for _ in range(4000)]
    await clock.advance(0.7)
    assert sum(1 for t in sent if t == 0) == 16
    assert len(sent) > 1000
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
