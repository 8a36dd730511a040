"""Jobs on one shared engine: per-job usage, caps, deadlines, cancellation and fair share."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from support import BASE_URL, completion

import asynctg as tg
from asynctg.engine import FakeClock, Flow, Scheduler
from asynctg.engine.shared import CostCap
from asynctg.sim import SimConfig, SimServer
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

_TAG = re.compile(rb"\[(\w[\w-]*)\]")


def _tag(request: HTTPRequest) -> str:
    """The ``[name]`` a test put at the start of a prompt: which job sent the request."""
    match = _TAG.search(request.body)
    assert match is not None
    return match.group(1).decode()


class _Gate:
    """A transport whose answers wait until ``open`` is set; counts requests by tag."""

    def __init__(self, prompt_tokens: int = 100, completion_tokens: int = 10) -> None:
        self.open = asyncio.Event()
        self.sent: Counter[str] = Counter()
        self.transport = MockTransport(self._answer)
        self._body = completion("ok", prompt_tokens, completion_tokens)

    async def _answer(self, request: HTTPRequest) -> HTTPResponse:
        self.sent[_tag(request)] += 1
        await asyncio.sleep(0)  # in flight for a turn of the loop at least, open or not
        await self.open.wait()
        return HTTPResponse(200, {}, self._body)


async def _settle() -> None:
    """Let every runnable task run (the in-memory transport needs no real time)."""
    await FakeClock.settle()


def _engine(transport: Any, **options: Any) -> tg.ChatEngine:
    return tg.get_engine("m", base_url=BASE_URL, api_key="k", transport=transport, **options)


def _instant() -> MockTransport:
    return MockTransport(
        lambda r: HTTPResponse(200, {}, completion("ok", prompt_tokens=100, completion_tokens=10))
    )


# --- usage ------------------------------------------------------------------------------------


async def test_usage_of_fifty_concurrent_jobs_is_what_the_simulator_served_each() -> None:
    """50 jobs calling at once on one engine: each job's calls, requests and completion tokens
    are what the simulator served for it; their sums are the engine's and the simulator's."""
    served: Counter[str] = Counter()

    def responder(request: Mapping[str, Any]) -> str:
        served[str(request["messages"][-1]["content"]).split("]")[0][1:]] += 1
        return "forty-two"  # 3 completion tokens by the simulator's count

    async with SimServer(SimConfig(responder=responder, latency="2ms")) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k", max_concurrency=8)
        async with engine:

            async def one(i: int) -> dict[str, Any]:
                async with engine.job(f"j{i}") as job:
                    await asyncio.gather(
                        *(job.generate(f"[j{i}] question {k}") for k in range(i % 5 + 1))
                    )
                    return job.stats()

            stats = await asyncio.gather(*(one(i) for i in range(50)))
            sim_stats = sim.stats()
            engine_stats = engine.stats()
    for i, s in enumerate(stats):
        assert s["job"] == f"j{i}"
        assert s["calls"] == s["requests"] == served[f"j{i}"] == i % 5 + 1
        assert s["completion_tokens"] == 3 * served[f"j{i}"]
        assert s["coalesced"] == s["cache_hits"] == s["retries"] == 0
    for key in ("calls", "requests", "prompt_tokens", "completion_tokens"):
        assert sum(s[key] for s in stats) == engine_stats[key]
    assert sim_stats["requests"] == engine_stats["requests"] == sum(served.values())
    assert sim_stats["prompt_tokens"] == engine_stats["prompt_tokens"]


async def test_a_coalesced_request_counts_for_the_job_that_sent_it() -> None:
    """Identical requests of several jobs in flight together: one is sent, for the job that
    sent it; the other jobs record a coalesced call and no request or tokens."""
    gate = _Gate()
    engine = _engine(gate.transport)
    async with engine.job("a") as a, engine.job("b") as b, engine.job("c") as c:
        calls = [asyncio.create_task(j.generate("[same] question")) for j in (a, b, c)]
        await _settle()
        gate.open.set()
        assert await asyncio.gather(*calls) == ["ok"] * 3
        stats = [j.stats() for j in (a, b, c)]
    assert gate.sent["same"] == 1
    assert [s["requests"] for s in stats] == [1, 0, 0]
    assert [s["coalesced"] for s in stats] == [0, 1, 1]
    assert [s["calls"] for s in stats] == [1, 1, 1]
    assert [s["prompt_tokens"] for s in stats] == [100, 0, 0]
    assert engine.stats()["requests"] == 1 and engine.stats()["coalesced"] == 2


async def test_usage_per_job_with_coalescing_against_the_simulator() -> None:
    """Jobs sharing half of their prompts: the simulator serves each distinct prompt once, and
    the jobs' requests add up to exactly what it served, their coalesced calls to the rest."""
    async with SimServer(SimConfig(latency="20ms")) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k")
        async with engine:
            jobs = [engine.job(f"j{i}") for i in range(10)]
            for job in jobs:
                await job.__aenter__()
            prompts = [[f"shared {k}" for k in range(4)] + [f"own {i}"] for i in range(10)]
            await asyncio.gather(
                *(j.generate(p) for j, ps in zip(jobs, prompts, strict=True) for p in ps)
            )
            stats = [j.stats() for j in jobs]
            for job in jobs:
                await job.__aexit__(None, None, None)
            served = sim.stats()["requests"]
    assert served == 4 + 10
    assert sum(s["requests"] for s in stats) == served
    assert sum(s["coalesced"] for s in stats) == 50 - served
    assert all(s["calls"] == 5 and s["requests"] + s["coalesced"] == 5 for s in stats)


