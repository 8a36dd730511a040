"""Time, injectable: the event loop's clock in production, a fake one in tests.

Everything in the engine that waits (the scheduler's budgets, cool-downs, retry backoff) asks a
``Clock``, so tests pin timing logic exactly by advancing a ``FakeClock`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["Clock", "FakeClock", "LoopClock", "TimerHandle"]

T = TypeVar("T")


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds, sleeping, and one-shot timers."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The running event loop's monotonic clock (``loop.time()``)."""

    __slots__ = ()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_at(when, callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told to; for tests of timing logic.

    >>> clock = FakeClock()
    >>> clock.now()
    0.0

    ``await clock.advance(2.5)`` fires every timer due in the next 2.5 fake seconds, in order,
    letting woken tasks run between them; ``await clock.drive(coro)`` runs a coroutine to
    completion, jumping time forward to the next timer whenever every task is waiting on one.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _FakeTimer:
        timer = _FakeTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_at(self._now + max(0.0, seconds), wake)
        try:
            await fut
        finally:
            timer.cancel()

    def next_deadline(self) -> float | None:
        """When the earliest live timer fires, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    @staticmethod
    async def settle(rounds: int = 50) -> None:
        """Let every runnable task run until the loop has nothing left to do right now."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in order and letting woken tasks run."""
        target = self._now + seconds
        await self.settle()
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            _, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.when)
            timer.callback()
            await self.settle()
        self._now = target
        await self.settle()

    async def drive(self, aw: Awaitable[T], *, limit: float = 86_400.0) -> T:
        """Run ``aw`` to completion, jumping to the next timer whenever all tasks wait on one."""
        task = asyncio.ensure_future(aw)
        try:
            stop = self._now + limit
            while not task.done():
                await self.settle()
                if task.done():
                    break
                deadline = self.next_deadline()
                if deadline is None:
                    # Nothing is waiting on fake time: the task waits on something real.
                    await asyncio.wait([task], timeout=0.01)
                    continue
                if deadline > stop:
                    raise TimeoutError(f"fake clock passed its limit of {limit} s")
                await self.advance(max(0.0, deadline - self._now))
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
