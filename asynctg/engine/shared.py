"""Budgets shared by every process and host that uses one Redis: rpm, tpm, cool-downs, dollars.

``get_engine(model, rpm=..., tpm=..., max_cost=..., redis_url="redis://host:port/db")``: all
engines with the same Redis URL, namespace, endpoint and model draw from one
requests-per-minute and one tokens-per-minute budget, honour one cool-down after a 429, publish
the limits they learn from ``x-ratelimit-*`` headers to each other, and share one dollar cap.
Accounting is atomic on the server (Lua scripts):

- rpm/tpm (and separate input/output token limits, ``input_tpm`` / ``output_tpm``, for
  providers that have them) are token buckets holding one second's worth, as the local
  scheduler's are (providers enforce per-minute limits on that grain). A request takes one
  request and its estimated tokens (prompt + the reply's cap) before it is sent; when the
  answer reports its usage the difference is given back (or taken). A process killed
  mid-call leaks nothing: a bucket only refills.
- The dollar cap is reserved per call at its worst case (the estimate at the model's price)
  before sending, and settled with the real cost after. Reservations live in a sorted set with
  an expiry, so a killed process's reservations lapse after ``reservation_ttl`` seconds. A
  call that does not fit beside the reservations of calls under way (in any process) waits
  for them to settle: it polls Redis with a capped, jittered backoff (0.05 s doubling to 1 s),
  woken at once when its own process settles one, until ``Estimate.deadline``
  (``QueueTimeout``; the engine raises ``BudgetTimeoutError``). Only a call whose worst case
  would take the *settled* spending past the cap is refused at once, unsent:
  ``BudgetExceededError``. The script tells the two apart atomically. Waiters are not served
  in order across processes: a small call may take room a larger one waits for.
- A 429 anywhere sets one cool-down key (``PX`` expiry) every process waits out.

A budget belongs to a model *at an endpoint*: two servers that both serve a model named
``gpt-4o`` have budgets of their own, so a server that advertises ``rpm 1`` slows only the
engines that talk to it.

Keys (all under ``{namespace}:{endpoint}:{model}:``, where ``{endpoint}`` is 16 hex digits of
the SHA-256 of the normalised base URL, ``types.endpoint_key``; each with an expiry so nothing
lingers): ``rpm`` and ``tpm`` (bucket state, 2 min), ``cool`` (the cool-down), ``limits``
(learned limits, 1 h), ``live`` (a heartbeat of the participating processes, 1 min); and,
for every endpoint and model of the namespace together, ``{namespace}:cost:spent`` and
``{namespace}:cost:reserved`` (the dollar cap, 1 day after the last call).

``SharedBudget`` is a ``Budget`` (``asynctg.engine.budget``): the engine's chain reserves from
it last, after its local scheduler and any job's caps, and settles it last, so a slow Redis
never holds a local slot. Money is integer nano-dollars here as everywhere in the engine.

If Redis becomes unreachable mid-run, the engine goes on with a local share of the budget (the
limit divided by the number of processes last seen live; for the dollar cap, its share of what
was left, where a call that does not fit is refused at once), logs one warning, and rejoins
when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asynctg.engine.budget import NANO, CostCap, Estimate, Spent, exceeded
from asynctg.engine.clock import Clock
from asynctg.engine.scheduler import QueueTimeout, TokenBucket
from asynctg.errors import ConfigError

# CostCap lives in asynctg.engine.budget; it stays importable from here, where it was first.
__all__ = ["CostCap", "SharedBudget"]

log = logging.getLogger("asynctg.shared")

# Waiting for room in the shared dollar cap: the first poll of Redis after this many seconds,
# doubling up to the last (a process's own settling wakes its waiters at once; another
# process's is seen at the next poll).
_COST_WAIT_FIRST = 0.05
_COST_WAIT_MAX = 1.0

_RESERVE = """
-- KEYS[1]: the cool-down; KEYS[2..]: buckets; ARGV: rate per second, amount, for each bucket
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local cool = redis.call('PTTL', KEYS[1])
if cool > 0 then return cool end
local levels = {}
local wait = 0
for i = 2, #KEYS do
  local rate, amount = tonumber(ARGV[2 * i - 3]), tonumber(ARGV[2 * i - 2])
  if rate > 0 then
    local cap = math.max(1, rate)
    local v = redis.call('HMGET', KEYS[i], 'level', 'ts')
    local l = tonumber(v[1]) or cap
    local ts = tonumber(v[2]) or now
    if now > ts then l = math.min(cap, l + (now - ts) * rate) end
    levels[i] = l
    local need = math.min(amount, cap)
    if l < need - 1e-9 then wait = math.max(wait, (need - l) / rate) end
  end