async def test_nested_jobs_count_for_both_and_the_engine() -> None:
    """A job of a job: its calls count for it, for the enclosing job and for the engine."""
    engine = _engine(_instant())
    async with engine.job("outer") as outer:
        await outer.generate("[outer] one")
        async with outer.job("inner") as inner:
            await inner.generate("[inner] two")
            await inner.generate("[inner] three")
    assert inner.stats()["calls"] == 2
    assert outer.stats()["calls"] == 3
    assert engine.stats()["calls"] == 3
    assert outer.usage.prompt_tokens == 300


async def test_a_job_is_an_engine_for_the_graph() -> None:
    """A job passes the Engine protocol and runs a forward and backward pass; the graph's calls
    are charged to the job."""
    engine = _engine(_instant())
    async with engine.job("graph") as job:
        assert isinstance(job, tg.Engine) and tg.as_engine(job) is job
        prompt = tg.Variable("be brief", requires_grad=True, role_description="system prompt")
        x = tg.Variable("2+2?", requires_grad=False, role_description="question")
        answer = await tg.BlackboxLLM(job, prompt)(x)
        loss = await tg.TextLoss("Judge the answer.", engine=job)(answer)
        await loss.backward(job)
    assert job.stats()["calls"] == engine.stats()["calls"] >= 3


async def test_a_job_stream_counts_for_the_job() -> None:
    """A stream read through a job is one call of the job, served by the simulator."""
    async with SimServer(SimConfig(responder=lambda r: "streamed answer")) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k")
        async with engine, engine.job("streamer") as job:
            async with job.stream("tell me") as stream:
                text = "".join([delta async for delta in stream])
            other = await engine.generate("not the job's")
    assert text == "streamed answer" and other == "streamed answer"
    assert job.stats()["calls"] == job.stats()["requests"] == 1
    assert engine.stats()["calls"] == 2


# --- caps ---------------------------------------------------------------------------------------


async def test_max_calls_stops_that_job_only() -> None:
    """A job with max_calls=3 sends 3 calls and refuses the rest, naming the limit and the job;
    another job on the engine goes on."""
    gate = _Gate()
    gate.open.set()
    engine = _engine(gate.transport)
    async with engine.job("small", max_calls=3) as small, engine.job("other") as other:
        results = await asyncio.gather(
            *(small.generate(f"[small] q{i}") for i in range(5)), return_exceptions=True
        )
        assert await asyncio.gather(*(other.generate(f"[other] q{i}") for i in range(5)))
    refused = [r for r in results if isinstance(r, tg.BudgetExceededError)]
    assert len(refused) == 2
    assert all(e.limit == "max_calls" and e.job == "small" for e in refused)
    assert gate.sent == {"small": 3, "other": 5}


