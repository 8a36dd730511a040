"""Fan-outs with task-group semantics: the one way asynctg awaits many things at once.

``gather(aws)`` runs every awaitable as a task of one ``asyncio.TaskGroup``: when one fails,
the others are cancelled (and awaited) before the error leaves, so no request goes on running
behind a failure (``asyncio.gather`` leaves them running), and the error leaves the way
``asynctg.errors.first_error`` says. Results come back in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

from asynctg.errors import first_error

__all__ = ["gather"]

T = TypeVar("T")


async def _run(aw: Awaitable[T]) -> T:
    return await aw


async def gather(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all at once inside one task group; results in order; the first failure raised."""
    with first_error():
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_run(aw)) for aw in awaitables]
    return [t.result() for t in tasks]
