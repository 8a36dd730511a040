"""One budget, one dollar cap, shared through a real redis-server by several processes.

The suite starts ``redis-server`` (Debian's package; ``.ci/run`` installs it) on a free loopback
port and stops it after. Locally, without the binary and with ``CI`` unset, these tests skip.
Rates are measured by ``bench/shared.py``; here the counts: no 429 beyond 1%, no call lost, no
budget leaked by a killed process, a run that survives Redis restarting, a cap never passed, and
a dollar reservation that waits for the calls under way instead of being refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SimProcess, completion, engine_with, ok

import asynctg as tg
from asynctg.engine import FakeClock, RetryPolicy
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

WORKER = Path(__file__).with_name("shared_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on a loopback port, no persistence, in a folder of its own."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):  # until it accepts connections (it starts in a few ms)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def command(self, *words: str) -> bytes:
        """One command in Redis's inline protocol; the raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall((" ".join(words) + "\r\n").encode())
            return s.recv(65536)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing in CI: .ci/run installs it")
        pytest.skip("redis-server is not installed: apt-get install redis-server")
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _workers(
    sim: SimProcess, redis: RedisServer, count: int, calls: int, *extra: str
) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                sim.base_url,
                redis.url,
                str(calls),
                "--tag",
                f"p{i}",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]


