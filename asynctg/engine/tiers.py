"""Service tiers: which price and which path a call takes.

=============  ==========================================================================
``standard``   an ordinary synchronous call at the model's price
``flex``       a synchronous call sent with ``service_tier: "flex"`` (OpenAI's Flex
               processing): batch prices, slower answers, and sometimes a 429
               ``resource_unavailable`` when the provider has no flex capacity; the engine
               retries those after a short jittered wait (``FlexRetry``: 20-100 ms, doubling
               up to ``FLEX_MAX_WAIT`` while most flex attempts are refused,
               ``FlexCapacity``) until ``flex_deadline`` seconds have passed,
               then sends the call at standard, so a run never stalls on capacity; a refusal
               is the provider's capacity, not our rate, so it sets no cool-down
``batch``      the call joins the fan-out it belongs to in one provider batch
               (``asynctg.engine.batch``); a fan-out smaller than ``batch_min`` calls is
               sent at standard
=============  ==========================================================================

A call's tier is ``engine.chat(..., tier=...)``, else the tier of the code around it
(``use_tier``: the apps wrap their evaluation fan-outs in ``use_tier(eval_tier)``, so every
call of the fan-out, graph and judge included, takes it without each layer passing it on),
else the engine's default (``get_engine(..., tier=)``). The tier is not part of a request's
cache key: the answer is the same at every tier, so a journal recorded at one replays at any.

Prices: flex and batch cost ``TIER_FACTORS`` times the standard cost (half, as OpenAI and
Anthropic publish it) unless ``MODEL_TIER_FACTORS`` says otherwise for the model; the standard
cost is the cached-aware one (``asynctg.engine.usage.nano_dollars``: cached reads and cache
writes at their own prices), so the factor applies to what the call would have cost; a call is
priced at the tier the provider reports it was served at (OpenAI's ``service_tier`` field),
else at the tier it was sent at.

Flex in flight: flex calls have an allowance of their own (``flex_concurrency``). Unless it is
given, it follows ``FlexAllowance``: ``max_concurrency`` times the measured ratio of flex to
standard latency (medians of the last ``LATENCY_WINDOW`` answers of each), clamped to
[1, ``FLEX_MAX_FACTOR``]. By Little's law a tier's throughput is its calls in flight over its
latency, so answers ``r`` times slower need ``r`` times the slots to keep the run's pace; the
clamp keeps a provider that queues flex calls for minutes from drawing unbounded calls into
flight, and rpm/tpm still bind (a flex call draws on the account's rate budget like any other).

>>> with use_tier("flex"):
...     current_tier()
'flex'
>>> tier_factor("gpt-4o", "batch")
0.5
"""

from __future__ import annotations

import contextlib
import random
import statistics
from collections import deque
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from asynctg.engine.models import lookup
from asynctg.engine.types import Usage
from asynctg.engine.usage import UsageStats, nano_dollars
from asynctg.errors import ConfigError, RateLimitError

__all__ = [
    "DEFAULT_BATCH_MIN",
    "DEFAULT_FLEX_DEADLINE",
    "FLEX_TIMEOUT",
    "MODEL_TIER_FACTORS",
    "TIERS",
    "TIER_FACTORS",
    "FlexAllowance",
    "FlexCapacity",
    "FlexRetry",
    "check_tier",
    "count_tier",
    "current_tier",
    "flex_body",
    "flex_unavailable",
    "saved_nano",
    "served_tier",
    "tier_factor",
    "use_tier",
]