async def test_max_cost_stops_that_job_only() -> None:
    """A job's max_cost lets through what fits (reservations waiting for the others to settle)
    and refuses, unsent, the calls whose worst case would pass the settled spending; another
    job goes on."""
    gate = _Gate(prompt_tokens=5, completion_tokens=2)  # 7 micro-dollars a call at $1/M
    gate.open.set()
    engine = _engine(gate.transport, price=(1.0, 1.0), max_tokens=10)
    first = engine.request([{"role": "user", "content": "[capped] q0"}])
    worst = engine._worst_case_nano(first) / 1e9
    cap = 2.2 * worst  # two worst cases fit at once; settled calls cost far less
    async with engine.job("capped", max_cost=cap) as capped, engine.job("free") as free:
        results = await asyncio.gather(
            *(capped.generate(f"[capped] q{i}") for i in range(12)), return_exceptions=True
        )
        await asyncio.gather(*(free.generate(f"[free] q{i}") for i in range(12)))
    refused = [r for r in results if isinstance(r, tg.BudgetExceededError)]
    assert refused and all(e.limit == "max_cost" and e.job == "capped" for e in refused)
    assert gate.sent["capped"] == 12 - len(refused) == capped.stats()["requests"] > 2
    assert capped.stats()["cost_usd"] + worst > cap  # refused only when it could not fit
    assert capped.stats()["cost_usd"] <= cap
    assert gate.sent["free"] == 12
    assert capped.cost_cap is not None and capped.cost_cap.reserved == 0


async def test_deadline_stops_that_jobs_calls_in_flight_and_queued() -> None:
    """At its deadline (fake clock), a job's calls in flight and queued raise
    DeadlineExceededError naming it; another job's calls on the engine complete."""
    clock = FakeClock()
    sent: Counter[str] = Counter()

    async def slow(request: HTTPRequest) -> HTTPResponse:
        sent[_tag(request)] += 1
        await clock.sleep(5.0)
        return HTTPResponse(200, {}, completion("ok"))

    engine = _engine(MockTransport(slow), clock=clock, max_concurrency=4)

    async def run() -> tuple[list[Any], list[Any]]:
        async with engine.job("hurry", deadline=2.0) as hurry, engine.job("calm") as calm:
            hurried = [asyncio.create_task(hurry.generate(f"[hurry] {i}")) for i in range(6)]
            calm_calls = [asyncio.create_task(calm.generate(f"[calm] {i}")) for i in range(2)]
            a = await asyncio.gather(*hurried, return_exceptions=True)
            b = await asyncio.gather(*calm_calls, return_exceptions=True)
            late = await asyncio.gather(hurry.generate("[hurry] late"), return_exceptions=True)
            return a + late, b

    hurried, calm = await clock.drive(run())
    assert all(isinstance(r, tg.DeadlineExceededError) for r in hurried)
    assert {(r.job, r.limit) for r in hurried} == {("hurry", "deadline")}
    assert calm == ["ok", "ok"]
    assert sent["hurry"] == 4  # 4 were in flight, 2 queued; the late one was refused unsent
    assert engine.scheduler.in_flight == 0


async def test_an_inner_job_obeys_the_outer_jobs_max_calls() -> None:
    """A nested job's calls obey the enclosing job's max_calls too, and the error names the
    job whose cap it was."""
    engine = _engine(_instant())
    async with engine.job("outer", max_calls=2) as outer, outer.job("inner") as inner:
        await inner.generate("[inner] 1")
        await outer.generate("[outer] 2")
        with pytest.raises(tg.BudgetExceededError) as caught:
            await inner.generate("[inner] 3")
    assert caught.value.job == "outer" and caught.value.limit == "max_calls"


