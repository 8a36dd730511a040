"""One budget, one dollar cap, shared through a real redis-server by several processes.

The suite starts ``redis-server`` (Debian's package; ``.ci/run`` installs it) on a free loopback
port and stops it after. Locally, without the binary and with ``CI`` unset, these tests skip.
Rates are measured by ``bench/shared.py``; here the counts: no 429 beyond 1%, no call lost, no
budget leaked by a killed process, a run that survives Redis restarting, a cap never passed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SimProcess, engine_with, ok

import asynctg as tg
from asynctg.transport import MockTransport

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