TIERS = ("standard", "flex", "batch")
#: Price of a tier as a share of the standard price, when the model table says nothing:
#: OpenAI's Batch API and Flex processing and Anthropic's Message Batches are all half price.
TIER_FACTORS: Mapping[str, float] = {"standard": 1.0, "flex": 0.5, "batch": 0.5}
#: Per-model exceptions to ``TIER_FACTORS`` (matched like the price table, dated snapshots too).
MODEL_TIER_FACTORS: dict[str, Mapping[str, float]] = {}
#: Seconds a flex call keeps retrying "resource unavailable" before it is sent at standard.
DEFAULT_FLEX_DEADLINE = 300.0
#: Seconds one flex attempt may take: OpenAI asks for a longer timeout (flex answers are
#: slower, and queued when capacity is short); its own SDK guidance is 15 minutes.
FLEX_TIMEOUT = 900.0
#: A fan-out of fewer batch-tier calls than this is sent at standard (a batch's latency is
#: not worth it for a handful of calls).
DEFAULT_BATCH_MIN = 32
#: Backoff between flex refusals: the first wait (jittered down to a fifth of it: 20-100 ms)
#: and the longest. A refusal says the provider had no flex capacity for *this* request at
#: that moment, usually a brief shortage another attempt soon gets past; waiting seconds would
#: make every evaluation wait for its unluckiest call. Persistent shortage backs off
#: exponentially, and a longer wait than the cap would overshoot a short flex_deadline.
FLEX_FIRST_WAIT = 0.1
FLEX_MAX_WAIT = 30.0
#: Flex capacity is scarce when this share of the last ``CAPACITY_WINDOW`` flex attempts were
#: refused (``FlexCapacity``): refused calls then back off exponentially.
SCARCE_SHARE = 0.5
CAPACITY_WINDOW = 64
#: The flex allowance at most, as a multiple of max_concurrency (see the module).
FLEX_MAX_FACTOR = 4.0
#: Answers per tier the latency medians are taken over, and the fewest before they are used.
LATENCY_WINDOW = 32
LATENCY_MIN_SAMPLES = 4

_current: ContextVar[str | None] = ContextVar("asynctg_tier", default=None)


def check_tier(tier: object) -> str:
    """``tier`` if it is one of ``TIERS``, else ``ConfigError``."""
    if tier not in TIERS:
        raise ConfigError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    assert isinstance(tier, str)
    return tier


@contextlib.contextmanager
def use_tier(tier: str | None) -> Iterator[None]:
    """Calls made inside (and by tasks started inside) take ``tier`` unless they name one;
    None leaves the surrounding tier in force."""
    if tier is None:
        yield
        return
    token = _current.set(check_tier(tier))
    try:
        yield
    finally:
        _current.reset(token)


def current_tier() -> str | None:
    """The tier set by the innermost ``use_tier`` around the caller, or None."""
    return _current.get()


def tier_factor(model: str, tier: str) -> float:
    """The share of the standard price a call at ``tier`` costs on ``model``."""
    table = lookup(MODEL_TIER_FACTORS, model)
    if table is not None and tier in table:
        return float(table[tier])
    return TIER_FACTORS[tier]


def served_tier(reported: str | None, sent: str) -> str:
    """The tier a call was served at: what the provider reports (OpenAI says "flex" for a
    flex answer and "default" or another name for the others), else what it was sent at."""
    if reported is None or sent == "batch":
        return sent
    return "flex" if reported == "flex" else "standard"


def flex_unavailable(error: BaseException) -> bool:
    """Whether ``error`` is a flex refusal for lack of capacity (429 ``resource_unavailable``),
    which says nothing about the account's rate budget."""
    return isinstance(error, RateLimitError) and error.code == "resource_unavailable"


def flex_body(provider: str, body: bytes) -> bytes:
    """A request body asking for Flex processing (OpenAI's ``service_tier: "flex"``).

    ``ConfigError`` for a provider without flex (Anthropic's equivalent is a batch)."""
    if provider != "openai":
        raise ConfigError(
            f"the flex tier is OpenAI's (service_tier 'flex'); provider {provider!r} has none: "
            "use tier='batch' or 'standard'"
        )
    # the same JSON object with one field added (the body is a compact object: "...}")
    return body[:-1] + b',"service_tier":"flex"}'


class FlexRetry:
    """When to try a refused flex call again: a jittered wait of up to ``FLEX_FIRST_WAIT``,
    which doubles with each further refusal (capped at ``FLEX_MAX_WAIT``) only while flex
    capacity is scarce (``FlexCapacity``): a refusal among answers is a momentary lack, retried
    soon; refusals of most calls are a shortage, backed off from. The last wait is cut to end
    at ``deadline`` seconds after the first attempt; past it, never (the call goes at
    standard)."""

    __slots__ = ("_wait", "until")

    def __init__(self, started: float, deadline: float) -> None:
        self.until = started + deadline
        self._wait = FLEX_FIRST_WAIT / 2

    def next_wait(self, now: float, rng: random.Random, scarce: bool = True) -> float | None:
        """Seconds to wait before the next flex attempt, or None: send it at standard now."""
        left = self.until - now
        if left <= 0:
            return None
        if scarce or self._wait < FLEX_FIRST_WAIT:
            self._wait = min(FLEX_MAX_WAIT, self._wait * 2)
        # jitter over [1/5, 1] of the step: refused calls of one fan-out do not return together
        return min(left, self._wait * (0.2 + 0.8 * rng.random()))


