"""What every loop shares: events for progress displays, usage metering, budget caps, the job
a run goes through, a run's checkpoint state and how it stops (``Run``; ``ItemRun`` for the
test-time loops whose items run at once). The rounds of refinement within one item are in
``asynctg.runs.rounds``; running many coroutines at once is ``asynctg.fanout``'s.

Every app runs as a job of the engine it is given (``run_job``): on a shared engine its
``result.usage``, its ``Budget`` and its progress lines count that run's calls only, and a
service that gives an app a job of its own gets the run nested inside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from asynctg.engine.adapters import as_chat_engine
from asynctg.engine.client import ChatEngine
from asynctg.engine.jobs import Job
from asynctg.engine.prompt_cache import run_scope
from asynctg.engine.usage import UsageStats
from asynctg.errors import (
    AsyncTGError,
    BudgetExceededError,
    ConfigError,
    DeadlineExceededError,
    require_int,
)

# Fan-out lives in asynctg.fanout; re-exported for the apps that import it from here.
from asynctg.fanout import count_bounded, gather, run_all
from asynctg.runs.checkpoint import JournalView

if TYPE_CHECKING:
    from asynctg.runs.checkpoint import Checkpoint

__all__ = [
    "STOPS",
    "Budget",
    "EventSink",
    "ItemRun",
    "Meter",
    "RoundsConfig",
    "Run",
    "RunEvent",
    "count_bounded",
    "engine_of",
    "gather",
    "merge_usage",
    "run_all",
    "run_host",
    "subtract_usage",
]

#: What a run's usage is read from: a job (what the apps run as) or a whole engine.
Metered = ChatEngine | Job


def run_host(engine: Any) -> Metered:
    """What an app opens its job on: a ``ChatEngine`` or a ``Job`` as given (a run in a job
    nests inside it), anything else with ``generate``/``chat`` wrapped (``as_chat_engine``)."""
    if isinstance(engine, ChatEngine | Job):
        return engine
    return as_chat_engine(engine)


def engine_of(host: Metered) -> ChatEngine:
    """The engine under a job (or the engine itself): what a checkpoint's journal attaches to."""
    return host.engine if isinstance(host, Job) else host


def _load(metered: Metered) -> tuple[int, int]:
    """(requests in flight, requests queued) of a job's share, or of a whole engine."""
    if isinstance(metered, Job):
        return metered.flow.in_flight, metered.flow.waiting
    stats = metered.scheduler.statistics()
    return stats["in_flight"], stats["queued"]


T = TypeVar("T")

_SUMMED = (
    "calls",
    "requests",
    "retries",
    "rate_limited",
    "faults",
    "failures",
    "cache_hits",
    "coalesced",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "flex_calls",
    "flex_tokens",
    "flex_fallbacks",
    "batch_calls",
    "batch_tokens",
)


@dataclass(frozen=True)
class RunEvent:
    """Something a loop reports: a step done, a split evaluated, an item finished, a stop.

    ``kind`` is one of "start", "progress" (status only, no message), "evaluated", "step",
    "item", "stopped", "done"; ``message`` is one line for people; ``data`` carries the numbers
    (JSON-ready). ``data["progress"]`` (e.g.
    ``"step 3/12"``) and ``data["accuracy"]`` update a progress display's status line.
    """

    kind: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


#: A loop's listener: called synchronously, in the event loop, for every event.
EventSink = Callable[[RunEvent], None]