def _results(procs: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.timeout(300)
def test_four_processes_share_one_rpm_budget(redis_server: RedisServer) -> None:
    """4 processes with rpm=600 against a simulator that allows 600/min: every call succeeds,
    at most 1% of requests meet a 429 (the shared bucket paces them all)."""
    sim = SimProcess("--rpm", "600", "--latency", "5ms")
    try:
        results = _results(_workers(sim, redis_server, 4, 30, "--rpm", "600"))
        stats = sim.stats()
    finally:
        sim.close()
    assert sum(int(r["ok"]) for r in results) == 120  # type: ignore[call-overload]
    assert all(not r["errors"] for r in results)
    assert stats["rate_limited"] <= 0.01 * stats["requests"]


@pytest.mark.timeout(300)
def test_a_killed_process_leaks_no_budget(redis_server: RedisServer) -> None:
    """A process killed with SIGKILL while its calls hold the whole dollar cap in reservations:
    they lapse after their time to live, and another process can spend the cap again."""
    key = "asynctg-test:cost:reserved"
    cap = ("--max-cost", "0.005", "--ttl", "1")
    sim = SimProcess("--latency", "30s")
    try:
        (victim,) = _workers(sim, redis_server, 1, 40, *cap)
        assert victim.stdout is not None
        assert victim.stdout.readline().strip() == "started"
        for _ in range(400):  # until its calls hold reservations (an event, polled)
            if not redis_server.command("ZCARD", key).startswith(b":0"):
                break
            time.sleep(0.05)
        time.sleep(0.5)  # let the rest of its reservations land
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    finally:
        sim.close()
    held = int(redis_server.command("ZCARD", key)[1:].strip())
    assert held > 0
    sim = SimProcess("--latency", "0")
    try:
        for _ in range(40):  # refused while the dead process's reservations hold the cap
            (result,) = _results(_workers(sim, redis_server, 1, 1, *cap))
            if result["ok"] == 1:
                break
    finally:
        sim.close()
    assert result["ok"] == 1
    assert redis_server.command("ZCARD", key).startswith(b":0")


@pytest.mark.timeout(300)
def test_a_run_survives_redis_restarting(redis_server: RedisServer) -> None:
    """Redis stopped and started again mid-run: the engine goes on with a local share, then
    rejoins; every call succeeds."""
    sim = SimProcess("--latency", "20ms")
    try:
        (worker,) = _workers(sim, redis_server, 1, 300, "--rpm", "1200")
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "started"
        redis_server.stop()
        time.sleep(1.5)  # the run goes on meanwhile, on its local share
        redis_server.start()
        (result,) = _results([worker])
    finally:
        sim.close()
    assert result["ok"] == 300 and not result["errors"]
    assert int(result["redis_errors"]) >= 1  # type: ignore[call-overload]


@pytest.mark.timeout(300)
def test_eight_processes_never_pass_a_shared_dollar_cap(redis_server: RedisServer) -> None:
    """8 processes spending on one $0.004 cap: the cost the simulator measured from the usage it
    reported is at most the cap; the calls past it raise BudgetExceededError unsent."""
    sim = SimProcess("--latency", "5ms")
    try:
        results = _results(_workers(sim, redis_server, 8, 40, "--max-cost", "0.004"))
        stats = sim.stats()
    finally:
        sim.close()
    cost = (stats["prompt_tokens"] * 1.0 + stats["completion_tokens"] * 2.0) / 1e6
    assert cost <= 0.004
    refused = sum(int(r["errors"].get("BudgetExceededError", 0)) for r in results)  # type: ignore[union-attr]
    assert refused > 0 and stats["requests"] + refused == 320


async def test_a_local_cap_is_never_passed_under_concurrency() -> None:
    """Without Redis, max_cost is reserved per call in the process: 64 concurrent calls on a cap
    that fits some of them send at most what fits, the rest raise BudgetExceededError unsent."""
    from support import engine_with, ok, scripted

    transport = scripted([], then=ok())
    engine = engine_with(transport, price=(1.0, 2.0), max_cost=0.0003, max_tokens=10)
    import asyncio

    results = await asyncio.gather(
        *(engine.generate(f"q{i}") for i in range(64)), return_exceptions=True
    )
    sent = len(transport.requests)
    refused = sum(isinstance(r, tg.BudgetExceededError) for r in results)
    assert sent + refused == 64 and 0 < sent < 64
    spent = (engine.usage.prompt_tokens * 1.0 + engine.usage.completion_tokens * 2.0) / 1e6
    assert spent <= 0.0003


async def test_separate_output_token_budget_paces_requests() -> None:
    """An output-token budget (providers that limit input and output apart) charges each
    request its reply cap before sending, corrected by the reported usage; the next waits."""
    from support import engine_with, ok, scripted

    from asynctg.engine import FakeClock

    clock = FakeClock()
    transport = scripted([], then=ok())  # each reply reports 2 completion tokens
    engine = engine_with(transport, clock=clock, output_tpm=60, max_tokens=10)
    await clock.drive(engine.generate("a"))
    assert clock.now() == 0.0
    await clock.drive(engine.generate("b"))
    # 1 token/s: the first call took 10 (debt), its usage gave 8 back; the second waits 2 s
    assert clock.now() == pytest.approx(2.0)
    assert len(transport.requests) == 2


async def test_learned_limits_belong_to_an_endpoint_not_to_a_model_name(
    redis_server: RedisServer,
) -> None:
    """Two Redis-shared engines with the same model at different endpoints keep their budgets
    apart: the limit one server advertises (rpm 1) is published for that endpoint only, and an
    engine at the other endpoint neither reads it nor has it in its keys."""
    strict = MockTransport(lambda request: ok("a", headers={"x-ratelimit-limit-requests": "1"}))
    shared = {"redis_url": redis_server.url, "redis_namespace": "ep-test"}
    here = engine_with(strict, base_url="http://127.0.0.1:8001/v1", **shared)
    again = engine_with(strict, base_url="http://127.0.0.1:8001/v1/", **shared)
    there = engine_with(
        MockTransport(lambda request: ok("b")), base_url="http://127.0.0.1:8002/v1", **shared
    )
    async with here, again, there:
        assert await here.generate("q") == "a"  # learns rpm 1 and publishes it
        assert await there.generate("q") == "b"
        assert (
            here.redis_budget is not None
            and there.redis_budget is not None
            and again.redis_budget is not None
        )
        assert again.redis_budget.prefix == here.redis_budget.prefix != there.redis_budget.prefix
        published = redis_server.command("HGET", f"{here.redis_budget.prefix}limits", "rpm")
        assert published.split(b"\r\n")[1] in (b"1", b"1.0")
        assert redis_server.command("EXISTS", f"{there.redis_budget.prefix}limits") == b":0\r\n"


async def test_a_call_refused_by_the_cap_gives_its_rpm_token_back() -> None:
    """A call the dollar cap refuses never reached the provider: the request it took from the
    rpm bucket goes back, so the next call is not held for a refill."""
    from support import engine_with, ok, scripted

    from asynctg.engine import FakeClock

    clock = FakeClock()
    transport = scripted([], then=ok())
    engine = engine_with(transport, clock=clock, rpm=60, price=(1.0, 2.0), max_cost=1e-4)
    with pytest.raises(tg.BudgetExceededError):
        await clock.drive(engine.generate("x" * 400))  # its worst case passes the cap
    await clock.drive(engine.generate("q", max_tokens=1))
    assert clock.now() == 0.0 and len(transport.requests) == 1


# --- a shared dollar reservation waits for the calls under way (issue 22) ----------------------

# $1 / $2 per million tokens and a 1000-token reply cap: a call's worst case is about $0.00202,
# so a $0.005 cap fits two of them beside each other, not three; an answer reporting 10 + 2
# tokens costs $0.000014.
PRICED = {"price": (1.0, 2.0), "max_cost": 0.005, "max_tokens": 1000}


class _Gates:
    """A provider that holds each request until the test opens its gate, named by the request's
    last message; ``usage`` gives the (prompt, completion) tokens each answer reports, in
    order of arrival, then (10, 2)."""

    def __init__(self, usage: list[tuple[int, int]] | None = None) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.usage = list(usage or [])
        self.transport = MockTransport(self._answer)

    async def _answer(self, request: HTTPRequest) -> HTTPResponse:
        name = json.loads(request.body)["messages"][-1]["content"]
        gate = self.gates.setdefault(name, asyncio.Event())
        prompt, reply = self.usage.pop(0) if self.usage else (10, 2)
        await gate.wait()
        return HTTPResponse(200, {}, completion("hello", prompt, reply))

    @property
    def sent(self) -> int:
        return len(self.transport.requests)

    def open(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


async def _until(held: Callable[[], bool], clock: FakeClock, step: float = 0.0) -> None:
    """Wait for an event (``held()``), letting real Redis answer between checks and moving the
    fake clock ``step`` seconds a round (0: it stands still)."""
    for _ in range(4000):
        if held():
            return
        await asyncio.sleep(0.005)
        if step:
            await clock.advance(step)
    raise AssertionError("the awaited state never came")


def _reserved(redis: RedisServer, namespace: str) -> int:
    return int(redis.command("ZCARD", f"{namespace}:cost:reserved")[1:].strip())


def _shared_engine(gates: _Gates, clock: FakeClock, redis: RedisServer, **options: Any) -> Any:
    return engine_with(
        gates.transport,
        clock=clock,
        redis_url=redis.url,
        redis_namespace="wait-test",
        **{**PRICED, **options},
    )


async def test_a_shared_dollar_reservation_waits_for_another_process(
    redis_server: RedisServer,
) -> None:
    """Two engines on one Redis cap that fits two worst cases: with two calls of A under way, a
    call of B waits (not refused, not sent) and is sent once one of A's settles."""
    clock = FakeClock()
    gates_a, gates_b = _Gates(), _Gates()
    a = _shared_engine(gates_a, clock, redis_server)
    b = _shared_engine(gates_b, clock, redis_server)
    async with a, b:
        a1 = asyncio.create_task(a.generate("a1"))
        a2 = asyncio.create_task(a.generate("a2"))
        await _until(lambda: gates_a.sent == 2, clock)
        b1 = asyncio.create_task(b.generate("b1"))
        await _until(lambda: b1.done() or b.redis_budget.waiting == 1, clock)
        assert not b1.done(), b1.exception()  # not refused
        for _ in range(20):  # ten seconds of backoff: B polls and keeps waiting
            await asyncio.sleep(0.005)
            await clock.advance(0.5)
        assert not b1.done() and gates_b.sent == 0 and b.redis_budget.waiting == 1
        assert _reserved(redis_server, "wait-test") == 2
        gates_a.open("a1")
        assert await a1 == "hello"
        await _until(lambda: gates_b.sent == 1, clock, step=0.5)  # B's next poll finds room
        gates_b.open("b1")
        gates_a.open("a2")
        assert await b1 == "hello" and await a2 == "hello"
        assert b.redis_budget.waiting == 0 and _reserved(redis_server, "wait-test") == 0


async def test_a_shared_reservation_past_the_settled_spending_is_refused_at_once(
    redis_server: RedisServer,
) -> None:
    """With A's calls under way, B's call whose worst case plus the settled spending passes the
    cap is refused at once (no time passes, nothing sent), while B's call that fits beside the
    settled spending waits, and is sent when A's call settles."""
    clock = FakeClock()
    gates_a = _Gates(usage=[(10, 1000)])  # A's first answer costs $0.00201
    gates_b = _Gates()
    a = _shared_engine(gates_a, clock, redis_server)
    b = _shared_engine(gates_b, clock, redis_server)
    async with a, b:
        a0 = asyncio.create_task(a.generate("a0"))
        await _until(lambda: gates_a.sent == 1, clock)
        gates_a.open("a0")
        assert await a0 == "hello"
        a1 = asyncio.create_task(a.generate("a1"))  # under way: $0.00202 reserved
        await _until(lambda: gates_a.sent == 2, clock)
        small = asyncio.create_task(b.generate("small"))
        # worst case $0.0032: with the $0.00201 settled it passes the $0.005 cap
        big = asyncio.create_task(b.generate("big", max_tokens=1600))
        await _until(big.done, clock)  # the clock stands still: refused without waiting
        error = big.exception()
        assert isinstance(error, tg.BudgetExceededError) and error.limit == "max_cost"
        await _until(lambda: small.done() or b.redis_budget.waiting == 1, clock)
        assert not small.done(), small.exception()  # it fits beside the settled spending
        assert clock.now() == 0.0 and gates_b.sent == 0
        gates_a.open("a1")
        assert await a1 == "hello"
        await _until(lambda: gates_b.sent == 1, clock, step=0.5)
        gates_b.open("small")
        assert await small == "hello"


async def test_a_shared_reservation_waiting_past_its_deadline_times_out(
    redis_server: RedisServer,
) -> None:
    """A call of B waiting for room in the shared cap while A's calls stay under way ends at
    its deadline (RetryPolicy.max_total_seconds) with BudgetTimeoutError, unsent, and leaves
    nothing reserved."""
    clock = FakeClock()
    gates_a, gates_b = _Gates(), _Gates()
    a = _shared_engine(gates_a, clock, redis_server)
    b = _shared_engine(
        gates_b, clock, redis_server, retry=RetryPolicy(testing=True, max_total_seconds=30)
    )
    async with a, b:
        under_way = [asyncio.create_task(a.generate(f"a{i}")) for i in range(2)]
        await _until(lambda: gates_a.sent == 2, clock)
        b1 = asyncio.create_task(b.generate("b1"))
        await _until(lambda: b1.done() or b.redis_budget.waiting == 1, clock)
        assert not b1.done(), b1.exception()  # waiting, not refused
        await _until(b1.done, clock, step=2.0)
        assert isinstance(b1.exception(), tg.BudgetTimeoutError)
        assert clock.now() >= 30.0 and gates_b.sent == 0 and b.redis_budget.waiting == 0
        assert _reserved(redis_server, "wait-test") == 2  # A's two, nothing of B's
        gates_a.open("a0")
        gates_a.open("a1")
        assert await asyncio.gather(*under_way) == ["hello", "hello"]


async def test_a_shared_reservation_wakes_when_its_own_process_settles(
    redis_server: RedisServer,
) -> None:
    """One engine on a Redis cap that fits two worst cases: its third call waits and is sent
    as soon as one of its own calls settles, with no backoff (the fake clock never moves)."""
    clock = FakeClock()
    gates = _Gates()
    engine = _shared_engine(gates, clock, redis_server)
    async with engine:
        calls = [asyncio.create_task(engine.generate(f"q{i}")) for i in range(3)]
        ended = lambda: any(c.done() for c in calls)  # noqa: E731
        await _until(lambda: ended() or (gates.sent == 2 and engine.redis_budget.waiting), clock)
        assert not ended() and engine.redis_budget.waiting == 1  # the third waits, not refused
        first = json.loads(gates.transport.requests[0].body)["messages"][-1]["content"]
        gates.open(first)
        await _until(lambda: gates.sent == 3, clock)
        assert clock.now() == 0.0
        for name in ("q0", "q1", "q2"):
            gates.open(name)
        assert await asyncio.gather(*calls) == ["hello"] * 3
