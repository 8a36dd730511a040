"""Jobs: one run's share of a shared engine, with its own usage, caps, deadline and lifetime.

A service imports asynctg and serves many requests on one engine (one HTTP session, one
scheduler, one cache and single-flight table, one journal, one set of budgets). Each request
of the service is a *job*::

    async with engine.job("tenant-a", weight=2.0, max_cost=0.50, deadline=30) as job:
        answer = await job.generate("...")           # a Job is an Engine: give it to the
        result = await optimize_prompt(task, job)    # graph, optimizers, losses and apps
        job.usage                                    # this job's counters only

- **Usage**: ``job.usage`` / ``job.stats()`` count the job's own calls with the field names of
  ``engine.stats()`` (calls, requests, retries, 429s, tokens, cost, cache hits, coalesced). A
  request shared by single-flight counts for the job that sent it; the others record it as
  ``coalesced``. The engine's counters still count everything.
- **Fair share**: each job is a ``Flow`` of the scheduler: when concurrency, rpm or tpm binds,
  backlogged jobs are served in proportion to their ``weight`` (start-time fair queuing on
  estimated tokens, ``asynctg.engine.scheduler``); priorities (the critical path first) order
  requests within a job. A lone job gets the whole engine.
- **Caps**: ``max_calls`` (calls sent to the provider; retries are part of their call, answers
  from the cache or from a shared request are free), ``max_cost`` (dollars: each attempt's
  worst case is reserved before sending, as the engine's ``max_cost`` is; a reservation that
  does not fit while others are outstanding waits for them to settle) and ``deadline``
  (seconds from entering the job, on the engine's clock) apply to the job's calls only; the
  engine's caps (and a Redis-shared one) still hold over all jobs. ``max_concurrency`` bounds
  the job's calls under way at once. Past a cap: ``BudgetExceededError`` (``limit``,
  ``job``); past the deadline: ``DeadlineExceededError``, for the calls queued or in flight
  too.
- **Lifetime**: leaving the ``async with`` block (or cancelling the task that holds it) stops
  the job: its queued and in-flight calls are cancelled at once and raise ``JobClosedError``
  in the tasks that made them, nothing more is sent for it, and the block's exit waits until
  they have handed back their scheduler slots and dollar reservations. Other jobs are
  untouched.
- **Nesting**: ``job.job(...)`` opens a job inside a job (an app run inside a service's
  request): its calls count for both, both jobs' caps apply, stopping the outer job stops the
  inner one, and the inner job draws from the outer job's fair share.

Calls reach the engine with the job in a context variable, so the engine charges them to the
job however deep in the graph they are made; the engine only honours a job of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from asynctg.engine.budget import Budget, CapBudget, CostCap
from asynctg.engine.scheduler import Flow
from asynctg.engine.types import ChatRequest, ChatResult, user_turn
from asynctg.engine.usage import ChargedUsage, UsageStats
from asynctg.errors import (
    AsyncTGError,
    BudgetExceededError,
    ConfigError,
    DeadlineExceededError,
    JobClosedError,
    require_int,
)

if TYPE_CHECKING:
    from asynctg.engine.client import ChatEngine
    from asynctg.engine.clock import TimerHandle
    from asynctg.engine.streaming import ChatStream

__all__ = ["Job", "current_job"]

_CURRENT: contextvars.ContextVar[Job | None] = contextvars.ContextVar("asynctg_job", default=None)
_NAMES = itertools.count(1)


def current_job(engine: Any) -> Job | None:
    """The job the running call belongs to, if it is a job of ``engine`` (else None: a user
    engine's ``generate`` calling another engine does not charge that engine's calls to it)."""
    job = _CURRENT.get()
    if job is not None and job.engine is engine:
        return job
    return None


class _Calling:
    """Around one call of a job: refuse it if the job is stopped, register the task making it
    (so stopping the job can cancel it), put the job in context, and turn the job's own
    cancellation into its typed error (as ``asyncio.timeout`` turns its own into
    ``TimeoutError``, leaving anyone else's cancellation alone)."""

    __slots__ = ("job", "task", "token")

    def __init__(self, job: Job) -> None:
        self.job = job

    def __enter__(self) -> None:
        job = self.job
        for j in job.chain:
            if j._stopped is not None or j.state != "open":
                job._check()  # raises the error that says why
        task = asyncio.current_task()
        assert task is not None  # calls are made from tasks
        self.task = task
        for j in job.chain:
            j._active[task] = j._active.get(task, 0) + 1
        self.token = _CURRENT.set(job)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _CURRENT.reset(self.token)
        job, task = self.job, self.task
        for j in job.chain:
            left = j._active[task] - 1
            if left:
                j._active[task] = left
            else:
                del j._active[task]
                if not j._active and j._idle is not None and not j._idle.done():
                    j._idle.set_result(None)
        stoppers = job.root._stopping
        if stoppers:
            stopper = stoppers.pop(task, None)
            if stopper is not None:
                remaining = task.uncancel()
                if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                    if remaining == 0:  # nobody else wants this task cancelled
                        raise stopper._stop_error() from None


class Job:
    """One run on a shared engine: an ``Engine`` with its own usage, caps and lifetime (see the
    module). Create it with ``engine.job(...)`` (or ``job.job(...)``, nested) and use it as
    ``async with``; its calls are refused before the block is entered and after it is left.

    ``name`` names it in errors and stats (default ``job-N``); ``weight`` is its share of the
    engine when the budget binds; ``max_cost`` (dollars), ``max_calls`` (calls sent),
    ``deadline`` (seconds from entering, on the engine's clock) and ``max_concurrency`` (its
    calls under way at once) are its own caps; ``priority`` is added to the priority of each of
    its calls (and of the jobs inside it): a nested job of background work (a run's test
    scoring) given a negative one lets the rest of its outermost job's calls go first.
    """

    def __init__(
        self,
        engine: ChatEngine,
        name: str | None = None,
        *,
        weight: float = 1.0,
        max_cost: float | None = None,
        max_calls: int | None = None,
        deadline: float | None = None,
        max_concurrency: int | None = None,
        priority: int = 0,
        parent: Job | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"a job's name must be a non-empty string, got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"weight must be a positive number, got {weight!r}")
        if not 0 < weight < math.inf:
            raise ConfigError(f"weight must be a positive finite number, got {weight!r}")
        require_int("max_calls", max_calls, 1, optional=True)
        require_int("max_concurrency", max_concurrency, 1, optional=True)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigError(f"priority must be an integer, got {priority!r}")
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not 0 < deadline < math.inf
        ):
            raise ConfigError(f"deadline must be a positive number of seconds, got {deadline!r}")
        if max_cost is not None and engine.usage.price is None:
            raise ConfigError(
                f"a job's max_cost needs a price for {engine.model!r}: pass price=(dollars per "
                "1M prompt tokens, per 1M completion tokens) to get_engine()"
            )
        self.engine = engine
        self.name = name or f"job-{next(_NAMES)}"
        self.parent = parent
        self.chain: tuple[Job, ...] = (self, *parent.chain) if parent is not None else (self,)
        self.root: Job = self.chain[-1]
        self.weight = float(weight)
        self.priority = priority
        #: added to each call's priority: this job's and every enclosing job's
        self.boost = sum(j.priority for j in self.chain)
        # A nested job draws from its outermost job's share: splitting a job into parts
        # must not multiply its weight.
        self.flow: Flow = parent.flow if parent is not None else Flow(weight, self.name)
        self.usage = UsageStats(engine.usage.price)
        #: what the engine counts this job's calls on: the engine's and every enclosing job's
        self.charged = ChargedUsage((engine.usage, *(j.usage for j in self.chain)))
        self.max_cost = max_cost
        self.cost_cap = CostCap(max_cost, job=self.name) if max_cost is not None else None
        #: the dollar caps a call of this job reserves from, innermost first
        self.caps: tuple[CostCap, ...] = tuple(
            j.cost_cap for j in self.chain if j.cost_cap is not None
        )
        #: those caps as budgets (``asynctg.engine.budget``): what the engine's chain of
        #: budgets holds for a call of this job, between its scheduler and its own cap
        self.budgets: tuple[Budget, ...] = tuple(
            CapBudget(cap, engine.model, engine.clock) for cap in self.caps
        )
        self.max_calls = max_calls
        self.calls_started = 0  # calls sent to the provider (or on their way), for max_calls
        self._call_capped = tuple(j for j in self.chain if j.max_calls is not None)
        self.deadline = deadline
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._limits = tuple(j._slots for j in self.chain if j._slots is not None)
        self.state = "new"  # "open" inside its block, "closed" after
        self._stopped: str | None = None  # why it stopped: "closed" or "deadline"
        self._active: dict[asyncio.Task[Any], int] = {}  # tasks in a call of it (or a child's)
        self._stopping: dict[asyncio.Task[Any], Job] = {}  # root only: task -> job stopping it
        self._idle: asyncio.Future[None] | None = None
        self._timer: TimerHandle | None = None
        self._streams: set[_JobStream] = set()
        self.started_at: float | None = None
        # What an Engine has (the protocol's attributes): the engine's own.
        self.model = engine.model
        self.defaults = engine.defaults

    def __repr__(self) -> str:
        return f"<Job {self.name!r} of {self.engine!r} ({self.state})>"

    # --- the Engine protocol ----------------------------------------------------------------

    @property
    def context_window(self) -> int | None:
        return self.engine.context_window

    @context_window.setter
    def context_window(self, value: int | None) -> None:
        self.engine.context_window = value

    @property
    def is_multimodal(self) -> bool:
        return self.engine.is_multimodal

    @property
    def model_string(self) -> str:
        """TextGrad's name for the model."""
        return self.engine.model

    @property
    def cache(self) -> Any:
        """The engine's response cache (or a checkpoint's journal): jobs share it."""
        return self.engine.cache

    @property
    def clock(self) -> Any:
        return self.engine.clock

    def request(self, messages: Any, **params: Any) -> ChatRequest:
        """``engine.request``: a validated request with the engine's defaults."""
        return self.engine.request(messages, **params)

    def request_tokens(self, request: ChatRequest) -> int:
        return self.engine.request_tokens(request)

    def check_fits(self, request: ChatRequest, *, variable: str | None = None) -> None:
        self.engine.check_fits(request, variable=variable)

    async def send(self, request: ChatRequest, *, priority: int = 0) -> ChatResult:
        """``engine.send`` as a call of this job (its share, caps, usage and lifetime)."""
        priority += self.boost
        with _Calling(self):
            if not self._limits:
                return await self.engine.send(request, priority=priority)
            await self._take_slots()
            try:
                return await self.engine.send(request, priority=priority)
            finally:
                self._give_slots()

    async def chat(self, messages: Any, *, priority: int = 0, **params: Any) -> ChatResult:
        """One chat call: ``messages`` (OpenAI format) -> ``ChatResult``."""
        return await self.send(self.request(messages, **params), priority=priority)

    async def generate(self, content: Any, system_prompt: str | None = None, **params: Any) -> str:
        """One user turn -> the completion text (``engine.generate``, as this job)."""
        messages = user_turn(content, system_prompt)
        priority = params.pop("priority", 0)
        result = await self.send(self.engine.request(messages, **params), priority=priority)
        return result.text

    __call__ = generate

    def stream(
        self,
        messages: str | Sequence[Any],
        system_prompt: str | None = None,
        *,
        priority: int = 0,
        **params: Any,
    ) -> _JobStream:
        """``engine.stream`` as a call of this job: iterate it for the text deltas."""
        self._check()
        stream = _JobStream(
            self,
            self.engine.stream(messages, system_prompt, priority=priority + self.boost, **params),
        )
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        """Stop the job (as leaving its block does); the engine stays open."""
        await self.__aexit__(None, None, None)

    # --- jobs -----------------------------------------------------------------------------

    def job(
        self,
        name: str | None = None,
        *,
        weight: float = 1.0,
        max_cost: float | None = None,
        max_calls: int | None = None,
        deadline: float | None = None,
        max_concurrency: int | None = None,
        priority: int = 0,
    ) -> Job:
        """A job inside this one (see the module: nesting)."""
        return Job(
            self.engine,
            name,
            weight=weight,
            max_cost=max_cost,
            max_calls=max_calls,
            deadline=deadline,
            max_concurrency=max_concurrency,
            priority=priority,
            parent=self,
        )

    async def __aenter__(self) -> Job:
        if self.state != "new":
            raise ConfigError(f"job {self.name!r} was entered already: open a new job instead")
        if self.parent is not None:
            self.parent._check()
        self.state = "open"
        clock = self.engine.clock
        self.started_at = clock.now()
        if self.deadline is not None:
            self._timer = clock.call_at(self.started_at + self.deadline, self._expire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop("closed")
        if self._active and asyncio.current_task() not in self._active:
            # The stopped calls unwind at their next turn of the loop: wait for them, so
            # that when the block is left their slots and reservations are back.
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        for stream in list(self._streams):
            await stream._close()

    # --- caps and lifetime (called by the engine and by _Calling) ---------------------------

    def _check(self) -> None:
        """Refuse a call of a job that is not open, or of one inside a stopped job."""
        for job in self.chain:
            if job._stopped is not None:
                raise job._stop_error()
            if job.state != "open":
                raise JobClosedError(
                    f"job {job.name!r} is not open: use it as `async with engine.job(...) as "
                    "job:` and call it inside the block",
                    job=job.name,
                )

    def start_call(self) -> None:
        """A call of this job is about to be sent: count it against every ``max_calls``."""
        for job in self._call_capped:
            cap = job.max_calls or 0
            if job.calls_started >= cap:
                raise BudgetExceededError(
                    f"{self.engine.model}: job {job.name!r} has made its {cap} calls "
                    "(max_calls); this one was not sent",
                    cap=float(cap),
                    spent=float(job.calls_started),
                    limit="max_calls",
                    job=job.name,
                )
        for job in self._call_capped:
            job.calls_started += 1

    def _expire(self) -> None:
        self._timer = None
        self._stop("deadline")

    def _stop(self, why: str) -> None:
        """Refuse the job's calls from now on and cancel those under way (see ``_Calling``)."""
        if self._stopped is None:
            self._stopped = why
        stopping = self.root._stopping
        for task in self._active:
            if task not in stopping and task is not asyncio.current_task():
                stopping[task] = self
                task.cancel(f"job {self.name!r} {why}")

    def _stop_error(self) -> AsyncTGError:
        if self._stopped == "deadline":
            return DeadlineExceededError(
                f"{self.engine.model}: job {self.name!r} passed its deadline of "
                f"{self.deadline:g} s; its calls were stopped",
                job=self.name,
                deadline=float(self.deadline or 0.0),
            )
        return JobClosedError(
            f"job {self.name!r} was closed (its block was left, or its task cancelled); this "
            "call was stopped and nothing more is sent for it",
            job=self.name,
        )

    async def _take_slots(self) -> None:
        taken = 0
        try:
            for slots in self._limits:
                await slots.acquire()
                taken += 1
        except BaseException:
            for slots in self._limits[:taken]:
                slots.release()
            raise

    def _give_slots(self) -> None:
        for slots in self._limits:
            slots.release()

    # --- inspection -------------------------------------------------------------------------

    @property
    def calls_under_way(self) -> int:
        """Calls of this job (and of jobs inside it) in progress: queued or in flight."""
        return sum(self._active.values())

    def stats(self) -> dict[str, Any]:
        """This job's counters (the field names of ``engine.stats()``), its state, and the
        queue of the share it draws from (its outermost job's)."""
        out = self.usage.snapshot()
        out["job"] = self.name
        out["model"] = self.engine.model
        out["state"] = self.state
        out["stopped"] = self._stopped
        out["calls_under_way"] = self.calls_under_way
        out["in_flight"] = self.flow.in_flight
        out["queued"] = self.flow.waiting
        out["weight"] = self.weight
        return out


class _JobStream:
    """A job's ``ChatStream``: the engine's, read as a call of the job (see ``Job.stream``)."""

    def __init__(self, job: Job, inner: ChatStream) -> None:
        self._job = job
        self._inner = inner
        self._slots = False  # holds the job's max_concurrency slots
        self._started = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __aiter__(self) -> _JobStream:
        return self

    async def __anext__(self) -> str:
        with _Calling(self._job):
            if not self._started:
                self._started = True
                if self._job._limits:  # a stream holds its job's slots until it ends
                    await self._job._take_slots()
                    self._slots = True
            try:
                return await self._inner.__anext__()
            except BaseException:
                self._done()
                raise

    async def collect(self) -> ChatResult:
        """Read the whole stream; its ``ChatResult``."""
        try:
            while True:
                await self.__anext__()
        except StopAsyncIteration:
            pass
        result = self._inner.result
        assert result is not None
        return result

    def _done(self) -> None:
        if self._slots:
            self._slots = False
            self._job._give_slots()
        self._job._streams.discard(self)

    async def _close(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._done()

    async def aclose(self) -> None:
        """Stop reading (the connection closes, the engine's slot is released)."""
        await self._close()

    async def __aenter__(self) -> _JobStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()
