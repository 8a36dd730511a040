"""Structured fan-out: the one way asynctg runs many things at once.

Every concurrent piece of work runs as a task of an ``asyncio.TaskGroup`` (asyncio's, not
anyio's, across the package: see docs/concurrency.md), and errors leave every group the way
``asynctg.errors.first_error`` says: when one task fails, the others are cancelled (and
awaited) before the error leaves, as the first failure itself, not an ``ExceptionGroup``.

- ``task_group()``: such a group, for work added as it goes (the backward executor, a load
  generator's arrivals).
- ``gather(aws)``: await all at once; results in order (``asyncio.gather`` would leave the
  others running behind a failure).
- ``count_bounded(aws, window)``: the sum of many counts, at most ``window`` in flight, pulled
  lazily (an evaluation over a large split keeps flat memory).
- ``run_all(tasks, coros)``: every coroutine a task of one group, the tasks handed out (so a
  coroutine may cancel its siblings: a run that reached its budget cap).
- ``alongside(coro)``: a helper task (a progress display's ticker) that runs while the body
  does and is cancelled when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from asynctg.errors import first_error

__all__ = ["alongside", "count_bounded", "gather", "run_all", "task_group"]

T = TypeVar("T")


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` whose errors leave as ``first_error`` says.

    >>> # async with fanout.task_group() as group:
    >>> #     group.create_task(work())
    """
    with first_error():
        async with asyncio.TaskGroup() as group:
            yield group


async def _run(aw: Awaitable[T]) -> T:
    return await aw


async def gather(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all at once inside one task group; results in order; the first failure raised."""
    async with task_group() as group:
        tasks = [group.create_task(_run(aw)) for aw in awaitables]
    return [t.result() for t in tasks]


async def count_bounded(awaitables: Iterable[Awaitable[int]], window: int) -> int:
    """The sum of the results, at most ``window`` awaited at once, pulled lazily.

    A finished task is dropped at once, so memory depends on ``window``, not on how many there
    are. The first failure cancels the rest and is raised as itself.
    """
    total = 0
    slots = asyncio.Semaphore(window)

    async def run(aw: Awaitable[int]) -> None:
        nonlocal total
        try:
            value = await aw  # not `total += await aw`: that reads total before awaiting
            total += value
        finally:
            slots.release()

    async with task_group() as group:
        for aw in awaitables:
            await slots.acquire()
            group.create_task(run(aw))
    return total


async def run_all(
    tasks: list[asyncio.Task[None]], coroutines: Iterable[Coroutine[Any, Any, None]]
) -> None:
    """Run ``coroutines`` as tasks of one task group, appending each task to ``tasks`` (so a
    coroutine may cancel its siblings); the first failure is raised as itself."""
    async with task_group() as group:
        tasks.extend(group.create_task(c) for c in coroutines)


@contextlib.asynccontextmanager
async def alongside(helper: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``helper`` as a task while the body runs; cancel it when the body ends (however).

    A failure of the body leaves as itself; so does one of the helper, which ends the body.
    """
    async with task_group() as group:
        task = group.create_task(helper)
        try:
            yield
        finally:
            task.cancel()