async def test_an_inner_jobs_calls_stop_at_the_outer_jobs_deadline() -> None:
    """At the outer job's deadline (fake clock), the inner job's call in flight raises
    DeadlineExceededError naming the outer job."""
    clock = FakeClock()

    async def slow(request: HTTPRequest) -> HTTPResponse:
        await clock.sleep(10.0)
        return HTTPResponse(200, {}, completion("ok"))

    engine = _engine(MockTransport(slow), clock=clock)

    async def run() -> BaseException | str:
        async with engine.job("outer", deadline=3.0) as outer, outer.job("inner") as inner:
            try:
                return await inner.generate("[inner] slow")
            except tg.DeadlineExceededError as exc:
                return exc

    caught = await clock.drive(run())
    assert isinstance(caught, tg.DeadlineExceededError) and caught.job == "outer"
    assert clock.now() == pytest.approx(3.0)
    assert engine.scheduler.in_flight == 0


# --- cancellation -----------------------------------------------------------------------------


async def test_leaving_a_job_stops_its_calls_and_leaves_nothing_behind() -> None:
    """Leaving a job's block cancels its queued and in-flight calls at once (JobClosedError in
    their tasks); nothing more is sent for it, its slots and dollar reservations are back, and
    another job's calls go on."""
    gate = _Gate()
    engine = _engine(gate.transport, max_concurrency=2, price=(1.0, 1.0), max_cost=1.0)
    async with engine.job("other") as other:
        job = engine.job("doomed", max_cost=0.5)
        await job.__aenter__()
        doomed = [asyncio.create_task(job.generate(f"[doomed] {i}")) for i in range(10)]
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(other.generate(f"[other] {i}")) for i in range(3)]
        await _settle()
        assert gate.sent == {"doomed": 2}
        await job.__aexit__(None, None, None)
        # at once: the job's calls have unwound, its slots went to the other job
        assert all(t.done() for t in doomed)
        assert all(isinstance(t.exception(), tg.JobClosedError) for t in doomed)
        assert job.flow.in_flight == job.flow.waiting == 0
        assert job.cost_cap is not None and job.cost_cap.reserved == 0
        await _settle()
        assert gate.sent == {"doomed": 2, "other": 2}
        gate.open.set()
        assert await asyncio.gather(*waiting) == ["ok"] * 3
        with pytest.raises(tg.JobClosedError):
            await job.generate("[doomed] after")
    assert gate.sent == {"doomed": 2, "other": 3}
    assert engine.scheduler.in_flight == 0 and engine.scheduler.queued == 0
    assert engine._cost_cap is not None and engine._cost_cap.reserved == 0


async def test_cancelling_the_task_holding_a_job_stops_its_calls() -> None:
    """Cancelling the task inside a job's block stops the job's calls made by other tasks,
    which see JobClosedError (not a stray CancelledError)."""
    gate = _Gate()
    engine = _engine(gate.transport, max_concurrency=1)
    started = asyncio.Event()
    outside: list[asyncio.Task[str]] = []

    async def holder() -> None:
        async with engine.job("held") as job:
            outside.extend(asyncio.create_task(job.generate(f"[held] {i}")) for i in range(3))
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(holder())
    await started.wait()
    await _settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert all(isinstance(t.exception(), tg.JobClosedError) for t in outside)
    assert engine.scheduler.in_flight == 0 and engine.scheduler.queued == 0
    assert gate.sent == {"held": 1}


async def test_a_cancelled_caller_stays_cancelled() -> None:
    """A call cancelled by its own caller (not by the job) raises CancelledError, and the job
    goes on."""
    gate = _Gate()
    engine = _engine(gate.transport)
    async with engine.job("j") as job:
        call = asyncio.create_task(job.generate("[j] 1"))
        await _settle()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        gate.open.set()
        assert await job.generate("[j] 2") == "ok"


