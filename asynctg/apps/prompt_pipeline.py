"""The pipelined prompt-optimization loop's pieces (``asynctg.apps.prompt``, ``_pipelined``):
a split's running tally, so a step is decided as soon as its missing validation answers cannot
change the decision; a scoring under way; a decided step whose row waits for its scores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

__all__ = ["BACKGROUND_PRIORITY", "PENDING_ROWS", "Pending", "Scoring", "Tally", "below"]

#: How many steps' rows may wait for their scores (so as many test scorings run at once): two,
#: so a scoring's slowest answers do not hold up the next one.
PENDING_ROWS = 2
#: The priority of test scoring, added to its calls': below any call of the run's critical path
#: (graph priorities are small non-negative heights).
BACKGROUND_PRIORITY = -(2**20)


def below(accuracy: float | None, best: float | None) -> bool:
    """Whether validation rejects a new prompt: its accuracy dropped below the one to beat."""
    return accuracy is not None and best is not None and accuracy < best


class Tally:
    """A split's scores as they come in (each 0 or 1), so the accept-or-revert decision can be
    taken as soon as the answers still missing cannot change it.

    >>> tally = Tally(4)
    >>> tally.correct, tally.answered = 2, 3
    >>> tally.reaches(0.5), tally.reaches(0.75), tally.reaches(1.0)
    (True, None, False)
    """

    __slots__ = ("_moved", "answered", "closed", "correct", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.correct = 0
        self.answered = 0
        self.closed = False  # the scoring ended (done, or failed)
        self._moved = asyncio.Event()

    async def counted(self, score: Awaitable[int]) -> int:
        value = await score
        self.correct += value
        self.answered += 1
        self._moved.set()
        return value

    def close(self) -> None:
        self.closed = True
        self._moved.set()

    def reaches(self, best: float) -> bool | None:
        """Whether the split's accuracy, rounded as ``evaluate`` rounds it, will be at least
        ``best``; None while the missing answers decide."""
        if round(self.correct / self.n, 6) >= best:
            return True
        if round((self.correct + self.n - self.answered) / self.n, 6) < best:
            return False
        return None

    async def decided(self, best: float) -> bool | None:
        """``reaches(best)`` once it is known; None if the scoring ended without it (failed)."""
        while (outcome := self.reaches(best)) is None and not self.closed:
            self._moved.clear()
            await self._moved.wait()
        return outcome


@dataclass
class Scoring:
    """A split's scoring under way: its task (accuracy and usage) and its running tally."""

    task: asyncio.Task[tuple[float | None, dict[str, Any]]]
    tally: Tally | None
    finished: float | None = None  #: when the task ended (``time.monotonic()``)

    def __post_init__(self) -> None:
        self.task.add_done_callback(self._finished)

    def _finished(self, _: object) -> None:
        self.finished = time.monotonic()


@dataclass
class Pending:
    """A decided step whose row waits for its scores (``best``: the accuracy it had to beat)."""

    done: dict[str, Any]
    best: float | None
    validation: Scoring | None
    test: Scoring | None
    validation_usage: dict[str, Any] | None = None

    def settled(self) -> bool:
        """Whether its row's validation accuracy is known (``_PromptRun._settle``)."""
        return "val_acc" in self.done

    def ended(self) -> float | None:
        """When its last scoring ended (None: it has none, or one is under way)."""
        times = [s.finished for s in (self.validation, self.test) if s is not None]
        if not times or None in times:
            return None
        return max(t for t in times if t is not None)

    def scored(self) -> bool:
        """Whether its scores are all in."""
        return all(s is None or s.task.done() for s in (self.validation, self.test))

    def cancel(self) -> None:
        for scoring in (self.validation, self.test):
            if scoring is not None:
                scoring.task.cancel()
