"""A small progress display for long runs: a live status line on a terminal, plain lines
otherwise, nothing when quiet. No dependency beyond the standard library.

On a terminal, each event prints as a line, and below the last one a status line is redrawn in
place a few times a second: the elapsed time, progress (step or items), the current accuracy,
then calls answered by the provider (and from the cache), in flight, tokens, cost (and, when
evaluations go at flex or batch, their calls and what they saved against standard), 429s and
retries; it is cut to the terminal's width, so what matters most comes first (80 columns show
it all for a typical run). Elsewhere (a pipe, a log file, CI), each event is one line carrying
the same counters, and nothing is redrawn. Text that came from a model (an event message may
quote a prompt or a reply) is stripped of terminal control sequences before it is shown: an
answer must not retitle the window, move the cursor or write the clipboard.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from asynctg.output.text import printable
from asynctg.runs.loop import RunEvent

__all__ = ["Progress", "format_counters", "format_tiers", "printable"]


def _short_number(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    return str(int(n))


UsageFn = Callable[[], Mapping[str, Any]]


def cached_share(usage: Mapping[str, Any]) -> float | None:
    """The share of prompt tokens the provider's prompt cache answered (None: no prompt)."""
    prompt = usage.get("prompt_tokens") or 0
    return (usage.get("cached_tokens") or 0) / prompt if prompt else None


def format_tiers(usage: Mapping[str, Any], *, against: bool = False) -> str | None:
    """Which discounted tier did the evaluation work and what it saved, from a usage snapshot:
    ``"eval: flex 120 calls, saved $0.4100"`` (None when every call went at standard). The
    apps send only evaluation calls at flex or batch (``eval_tier``), so the counted calls are
    evaluations. ``against`` adds the run's cost at standard (the summary's longer form); flex
    calls sent at standard past their deadline are named."""
    tiers = [
        f"{name} {usage[key]} calls"
        for name, key in (("flex", "flex_calls"), ("batch", "batch_calls"))
        if usage.get(key)
    ]
    fallbacks = usage.get("flex_fallbacks") or 0
    if fallbacks:
        tiers.append(f"{fallbacks} flex at standard past the deadline")
    if not tiers:
        return None
    text = "eval: " + ", ".join(tiers)
    saved, cost = usage.get("saved_usd"), usage.get("cost_usd")
    if isinstance(saved, int | float):
        text += f", saved ${saved:.4f}"
        if against and isinstance(cost, int | float):
            text += f" (${cost:.4f} instead of ${cost + saved:.4f} at standard)"
    return text


def format_counters(usage: Mapping[str, Any]) -> str:
    """Calls (answered by the provider, as in the run's summary; replayed from the cache in
    brackets), in flight, tokens (with the provider's prompt-cache share of the prompt tokens),
    cost (with the evaluation tier's calls and saving, ``format_tiers``), 429s, retries and
    connection failures of a usage snapshot, on one line."""
    calls = usage.get("provider_calls", usage.get("calls", 0))
    replayed = usage.get("cache_hits", 0) + usage.get("coalesced", 0)
    cost = usage.get("cost_usd")
    parts = [
        f"{calls} calls" + (f" (+{replayed} cached)" if replayed else ""),
        f"{usage.get('in_flight', 0)} in flight",
        f"{_short_number(usage.get('total_tokens', 0))} tok"
        + (f" ({share:.0%} of prompt cached)" if (share := cached_share(usage)) else ""),
        f"${cost:.4f}" if isinstance(cost, int | float) else "cost n/a",
    ]
    if tiers := format_tiers(usage):
        parts.append(tiers)
    parts.append(f"{usage.get('rate_limited', 0)}x429")
    if usage.get("retries"):
        parts.append(f"{usage['retries']} retries")
    if usage.get("connection_errors"):
        parts.append(f"{usage['connection_errors']} conn err")
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
        return f"{time.monotonic() - self.started:.1f} s"

    def status_line(self) -> str:
        acc = f"acc {self.accuracy:.3f}" if self.accuracy is not None else "acc -"
        parts = [self._elapsed(), self.progress or "starting", acc, format_counters(self.usage())]
        return printable("  ".join(parts))

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
            self.stream.write("\r\x1b[K" + printable(event.message) + "\n")
            self._draw()
        else:
            message = printable(event.message)
            line = f"[{self._elapsed()}] {message}  | {format_counters(self.usage())}"
            self.stream.write(line + "\n")
        self.stream.flush()

    def _draw(self) -> None:
        # one screen line at most: a wrapped line could not be redrawn in place with \r
        width = shutil.get_terminal_size((80, 24)).columns - 1
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