async def test_max_concurrency_bounds_a_jobs_calls_under_way() -> None:
    """A job with max_concurrency=2 has at most 2 calls in flight; the engine's other slots stay
    free for other jobs."""
    gate = _Gate()
    engine = _engine(gate.transport, max_concurrency=8)
    async with engine.job("narrow", max_concurrency=2) as narrow, engine.job("wide") as wide:
        calls = [asyncio.create_task(narrow.generate(f"[narrow] {i}")) for i in range(6)]
        calls += [asyncio.create_task(wide.generate(f"[wide] {i}")) for i in range(4)]
        await _settle()
        assert gate.sent == {"narrow": 2, "wide": 4}
        gate.open.set()
        await asyncio.gather(*calls)
    assert gate.sent == {"narrow": 6, "wide": 4}


async def test_a_nested_jobs_priority_lets_the_rest_of_its_job_go_first() -> None:
    """A nested job of background work (priority -1000, its own nested job adding -1) waits
    behind the outer job's calls queued after it; without it they would go in arrival order."""
    first = asyncio.Event()
    order: list[str] = []

    async def answer(request: HTTPRequest) -> HTTPResponse:
        tag = _tag(request)
        order.append(tag)
        if tag == "run-0":
            await first.wait()
        return HTTPResponse(200, {}, completion("ok", 100, 10))

    engine = _engine(MockTransport(answer), max_concurrency=1)
    async with engine.job("run") as run, run.job("background", priority=-1000) as background:
        async with background.job("deeper", priority=-1) as deeper:
            assert (background.boost, deeper.boost) == (-1000, -1001)
            calls = [asyncio.create_task(run.generate("[run-0] x"))]
            await _settle()
            calls += [asyncio.create_task(deeper.generate("[deeper-0] x"))]
            calls += [asyncio.create_task(background.generate(f"[bg-{i}] x")) for i in range(2)]
            await _settle()
            calls += [asyncio.create_task(run.generate("[run-1] x"))]
            await _settle()
            first.set()
            await asyncio.gather(*calls)
    assert order == ["run-0", "run-1", "bg-0", "bg-1", "deeper-0"]


async def test_a_job_refuses_calls_outside_its_block() -> None:
    """Calls before the block is entered are refused with JobClosedError, unsent."""
    engine = _engine(_instant())
    job = engine.job("early")
    with pytest.raises(tg.JobClosedError):
        await job.generate("[early] 1")
    assert engine.stats()["requests"] == 0


def test_job_settings_are_checked() -> None:
    """Bad weights, caps and deadlines are ConfigErrors; max_cost needs a price."""
    engine = _engine(_instant())
    bads: tuple[dict[str, Any], ...] = (
        {"weight": 0},
        {"weight": True},
        {"max_calls": 0},
        {"deadline": -1},
        {"priority": 1.5},
        {"priority": True},
    )
    for bad in bads:
        with pytest.raises(tg.ConfigError):
            engine.job("x", **bad)
    unpriced = tg.get_engine("mystery", base_url=BASE_URL, transport=_instant())
    with pytest.raises(tg.ConfigError, match="price"):
        unpriced.job("x", max_cost=1.0)


# --- the dollar cap ---------------------------------------------------------------------------


async def test_a_reservation_waits_for_outstanding_ones_to_settle() -> None:
    """A reservation that does not fit beside others outstanding waits for them to settle, and
    is refused only when settled spending plus its worst case passes the cap."""
    cap = CostCap(100e-9)  # 100 nano-dollars
    await cap.acquire(60, "m")
    second = asyncio.create_task(cap.acquire(60, "m"))
    third = asyncio.create_task(cap.acquire(60, "m"))
    await asyncio.sleep(0)
    assert not second.done() and cap.waiting == 2
    cap.settle(60, 20)  # the first call cost 20, not its worst case of 60
    await asyncio.sleep(0)
    assert second.done() and second.exception() is None
    assert not third.done()  # 20 spent + 60 reserved + 60 > 100: waits
    cap.settle(60, 50)  # now 70 spent: 70 + 60 > 100 can never fit
    await asyncio.sleep(0)
    with pytest.raises(tg.BudgetExceededError) as caught:
        await third
    assert caught.value.limit == "max_cost" and caught.value.job is None
    assert cap.reserved == 0 and cap.spent == 70


