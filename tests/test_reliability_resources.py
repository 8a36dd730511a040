"""Resource bounds: queued calls cost bounded memory, all of it returned; an oversized
response body is refused, whether announced, chunked or gzipped.

(Split from the former ``tests/test_reliability.py``; shared helpers in
``tests/reliability_support.py``.)
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from reliability_support import _no_backward_engine  # noqa: F401  (autouse fixture)
from support import BASE_URL, completion, ok

import asynctg as tg
from asynctg.engine import RetryPolicy
from asynctg.engine.client import ChatEngine
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse

# --- 5. resource bounds -----------------------------------------------------------------------

_OK = ok("done")


class _Gate:
    """A transport whose requests wait until released; it keeps nothing per request."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.sent = 0

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        self.sent += 1
        await self.open.wait()
        return _OK

    async def aclose(self) -> None:
        pass


def _queue(engine: ChatEngine, start: int, count: int) -> list[asyncio.Task[str]]:
    return [
        asyncio.create_task(engine.generate(f"Question {i}: how many legs does a spider have?"))
        for i in range(start, start + count)
    ]


def _traced() -> int:
    return tracemalloc.get_traced_memory()[0]


#: Measured: 4.1 KiB a pending call on CPython 3.11 (task, coroutine frames, request and its
#: encoded body, single-flight slot, scheduler waiter). The bound leaves 50% for other versions.
BYTES_PER_PENDING_CALL = 6 * 1024


async def test_100k_pending_calls_cost_constant_bounded_memory_all_returned() -> None:
    """100,000 calls queued behind 4 stuck ones: the first 5,000 and the last 5,000 each cost
    under 6 KiB a call, the same at depth 0 and at depth 95,000 (no growth with the queue),
    and cancelling them all gives back every memory block they took."""
    gate = _Gate()
    engine = tg.get_engine("m", base_url=BASE_URL, api_key="k", transport=gate, max_concurrency=4)
    total, window = 100_000, 5_000
    tasks: list[asyncio.Task[str]] = []
    gc.collect()
    gc.disable()  # cycles are collected by hand below: the numbers stay deterministic
    try:
        blocks = sys.getallocatedblocks()
        # Tracing all 100,000 calls (and their cancellation) would take most of a minute:
        # bytes are traced for the first and the last 5,000, blocks counted for all.
        tracemalloc.start(1)
        base = _traced()
        tasks += _queue(engine, 0, window)
        await asyncio.sleep(0)
        first = (_traced() - base) / window
        tracemalloc.stop()

        tasks += _queue(engine, window, total - 2 * window)
        await asyncio.sleep(0)

        tracemalloc.start(1)
        base = _traced()
        tasks += _queue(engine, total - window, window)
        await asyncio.sleep(0)
        last = (_traced() - base) / window
        tracemalloc.stop()
        assert engine.scheduler.in_flight == 4 and gate.sent == 4
        assert engine.scheduler.queued == total - 4
        queued_blocks = sys.getallocatedblocks() - blocks

        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        assert all(task.cancelled() for task in tasks)
        del tasks, task
        await asyncio.sleep(0)  # let gather/wait callbacks drop their references
        gc.collect()
        left_blocks = sys.getallocatedblocks() - blocks
    finally:
        tracemalloc.stop()
        gc.enable()
    print(
        f"\nRELIABILITY memory: {first:.0f} B per pending call at depth 0, {last:.0f} B at "
        f"depth 95,000; {queued_blocks / total:.1f} blocks per call, "
        f"{left_blocks} blocks left after cancelling all {total:,}"
    )
    assert first < BYTES_PER_PENDING_CALL
    assert last < BYTES_PER_PENDING_CALL
    assert abs(last - first) < 0.15 * first
    assert left_blocks < 0.001 * queued_blocks  # a few container tables, nothing per call
    assert engine.scheduler.queued == engine.scheduler.in_flight == 0
    assert engine._in_flight == {} and engine.scheduler._heap == []