end
if wait > 0 then return math.max(1, math.ceil(wait * 1000)) end
for i = 2, #KEYS do
  if levels[i] ~= nil then
    local amount = tonumber(ARGV[2 * i - 2])
    redis.call('HSET', KEYS[i], 'level', tostring(levels[i] - amount), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[i], 120000)
  end
end
return 0
"""

_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local cap = math.max(1, rate)
local v = redis.call('HMGET', KEYS[1], 'level', 'ts')
local l = tonumber(v[1]) or cap
local ts = tonumber(v[2]) or now
if now > ts then l = math.min(cap, l + (now - ts) * rate) end
l = math.min(cap, l + delta)
redis.call('HSET', KEYS[1], 'level', tostring(l), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
return 0
"""

_COOL = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 0
"""

_COST_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  reserved = reserved + tonumber(string.match(m, ':(%d+)$'))
end
local cap, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
-- 0: refused, even once every outstanding reservation settles at nothing
if spent + amount > cap then return {0, spent, reserved} end
-- 2: no room beside the outstanding reservations now: wait for them to settle (or lapse)
if spent + reserved + amount > cap then return {2, spent, reserved} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3] .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
return {1, spent, reserved}
"""

_COST_SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
local spent = redis.call('INCRBY', KEYS[1], tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 86400000)
return spent
"""


@dataclass
class Reservation:
    """What one call took: tokens from the tpm bucket, dollars from the cap (nano-dollars)."""

    tokens: int
    nano: int
    member: str = ""


class SharedBudget:
    """The budget of one model shared through Redis (see the module); a ``Budget``
    (``asynctg.engine.budget``)."""

    label = "the shared budget"

    def __init__(
        self,
        url: str,
        *,
        model: str,
        clock: Clock,
        rpm: float | None = None,
        tpm: float | None = None,
        max_cost: float | None = None,
        namespace: str = "asynctg",
        reservation_ttl: float = 900.0,
        input_tpm: float | None = None,
        output_tpm: float | None = None,
        endpoint: str = "",
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "redis_url needs the redis package: pip install 'asynctg[redis]'"
            ) from exc
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis_url must be redis://host:port/db, got {url!r}")
        self.url = url
        self.model = model
        self.clock = clock
        self.rpm = rpm
        self.tpm = tpm
        self.input_tpm = input_tpm
        self.output_tpm = output_tpm
        self.cap = None if max_cost is None else CostCap(max_cost).cap
        # the endpoint hashed: a URL's ":" and "/" would make the key ambiguous to read
        where = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        self.prefix = f"{namespace}:{where}:{model}:"
        # One dollar cap per namespace, whatever the model: a run's engines share it.
        self.cost_prefix = f"{namespace}:cost:"
        self.ttl_ms = int(reservation_ttl * 1000)
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}
        self._learned: tuple[float | None, float | None] = (None, None)
        self._learned_at = -math.inf
        self._beat_at = -math.inf
        self._live = 1
        # When Redis is away: a local share, and when to try Redis again.
        self._offline_since: float | None = None
        self._retry_at = 0.0
        self._local: dict[str, TokenBucket] = {}
        self._local_cap: CostCap | None = None
        self._last_spent = 0
        self.redis_errors = 0
        #: reservations of this process waiting for room in the shared dollar cap
        self.waiting = 0
        self._wakers: set[asyncio.Future[None]] = set()
        self._rng = random.Random()
        #: the limits this process learned from rate-limit headers (rpm, tpm), published to
        #: the others after each answer; the engine sets it to its scheduler's
        self.learned: Callable[[], tuple[float | None, float | None]] | None = None

    # --- connection -------------------------------------------------------------------------

    def _redis(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=1.0, socket_connect_timeout=1.0, retry_on_timeout=False
            )
            self._loop = loop
            self._scripts = {
                name: self._client.register_script(text)
                for name, text in (
                    ("reserve", _RESERVE),
                    ("adjust", _ADJUST),
                    ("cool", _COOL),
                    ("cost_reserve", _COST_RESERVE),
                    ("cost_settle", _COST_SETTLE),
                )
            }
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()

    def _key(self, name: str) -> str:
        return self.prefix + name

    @contextlib.contextmanager
    def _or_offline(self) -> Iterator[None]:
        """Redis failing inside the block takes this process offline (it then spends its local
        share, see ``_went_offline``) instead of raising."""
        try:
            yield
        except (TimeoutError, OSError, _redis_errors()) as exc:
            self._went_offline(exc)

    def _online(self) -> bool:
        return self._offline_since is None or self.clock.now() >= self._retry_at

    def _went_offline(self, exc: BaseException) -> None:
        self.redis_errors += 1
        now = self.clock.now()
        if self._offline_since is None:
            self._offline_since = now
            log.warning(
                "Redis at %s is unreachable (%s): going on with this process's share (1/%d) of "
                "the budget until it answers again",
                self.url,
                type(exc).__name__,
                self._live,
            )
        self._retry_at = now + 1.0

    def _came_back(self) -> None:
        if self._offline_since is not None:
            log.warning("Redis at %s answers again: the budget is shared again", self.url)
        self._offline_since = None
        self._local.clear()
        self._local_cap = None

    # --- rpm / tpm ----------------------------------------------------------------------------

    async def _rates(self, client: Any) -> tuple[float, float]:
        now = self.clock.now()
        if (self.rpm is None or self.tpm is None) and now - self._learned_at > 5.0:
            raw = await client.hmget(self._key("limits"), "rpm", "tpm")
            self._learned = tuple(float(v) if v is not None else None for v in raw)  # type: ignore[assignment]
            self._learned_at = now
        rpm = self.rpm if self.rpm is not None else self._learned[0]
        tpm = self.tpm if self.tpm is not None else self._learned[1]
        return (rpm or 0.0) / 60.0, (tpm or 0.0) / 60.0

    async def _heartbeat(self, client: Any) -> None:
        now = self.clock.now()
        if now - self._beat_at < 2.0:
            return
        self._beat_at = now
        key = self._key("live")
        server = await client.time()
        seconds = float(server[0]) + server[1] / 1e6
        pipe = client.pipeline(transaction=False)
        pipe.zadd(key, {self.id: seconds})
        pipe.zremrangebyscore(key, "-inf", seconds - 10)
        pipe.zcard(key)
        pipe.expire(key, 60)
        results = await pipe.execute()
        self._live = max(1, int(results[2]))

    async def reserve(self, estimate: Estimate) -> _SharedPermit:
        """The ``Budget`` protocol (``asynctg.engine.budget``): one request, the estimated
        tokens and the worst-case dollars from the shared budget; the permit settles them."""
        parts = estimate.parts or (0, 0)
        reservation = await self._reserve(estimate.tokens, estimate.nano, estimate.deadline, parts)
        return _SharedPermit(self, reservation, estimate)

    async def _reserve(
        self, tokens: int, nano: int, deadline: float, parts: tuple[int, int]
    ) -> Reservation:
        """Wait for one request and ``tokens`` from the shared buckets and take ``nano``
        dollars from the cap; ``BudgetExceededError``, or ``QueueTimeout`` past ``deadline``
        (clock time)."""
        reservation = Reservation(tokens, 0)
        if self.cap is not None and nano > 0:
            await self._reserve_cost(reservation, nano, deadline)
        try:
            while True:
                wait = await self._take(tokens, parts)
                if wait <= 0:
                    return reservation
                if self.clock.now() + wait > deadline:
                    raise QueueTimeout(f"the shared budget needs {wait:.1f} s more")
                await self.clock.sleep(wait)
        except BaseException:
            if reservation.nano:
                await self.settle(reservation, None)
            raise

    async def _take(self, tokens: int, parts: tuple[int, int]) -> float:
        """Seconds to wait (0: taken)."""
        if self._online():
            with self._or_offline():
                client = self._redis()
                await self._heartbeat(client)
                rpm, tpm = await self._rates(client)
                itpm, otpm = ((v or 0.0) / 60.0 for v in (self.input_tpm, self.output_tpm))
                keys = [self._key(n) for n in ("cool", "rpm", "tpm", "itpm", "otpm")]
                args = [rpm, 1, tpm, tokens, itpm, parts[0], otpm, parts[1]]
                ms = await self._scripts["reserve"](keys=keys, args=args)
                self._came_back()
                return int(ms) / 1000.0
        return self._take_locally(tokens, parts)

    def _limits(self, tokens: int, parts: tuple[int, int]) -> list[tuple[str, float | None, int]]:
        return [
            ("rpm", self.rpm, 1),
            ("tpm", self.tpm, tokens),
            ("itpm", self.input_tpm, parts[0]),
            ("otpm", self.output_tpm, parts[1]),
        ]

    def _take_locally(self, tokens: int, parts: tuple[int, int]) -> float:
        now = self.clock.now()
        share = max(1, self._live)
        wait = 0.0
        for name, limit, amount in self._limits(tokens, parts):
            if limit is None:
                continue
            bucket = self._local.get(name)
            if bucket is None:
                bucket = self._local[name] = TokenBucket(limit / share, now)
            wait = max(wait, bucket.wait_time(amount, now))
        if wait > 0:
            return wait
        for name, _, amount in self._limits(tokens, parts):
            if name in self._local:
                self._local[name].take(amount)
        return 0.0

    async def adjust_tokens(
        self,
        estimated: int,
        actual: int | None,
        parts: tuple[int, int] = (0, 0),
        actual_parts: tuple[int, int] | None = None,
    ) -> None:
        """The answer reported its usage: give back (or take) the differences."""
        corrections: list[tuple[str, float | None, int]] = []
        if actual is not None and actual != estimated:
            corrections.append(("tpm", self.tpm, estimated - actual))
        if actual_parts is not None:
            corrections.append(("itpm", self.input_tpm, parts[0] - actual_parts[0]))
            corrections.append(("otpm", self.output_tpm, parts[1] - actual_parts[1]))
        corrections = [c for c in corrections if c[2]]
        if not corrections:
            return
        if self._offline_since is not None:
            for name, _, delta in corrections:
                bucket = self._local.get(name)
                if bucket is not None:
                    bucket.give_back(delta) if delta > 0 else bucket.take(-delta)
            return
        with self._or_offline():
            client = self._redis()
            _, learned_tpm = await self._rates(client)
            for name, limit, delta in corrections:
                if limit is not None:
                    rate = limit / 60.0
                else:
                    rate = learned_tpm if name == "tpm" else 0.0
                if rate > 0:
                    await self._scripts["adjust"](keys=[self._key(name)], args=[rate, delta])

    async def cool_down(self, seconds: float) -> None:
        """Every process holds its requests for ``seconds`` (a 429 told one of them so)."""
        if seconds <= 0 or self._offline_since is not None:
            return
        with self._or_offline():
            self._redis()
            await self._scripts["cool"](keys=[self._key("cool")], args=[int(seconds * 1000)])

    async def publish_limits(self, rpm: float | None, tpm: float | None) -> None:
        """Share limits learned from ``x-ratelimit-*`` headers with every process."""
        values = {k: v for k, v in (("rpm", rpm), ("tpm", tpm)) if v is not None}
        if not values or self._offline_since is not None:
            return
        with self._or_offline():
            client = self._redis()
            await client.hset(self._key("limits"), mapping=values)
            await client.expire(self._key("limits"), 3600)

    # --- dollars ------------------------------------------------------------------------------

    async def _reserve_cost(self, reservation: Reservation, nano: int, deadline: float) -> None:
        """Take ``nano`` from the shared cap, waiting (a capped backoff, cut short when this
        process settles a reservation) while outstanding reservations leave no room;
        ``BudgetExceededError`` when the settled spending leaves none, ``QueueTimeout`` past
        ``deadline``. Offline: the local share, refused at once when it does not fit."""
        assert self.cap is not None
        member = f"{self.id}-{uuid.uuid4().hex[:8]}"
        start, delay, waiting = self.clock.now(), _COST_WAIT_FIRST, False
        try:
            while self._online():
                answer = None
                with self._or_offline():
                    self._redis()
                    keys = [self.cost_prefix + "spent", self.cost_prefix + "reserved"]
                    answer = await self._scripts["cost_reserve"](
                        keys=keys, args=[self.cap, nano, member, self.ttl_ms]
                    )
                    self._came_back()
                if answer is None:
                    break  # Redis failed: this process's local share, below
                ok, spent, reserved = (int(v) for v in answer)
                self._last_spent = spent + reserved
                if ok == 1:
                    reservation.nano, reservation.member = nano, f"{member}:{nano}"
                    return
                if ok == 0:
                    raise exceeded(self.model, self.cap, spent, reserved, nano)
                now = self.clock.now()
                if now >= deadline:
                    raise QueueTimeout(
                        f"the shared dollar cap had no room for ${nano / NANO:.6f} within "
                        f"{now - start:.1f} s (${spent / NANO:.6f} spent and "
                        f"${reserved / NANO:.6f} reserved by calls under way, of "
                        f"${self.cap / NANO:.6f})"
                    )
                if not waiting:
                    waiting = True
                    self.waiting += 1
                # jittered, so the processes waiting on one cap do not poll Redis in step
                await self._nap(min(delay * (0.5 + self._rng.random() / 2), deadline - now))
                delay = min(delay * 2, _COST_WAIT_MAX)
        finally:
            if waiting:
                self.waiting -= 1
        if self._local_cap is None:
            # Offline: this process may spend its share of what was left when last seen.
            left = max(0, self.cap - self._last_spent) // max(1, self._live)
            self._local_cap = CostCap(max(left, 1) / NANO)
        self._local_cap.take(nano, self.model)
        reservation.nano = nano

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds`` of the clock, or less: until this process settles a reservation
        of the shared cap (room a waiter may take; other processes' settling is polled)."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.clock.call_at(self.clock.now() + max(0.0, seconds), wake)
        self._wakers.add(woken)
        try:
            await woken
        finally:
            timer.cancel()
            self._wakers.discard(woken)

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        for woken in self._wakers:
            # a future of another (perhaps closed) loop is left to its timer
            if woken.get_loop() is loop and not woken.done():
                woken.set_result(None)

    async def settle(self, reservation: Reservation, actual_nano: int | None) -> None:
        """Release ``reservation`` and count ``actual_nano`` (None: nothing was spent)."""
        if not reservation.nano:
            return
        spent = actual_nano or 0
        if not reservation.member or self._offline_since is not None:
            if self._local_cap is not None:
                self._local_cap.settle(reservation.nano, spent)
            if not reservation.member:
                return
        with self._or_offline():
            self._redis()
            keys = [self.cost_prefix + "spent", self.cost_prefix + "reserved"]
            await self._scripts["cost_settle"](keys=keys, args=[reservation.member, spent])
            self._wake()


class _SharedPermit:
    """A call's hold on the shared budget: settled with the real cost, the tokens corrected,
    and the limits this process learned published to the others."""

    __slots__ = ("budget", "estimate", "reservation")

    def __init__(self, budget: SharedBudget, reservation: Reservation, estimate: Estimate) -> None:
        self.budget = budget
        self.reservation = reservation
        self.estimate = estimate

    async def settle(self, spent: Spent | None) -> None:
        budget = self.budget
        if spent is None:
            # shielded: a cancelled call still hands its dollars back
            await asyncio.shield(budget.settle(self.reservation, None))
            return
        await budget.settle(self.reservation, spent.nano)
        e = self.estimate
        await budget.adjust_tokens(
            e.tokens,
            spent.tokens,
            e.parts or (0, 0),
            spent.parts if e.parts is not None else None,
        )
        learned = budget.learned() if budget.learned is not None else (None, None)
        if learned[0] or learned[1]:
            await budget.publish_limits(*learned)


def _redis_errors() -> type[BaseException]:
    import redis.exceptions

    return redis.exceptions.RedisError  # type: ignore[no-any-return]
