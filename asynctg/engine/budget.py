"""Budgets: what a call must hold before it is sent, behind one protocol.

::

    permit = await budget.reserve(estimate)   # wait for room (or raise); hold it while sending
    ...                                       # send the request
    await permit.settle(spent)                # the real usage; None: nothing was spent

A ``Budget`` reserves an ``Estimate`` (the call's estimated tokens, its worst-case price, its
priority and fair-share flow, and the clock time past which waiting gives up) and hands back
a ``Permit``; the permit is settled exactly once, with what the answer reported (``Spent``) or
with None when the call failed or was cancelled (the reservation is then released whole).
Implementations:

- ``SchedulerBudget``: the engine's local scheduler (rpm/tpm buckets, the in-flight cap,
  cool-downs, priorities and fair share, ``asynctg.engine.scheduler``);
- ``FlexBudget``: the flex tier's own in-flight allowance, with the scheduler's rpm/tpm;
- ``CapBudget``: a dollar cap (``CostCap``) of the engine or of a job;
- ``asynctg.engine.shared.SharedBudget``: rpm/tpm, cool-downs and a dollar cap shared through
  Redis by every process;
- ``Budgets``: several of them as one, all or nothing. The engine's chain is the scheduler,
  then the caps of the call's job (innermost first), then the engine's own cap or its Redis
  budget: a job's permit inside the engine's inside a Redis one.

Waiting past ``Estimate.deadline`` raises ``BudgetWaitTimeout`` (a ``QueueTimeout`` naming
the budget that held the call); a refusal (a dollar cap that can never fit the call) raises
``BudgetExceededError``. Either way nothing stays reserved.

Money is integer nano-dollars (``NANO`` per dollar) everywhere in the engine: prices are
configured in dollars per million tokens and turned into nano-dollars by ``nano_dollars``;
integers, so sums never drift and a cap is compared exactly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from asynctg.engine.clock import Clock
from asynctg.engine.scheduler import Flow, QueueTimeout, Scheduler
from asynctg.errors import BudgetExceededError, BudgetTimeoutError, ConfigError

__all__ = [
    "NANO",
    "Budget",
    "BudgetWaitTimeout",
    "Budgets",
    "CapBudget",
    "CostCap",
    "Estimate",
    "FlexBudget",
    "Permit",
    "SchedulerBudget",
    "Spent",
    "held_too_long",
]

#: Nano-dollars per dollar: the engine's one unit of money.
NANO = 1_000_000_000


# Not frozen: a frozen dataclass's __init__ costs a few microseconds more, on every call.
@dataclass(slots=True)
class Estimate:
    """What a call asks of its budgets before it is sent (not changed once built)."""

    tokens: int  #: estimated prompt tokens + the reply tokens reserved
    parts: tuple[int, int] | None  #: (input, output) tokens, for split token budgets
    nano: int  #: the call's worst-case price in nano-dollars (0: unpriced)
    deadline: float  #: clock time past which waiting gives up
    priority: int = 0
    flow: Flow | None = None  #: the job's fair-share flow (None: the default one)
    #: its place in line (``scheduler.ticket``), kept by its retries; None: a new one each time
    place: int | None = None


@dataclass(slots=True)
class Spent:
    """What an answered call used, as the provider reported it (not changed once built)."""

    tokens: int | None  #: total tokens (None: the answer reported none)
    parts: tuple[int, int] | None  #: (prompt, completion) tokens when reported
    nano: int  #: its price in nano-dollars


class Permit(Protocol):
    """A reservation held while a call is under way; settled exactly once."""

    async def settle(self, spent: Spent | None) -> None: ...


class Budget(Protocol):
    """Something a call reserves from before it is sent (see the module)."""

    #: names the budget in errors ("the dollar cap", ...)
    label: str

    async def reserve(self, estimate: Estimate) -> Permit: ...


class BudgetWaitTimeout(QueueTimeout):
    """A budget held a call past its ``Estimate.deadline``; ``label`` names which."""

    def __init__(self, label: str, cause: BaseException) -> None:
        super().__init__(f"{label}: {cause}")
        self.label = label


class SchedulerBudget:
    """The engine's local scheduler as a ``Budget``: a slot in flight and the estimated
    tokens; settling frees the slot and corrects the token charge with the reported usage."""

    __slots__ = ("clock", "scheduler")
    label = "the engine's budget"

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.clock = scheduler.clock

    async def reserve(self, estimate: Estimate) -> Permit:
        await self.scheduler.acquire(
            estimate.tokens,
            estimate.priority,
            max_wait=estimate.deadline - self.clock.now(),
            parts=estimate.parts,
            flow=estimate.flow,
            place=estimate.place,
        )
        return _SlotPermit(self.scheduler, estimate)


class _SlotPermit:
    __slots__ = ("estimate", "scheduler")

    def __init__(self, scheduler: Scheduler, estimate: Estimate) -> None:
        self.scheduler = scheduler
        self.estimate = estimate

    def release_unsent(self) -> None:
        """The call was refused by a later budget and never sent: its request and token
        charges go back to the scheduler's buckets (else a refused fan-out drains them)."""
        e = self.estimate
        self.scheduler.release(e.tokens, None, parts=e.parts, flow=e.flow, sent=False)

    async def settle(self, spent: Spent | None) -> None:
        e = self.estimate
        if spent is None:
            self.scheduler.release(e.tokens, None, parts=e.parts, flow=e.flow)
        else:
            self.scheduler.release(
                e.tokens, spent.tokens, parts=e.parts, actual_parts=spent.parts, flow=e.flow
            )


