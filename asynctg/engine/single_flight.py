"""Answers without a new send: the cache, the journal's replay, and single-flight.

``ChatEngine.send`` (``asynctg.engine.client``) asks these before the provider: a cacheable
request is answered from the response store (``cached``), and an identical request already
in flight is awaited instead of sent again (``coalesce``: the first caller leads, the others
share its answer or its error; if the leader is cancelled before an answer, a waiter leads a
new send). In ``cache_mode="replay"`` every answer comes from the journal (``replay``), and a
request it does not hold is a ``ReplayMissError``: nothing is ever sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import msgspec

from asynctg import telemetry
from asynctg.engine.cache import ResponseStore
from asynctg.engine.types import ChatRequest, ChatResult
from asynctg.engine.usage import UsageStats
from asynctg.errors import ReplayMissError

if TYPE_CHECKING:
    from asynctg.engine.client import ChatEngine

__all__ = ["InFlight", "cached", "coalesce", "replay"]


class InFlight:
    """Single-flight: the outcome slot of a request sent once for several identical callers."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.result: ChatResult | None = None
        self.error: BaseException | None = None


def cached(store: ResponseStore, key: str, usage: UsageStats, model: str) -> ChatResult | None:
    """The stored answer for ``key``, counted as a cache hit in ``usage``; None on a miss."""
    hit = store.get(key)
    if hit is None:
        return None
    usage.cache_hits += 1
    usage.calls += 1
    telemetry.cache_hit(model)
    return msgspec.structs.replace(hit, cached=True)


def replay(
    store: ResponseStore, key: str, request: ChatRequest, usage: UsageStats, model: str
) -> ChatResult:
    """The journaled answer for ``key``; ``ReplayMissError`` (counted as a failure) if the
    journal has none."""
    hit = store.get(key)
    if hit is None:
        usage.failures += 1
        last = request.messages[-1].get("content") if request.messages else ""
        text = last if isinstance(last, str) else str(last)[:200]
        raise ReplayMissError(
            f"{model}: no journaled answer for request {key[:16]}... (last message: "
            f"{' '.join(text.split())[:120]!r}); a replay sends nothing, so the run's "
            "requests must be exactly the recorded ones (same configuration, same data)",
            key=key,
        )
    usage.cache_hits += 1
    usage.calls += 1
    return msgspec.structs.replace(hit, cached=True)


def coalesce(
    engine: ChatEngine, key: str, request: ChatRequest, priority: int, usage: UsageStats
) -> Awaitable[ChatResult]:
    """The answer to ``request`` (whose key is ``key``): ``engine._send``'s, led by this caller
    when no identical request is in ``engine._in_flight`` (its answer then goes to
    ``engine._keep``), else the leader's, counted as coalesced in ``usage``. (A plain function
    returning the leader's or the follower's coroutine: no extra frame per pending call.)"""
    if key not in engine._in_flight:
        return _lead(engine, key, request, priority)
    return _follow(engine, key, request, priority, usage)


async def _follow(
    engine: ChatEngine, key: str, request: ChatRequest, priority: int, usage: UsageStats
) -> ChatResult:
    while True:
        flight = engine._in_flight.get(key)
        if flight is None:
            return await _lead(engine, key, request, priority)
        await flight.done.wait()
        if flight.result is not None:
            usage.coalesced += 1
            usage.calls += 1
            return flight.result
        if flight.error is not None:
            raise flight.error
        # The request's owner was cancelled before an answer: try again ourselves.


async def _lead(engine: ChatEngine, key: str, request: ChatRequest, priority: int) -> ChatResult:
    flights = engine._in_flight
    flight = flights[key] = InFlight()
    try:
        result = await engine._send(request, priority)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        flight.error = exc
        raise
    else:
        flight.result = result
        engine._keep(key, result)
        return result
    finally:
        del flights[key]
        flight.done.set()