async def test_the_engines_cap_waits_instead_of_refusing() -> None:
    """An engine whose max_cost fits one call's worst case at a time sends concurrent calls one
    after another, each once the previous one settled below its worst case, instead of
    refusing all but the first."""
    gate = _Gate(prompt_tokens=1, completion_tokens=1)
    gate.open.set()
    probe = _engine(gate.transport, price=(1.0, 1.0), max_tokens=10)
    worst = probe._worst_case_nano(probe.request([{"role": "user", "content": "[w] 1"}]))
    engine = _engine(gate.transport, price=(1.0, 1.0), max_tokens=10, max_cost=1.5 * worst / 1e9)
    results = await asyncio.gather(*(engine.generate(f"[w] {i}") for i in range(1, 4)))
    assert results == ["ok"] * 3 and gate.sent["w"] == 3
    assert engine._cost_cap is not None and engine._cost_cap.reserved == 0


# --- fair share ---------------------------------------------------------------------------------


class _Slots:
    """A scheduler with ``slots`` slots and requests that hold them until released by hand."""

    def __init__(self, slots: int) -> None:
        self.clock = FakeClock()
        self.scheduler = Scheduler(max_concurrency=slots, clock=self.clock)
        self.admitted: list[str] = []
        self._holding: list[Flow] = []
        self.tasks: list[asyncio.Task[None]] = []

    def submit(self, flow: Flow, n: int, priority: int = 0, name: str | None = None) -> None:
        async def one() -> None:
            await self.scheduler.acquire(0, priority, flow=flow)
            self.admitted.append(name or flow.name)
            self._holding.append(flow)

        self.tasks.extend(asyncio.create_task(one()) for _ in range(n))

    async def release(self, n: int = 1) -> list[str]:
        """Release the ``n`` oldest admitted requests, one at a time; who got each slot."""
        start = len(self.admitted)
        for _ in range(n):
            self.scheduler.release(0, flow=self._holding.pop(0))
            await self.clock.settle(3)
        return self.admitted[start:]

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_small_job_is_served_at_once_behind_a_large_backlog() -> None:
    """With a 1,000-request job backlogged on 16 slots, a 16-request job of equal weight
    arriving has all 16 of its requests started within the next 16 slot releases: the other
    job's 16 requests in flight count against it (SFQ(D)), so it does not merely alternate."""
    slots = _Slots(16)
    big, small = Flow(1.0, "big"), Flow(1.0, "small")
    slots.submit(big, 1000)
    await slots.clock.settle()
    await slots.release(100)
    slots.submit(small, 16)
    await slots.clock.settle()
    assert await slots.release(16) == ["small"] * 16
    # Then the big job has the engine back.
    assert await slots.release(16) == ["big"] * 16
    await slots.aclose()


async def test_a_few_waiting_requests_start_within_a_turnover_of_any_backlog() -> None:
    """However long a job has been backlogged (10 to 2,000 releases in), a 3-request job
    arriving on 16 slots has its requests started within the next 3 releases."""
    for served in (10, 500, 2000):
        slots = _Slots(16)
        big, small = Flow(1.0, "big"), Flow(1.0, "small")
        slots.submit(big, 3000)
        await slots.clock.settle()
        await slots.release(served)
        slots.submit(small, 3)
        await slots.clock.settle()
        assert await slots.release(3) == ["small"] * 3, served
        await slots.aclose()


async def test_a_heavier_small_job_starts_within_its_count_of_releases() -> None:
    """A 16-request job of weight 16 behind a 1,000-request backlog: all its requests start
    within the next 16 slot releases."""
    slots = _Slots(16)
    big, small = Flow(1.0, "big"), Flow(16.0, "small")
    slots.submit(big, 1000)
    await slots.clock.settle()
    await slots.release(50)
    slots.submit(small, 16)
    await slots.clock.settle()
    assert await slots.release(16) == ["small"] * 16
    await slots.aclose()