class FlexBudget:
    """The flex tier's local budget: a slot of its own in-flight allowance (``flex``, a
    scheduler without rate buckets: ``flex_concurrency`` calls in flight at most) and the
    estimated tokens from the engine's rate budgets (``rates``: the rpm/tpm every call of
    the account draws on), without a slot there. A flex call never queues behind the
    standard in-flight cap."""

    __slots__ = ("clock", "flex", "rates")
    label = "the engine's flex budget"

    def __init__(self, flex: Scheduler, rates: Scheduler) -> None:
        self.flex = flex
        self.rates = rates
        self.clock = rates.clock

    async def reserve(self, estimate: Estimate) -> Permit:
        # (no fair-share flow: a job's Flow belongs to the standard scheduler)
        await self.flex.acquire(
            0,
            estimate.priority,
            max_wait=estimate.deadline - self.clock.now(),
            place=estimate.place,
        )
        try:
            await self.rates.acquire_rate(
                estimate.tokens,
                max_wait=estimate.deadline - self.clock.now(),
                parts=estimate.parts,
            )
        except BaseException:
            self.flex.release(0)
            raise
        return _FlexPermit(self, estimate)


class _FlexPermit:
    __slots__ = ("budget", "estimate")

    def __init__(self, budget: FlexBudget, estimate: Estimate) -> None:
        self.budget = budget
        self.estimate = estimate

    def release_unsent(self) -> None:
        """Never sent: the slot goes back, and the token charges to the rate buckets."""
        e = self.estimate
        self.budget.flex.release(0)
        self.budget.rates.release(e.tokens, None, admitted=False, parts=e.parts, sent=False)

    async def settle(self, spent: Spent | None) -> None:
        e = self.estimate
        self.budget.flex.release(0)
        if spent is not None:
            self.budget.rates.release(
                e.tokens, spent.tokens, admitted=False, parts=e.parts, actual_parts=spent.parts
            )


class CostCap:
    """A dollar cap in one process: reserve a call's worst case, settle the real cost.

    ``acquire`` waits while other calls' reservations fill the cap (they usually settle well
    below their worst case) and refuses only when the settled spending plus this call's worst
    case would pass it; waiters are served in arrival order. ``take`` refuses at once when it
    does not fit (the offline share of a Redis-shared cap). ``job`` names the job the cap
    belongs to, for the errors (None: an engine's cap). Amounts are nano-dollars; one cap may
    be given to several engines (``get_engine(max_cost=cap)``) to share it.
    """

    def __init__(self, max_cost: float, *, job: str | None = None) -> None:
        if not (isinstance(max_cost, int | float) and 0 < max_cost < math.inf):
            raise ConfigError(f"max_cost must be a positive number of dollars, got {max_cost!r}")
        self.cap = int(max_cost * NANO)
        self.spent = 0
        self.reserved = 0
        self.job = job
        self._waiters: collections.deque[tuple[int, str, asyncio.Future[None]]] = (
            collections.deque()
        )

    def take(self, nano: int, model: str) -> None:
        """Reserve ``nano`` now, or ``BudgetExceededError`` if it does not fit."""
        if self.spent + self.reserved + nano > self.cap:
            raise exceeded(model, self.cap, self.spent, self.reserved, nano, self.job)
        self.reserved += nano

    async def acquire(
        self, nano: int, model: str, *, clock: Clock | None = None, max_wait: float | None = None
    ) -> None:
        """Reserve ``nano``, waiting for reservations outstanding to settle if they leave no
        room; ``BudgetExceededError`` when the settled spending leaves none, ``QueueTimeout``
        past ``max_wait`` seconds of ``clock``."""
        if self.spent + nano > self.cap:
            raise exceeded(model, self.cap, self.spent, self.reserved, nano, self.job)
        if not self._waiters and self.spent + self.reserved + nano <= self.cap:
            self.reserved += nano
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nano, model, fut)
        self._waiters.append(entry)
        timer = None
        if clock is not None and max_wait is not None:

            def expire() -> None:
                if not fut.done():
                    fut.set_exception(
                        QueueTimeout(f"the dollar cap had no room within {max_wait:g} s")
                    )
                    self._grant()

            timer = clock.call_at(clock.now() + max(0.0, max_wait), expire)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.reserved -= nano  # granted and cancelled in the same instant
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            self._grant()  # a waiter that was first in line may have held the others back
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def settle(self, reserved: int, actual: int) -> None:
        """Release ``reserved`` and count ``actual`` as spent (both nano-dollars)."""
        self.reserved -= reserved
        self.spent += actual
        if self._waiters:
            self._grant()

    def _grant(self) -> None:
        """Serve waiters in order while they fit; refuse those that never will."""
        waiters = self._waiters
        while waiters:
            nano, model, fut = waiters[0]
            if fut.done():
                waiters.popleft()
            elif self.spent + nano > self.cap:
                waiters.popleft()
                fut.set_exception(
                    exceeded(model, self.cap, self.spent, self.reserved, nano, self.job)
                )
            elif self.spent + self.reserved + nano <= self.cap:
                waiters.popleft()
                self.reserved += nano
                fut.set_result(None)
            else:
                return

    @property
    def waiting(self) -> int:
        """Reservations waiting for room."""
        return sum(1 for _, _, fut in self._waiters if not fut.done())


