"""One scheduler per engine: every request waits here for its share of the provider's budget.

A request is admitted when four things hold at once: the engine is not cooling down after a
429, fewer than the concurrency limit are in flight, the requests-per-minute bucket has a
request to spare, and the tokens-per-minute bucket has the request's estimated tokens. Waiting
requests are served highest priority first, then in arrival order, so when the budget binds the
calls on a step's critical path go first.

Requests belong to a ``Flow``: one per job (``asynctg.engine.jobs``), and a default one for
calls made outside any job. When the budget binds, backlogged flows are served in proportion
to their weights by start-time fair queuing for a server of depth D (SFQ(D), as storage
schedulers with D requests outstanding do): each flow carries a virtual time, the flow with
the lowest one sends its highest-priority request next (on a tie, the flow with fewer requests
in flight), and its virtual time then advances by that request's cost (its estimated tokens,
at least 1) divided by the flow's weight. A lone flow gets the whole engine (the queue is
work-conserving); priorities order requests within a flow, never across.

A flow that becomes backlogged starts at the system virtual time ``V``, neither owed the
service it missed while idle nor behind the others. ``V`` counts the requests in flight as
not yet served: it is the virtual time of *finished* work. Measured at dispatch instead (the
tag of the last request started), a job arriving behind another's backlog on 16 slots would
only alternate with it, because the 16 requests the other job has in flight were never charged
against it; measured at completion, the newcomer's requests are tagged from where the other
job's requests in flight start, so a job with up to D requests waiting has them all started
within the next D slot releases, however large the other backlog. ``V`` is the larger of two
clocks, both O(1) per request:

- the frontier (the highest finish tag dispatched) minus the virtual cost of every request in
  flight: the start of the work in flight when flows are served in tag order; and
- finished work over active weight: each release advances it by the request's cost divided by
  the total weight of the flows with requests queued or in flight (GPS's virtual time, sampled
  at completions). It always moves, so a stream of newly arriving jobs tagged below a backlogged
  job cannot hold ``V`` still and starve it (with only the first clock, or with the tag of the
  last request started, every arrival would be tagged below it forever).

Budgets are token buckets holding about one second's worth, refilled continuously: providers
enforce per-minute limits on a finer grain (60,000/min is enforced as 1,000/s), so bursting a
whole minute's allowance would only earn 429s.

When no limit is given, the scheduler learns it, in this order of trust:

- **Headers.** ``x-ratelimit-limit-requests/-tokens`` set the bucket (at 97% of the limit);
  ``-input-tokens`` / ``-output-tokens`` (Anthropic's separate limits, as its adapter names
  them) set separate input and output buckets, charged with a request's (input, output)
  estimate, the output at its ``max_tokens`` as Anthropic charges it.
  ``x-ratelimit-remaining-*`` says how full it starts; a limit header alone (gateways that
  send nothing else) starts it empty, since it arrives right after a burst that likely spent it.
- **Pacing** (``learn_rate=True``: the engine's choice when it is given no budget at all).
  Until anything is known, a budget of unknown size is probed as TCP's slow start does: at most
  ``START_BURST`` requests at one instant, a provisional bucket of one second's worth growing by
  one per success (and, once the round is answered, giving back each success's request and one
  more, so the window doubles each round trip; a round is answered when nothing else is in
  flight or, under a backlog that keeps requests in flight, when a request sent after it began
  is). A 429 then ends an *epoch*: the provider's bucket was empty when the
  refused request was sent, and it was empty (or full, for the first epoch) when the epoch
  began, so the requests it accepted in between measure its rate. With ``A`` requests accepted
  between resuming at ``t0`` and the refusal at ``t1``, and ``g`` the pause before ``t0`` (the
  cool-down, during which the provider's bucket refilled, at most one second's worth):
  ``rate = A / (t1 - t0 + min(g, 1 s))``. The engine is then paced at 97% of that rate and
  probes upward slowly (``RATE_PROBE`` of the rate per second without a 429), so a rate
  underestimated (answers counted late, idle gaps) is regained and a limit raised is found.
  The estimate is made when the cool-down ends, once the epoch's answers are in.
- **Concurrency.** A 429 also halves the concurrency limit (once per window; it grows by one
  per window of successes), as TCP does.

``retry-after`` on a 429 is always an engine-wide cool-down.

No task is spawned: waiters are futures in a heap, woken by whoever frees capacity (a release)
or by one timer set for the moment the next budget refills.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Mapping
from typing import Any

from asynctg.engine.bucket import BUCKET_SECONDS, TokenBucket
from asynctg.engine.clock import Clock, LoopClock, TimerHandle

__all__ = ["Flow", "QueueTimeout", "Scheduler", "TokenBucket", "ticket"]

#: Fraction of a learned limit we aim for: headroom for clock skew between us and the provider.
LEARNED_LIMIT_HEADROOM = 0.97
#: Learned limits outside these ranges (per minute) are a provider's mistake, not a budget:
#: ignored, as ``1e-300`` requests a minute would otherwise hold the next call for 6e301 s.
LEARNED_RPM_RANGE = (1.0, 1e8)
LEARNED_TPM_RANGE = (100.0, 1e11)
#: With no budget known (``learn_rate``), at most this many requests go at one instant: a probe
#: of a budget of unknown size (TCP's initial window is 10 segments for the same reason).
START_BURST = 16
#: A rate learned from pacing rises by this fraction of itself per second without a 429.
RATE_PROBE = 0.005

#: Arrival order, one sequence for every scheduler (a flex call that falls back to standard
#: keeps its place there too).
_TICKETS = itertools.count()


def ticket() -> int:
    """A place in line: requests of one priority within a flow are served in ticket order, so
    a call that takes one when it first asks keeps its place when it asks again (a retry)."""
    return next(_TICKETS)


class QueueTimeout(Exception):
    """A waiter was not admitted within its time bound (``acquire(timeout=...)``)."""


class _Waiter:
    __slots__ = ("fut", "parts", "tokens")

    def __init__(
        self, fut: asyncio.Future[None], tokens: int, parts: tuple[int, int] | None
    ) -> None:
        self.fut = fut
        self.tokens = tokens
        self.parts = parts


class Flow:
    """One job's place in the scheduler: its waiting requests (highest priority first, then in
    arrival order), its ``weight`` and its virtual time (see the module).

    ``in_flight`` counts its admitted requests not yet released, ``waiting`` its requests
    waiting for admission.
    """

    __slots__ = (
        "active",
        "backlogged",
        "charged",
        "heap",
        "in_flight",
        "name",
        "vtime",
        "waiting",
        "weight",
    )

    def __init__(self, weight: float = 1.0, name: str = "") -> None:
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"a flow's weight must be a number, got {weight!r}")
        if not 0 < weight < math.inf:
            raise ValueError(f"a flow's weight must be positive and finite, got {weight!r}")
        self.weight = float(weight)
        self.name = name
        self.heap: list[tuple[int, int, _Waiter]] = []
        self.vtime = 0.0
        self.backlogged = False  # in the scheduler's heap of flows with waiters
        self.active = False  # backlogged or in flight: its weight counts in the scheduler's
        self.charged = 0.0  # the virtual cost of its requests in flight
        self.in_flight = 0
        self.waiting = 0

    def __repr__(self) -> str:
        return f"<Flow {self.name!r} weight={self.weight:g} in_flight={self.in_flight}>"


class Scheduler:
    """Admits requests within the concurrency limit and the rpm/tpm budgets, by priority.

    ``rpm``/``tpm`` are the provider's budgets (None: learn them from response headers);
    ``input_tpm``/``output_tpm`` are separate input- and output-token budgets, for providers
    that have them (a request's ``parts`` = (input, output) estimate is charged to each);
    ``max_concurrency`` caps requests in flight. Use::

        await scheduler.acquire(tokens, priority, flow=flow)
        try:
            ...send...
        finally:
            scheduler.release(tokens, actual_tokens, flow=flow)

    (``flow``: the job's ``Flow``; None: the default flow, shared by calls outside any job.)
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrency: int = 64,
        clock: Clock | None = None,
        adaptive: bool = True,
        input_tpm: float | None = None,
        output_tpm: float | None = None,
        learn_rate: bool = False,
    ) -> None:
        self.clock: Clock = clock or LoopClock()
        self._split_values = (input_tpm, output_tpm)
        self._split: list[TokenBucket | None] | None = None
        self.max_concurrency = max_concurrency
        self._rpm_given = rpm is not None
        self._tpm_given = tpm is not None
        self._rpm_value = rpm
        self._tpm_value = tpm
        # Buckets are created lazily: the loop clock can only be read inside a running loop.
        self._rpm: TokenBucket | None = None
        self._tpm: TokenBucket | None = None
        self._adaptive = adaptive
        self._limit = float(max_concurrency)
        self._in_flight = 0
        self._default = Flow(1.0, "")
        self._heap = self._default.heap  # the default flow's waiters
        # Flows with waiters: (vtime, in flight when queued, seq, flow); the head sends next.
        self._backlog: list[tuple[float, int, int, Flow]] = []
        # The system virtual time's two clocks (see the module): finished work over active
        # weight (never decreases), and the frontier with the virtual cost in flight.
        self._vdone = 0.0
        self._frontier = 0.0
        self._charged = 0.0
        self._weights = 0.0  # the total weight of the active flows
        self._active = 0  # how many flows are active
        self._entries = 0  # waiters in the flows' heaps, cancelled ones not yet dropped included
        self._cancelled = 0  # waiters cancelled in the queue since it was last swept
        self._seq = _TICKETS
        self._cool_until = -math.inf
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._last_cut = -math.inf
        # Learning a budget no one told us, from pacing (see the module docstring).
        self._learn_rate = learn_rate and adaptive and rpm is None and tpm is None
        self._pace: _Pace | None = None
        # statistics
        self.admitted = 0
        self.max_in_flight = 0
        self.cool_downs = 0
        self.concurrency_cuts = 0
        self.learned_rpm: float | None = None
        self.learned_tpm: float | None = None
        #: (input, output) token limits per minute learned from headers (None: not learned)
        self.learned_split: list[float | None] = [None, None]
        #: whether a split bucket was learned: requests must then carry their (input, output)
        self.split_learned = False
        #: requests/min measured from accepted and refused requests (None: not measured)
        self.paced_rpm: float | None = None
        self.rate_estimates = 0

    # --- admission ---------------------------------------------------------------------------

    def _buckets(self, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        if self._learn_rate and self.learned_rpm is None and self.learned_tpm is None:
            if self._paced_bucket(now):
                # An estimate is due when the cool-down ends, replacing this bucket: until
                # then the cool-down alone holds requests (and sets the timer).
                return None, self._tpm
        if self._rpm is None and self._rpm_value is not None:
            self._rpm = TokenBucket(self._rpm_value, now)
        if self._tpm is None and self._tpm_value is not None:
            self._tpm = TokenBucket(self._tpm_value, now)
        return self._rpm, self._tpm

    def _split_buckets(self, now: float) -> list[TokenBucket | None]:
        if self._split is None:
            self._split = [
                TokenBucket(v, now) if v is not None else None for v in self._split_values
            ]
        return self._split

    def _wait_time(self, tokens: int, now: float, parts: tuple[int, int] | None = None) -> float:
        """Seconds until a request of ``tokens`` may go (0: now); ignores the in-flight cap."""
        wait = self._cool_until - now
        rpm, tpm = self._buckets(now)
        if rpm is not None:
            wait = max(wait, rpm.wait_time(1, now))
        if tpm is not None:
            wait = max(wait, tpm.wait_time(tokens, now))
        if parts is not None:
            for bucket, amount in zip(self._split_buckets(now), parts, strict=True):
                if bucket is not None:
                    wait = max(wait, bucket.wait_time(amount, now))
        return wait

    def _admit(self, tokens: int, parts: tuple[int, int] | None = None) -> None:
        if self._rpm is not None:
            self._rpm.take(1)
        if self._tpm is not None:
            self._tpm.take(tokens)
        if parts is not None and self._split is not None:
            for bucket, amount in zip(self._split, parts, strict=True):
                if bucket is not None:
                    bucket.take(amount)
        self._in_flight += 1
        self.admitted += 1
        if self._in_flight > self.max_in_flight:
            self.max_in_flight = self._in_flight

    async def acquire(
        self,
        tokens: int = 0,
        priority: int = 0,
        *,
        max_wait: float | None = None,
        parts: tuple[int, int] | None = None,
        flow: Flow | None = None,
        place: int | None = None,
    ) -> None:
        """Wait until a request estimated at ``tokens`` may be sent; higher priority first
        within its ``flow`` (None: the default flow), then by ``place`` (a ``ticket``; None:
        one taken now), flows in fair shares (see the module).

        ``max_wait`` (seconds on the scheduler's clock, which may be a fake one in tests: hence
        not ``asyncio.timeout``) bounds the wait: past it, ``QueueTimeout`` is raised and
        nothing was admitted.
        """
        if flow is None:
            flow = self._default
        if not self._backlog and self._in_flight < self._limit:
            if self._wait_time(tokens, self.clock.now(), parts) <= 0:
                self._admit(tokens, parts)
                # Not backlogged (nothing is): its request starts where an arrival would.
                if not flow.active:
                    self._activate(flow)
                vtime = self._system_vtime()
                self._dispatched(flow, flow.vtime if flow.vtime > vtime else vtime, tokens)
                return
        if max_wait is not None and max_wait <= 0:
            raise QueueTimeout(f"no capacity now and no time left to wait ({max_wait:g} s)")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(fut, tokens, parts)
        order = next(self._seq) if place is None else place
        heapq.heappush(flow.heap, (-priority, order, waiter))
        self._entries += 1
        if not flow.backlogged:
            # A newly backlogged flow starts at the system virtual time (see the module),
            # neither owed the service it missed nor behind the others.
            if not flow.active:
                self._activate(flow)
            flow.backlogged = True
            flow.vtime = max(flow.vtime, self._system_vtime())
            heapq.heappush(self._backlog, (flow.vtime, flow.in_flight, next(self._seq), flow))
        flow.waiting += 1
        deadline = None
        if max_wait is not None:

            def expire() -> None:
                if not fut.done():
                    fut.set_exception(QueueTimeout(f"not admitted within {max_wait:g} s"))
                    self._drop_cancelled()
                    self._pump()

            deadline = self.clock.call_at(self.clock.now() + max_wait, expire)
        self._pump()
        try:
            await fut
        except QueueTimeout:
            raise
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Admitted and cancelled in the same instant: hand the slot back.
                self.release(tokens, tokens, admitted=True, flow=flow)
            else:
                fut.cancel()
                self._drop_cancelled()
                self._pump()  # a cancelled head of line may have been blocking others
            raise
        finally:
            flow.waiting -= 1
            if deadline is not None:
                deadline.cancel()

    async def acquire_rate(
        self,
        tokens: int = 0,
        *,
        max_wait: float | None = None,
        parts: tuple[int, int] | None = None,
    ) -> None:
        """Wait for the rate budgets alone (rpm/tpm buckets, cool-downs), without a slot in
        flight: for a request whose concurrency another scheduler holds (the flex tier's own
        allowance, ``asynctg.engine.tiers``). The account's rate is one budget whatever the
        tier; the in-flight cap is this engine's, and flex capacity is the provider's.
        ``release(..., admitted=False)`` settles it. ``QueueTimeout`` past ``max_wait``."""
        clock = self.clock
        until = None if max_wait is None else clock.now() + max_wait
        while True:
            now = clock.now()
            wait = self._wait_time(tokens, now, parts)
            if wait <= 0:
                rpm, tpm = self._rpm, self._tpm
                if rpm is not None:
                    rpm.take(1)
                if tpm is not None:
                    tpm.take(tokens)
                if parts is not None and self._split is not None:
                    for bucket, amount in zip(self._split, parts, strict=True):
                        if bucket is not None:
                            bucket.take(amount)
                self.admitted += 1
                return
            if until is not None and now + wait > until:
                raise QueueTimeout(f"the rate budget leaves no room within {max_wait:g} s")
            await clock.sleep(wait)

    def release(
        self,
        estimated: int,
        actual: int | None = None,
        *,
        admitted: bool = True,
        parts: tuple[int, int] | None = None,
        actual_parts: tuple[int, int] | None = None,
        flow: Flow | None = None,
        sent: bool = True,
    ) -> None:
        """A request finished (any outcome): free its slot, correct its token charges.

        ``sent=False``: it was admitted but never reached the provider (a cap refused it), so
        its request and token charges go back to the buckets."""
        if not sent:
            now = self.clock.now()
            if self._rpm is not None:
                self._rpm.refill(now)
                self._rpm.give_back(1.0)
            if self._tpm is not None:
                self._tpm.refill(now)
                self._tpm.give_back(float(estimated))
            if parts is not None and self._split is not None:
                for bucket, est in zip(self._split, parts, strict=True):
                    if bucket is not None:
                        bucket.refill(now)
                        bucket.give_back(float(est))
        if admitted:
            self._in_flight -= 1
            if flow is None:
                flow = self._default
            flow.in_flight -= 1
            cost = float(max(1, estimated))
            # Finished work advances the virtual time by its share of the active weight
            # (this flow's included: it was active while the request ran).
            if self._weights > 0:
                self._vdone += cost / self._weights
            charge = cost / flow.weight
            if flow.in_flight:
                flow.charged -= charge
            else:
                flow.charged = 0.0  # exact zero: no float residue of adding and subtracting
                if not flow.backlogged:
                    self._deactivate(flow)
            self._charged = self._charged - charge if self._in_flight else 0.0
            pace = self._pace
            if pace is not None and pace.owed and not self._in_flight and self._rpm is not None:
                # The slow start's round is over, whatever its last request's outcome (a
                # refusal by a cap, an error): what its successes earned is given back now.
                self._rpm.refill(self.clock.now())
                self._rpm.give_back(pace.owed)
                pace.owed = 0
                pace.round_started = self.clock.now()
        if parts is not None and actual_parts is not None and self._split is not None:
            now = self.clock.now()
            for bucket, est, got in zip(self._split, parts, actual_parts, strict=True):
                if bucket is not None:
                    bucket.correct(est, got, now)
        if actual is not None and self._tpm is not None:
            self._tpm.correct(estimated, actual, self.clock.now())
        if self._backlog:
            self._pump()

    def _drop_cancelled(self) -> None:
        """Sweep cancelled waiters out of the queue once they may make up half of it.

        ``_pump`` drops a cancelled waiter only when it reaches the head; behind a head that
        cannot go (every slot busy, a cool-down) cancelled waiters would otherwise pile up for
        as long as the stall lasts. Sweeping at half keeps the cost amortised O(1).
        """
        self._cancelled += 1
        if 2 * self._cancelled > self._entries:
            entries = 0
            for _, _, _, flow in self._backlog:
                heap = flow.heap
                heap[:] = [entry for entry in heap if not entry[2].fut.done()]
                heapq.heapify(heap)
                entries += len(heap)
            self._entries = entries
            self._cancelled = 0

    def _pump(self) -> None:
        backlog = self._backlog
        now = self.clock.now()
        while backlog:
            vtime, _, _, flow = backlog[0]
            heap = flow.heap
            if not heap:  # its waiters were admitted or cancelled: the flow is idle
                heapq.heappop(backlog)
                flow.backlogged = False
                if not flow.in_flight:
                    self._deactivate(flow)
                continue
            waiter = heap[0][2]
            if waiter.fut.done():  # cancelled while waiting
                heapq.heappop(heap)
                self._entries -= 1
                continue
            if self._in_flight >= self._limit:
                return  # a release will pump again
            wait = self._wait_time(waiter.tokens, now, waiter.parts)
            if wait > 0:
                self._set_timer(now + wait)
                return
            heapq.heappop(heap)
            self._entries -= 1
            self._admit(waiter.tokens, waiter.parts)
            waiter.fut.set_result(None)
            self._dispatched(flow, vtime, waiter.tokens)
            if heap:
                heapq.heapreplace(backlog, (flow.vtime, flow.in_flight, next(self._seq), flow))
            else:
                heapq.heappop(backlog)
                flow.backlogged = False

    # --- virtual time ------------------------------------------------------------------------

    def _system_vtime(self) -> float:
        """Where a newly backlogged flow starts: the larger of the two clocks (see the module)."""
        start = self._frontier - self._charged
        if start > self._vdone:
            self._vdone = start  # it never goes back
        return self._vdone

    def _dispatched(self, flow: Flow, start: float, tokens: int) -> None:
        """A request of ``flow`` tagged ``start`` was admitted: charge it to the flow."""
        flow.in_flight += 1
        # Its cost: the estimated tokens, at least 1 so requests of no estimate still take
        # turns, scaled by the flow's weight; the flow's next request is tagged after it.
        charge = max(1, tokens) / flow.weight
        flow.vtime = start + charge
        flow.charged += charge
        self._charged += charge
        if flow.vtime > self._frontier:
            self._frontier = flow.vtime

    def _activate(self, flow: Flow) -> None:
        flow.active = True
        self._weights += flow.weight
        self._active += 1

    def _deactivate(self, flow: Flow) -> None:
        flow.active = False
        self._active -= 1
        # Exact zero when the last one leaves: no float residue accumulates.
        self._weights = self._weights - flow.weight if self._active else 0.0

    def _set_timer(self, when: float) -> None:
        if self._timer is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.clock.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._pump()

    # --- feedback from responses -------------------------------------------------------------

    def resize(self, max_concurrency: int) -> None:
        """Set the in-flight cap to ``max_concurrency``: a larger cap admits waiters at once, a
        smaller one admits nobody new until enough calls in flight have ended. (An adaptive
        scheduler keeps a lower limit it has cut to.)"""
        self.max_concurrency = max_concurrency
        limit = float(max_concurrency)
        self._limit = min(self._limit, limit) if self._adaptive else limit
        if self._backlog:
            self._pump()

    def cool_down(self, seconds: float) -> None:
        """Hold every request (not just the one that was told) for ``seconds`` from now."""
        until = self.clock.now() + seconds
        if until > self._cool_until:
            self._cool_until = until
            self.cool_downs += 1
        if self._rpm is not None:
            # The provider says we are over budget: whatever our bucket believes, it is empty.
            self._rpm.refill(self.clock.now())
            self._rpm.level = min(self._rpm.level, 0.0)
        if self._backlog:
            self._pump()

    def on_rate_limited(self, sent_at: float) -> None:
        """A 429 arrived for a request sent at ``sent_at``: cut concurrency once per window,
        and (``learn_rate``) end the pacing epoch the rate is measured over."""
        if not self._adaptive or self._rpm_given:
            return
        pace = self._pace
        if pace is not None and pace.pending is None and sent_at > pace.last_empty:
            # The first refusal of a request sent in this epoch: the provider's bucket was
            # empty at ``sent_at``. It measures the provider's rate only if more was waiting
            # than was sent (else it measures our demand). Later answers of the epoch may
            # still come in: the estimate waits for the cool-down's end (``_paced_bucket``).
            if self._backlog:
                pace.pending = (pace.before, pace.resumed, sent_at, pace.accepted)
            elif pace.probing:  # the probe is over, having measured nothing
                pace.probing = False
                self._rpm = None
                self._rpm_value = None
            pace.last_empty = pace.before = sent_at
            pace.resumed = math.inf
            pace.accepted = 0
        # Only requests sent after the last cut say the new limit is still too high; the rest
        # of a burst of 429s describes the old limit and must not cut again.
        if sent_at <= self._last_cut:
            return
        self._last_cut = self.clock.now()
        self._limit = max(1.0, min(self._limit, self._in_flight + 1) / 2)
        self.concurrency_cuts += 1

    def on_success(self, sent_at: float | None = None) -> None:
        """Additive increase: about one more slot per window of successes. ``sent_at`` (when
        the request was sent) counts it towards the rate learned from pacing."""
        pace = self._pace
        if pace is not None and sent_at is not None:
            self._count_accepted(pace, sent_at)
        if self._limit < self.max_concurrency:
            self._limit = min(float(self.max_concurrency), self._limit + 1.0 / self._limit)
            if self._backlog:
                self._pump()

    def _count_accepted(self, pace: _Pace, sent_at: float) -> None:
        if sent_at > pace.last_empty:
            if not self._backlog:
                # Nothing waits: our demand, not the provider, set the pace. The epoch starts
                # over, with the provider's bucket taken as full (it refills while we idle).
                pace.before = -math.inf
                pace.resumed = math.inf
                pace.accepted = 0
            pace.accepted += 1
            if sent_at < pace.resumed:
                pace.resumed = sent_at
        elif pace.pending is not None and sent_at > pace.pending[0]:
            # an answer of the epoch that ended, come in after the refusal that ended it
            before, resumed, ended, accepted = pace.pending
            pace.pending = (before, min(resumed, sent_at), ended, accepted + 1)
        bucket = self._rpm
        if pace.probing and bucket is not None:
            # Slow start, as TCP's: each success widens the bucket by one and, once the round
            # is answered (nothing else in flight, so any refusal of the round has been read),
            # gives back its request and one more: the burst allowed doubles each round.
            bucket.refill(self.clock.now())
            bucket.capacity += 1.0
            bucket.rate = bucket.capacity / BUCKET_SECONDS
            pace.owed += 2
            # A round is answered when nothing else is in flight, or (a backlog keeps requests
            # in flight) when a request sent after the last give-back is: a round trip passed.
            if self._in_flight <= 1 or sent_at > pace.round_started:
                bucket.give_back(pace.owed)
                pace.owed = 0
                pace.round_started = self.clock.now()
            if self._backlog:
                self._pump()

    def _paced_bucket(self, now: float) -> bool:
        """Keep ``self._rpm`` at the rate learned from pacing (or probing, before any 429);
        True while an estimate waits for the cool-down to end."""
        pace = self._pace
        if pace is None:
            self._pace = _Pace(now)
            self._rpm = TokenBucket(START_BURST * 60.0 / BUCKET_SECONDS, now)
            return False
        if pace.pending is not None:
            if now < self._cool_until:
                return True
            before, resumed, ended, accepted = pace.pending
            pace.pending = None
            if pace.probing:
                pace.probing = False
                self._rpm = None
                self._rpm_value = None
            if not accepted:
                # Refused at once: nothing measured. The cool-down said all there was to say;
                # the provisional bucket (if any) is gone, so everyone goes when it ends.
                return False
            # The provider's bucket refilled during the pause before the epoch (empty at its
            # start, at most full; full before the first epoch), then at its rate throughout.
            span = max(0.0, ended - resumed) + min(resumed - before, BUCKET_SECONDS)
            rate = min(max(accepted / span * 60.0, LEARNED_RPM_RANGE[0]), LEARNED_RPM_RANGE[1])
            self.paced_rpm = rate
            self.rate_estimates += 1
            pace.base = rate * LEARNED_LIMIT_HEADROOM
            pace.since = now
            # empty when the refused request was sent, refilled at the new rate since
            self._rpm = TokenBucket(pace.base, ended, level=0.0)
            self._rpm_value = pace.base
        elif not pace.probing and pace.base > 0 and self._rpm is not None:
            per_minute = pace.base * (1.0 + RATE_PROBE * (now - pace.since))
            if per_minute != self._rpm_value:
                bucket = self._rpm
                bucket.refill(now)
                bucket.rate = per_minute / 60.0
                bucket.capacity = max(1.0, bucket.rate * BUCKET_SECONDS)
                self._rpm_value = per_minute
        return False

    def learn_limits(self, headers: Mapping[str, str]) -> None:
        """Adopt ``x-ratelimit-limit-requests/-tokens`` (and ``-input-tokens`` /
        ``-output-tokens``, separate buckets) when no budget was given."""
        if not self._rpm_given:
            limit = _sane(_header_number(headers, "x-ratelimit-limit-requests"), LEARNED_RPM_RANGE)
            if limit is not None and limit != self.learned_rpm:
                self.learned_rpm = limit
                self._rpm_value = limit * LEARNED_LIMIT_HEADROOM
                remaining = _header_number(headers, "x-ratelimit-remaining-requests")
                self._rpm = _learned_bucket(self._rpm_value, limit, remaining, self.clock.now())
                # With a known budget, pacing replaces the 429-driven concurrency guess.
                self._limit = float(self.max_concurrency)
                self._pace = None
        if not self._tpm_given:
            limit = _sane(_header_number(headers, "x-ratelimit-limit-tokens"), LEARNED_TPM_RANGE)
            if limit is not None and limit != self.learned_tpm:
                self.learned_tpm = limit
                self._tpm_value = limit * LEARNED_LIMIT_HEADROOM
                remaining = _header_number(headers, "x-ratelimit-remaining-tokens")
                self._tpm = _learned_bucket(self._tpm_value, limit, remaining, self.clock.now())
                if self._pace is not None and self.learned_rpm is None:
                    # a tokens budget now paces: the probe of an unknown one ends
                    self._pace = None
                    self._rpm = None
                    self._rpm_value = None
        for i, kind in enumerate(("input", "output")):
            if self._split_values[i] is not None:
                continue  # given: never replaced by what a server says
            limit = _sane(
                _header_number(headers, f"x-ratelimit-limit-{kind}-tokens"), LEARNED_TPM_RANGE
            )
            if limit is not None and limit != self.learned_split[i]:
                # Anthropic's separate input- and output-token limits: a bucket each, charged
                # with a request's (input, output) estimate (the engine sends it once learned)
                now = self.clock.now()
                self.learned_split[i] = limit
                remaining = _header_number(headers, f"x-ratelimit-remaining-{kind}-tokens")
                buckets = self._split_buckets(now)
                buckets[i] = _learned_bucket(limit * LEARNED_LIMIT_HEADROOM, limit, remaining, now)
                self.split_learned = True
                if self._pace is not None and self.learned_rpm is None:
                    self._pace = None  # a tokens budget now paces (as above)
                    self._rpm = None
                    self._rpm_value = None

    # --- inspection --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return sum(
            1 for _, _, _, flow in self._backlog for _, _, w in flow.heap if not w.fut.done()
        )

    @property
    def concurrency_limit(self) -> int:
        return int(self._limit)

    def statistics(self) -> dict[str, Any]:
        """A snapshot: in flight, queued, limits in force, and counters."""
        return {
            "in_flight": self._in_flight,
            "queued": self.queued,
            "max_in_flight": self.max_in_flight,
            "admitted": self.admitted,
            "concurrency_limit": int(self._limit),
            "rpm_limit": self._rpm_value,
            "tpm_limit": self._tpm_value,
            "learned_rpm": self.learned_rpm,
            "learned_tpm": self.learned_tpm,
            "learned_input_tpm": self.learned_split[0],
            "learned_output_tpm": self.learned_split[1],
            "input_tpm_limit": _limit_of(self._split, 0, self._split_values),
            "output_tpm_limit": _limit_of(self._split, 1, self._split_values),
            "cool_downs": self.cool_downs,
            "concurrency_cuts": self.concurrency_cuts,
            "paced_rpm": self.paced_rpm,
            "rate_estimates": self.rate_estimates,
        }


class _Pace:
    """What learning a budget from pacing remembers (see the module docstring).

    An epoch runs from its first accepted request (``resumed``) to the next refusal;
    ``accepted`` counts its successes, ``before`` is when the provider's bucket was last known
    empty before it (``-inf``: taken as full). ``last_empty`` is the send time of the last
    refused request: refusals of requests sent before it belong to an epoch already ended.
    ``pending`` holds an ended epoch (before, resumed, ended, accepted) until its estimate.
    """

    __slots__ = (
        "accepted",
        "base",
        "before",
        "last_empty",
        "owed",
        "pending",
        "probing",
        "resumed",
        "round_started",
        "since",
    )

    def __init__(self, now: float) -> None:
        self.probing = True  # no 429 yet: the provisional bucket of slow start
        self.last_empty = -math.inf
        self.before = -math.inf
        self.resumed = math.inf
        self.accepted = 0
        self.owed = 0  # requests the slow start gives back when its round is answered
        self.round_started = now  # when the slow start's round began (its last give-back)
        self.pending: tuple[float, float, float, int] | None = None
        self.base = 0.0  # requests/min paced at when the last estimate was made
        self.since = now  # when it was made


def _learned_bucket(
    per_minute: float, limit: float, remaining: float | None, now: float
) -> TokenBucket:
    """A bucket for a learned limit, as full as the provider says its own budget is.

    ``x-ratelimit-remaining-*`` counts what is left of the per-minute ``limit``, while the
    bucket holds one second's worth: the header is a fraction of the limit to carry over, not
    a level (taken as a level, any non-zero remainder reads as a full bucket, and the engine
    bursts into 429s right after learning).
    """
    if remaining is None:
        # A limit alone (gateways that send nothing else): it comes back with the answers of
        # a burst that likely spent the budget, so the bucket starts empty, not full.
        return TokenBucket(per_minute, now, level=0.0)
    bucket = TokenBucket(per_minute, now, level=0.0)
    bucket.level = min(bucket.capacity, max(0.0, remaining / limit) * bucket.capacity)
    return bucket


def _limit_of(
    split: list[TokenBucket | None] | None, i: int, given: tuple[float | None, float | None]
) -> float | None:
    """The per-minute rate split bucket ``i`` paces at (given, or learned); None: none."""
    bucket = split[i] if split is not None else None
    return bucket.per_minute if bucket is not None else given[i]


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _sane(value: float | None, bounds: tuple[float, float]) -> float | None:
    """``value`` if it lies in ``bounds``, else None (a header no budget can be built on)."""
    if value is None or not bounds[0] <= value <= bounds[1]:
        return None
    return value