async def test_backlogged_jobs_share_slots_in_proportion_to_weight() -> None:
    """Two jobs of weights 1 and 3 backlogged for 4,000 releases on 16 slots get 1/4 and 3/4 of
    every slot admission (the first 16, admitted before the second job queued, included)."""
    slots = _Slots(16)
    light, heavy = Flow(1.0, "light"), Flow(3.0, "heavy")
    slots.submit(light, 5000)
    slots.submit(heavy, 5000)
    await slots.clock.settle()
    await slots.release(4000)
    got = Counter(slots.admitted)
    assert got.total() == 4016
    # Start-time fair queuing keeps the two flows' virtual times within one request's cost
    # of each other (1 for light, 1/3 for heavy): light's count is within 4/3 of a quarter.
    assert abs(got["light"] - 4016 / 4) <= 4 / 3
    await slots.aclose()


async def test_weights_hold_once_a_second_job_joins_a_long_backlog() -> None:
    """A weight-3 job joining after 1,000 releases of a weight-1 job's backlog on 16 slots:
    over the next 4,000 releases the light job gets its quarter, less at most the 16 requests
    it had in flight when the other arrived (they count as its service)."""
    slots = _Slots(16)
    light, heavy = Flow(1.0, "light"), Flow(3.0, "heavy")
    slots.submit(light, 6000)
    await slots.clock.settle()
    await slots.release(1000)
    slots.submit(heavy, 5000)
    await slots.clock.settle()
    got = Counter(await slots.release(4000))
    # Counting the 16 in flight at the arrival as the light job's, it has a quarter of
    # 4,016 admissions within 4/3 (as above); so of the 4,000 it has between 988 and 1,006.
    assert 1004 - 16 - 2 <= got["light"] <= 1004 + 2
    assert got["light"] + got["heavy"] == 4000
    await slots.aclose()


async def test_jobs_arriving_at_every_release_do_not_starve_a_backlogged_one() -> None:
    """One-request jobs arriving at every slot release do not starve a backlogged job: the
    system virtual time moves with finished work, so it gets a share among the active jobs
    (with the tag of the last start as virtual time, every arrival went first, forever)."""
    slots = _Slots(16)
    big = Flow(1.0, "big")
    slots.submit(big, 5000)
    await slots.clock.settle()
    await slots.release(100)
    order: list[str] = []
    for _ in range(1000):
        slots.submit(Flow(1.0, "one"), 1)
        await slots.clock.settle()
        order += await slots.release(1)
    # Arrivals match the service rate, so each turn the big job takes leaves one more
    # one-request job waiting: its share is 1/(active jobs), which shrinks as they pile up
    # (25 turns here: after 261 releases, then every 19, 20, 21, ... releases); never zero.
    assert order.count("big") >= 20
    assert "big" in order[-60:]
    await slots.aclose()


async def test_a_lone_job_gets_every_slot() -> None:
    """Work-conserving: a single job's requests fill every slot, whatever its weight."""
    slots = _Slots(8)
    slots.submit(Flow(0.01, "lone"), 20)
    await slots.clock.settle()
    assert slots.admitted == ["lone"] * 8
    assert await slots.release(12) == ["lone"] * 12
    await slots.aclose()


async def test_priorities_order_requests_within_a_job_not_across_jobs() -> None:
    """Within a job, higher priority goes first; another job's low-priority request still gets
    its fair turn before the first job's later high-priority ones."""
    slots = _Slots(1)
    a, b = Flow(1.0, "a"), Flow(1.0, "b")
    slots.submit(a, 1, name="a-first")
    await slots.clock.settle()
    slots.submit(a, 2, priority=0, name="a-low")
    slots.submit(a, 2, priority=5, name="a-high")
    slots.submit(b, 2, priority=0, name="b-low")
    await slots.clock.settle()
    order = await slots.release(6)
    # "b" goes first: "a" has a request in flight already, which counts as its turn.
    assert order == ["b-low", "a-high", "b-low", "a-high", "a-low", "a-low"]
    await slots.aclose()