class FlexCapacity:
    """The engine's recent flex attempts: whether flex capacity is scarce (at least
    ``SCARCE_SHARE`` of the last ``CAPACITY_WINDOW`` attempts refused).

    >>> capacity = FlexCapacity()
    >>> for refused in (True, False, False):
    ...     capacity.record(refused)
    >>> capacity.scarce()
    False
    >>> for _ in range(3):
    ...     capacity.record(True)
    >>> capacity.scarce()
    True
    """

    __slots__ = ("_outcomes",)

    def __init__(self) -> None:
        self._outcomes: deque[bool] = deque(maxlen=CAPACITY_WINDOW)

    def record(self, refused: bool) -> None:
        self._outcomes.append(refused)

    def scarce(self) -> bool:
        """(Asked only when a call is refused: the count over the window is cheap there.)"""
        outcomes = self._outcomes
        return bool(outcomes) and sum(outcomes) >= SCARCE_SHARE * len(outcomes)


class FlexAllowance:
    """The flex calls' in-flight allowance, from the latencies the engine observes (see the
    module): ``base`` (``max_concurrency``) times the ratio of the flex median latency to the
    standard one, clamped to [1, ``FLEX_MAX_FACTOR``]; ``base`` until both tiers have
    ``LATENCY_MIN_SAMPLES`` answers.

    >>> allowance = FlexAllowance(10)
    >>> for _ in range(4):
    ...     _ = allowance.observe("standard", 0.1)
    ...     changed = allowance.observe("flex", 0.3)
    >>> allowance.slots
    30
    """

    __slots__ = ("_samples", "base", "slots")

    def __init__(self, base: int) -> None:
        self.base = base
        #: the allowance in force
        self.slots = base
        self._samples: dict[str, deque[float]] = {
            "standard": deque(maxlen=LATENCY_WINDOW),
            "flex": deque(maxlen=LATENCY_WINDOW),
        }

    def observe(self, tier: str, seconds: float) -> bool:
        """Count one answer of ``tier`` that took ``seconds``; whether ``slots`` changed."""
        samples = self._samples.get(tier)
        if samples is None or not seconds >= 0:
            return False
        samples.append(seconds)
        slots = self._target()
        if slots == self.slots:
            return False
        self.slots = slots
        return True

    def ratio(self) -> float | None:
        """Flex median latency over standard median latency, or None: not measured yet."""
        flex, standard = self._samples["flex"], self._samples["standard"]
        if len(flex) < LATENCY_MIN_SAMPLES or len(standard) < LATENCY_MIN_SAMPLES:
            return None
        low = statistics.median(standard)
        if low <= 0:
            return FLEX_MAX_FACTOR
        return statistics.median(flex) / low

    def _target(self) -> int:
        ratio = self.ratio()
        if ratio is None:
            return self.base
        return max(self.base, round(self.base * min(FLEX_MAX_FACTOR, max(1.0, ratio))))


def saved_nano(nano: int, model: str, tier: str) -> int:
    """What a call priced ``nano`` at standard saves at ``tier`` (nano-dollars)."""
    if tier == "standard" or not nano:
        return 0
    return nano - int(nano * tier_factor(model, tier))


def count_tier(usage: UsageStats, model: str, tier: str, tokens: Usage) -> None:
    """Count one call answered at a discounted ``tier`` in ``usage`` (and what it saved: the
    call's standard cost, cached reads and cache writes priced as such, times one minus the
    tier's factor)."""
    total = tokens.prompt_tokens + tokens.completion_tokens
    if tier == "flex":
        usage.flex_calls += 1
        usage.flex_tokens += total
    elif tier == "batch":
        usage.batch_calls += 1
        usage.batch_tokens += total
    price = usage.price
    if price is not None:
        standard = nano_dollars(
            price,
            tokens.prompt_tokens,
            tokens.completion_tokens,
            tokens.cached_tokens,
            tokens.cache_write_tokens,
        )
        usage.saved_nano += saved_nano(standard, model, tier)