async def test_completed_calls_give_their_memory_back() -> None:
    """5,000 queued calls run to completion through 4 slots; their memory is returned."""
    gate = _Gate()
    engine = tg.get_engine("m", base_url=BASE_URL, api_key="k", transport=gate, max_concurrency=4)
    count = 5_000
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start(1)
        base = _traced()
        tasks = _queue(engine, 0, count)
        await asyncio.sleep(0)
        queued = _traced() - base
        gate.open.set()
        results = await asyncio.gather(*tasks)
        assert results == ["done"] * count
        del tasks, results
        await asyncio.sleep(0)
        gc.collect()
        left = _traced() - base
    finally:
        tracemalloc.stop()
        gc.enable()
    print(f"\nRELIABILITY memory: {queued / count:.0f} B per queued call, {left} B left in all")
    assert queued / count < BYTES_PER_PENDING_CALL
    assert left < 0.05 * queued
    stats = engine.stats()
    assert stats["calls"] == count and stats["scheduler"]["max_in_flight"] == 4


async def test_cancelled_waiters_behind_a_stuck_queue_are_not_kept() -> None:
    """With every slot busy and a live call at the head of the queue, rounds of calls queued
    and then cancelled (timeouts on a saturated engine) do not pile up in the scheduler."""
    gate = _Gate()
    engine = tg.get_engine("m", base_url=BASE_URL, api_key="k", transport=gate, max_concurrency=1)
    busy = asyncio.create_task(engine.generate("in flight"))
    head = asyncio.create_task(engine.generate("head of the queue"))
    await asyncio.sleep(0)
    sizes = []
    for round_ in range(4):
        tasks = _queue(engine, round_ * 2000, 2000)
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        sizes.append(len(engine.scheduler._heap))
    assert engine.scheduler.queued == 1
    assert max(sizes) <= 2000  # dead waiters are dropped, not kept until the head moves
    gate.open.set()
    assert list(await asyncio.gather(busy, head)) == ["done", "done"]
    assert engine.scheduler._heap == []


# a tiny provider that answers with bodies bigger than the client's cap, three ways

_CAP = 64 * 1024
_BIG = completion("x" * (4 * 1024 * 1024))
_SMALL = completion("small enough")


@dataclass
class _BigServer:
    base: str
    hits: Counter[str]


@pytest.fixture
async def big_server() -> AsyncIterator[_BigServer]:
    hits: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        hits[kind] += 1
        body = _SMALL if kind.startswith("small") else _BIG
        if kind.endswith("length"):
            return web.Response(body=body, content_type="application/json")
        if kind.endswith("gzip"):
            return web.Response(
                body=gzip.compress(body),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for i in range(0, len(body), 16 * 1024):
                await response.write(body[i : i + 16 * 1024])
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield _BigServer(f"http://127.0.0.1:{port}", hits)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["length", "chunked", "gzip"])
async def test_oversized_response_body_is_refused_typed(big_server: _BigServer, kind: str) -> None:
    """A 4 MiB answer against a 64 KiB cap (AiohttpTransport(max_response_bytes=...), given to
    get_engine as transport=) is refused with ResponseTooLargeError naming the setting, whether
    announced by Content-Length, chunked, or gzipped into a small Content-Length; it is not
    retried; answers under the cap in the same encodings still pass."""
    engine = tg.get_engine(
        "m",
        base_url=f"{big_server.base}/{kind}/v1",
        api_key="k",
        transport=AiohttpTransport(max_response_bytes=_CAP),
        retry=RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.001),
    )
    async with engine:
        with pytest.raises(tg.ResponseTooLargeError, match="max_response_bytes"):
            await engine.generate("tell me everything")
        assert big_server.hits[kind] == 1
        stats = engine.stats()
        assert (stats["requests"], stats["retries"], stats["failures"]) == (1, 0, 1)
        small = tg.get_engine(
            "m",
            base_url=f"{big_server.base}/small-{kind}/v1",
            api_key="k",
            transport=AiohttpTransport(max_response_bytes=_CAP),
        )
        async with small:
            assert await small.generate("a little") == "small enough"