async def test_jobs_share_a_bound_engine_fairly_end_to_end() -> None:
    """Through the engine: a job arriving behind another's 200 queued calls on 4 slots has all
    its 4 calls sent within the next 8 sends."""
    order: list[str] = []
    release = asyncio.Queue[None]()

    async def answer(request: HTTPRequest) -> HTTPResponse:
        order.append(_tag(request))
        await release.get()
        return HTTPResponse(200, {}, completion("ok"))

    engine = _engine(MockTransport(answer), max_concurrency=4)
    async with engine.job("big") as big, engine.job("late") as late:
        calls = [asyncio.create_task(big.generate(f"[big] {i}")) for i in range(200)]
        await _settle()
        calls += [asyncio.create_task(late.generate(f"[late] {i}")) for i in range(4)]
        await _settle()
        before = len(order)
        for _ in range(8):
            release.put_nowait(None)
            await _settle()
        assert order[before : before + 8].count("late") == 4
        for _ in range(300):
            release.put_nowait(None)
        await asyncio.gather(*calls)
    assert big.stats()["calls"] == 200 and late.stats()["calls"] == 4


# --- the apps run as jobs ---------------------------------------------------------------------


def _counting_task() -> Any:
    from asynctg import tasks

    return tasks.get_task("object_counting", train_size=8, val_size=6, test_size=6)


async def test_an_apps_usage_and_budget_are_per_run_on_a_shared_engine() -> None:
    """On an engine that has already made 50 calls, a run's result.usage counts only its own
    calls and its Budget(max_calls=40) is not spent before it starts."""
    from asynctg import apps

    async with SimServer(SimConfig()) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k")
        async with engine:
            await asyncio.gather(*(engine.generate(f"warm-up {i}") for i in range(50)))
            config = apps.PromptConfig(
                batch_size=2, epochs=1, steps_per_epoch=3, budget=apps.Budget(max_calls=40)
            )
            result = await apps.optimize_prompt(_counting_task(), engine, config=config)
            total = engine.stats()["calls"]
    assert result.status == "stopped" and result.stop_reason == "max_calls"
    assert len(result.history) > 1  # it trained: the budget was not spent before it began
    assert result.usage["calls"] == total - 50
    assert result.history[0]["provider_calls"] == 6  # the test split's first evaluation only


async def test_two_apps_on_one_engine_each_report_their_own_usage() -> None:
    """Two solution runs at once on one engine: each run's usage is its own calls, and the two
    add up to the engine's."""
    from asynctg import apps, tasks

    async with SimServer(SimConfig()) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k")
        async with engine:
            task = tasks.get_task("arithmetic_choice", limit=3)
            small = tasks.get_task("arithmetic_choice", limit=1)
            config = apps.SolutionConfig(iterations=1)
            big_run, small_run = await asyncio.gather(
                apps.optimize_solutions(task, engine, config=config),
                apps.optimize_solutions(small, engine, config=config),
            )
            total = engine.stats()["calls"]
    assert big_run.usage["calls"] + small_run.usage["calls"] == total
    assert big_run.usage["calls"] == 3 * small_run.usage["calls"] > 0


async def test_an_app_given_a_job_runs_inside_it() -> None:
    """An app given a job runs as a job nested in it: the caller's job counts the run's calls
    and its caps bound it; the run stops there as a finished run ends, with the cap named."""
    from asynctg import apps

    async with SimServer(SimConfig()) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k")
        async with engine, engine.job("request-17", max_calls=10) as job:
            config = apps.PromptConfig(batch_size=2, epochs=1, steps_per_epoch=1)
            result = await apps.optimize_prompt(_counting_task(), job, config=config)
            assert job.stats()["requests"] == 10
    assert (result.status, result.stop_reason) == ("stopped", "max_calls")


async def test_an_app_whose_job_deadline_passes_stops_like_a_finished_run() -> None:
    """An app run in a job whose deadline has passed ends as a stopped run naming the
    deadline, not with an exception."""
    from asynctg import apps

    async with SimServer(SimConfig()) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k")
        async with engine, engine.job("late", deadline=1e-9) as job:
            await asyncio.sleep(0)  # yield: the deadline passes (the clock moved)
            config = apps.PromptConfig(batch_size=2, epochs=1, steps_per_epoch=1)
            result = await apps.optimize_prompt(_counting_task(), job, config=config)
    assert (result.status, result.stop_reason) == ("stopped", "deadline")
