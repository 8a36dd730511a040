"""Token buckets that model a provider's per-minute budgets.

Providers publish limits per minute but enforce them on a finer grain (OpenAI documents
60,000 requests/min enforced as 1,000/s), so a bucket holds about one second's worth and refills
continuously: ``capacity = max(1, limit / 60)``, ``rate = limit / 60`` per second. A client that
bursts a minute's budget at once is therefore throttled, just as by a real provider.

A request heavier than the whole capacity (a long prompt against a small tokens-per-minute
budget) may still pass once the bucket is full; the level then goes negative, and later requests
wait until the debt is repaid. Without that, such a request could never be served at all.

A request that would fit within ``EARLY_TOLERANCE`` seconds is admitted (the level may dip
that far below zero). A client pacing itself exactly at the published rate still sees its
requests arrive with jitter: the first one of a burst pays for connection setup, so the next
one can look a millisecond early to the server. Real providers do not enforce at that
precision, and the long-run rate is unchanged (at most ``rate * EARLY_TOLERANCE`` extra units,
once).

The clock is injected (``now``), so tests drive time by hand instead of sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "EARLY_TOLERANCE",
    "InputOutputLimiter",
    "RateLimiter",
    "TokenBucket",
    "format_duration",
]

#: Seconds early a request may arrive and still be admitted (see the module docstring).
EARLY_TOLERANCE = 0.01


class TokenBucket:
    """A continuously refilling bucket of ``capacity`` units gaining ``rate`` units per second.

    >>> t = [0.0]
    >>> bucket = TokenBucket(capacity=2, rate=1, now=lambda: t[0])
    >>> bucket.try_take(2), bucket.try_take(1)
    (0.0, 1.0)
    """

    __slots__ = ("_last", "_level", "_now", "_slack", "capacity", "limit", "rate")

    def __init__(
        self,
        capacity: float,
        rate: float,
        now: Callable[[], float],
        *,
        limit: int | None = None,
        tolerance: float = EARLY_TOLERANCE,
    ) -> None:
        if not capacity > 0 or not rate > 0:
            raise ValueError(f"capacity and rate must be > 0, got {capacity=} {rate=}")
        self.capacity = float(capacity)
        self.rate = float(rate)
        #: the published per-minute limit this bucket enforces (reported in headers)
        self.limit = limit if limit is not None else math.ceil(rate * 60)
        self._now = now
        # the tolerance in units rather than seconds, so the check is one comparison
        self._slack = self.rate * tolerance
        self._level = self.capacity
        self._last = now()

    @classmethod
    def per_minute(
        cls, limit: int, now: Callable[[], float], *, tolerance: float = EARLY_TOLERANCE
    ) -> TokenBucket:
        """A bucket enforcing ``limit`` units per minute at one-second grain."""
        per_second = limit / 60.0
        return cls(max(1.0, per_second), per_second, now, limit=limit, tolerance=tolerance)

    def _refill(self) -> float:
        t = self._now()
        elapsed = t - self._last
        if elapsed > 0:
            self._level = min(self.capacity, self._level + elapsed * self.rate)
            self._last = t
        return self._level

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` would fit (0.0 if it fits now); takes nothing."""
        level = self._refill()
        # an oversized request needs only a full bucket (see the module docstring)
        need = min(amount, self.capacity)
        if level >= need - self._slack:
            return 0.0
        return (need - level) / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` unconditionally (callers check :meth:`wait_time` first)."""
        self._refill()
        self._level -= amount

    def give_back(self, amount: float) -> None:
        """Return ``amount`` taken too much up front (never past a full bucket)."""
        self._level = min(self.capacity, self._refill() + amount)

    def try_take(self, amount: float) -> float:
        """Take ``amount`` if it fits and return 0.0, else return the seconds to wait."""
        wait = self.wait_time(amount)
        if wait == 0.0:
            self._level -= amount
        return wait

    @property
    def level(self) -> float:
        """Units available now (negative while an oversized request's debt is repaid)."""
        return self._refill()

    def remaining(self) -> int:
        """What is left, scaled to the per-minute limit, as ``x-ratelimit-remaining-*`` reports.

        A full bucket reports the whole ``limit``, an empty one 0.
        """
        level = self._refill()
        if level <= 0:
            return 0
        return min(self.limit, int(level / self.capacity * self.limit))

    def reset_seconds(self) -> float:
        """Seconds until the bucket is full again (``x-ratelimit-reset-*``)."""
        level = self._refill()
        return max(0.0, (self.capacity - level) / self.rate)


class RateLimiter:
    """A requests bucket and a tokens bucket admitted together.

    A request is admitted only if it fits both; a refusal consumes nothing, so a client that
    is told to wait is not charged for asking.
    """

    __slots__ = ("requests", "tokens")

    def __init__(self, requests: TokenBucket | None, tokens: TokenBucket | None) -> None:
        self.requests = requests
        self.tokens = tokens

    @classmethod
    def from_limits(cls, rpm: int | None, tpm: int | None, now: Callable[[], float]) -> RateLimiter:
        """Buckets for the given per-minute budgets (``None`` means unlimited)."""
        return cls(
            TokenBucket.per_minute(rpm, now) if rpm else None,
            TokenBucket.per_minute(tpm, now) if tpm else None,
        )

    @property
    def unlimited(self) -> bool:
        """True when no budget is set, so admission can be skipped."""
        return self.requests is None and self.tokens is None

    def admit(self, tokens: int) -> tuple[str | None, float]:
        """Admit one request of ``tokens`` tokens.

        Returns ``(None, 0.0)`` when admitted (both buckets charged). Otherwise returns which
        budget binds (``"requests"`` or ``"tokens"``, the one with the longer wait) and the
        seconds until the request would fit both; nothing is charged.
        """
        wait_r = self.requests.wait_time(1) if self.requests is not None else 0.0
        wait_t = self.tokens.wait_time(tokens) if self.tokens is not None else 0.0
        if wait_r == 0.0 and wait_t == 0.0:
            if self.requests is not None:
                self.requests.take(1)
            if self.tokens is not None:
                self.tokens.take(tokens)
            return None, 0.0
        if wait_r >= wait_t:
            return "requests", wait_r
        return "tokens", wait_t


class InputOutputLimiter:
    """Anthropic's three budgets: requests, input tokens and output tokens per minute.

    Output tokens are charged up front with the request's ``max_tokens`` (the provider cannot
    know the answer's length yet); :meth:`settle` returns the unused part once the answer is
    sent. Input tokens are charged with what the prompt cache did not serve (cache reads do
    not count against the input budget; cache writes do). A refusal charges nothing.
    """

    __slots__ = ("input", "output", "requests")

    def __init__(
        self, rpm: int | None, itpm: int | None, otpm: int | None, now: Callable[[], float]
    ) -> None:
        self.requests = TokenBucket.per_minute(rpm, now) if rpm else None
        self.input = TokenBucket.per_minute(itpm, now) if itpm else None
        self.output = TokenBucket.per_minute(otpm, now) if otpm else None

    @property
    def unlimited(self) -> bool:
        """True when no budget is set."""
        return self.requests is None and self.input is None and self.output is None

    def buckets(self) -> tuple[tuple[str, TokenBucket | None], ...]:
        """``(name, bucket)`` pairs, named as in the ``anthropic-ratelimit-*`` headers."""
        return (
            ("requests", self.requests),
            ("input-tokens", self.input),
            ("output-tokens", self.output),
        )

    def admit(self, input_tokens: int, max_tokens: int) -> tuple[str | None, float]:
        """``(None, 0.0)`` when admitted (all charged), else the binding budget's name and the
        seconds until the request would fit every budget."""
        waits = (
            ("requests", self.requests.wait_time(1) if self.requests else 0.0),
            ("input-tokens", self.input.wait_time(input_tokens) if self.input else 0.0),
            ("output-tokens", self.output.wait_time(max_tokens) if self.output else 0.0),
        )
        worst = max(waits, key=lambda item: item[1])
        if worst[1] > 0.0:
            return worst[0], worst[1]
        if self.requests is not None:
            self.requests.take(1)
        if self.input is not None:
            self.input.take(input_tokens)
        if self.output is not None:
            self.output.take(max_tokens)
        return None, 0.0

    def settle(self, max_tokens: int, output_tokens: int) -> None:
        """Give back the output tokens reserved but not written."""
        if self.output is not None and max_tokens > output_tokens:
            self.output.give_back(max_tokens - output_tokens)


def format_duration(seconds: float) -> str:
    """Format a wait the way OpenAI's ``x-ratelimit-reset-*`` headers do.

    >>> [format_duration(s) for s in (0.0061, 1.2, 60.0, 75.5)]
    ['7ms', '1.2s', '1m0s', '1m15.5s']
    """
    if seconds <= 0:
        return "0s"
    # round up: a client sleeping the printed time must find the budget available
    millis = math.ceil(seconds * 1000 - 1e-9)
    if millis < 1000:
        return f"{millis}ms"
    # round to the millisecond first so 59.9996 prints as 1m0s, not 60s
    minutes, secs = divmod(round(seconds, 3), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    secs_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs_text}s"
    if minutes:
        return f"{minutes}m{secs_text}s"
    return f"{secs_text}s"
