"""The retry policy, in one place.

Retried: 408, 409, 429 (except ``insufficient_quota``), every 5xx, connection errors, timeouts
and bodies that are not a usable completion. Everything else fails at once. The wait honours
``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date); otherwise it is a capped
exponential backoff with jitter. Retries are bounded by attempts and by total time, whichever
runs out first.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from asynctg.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    ConfigError,
    InsufficientQuotaError,
    RateLimitError,
    ResponseParseError,
)

if TYPE_CHECKING:
    from asynctg.engine.usage import UsageStats

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "Retrying",
    "retry_after_seconds",
]

#: Status codes worth another try: timeouts, conflicts, rate limits, server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 429})

INITIAL_DELAY = 0.5
MAX_DELAY = 30.0
#: Fraction of a backoff delay randomly taken off, so clients that failed together spread out.
JITTER = 0.25
MAX_ATTEMPTS = 8
MAX_RATE_LIMIT_ATTEMPTS = 32
MAX_TOTAL_SECONDS = 600.0


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often and how long to retry.

    ``max_attempts`` bounds tries for faults (5xx, connection, timeout, bad body);
    ``max_rate_limit_attempts`` bounds tries answered 429 (waiting out a budget is normal in a
    fan-out, so it gets more); ``max_total_seconds`` bounds the time from the first try to the
    last. ``testing=True`` turns backoff waits off (provider-given waits are still honoured).
    """

    max_attempts: int = MAX_ATTEMPTS
    max_rate_limit_attempts: int = MAX_RATE_LIMIT_ATTEMPTS
    max_total_seconds: float = MAX_TOTAL_SECONDS
    initial_delay: float = INITIAL_DELAY
    max_delay: float = MAX_DELAY
    jitter: float = JITTER
    testing: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_rate_limit_attempts < 1:
            raise ConfigError("retry attempts must be at least 1 (1 means: never retry)")
        if self.max_total_seconds < 0 or self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigError("retry times must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"jitter must be within [0, 1], got {self.jitter}")

    @staticmethod
    def is_retryable_status(status: int) -> bool:
        return status >= 500 or status in RETRYABLE_STATUSES

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before try number ``attempt + 1`` (attempt counts from 1)."""
        if self.testing:
            return 0.0
        delay = min(self.max_delay, self.initial_delay * 2.0 ** (attempt - 1))
        r = (rng or random).random()
        return delay * (1.0 - self.jitter * r)


class Retrying:
    """One call's retries under a policy: ``delay(error, ...)`` counts the failure and says how
    long to wait before the next try, or raises ``error`` when the policy says to stop."""

    __slots__ = ("faults", "policy", "rate_limited", "rng", "started")

    def __init__(self, policy: RetryPolicy, rng: random.Random, started: float) -> None:
        self.policy = policy
        self.rng = rng
        self.started = started  # clock time of the first try
        self.faults = 0  # retryable failures so far (5xx, connection, timeout, bad body)
        self.rate_limited = 0  # 429s so far

    def delay(self, error: APIError, wait: float | None, now: float, usage: UsageStats) -> float:
        """Seconds before retrying after ``error`` (``wait``: what the provider asked for),
        counted in ``usage``; raises ``error`` when it is not retried."""
        policy = self.policy
        if isinstance(error, RateLimitError) and not isinstance(error, InsufficientQuotaError):
            self.rate_limited += 1
            usage.rate_limited += 1
            exhausted = self.rate_limited >= policy.max_rate_limit_attempts
            delay = wait if wait is not None else policy.backoff(self.rate_limited, self.rng)
        elif retryable(error):
            self.faults += 1
            usage.faults += 1
            if isinstance(error, APIConnectionError):
                usage.connection_errors += 1
            exhausted = self.faults >= policy.max_attempts
            delay = wait if wait is not None else policy.backoff(self.faults, self.rng)
        else:
            usage.failures += 1
            raise error
        if exhausted or now + delay - self.started > policy.max_total_seconds:
            usage.failures += 1
            raise error
        usage.retries += 1
        return delay


def retryable(error: APIError) -> bool:
    """Whether a failure other than a 429 is worth another try."""
    if isinstance(error, InsufficientQuotaError):
        return False
    if isinstance(error, APIStatusError):
        return RetryPolicy.is_retryable_status(error.status)
    return isinstance(error, APIConnectionError | ResponseParseError)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1, max_rate_limit_attempts=1)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, then ``retry-after``; None if absent."""
    raw = headers.get("retry-after-ms")
    if raw is not None:
        try:
            ms = float(raw)
        except ValueError:
            pass
        else:
            if ms >= 0:
                return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
        return max(0.0, seconds)
    return seconds if seconds >= 0 else None
