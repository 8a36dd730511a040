"""A small progress display for long runs: a live status line on a terminal, plain lines
otherwise, nothing when quiet. No dependency beyond the standard library.

On a terminal, each event prints as a line, and below the last one a status line is redrawn in
place a few times a second: progress (step or items), calls done and in flight, tokens, cost,
429s, the current accuracy and the elapsed time. Elsewhere (a pipe, a log file, CI), each event
is one line carrying the same counters, and nothing is redrawn.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from asynctg.apps.run import RunEvent

__all__ = ["Progress", "format_counters"]

UsageFn = Callable[[], Mapping[str, Any]]


def format_counters(usage: Mapping[str, Any]) -> str:
    """``calls``/``in flight``/tokens/cost/429s of a usage snapshot, on one line."""
    cost = usage.get("cost_usd")
    parts = [
        f"{usage.get('calls', 0)} calls",
        f"{usage.get('in_flight', 0)} in flight",
        f"{usage.get('total_tokens', 0)} tokens",
        f"${cost:.4f}" if isinstance(cost, int | float) else "cost n/a",
        f"{usage.get('rate_limited', 0)} x 429",
    ]
    return "  ".join(parts)


class Progress:
    """An ``EventSink`` that shows a run's events (see the module docstring).

    ``usage`` returns the current usage snapshot (``Meter.session``); ``await ticker()``
    redraws the status line until cancelled (it returns at once when not on a terminal).
    """

    def __init__(
        self,
        usage: UsageFn,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        interval: float = 0.2,
    ) -> None:
        self.usage = usage
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.started = time.monotonic()
        self.progress = ""
        self.accuracy: float | None = None
        self._status_shown = False

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.1f} s"

    def status_line(self) -> str:
        acc = f"acc {self.accuracy:.3f}" if self.accuracy is not None else "acc -"
        parts = [self.progress or "starting", format_counters(self.usage()), acc, self._elapsed()]
        return "  ".join(parts)

    def __call__(self, event: RunEvent) -> None:
        if "progress" in event.data:
            self.progress = str(event.data["progress"])
        accuracy = event.data.get("accuracy")
        if isinstance(accuracy, int | float):
            self.accuracy = float(accuracy)
        if self.quiet or event.kind in ("evaluated", "progress"):
            # status-only events; an evaluation's numbers reach the screen in the step line
            return
        if self.tty:
            # the event goes above the status line, which is then drawn again
            self.stream.write("\r\x1b[K" + event.message + "\n")
            self._draw()
        else:
            line = f"[{self._elapsed().strip()}] {event.message}  | {format_counters(self.usage())}"
            self.stream.write(line + "\n")
        self.stream.flush()

    def _draw(self) -> None:
        # one screen line at most: a wrapped line could not be redrawn in place with \r
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.stream.write("\r\x1b[K" + self.status_line()[: max(20, width)])
        self.stream.flush()
        self._status_shown = True

    async def ticker(self) -> None:
        """Redraw the status line every ``interval`` seconds until cancelled (terminals only)."""
        if self.quiet or not self.tty:
            return
        while True:
            self._draw()
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        """End the status line so what follows starts on a fresh line."""
        if self._status_shown and not self.quiet:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._status_shown = False
