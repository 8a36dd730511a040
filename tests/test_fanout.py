"""asynctg.fanout: the one home of structured fan-out, and how errors leave its groups."""

from __future__ import annotations

import asyncio

import pytest

from asynctg import fanout
from asynctg.errors import ConfigError, GraphError


async def _fail_after(n: int, exc: Exception) -> None:
    for _ in range(n):
        await asyncio.sleep(0)
    raise exc


async def test_gather_returns_results_in_order() -> None:
    """gather gives the results in the order of the awaitables, not of completion."""

    async def late(i: int) -> int:
        for _ in range(5 - i):
            await asyncio.sleep(0)
        return i

    assert await fanout.gather(late(i) for i in range(5)) == [0, 1, 2, 3, 4]


async def test_gather_cancels_the_rest_and_raises_the_first_failure_itself() -> None:
    """A failure cancels the siblings before it leaves, as itself (no ExceptionGroup)."""
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with pytest.raises(GraphError):
        await fanout.gather([forever(), _fail_after(2, GraphError("cycle"))])
    assert cancelled.is_set()


async def test_task_group_notes_the_other_failures_kinds() -> None:
    """Several failures: the first leaves, with a note naming the others' kinds."""
    with pytest.raises(ConfigError) as caught:
        async with fanout.task_group() as group:
            group.create_task(_fail_after(1, ConfigError("bad")))
            group.create_task(_fail_after(1, GraphError("cycle")))
    assert caught.value.__notes__ == ["(more errors in the same task group: GraphError)"]


async def test_run_all_hands_out_the_tasks_so_a_coroutine_can_cancel_its_siblings() -> None:
    """run_all appends every task to the list it is given; cancelling a sibling is no error."""
    tasks: list[asyncio.Task[None]] = []
    done: list[str] = []

    async def stopper() -> None:
        for t in tasks:
            if t is not asyncio.current_task():
                t.cancel()
        done.append("stopper")

    async def sleeper() -> None:
        await asyncio.Event().wait()
        done.append("sleeper")

    await fanout.run_all(tasks, [sleeper(), stopper()])
    assert len(tasks) == 2 and done == ["stopper"] and tasks[0].cancelled()


async def test_alongside_cancels_the_helper_when_the_body_ends() -> None:
    """The helper task runs while the body does and is cancelled (not awaited to its end)
    once the body returns."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with fanout.alongside(ticker()):
        for _ in range(3):
            await asyncio.sleep(0)
    seen = ticks
    await asyncio.sleep(0)
    assert seen >= 1 and ticks == seen


async def test_alongside_lets_the_bodys_error_leave_as_itself() -> None:
    """A failure of the body leaves as itself, not wrapped in an ExceptionGroup."""

    async def idle() -> None:
        await asyncio.Event().wait()

    with pytest.raises(ConfigError):
        async with fanout.alongside(idle()):
            await asyncio.sleep(0)
            raise ConfigError("boom")


async def test_alongside_a_failing_helper_ends_the_body_with_its_error() -> None:
    """A helper that fails cancels the body, and its error leaves as itself."""
    reached_end = False
    with pytest.raises(GraphError):
        async with fanout.alongside(_fail_after(1, GraphError("cycle"))):
            await asyncio.Event().wait()
            reached_end = True
    assert not reached_end