def merge_usage(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum usage snapshots (``engine.stats()`` or earlier merges); cost is None if unknown."""
    out: dict[str, Any] = {k: 0 for k in _SUMMED}
    cost: float | None = 0.0
    saved: float | None = 0.0
    for part in parts:
        for k in _SUMMED:
            out[k] += int(part.get(k) or 0)
        part_cost = part.get("cost_usd")
        if part_cost is None:
            cost = None
        elif cost is not None:
            cost += float(part_cost)
        part_saved = part.get("saved_usd", 0.0)  # (a state saved before tiers has none)
        if part_saved is None or part_cost is None:
            saved = None
        elif saved is not None:
            saved += float(part_saved)
    # to the nano-dollar the engine counts in: a sum of parts is the float the whole would be
    out["cost_usd"] = None if cost is None else round(cost, 9)
    # what the discounted tiers (flex, batch) saved against the standard price
    out["saved_usd"] = None if saved is None else round(saved, 9)
    # answered by the provider: neither replayed from the journal nor shared with a twin
    out["provider_calls"] = out["calls"] - out["cache_hits"] - out["coalesced"]
    return out


def subtract_usage(total: Mapping[str, Any], parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``total`` less the sum of ``parts``: a job's own calls without those of the jobs nested
    in it (read at one instant, no ``await`` in between)."""
    less = merge_usage(parts)
    negative: dict[str, Any] = {k: -less[k] for k in _SUMMED}
    for key in ("cost_usd", "saved_usd"):
        negative[key] = None if less[key] is None else -less[key]
    return merge_usage([total, negative])


class Meter:
    """Usage of a run's jobs (or engines), plus what earlier sessions of the same run used.

    ``session()`` is this process's usage (of the jobs: their own calls, not the lifetime of
    the engines they share); ``total()`` adds the usage saved in the checkpoint
    by earlier sessions (a resumed run's budget counts everything the run has spent) and
    ``recovered()``: the calls an earlier session paid for after its last save, which this one
    replays from the journal. Each is counted as paid on its first replay, with the tokens its
    journal record holds, so a resumed run's totals equal an uninterrupted run's (the rule is
    in ``asynctg.runs.checkpoint``).
    """

    def __init__(
        self, engines: Sequence[Metered], previous: Mapping[str, Any] | None = None
    ) -> None:
        unique: list[Metered] = []
        for engine in engines:
            if all(engine is not e for e in unique):
                unique.append(engine)
        self.engines = unique
        self.previous = dict(previous) if previous else None
        self.started = time.monotonic()

    def session(self) -> dict[str, Any]:
        usage = merge_usage(e.stats() for e in self.engines)
        loads = [_load(e) for e in self.engines]
        usage["in_flight"] = sum(in_flight for in_flight, _ in loads)
        usage["queued"] = sum(queued for _, queued in loads)
        usage["seconds"] = round(time.monotonic() - self.started, 3)
        return usage

    def recovered(self) -> list[dict[str, Any]]:
        """Per engine, the usage of the journal replays counted as paid (see the class)."""
        parts = []
        for engine in self.engines:
            view = engine.cache
            if isinstance(view, JournalView) and view.recovered_calls:
                paid = UsageStats(engine.usage.price)
                paid.requests = view.recovered_calls
                # the engine counted these calls (as cache hits): they become provider calls
                paid.cache_hits = -view.recovered_calls
                paid.prompt_tokens = view.recovered_prompt_tokens
                paid.completion_tokens = view.recovered_completion_tokens
                paid.cached_tokens = view.recovered_cached_tokens
                paid.cache_write_tokens = view.recovered_cache_write_tokens
                parts.append(paid.snapshot())
        return parts

    def total(self) -> dict[str, Any]:
        session = self.session()
        parts = [session, *self.recovered()]
        if self.previous:
            parts.append(self.previous)
        if len(parts) == 1:
            return session
        total = merge_usage(parts)
        total["in_flight"] = session["in_flight"]
        total["queued"] = session["queued"]
        earlier = float(self.previous.get("seconds", 0)) if self.previous else 0.0
        total["seconds"] = round(session["seconds"] + earlier, 3)
        return total

    def priced(self) -> bool:
        return all(e.usage.price is not None for e in self.engines)


@dataclass(frozen=True)
class Budget:
    """Caps that stop a run cleanly, checked between steps (a step in progress finishes).

    ``max_cost`` is in US dollars and needs a price for every model (the built-in table or
    ``price=`` on the engine); ``max_calls`` counts calls answered by the provider (replays
    of calls a saved state already counts are free; calls an earlier session paid for after
    its last save count on their first replay).
    """

    max_cost: float | None = None
    max_calls: int | None = None

    def __post_init__(self) -> None:
        if self.max_cost is not None and not self.max_cost > 0:
            raise ConfigError(f"max_cost must be > 0 dollars, got {self.max_cost!r}")
        if self.max_calls is not None:
            require_int("max_calls", self.max_calls, 1)

    def check_pricing(self, meter: Meter) -> None:
        if self.max_cost is not None and not meter.priced():
            raise unpriced_error([e.model for e in meter.engines if e.usage.price is None])

    def exceeded(self, usage: Mapping[str, Any]) -> str | None:
        """Why the run must stop ("max_cost" or "max_calls"), or None."""
        cost = usage.get("cost_usd")
        if self.max_cost is not None and cost is not None and cost >= self.max_cost:
            return "max_cost"
        if self.max_calls is not None and usage.get("provider_calls", 0) >= self.max_calls:
            return "max_calls"
        return None


#: Examples an evaluation keeps in flight: more than an engine sends at once, few enough that
#: memory stays flat whatever the split's size.
EVALUATION_WINDOW = 512


def unpriced_error(models: Iterable[str]) -> ConfigError:
    """What to say when ``--max-cost`` is given but these models have no price."""
    return ConfigError(
        f"--max-cost needs a price for {', '.join(models)}, which is not in the price table; "
        "pass --price PROMPT,COMPLETION (dollars per million tokens)"
    )


@dataclass(frozen=True)
class RoundsConfig:
    """What the test-time loops share: ``iterations`` optimizer rounds per item and a budget
    (``SolutionConfig``, ``DesignConfig``)."""

    iterations: int = 3
    budget: Budget = field(default_factory=Budget)

    def __post_init__(self) -> None:
        require_int("iterations", self.iterations, 0)

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"iterations": self.iterations}