class CapBudget:
    """A ``CostCap`` as a ``Budget``: reserves the call's worst case, settles its real price."""

    __slots__ = ("cap", "clock", "model")
    label = "the dollar cap"

    def __init__(self, cap: CostCap, model: str, clock: Clock) -> None:
        self.cap = cap
        self.model = model
        self.clock = clock

    async def reserve(self, estimate: Estimate) -> Permit:
        left = estimate.deadline - self.clock.now()
        await self.cap.acquire(estimate.nano, self.model, clock=self.clock, max_wait=left)
        return _CapPermit(self.cap, estimate.nano)


class _CapPermit:
    __slots__ = ("cap", "nano")

    def __init__(self, cap: CostCap, nano: int) -> None:
        self.cap = cap
        self.nano = nano

    async def settle(self, spent: Spent | None) -> None:
        self.cap.settle(self.nano, 0 if spent is None else spent.nano)


class Budgets:
    """Several budgets as one: reserved in order, all or nothing.

    A reservation that fails (a refusal, a timeout, a cancellation) releases what the earlier
    ones took before the error propagates. The permit settles its parts in the order they were
    reserved, every one of them even if one raises: the local ones first, so a slow or
    unreachable Redis never holds a local slot or a job's dollars.
    """

    __slots__ = ("budgets", "label")

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self.budgets = tuple(budgets)
        self.label = ", ".join(b.label for b in self.budgets)

    async def reserve(self, estimate: Estimate) -> Permit:
        permits: list[Permit] = []
        try:
            for budget in self.budgets:
                try:
                    permits.append(await budget.reserve(estimate))
                except BudgetWaitTimeout:
                    raise
                except QueueTimeout as exc:
                    raise BudgetWaitTimeout(budget.label, exc) from exc
        except BaseException:
            await _settle_all(permits, None, sent=False)
            raise
        return _Permits(permits)


class _Permits:
    __slots__ = ("permits",)

    def __init__(self, permits: list[Permit]) -> None:
        self.permits = permits

    async def settle(self, spent: Spent | None) -> None:
        await _settle_all(self.permits, spent)


async def _settle_all(permits: Sequence[Permit], spent: Spent | None, *, sent: bool = True) -> None:
    """Settle every permit in order; the first error (if any) is raised after all are.
    ``sent=False``: the call never left (a later budget refused it)."""
    error: BaseException | None = None
    for permit in permits:
        try:
            if not sent and isinstance(permit, _SlotPermit | _FlexPermit):
                permit.release_unsent()
            else:
                await permit.settle(spent)
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def exceeded(
    model: str, cap: int, spent: int, reserved: int, nano: int, job: str | None = None
) -> BudgetExceededError:
    """The error for a call of worst case ``nano`` that a cap of ``cap`` cannot take."""
    whose = f"job {job!r}'s" if job is not None else "the"
    return BudgetExceededError(
        f"{model}: this call could cost up to ${nano / NANO:.6f}, and ${spent / NANO:.6f} is "
        f"spent and ${reserved / NANO:.6f} reserved of {whose} ${cap / NANO:.6f} cap "
        "(max_cost); it was not sent. Raise max_cost to go on.",
        cap=cap / NANO,
        spent=spent / NANO,
        limit="max_cost",
        job=job,
    )


def held_too_long(
    exc: QueueTimeout, estimate: Estimate, model: str, limit: float, now: float
) -> BudgetTimeoutError:
    """The error for a call a budget held past ``RetryPolicy.max_total_seconds`` (``limit``)."""
    label = getattr(exc, "label", SchedulerBudget.label)
    if label not in (SchedulerBudget.label, FlexBudget.label):
        return BudgetTimeoutError(
            f"{model}: {label} held this call past RetryPolicy.max_total_seconds "
            f"({limit:g} s): {exc}"
        )
    waited = now - (estimate.deadline - limit)
    return BudgetTimeoutError(
        f"{model}: waited {waited:.1f} s for the engine's budget (rpm/tpm, in-flight "
        f"cap, cool-downs) without being sent; the limit is RetryPolicy.max_total_seconds "
        f"({limit:g} s). Raise it, or lower the load (fewer calls at once, a larger rpm/tpm "
        "if allowed)."
    )