#: The errors that end a run as a budget cap does between steps: a cap (or the job's deadline)
#: refused a call; the calls paid so far stay in the journal for a resumed run.
STOPS = (BudgetExceededError, DeadlineExceededError)


class Run:
    """What every loop's run holds: its listener, its usage meter and budget, its checkpoint and
    why it stopped.

    A loop keeps its own state (``state()``: a prompt's epoch and history, the finished items)
    and runs its own steps; this writes the checkpoint's state around it (``{"status",
    "stop_reason", <the loop's fields>, "usage"}``) and ends a run the same way for every loop
    (``finish``). The first reason to stop wins (``stop``).
    """

    def __init__(
        self,
        engines: Sequence[Metered],
        *,
        budget: Budget,
        checkpoint: Checkpoint | None,
        on_event: EventSink | None,
    ) -> None:
        state = checkpoint.state if checkpoint is not None and checkpoint.state else {}
        self.meter = Meter(engines, state.get("usage"))
        budget.check_pricing(self.meter)
        self.budget, self.checkpoint, self.on_event = budget, checkpoint, on_event
        self.stop_reason: str | None = None

    def emit(self, kind: str, message: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(RunEvent(kind, message, data))

    def exceeded(self) -> str | None:
        """Why the budget stops the run now ("max_cost", "max_calls"), or None."""
        return self.budget.exceeded(self.meter.total())

    def stop(self, reason: str) -> bool:
        """Record why the run stops; False if it was stopping already (the first reason wins)."""
        if self.stop_reason is not None:
            return False
        self.stop_reason = reason
        return True

    def state(self) -> dict[str, Any]:
        """The loop's own fields of the checkpoint's state."""
        return {}

    def accounted(self) -> tuple[dict[str, Any], int | None]:
        """The usage a save records and the step it counts calls through (None: every call so
        far). A loop that runs a step beside the next one overrides it: a state as of step k
        must count step k's calls and none of the next step's (``asynctg.runs.checkpoint``)."""
        return self.meter.total(), None

    async def save(self, status: str, *, state: dict[str, Any] | None = None) -> None:
        """Save the state (default: now; a snapshot's when the next step is already under way)
        to the checkpoint, the disk write off the event loop."""
        if self.checkpoint is not None:
            # built right before the call, no await in between (see ``Checkpoint.asave``)
            fields = self.state() if state is None else state
            saved = {"status": status, "stop_reason": self.stop_reason, **fields}
            usage, through = self.accounted()
            await self.checkpoint.asave({**saved, "usage": usage}, counted_through=through)

    async def finish(self) -> str:
        """Save the final state and say why the run stopped; "completed" or "stopped"."""
        status = "stopped" if self.stop_reason else "completed"
        await self.save(status)
        if self.stop_reason:
            limit = self.stop_reason.replace("_", "-")
            self.emit("stopped", f"stopped: --{limit} reached", reason=self.stop_reason)
        return status


class ItemRun(Run):
    """The bookkeeping of a test-time loop whose items (questions, problems, designs) run at once.

    Shared by ``optimize_solutions``, ``optimize_code`` and ``optimize_designs``: the records
    resumed from a checkpoint, progress events, each item's time (its record's ``seconds``), a
    checkpoint save after each finished item, and a clean stop once a budget cap is reached (the
    items still running are cancelled; their calls so far stay in the journal, so a resumed run
    replays them instead of paying for them again). An item whose calls fail for good is
    recorded with its error and the others go on.
    """

    def __init__(
        self,
        engine: Metered,
        *,
        noun: str,
        total: int,
        budget: Budget,
        checkpoint: Checkpoint | None,
        on_event: EventSink | None,
    ) -> None:
        if checkpoint is not None:
            checkpoint.attach(engine_of(engine))
        super().__init__([engine], budget=budget, checkpoint=checkpoint, on_event=on_event)
        state = checkpoint.state if checkpoint is not None and checkpoint.state else {}
        self.records: dict[int, dict[str, Any]] = {
            int(k): v for k, v in state.get("done", {}).items()
        }
        self.noun, self.total = noun, total
        self.stop_reason = self.exceeded()

    def progress(self) -> str:
        return f"{len(self.records)}/{self.total} {self.noun}"

    def start(self, message: str, detail: str = "") -> None:
        """The run's "start" event: ``message``, how many items a resumed run has done, then
        ``detail``."""
        done = f" ({len(self.records)} already done)" if self.records else ""
        self.emit("start", message + done + detail, progress=self.progress())

    def state(self) -> dict[str, Any]:
        return {"done": {str(k): v for k, v in sorted(self.records.items())}}

    def ordered(self) -> list[dict[str, Any]]:
        """The records so far, in item order."""
        return [self.records[i] for i in sorted(self.records)]

    def failed(self) -> int:
        """How many items were recorded with an error."""
        return sum(1 for r in self.records.values() if "error" in r)

    async def run(
        self,
        solve: Callable[[int], Awaitable[dict[str, Any]]],
        failed: Callable[[int, Exception], dict[str, Any]],
        describe: Callable[[int, dict[str, Any]], tuple[str, dict[str, Any]]],
    ) -> str:
        """Run every unfinished item; "completed", or "stopped" when a budget cap was reached.

        ``solve(i)`` computes item ``i``'s record (its ``seconds`` are added here);
        ``failed(i, exc)`` is the record of an item whose calls failed for good;
        ``describe(i, record)`` gives the progress line and the event's extra data.
        """
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int) -> None:
            reason: str | None
            record: dict[str, Any] | None
            started = time.monotonic()
            try:
                record = await solve(i)
            except STOPS as exc:
                # a cap or the deadline refused a call mid-item: stop as between items; the
                # item is not recorded (a resumed run redoes it, its paid calls from the journal)
                record, reason = None, exc.limit
            except AsyncTGError as exc:
                record = failed(i, exc)
            else:
                record["seconds"] = round(time.monotonic() - started, 3)
            if record is not None:
                self.records[i] = record
                message, data = describe(i, record)
                self.emit("item", message, progress=self.progress(), index=i, **data)
                # checked before the save's await, so no sibling sends a call past the cap
                reason = self.exceeded()
            if reason is not None and self.stop(reason):
                for t in tasks:
                    if t is not asyncio.current_task():
                        t.cancel()
            await self.save("running")

        if self.stop_reason is None:
            todo = [i for i in range(self.total) if i not in self.records]
            with run_scope(self.noun):  # one prompt_cache_key per run and variable
                await run_all(tasks, (one(i) for i in todo))
        return await self.finish()
