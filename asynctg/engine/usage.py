"""Usage and cost accounting, per engine and per job.

Money is integer nano-dollars (``asynctg.engine.budget.NANO`` per dollar) everywhere in the
engine: ``nano_dollars`` prices a call, dollar caps reserve and settle in it, and the dollar
figures a user reads (``cost_usd``, ``UsageStats.cost``) are derived from it at the edge.
Prices are given in dollars per million tokens, as providers publish them (``Price``), with
the prompt-cache prices: a prompt token read from the provider's cache costs
``Price.cached_input``, one written to it ``Price.cache_write``, and the counters keep both
kinds (``cached_tokens``, ``cache_write_tokens``, each part of ``prompt_tokens``) so a cost is
the provider's bill, not the uncached list price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from asynctg.engine.models import lookup
from asynctg.errors import ConfigError

__all__ = [
    "PRICES",
    "ChargedUsage",
    "Price",
    "UsageStats",
    "check_price",
    "nano_dollars",
    "price_for",
]


@dataclass(frozen=True, slots=True)
class Price:
    """What a model's tokens cost, in US dollars per million tokens, as providers publish it.

    ``cached_input`` is the price of a prompt token read from the provider's prompt cache,
    ``cache_write`` that of a prompt token written to it; None means "the input price" (no
    discount known; no write surcharge, as on OpenAI). A prompt token neither read nor written
    costs ``input``. Invalid numbers raise ``ConfigError`` (a NaN would make every cost, and
    every comparison with a dollar cap, meaningless).

    >>> Price(input=2.5, output=10, cached_input=1.25)
    Price(input=2.5, output=10.0, cached_input=1.25, cache_write=None)
    >>> Price(3, 15, cached_input=0.3, cache_write=3.75).prompt_ceiling
    3.75
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input", "cache_write"):
            value = getattr(self, name)
            if value is None and name in ("cached_input", "cache_write"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(
                    f"price {name} must be a number of dollars per 1M tokens, got {value!r}"
                )
            if not 0 <= value < math.inf:
                raise ConfigError(
                    f"prices must be finite numbers >= 0 (dollars per 1M tokens): {name} is "
                    f"{value!r}"
                )
            object.__setattr__(self, name, float(value))

    @property
    def read(self) -> float:
        """Dollars per million prompt tokens read from the cache."""
        return self.input if self.cached_input is None else self.cached_input

    @property
    def write(self) -> float:
        """Dollars per million prompt tokens written to the cache."""
        return self.input if self.cache_write is None else self.cache_write

    @property
    def prompt_ceiling(self) -> float:
        """The most one prompt token can cost (a dollar cap's worst case prices every prompt
        token at it: any of them may be a cache write, which costs more than input on
        Anthropic)."""
        return max(self.input, self.read, self.write)


def _p(input: float, output: float, cached: float | None, write: float | None = None) -> Price:
    return Price(input, output, cached, write)


#: US dollars per million tokens, from the providers' public price pages: OpenAI bills cached
#: input at a discount and cache writes at the input price; Anthropic bills cache reads at
#: 0.1x and 5-minute cache writes at 1.25x the input price (asynctg sends 5-minute
#: breakpoints). A model missing here reports no cost unless ``price=`` is given to
#: ``get_engine``.
PRICES: dict[str, Price] = {
    "gpt-4o": _p(2.50, 10.00, 1.25),
    "gpt-4o-mini": _p(0.15, 0.60, 0.075),
    "gpt-4.1": _p(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
    "gpt-4-turbo": _p(10.00, 30.00, None),  # no prompt caching
    "gpt-3.5-turbo": _p(0.50, 1.50, None),  # no prompt caching
    "o3-mini": _p(1.10, 4.40, 0.55),
    "claude-opus-4-1": _p(15.00, 75.00, 1.50, 18.75),
    "claude-opus-4-5": _p(5.00, 25.00, 0.50, 6.25),
    "claude-sonnet-4-5": _p(3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4": _p(3.00, 15.00, 0.30, 3.75),
    "claude-haiku-4-5": _p(1.00, 5.00, 0.10, 1.25),
    "claude-3-5-haiku": _p(0.80, 4.00, 0.08, 1.00),
}


def price_for(model: str) -> Price | None:
    """The price entry for ``model``, matching dated snapshots (``gpt-4o-2024-08-06``) too."""
    return lookup(PRICES, model)


def check_price(price: Any) -> Price:
    """``price`` as a ``Price``: a ``Price`` itself, or the two-number form (dollars per 1M
    prompt tokens, per 1M completion tokens: no cache discount, no write surcharge);
    ``ConfigError`` for anything else or for numbers that are not finite and >= 0.

    >>> check_price((2.5, 10))
    Price(input=2.5, output=10.0, cached_input=None, cache_write=None)
    """
    if isinstance(price, Price):
        return price
    try:
        prompt, completion = price
    except (TypeError, ValueError):
        raise ConfigError(
            "price must be tg.Price(input=, output=, cached_input=, cache_write=) or (dollars "
            f"per 1M prompt tokens, per 1M completion tokens), got {price!r}"
        ) from None
    return Price(_number(prompt, price), _number(completion, price))


def _number(value: Any, price: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"price must be (dollars per 1M prompt tokens, per 1M completion), got {price!r}"
        ) from None


def nano_dollars(
    price: Price | tuple[float, float],
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> int:
    """What the tokens cost at ``price``, in whole nano-dollars (rounded down), the engine's
    one unit of money. ``prompt_tokens`` counts every prompt token; ``cached_tokens`` of them
    were read from the provider's cache and ``cache_write_tokens`` written to it (priced at
    ``Price.read`` and ``Price.write``), the rest at ``input``.

    >>> nano_dollars((2.5, 10.0), 1000, 100)
    3500000
    >>> nano_dollars(Price(2.5, 10.0, cached_input=1.25), 1000, 100, cached_tokens=1000)
    2250000
    """
    if not isinstance(price, Price):
        price = Price(*price)
    # a server reporting more cached than prompt tokens is read as "all of them"
    cached = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    plain = prompt_tokens - cached - written
    dollars_e6 = (
        plain * price.input
        + cached * price.read
        + written * price.write
        + completion_tokens * price.output
    )
    return int(dollars_e6 * 1000)


class UsageStats:
    """Counters one engine keeps; ``snapshot()`` returns them as a dict."""

    __slots__ = (
        "batch_calls",
        "batch_tokens",
        "cache_hits",
        "cache_write_tokens",
        "cached_tokens",
        "calls",
        "coalesced",
        "completion_tokens",
        "connection_errors",
        "failures",
        "faults",
        "flex_calls",
        "flex_fallbacks",
        "flex_tokens",
        "price",
        "prompt_tokens",
        "rate_limited",
        "requests",
        "retries",
        "saved_nano",
    )

    def __init__(self, price: Price | None) -> None:
        self.price = price
        self.calls = 0  # calls answered (from the provider, the cache, or a shared request)
        self.requests = 0  # HTTP requests sent, retries included
        self.retries = 0
        self.rate_limited = 0  # 429s received
        self.faults = 0  # other retryable failures received (5xx, connection, timeout, body)
        self.connection_errors = 0  # of which: no connection, a dropped one, or no answer in time
        self.failures = 0  # calls that raised
        self.cache_hits = 0
        self.coalesced = 0  # calls answered by an identical request already in flight
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0  # prompt tokens read from the provider's prompt cache
        self.cache_write_tokens = 0  # prompt tokens written to it
        # Service tiers (asynctg.engine.tiers): the calls and tokens served at flex or in a
        # batch, flex calls sent at standard after their flex_deadline, and what the discounted
        # tiers saved against the standard price (nano-dollars; the cost is net of it).
        self.flex_calls = 0
        self.flex_tokens = 0
        self.flex_fallbacks = 0
        self.batch_calls = 0
        self.batch_tokens = 0
        self.saved_nano = 0

    @property
    def targets(self) -> tuple[UsageStats, ...]:
        """The counters a change goes to: this object alone (a ``ChargedUsage``: several)."""
        return (self,)

    @property
    def cost_nano(self) -> int | None:
        """The tokens counted, priced at their tiers, in nano-dollars (None without a price)."""
        if self.price is None:
            return None
        standard = nano_dollars(
            self.price,
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
        )
        return standard - self.saved_nano

    @property
    def cost(self) -> float | None:
        """``cost_nano`` in dollars."""
        nano = self.cost_nano
        return None if nano is None else nano / 1_000_000_000

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "faults": self.faults,
            "connection_errors": self.connection_errors,
            "failures": self.failures,
            "cache_hits": self.cache_hits,
            "coalesced": self.coalesced,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost,
            "flex_calls": self.flex_calls,
            "flex_tokens": self.flex_tokens,
            "flex_fallbacks": self.flex_fallbacks,
            "batch_calls": self.batch_calls,
            "batch_tokens": self.batch_tokens,
            "saved_usd": None if self.price is None else self.saved_nano / 1_000_000_000,
        }


#: The counters of ``UsageStats`` (what ``ChargedUsage`` forwards).
COUNTERS = tuple(name for name in UsageStats.__slots__ if name != "price")


class ChargedUsage(UsageStats):
    """The counters a job's calls change: an engine's and its jobs' at once.

    The engine counts a call with ``usage.requests += 1`` and the like; given this object
    instead of its own ``UsageStats``, each such change reaches every one of ``targets`` (the
    engine's, the job's, the enclosing jobs'). Reading a counter reads the first target's.
    Built once per job, so a call costs no allocation.
    """

    __slots__ = ("_targets",)

    def __init__(self, targets: tuple[UsageStats, ...]) -> None:
        # no super().__init__(): every counter is a forwarding property (below)
        self._targets = targets
        self.price = targets[0].price

    @property
    def targets(self) -> tuple[UsageStats, ...]:
        return self._targets


def _forward(name: str) -> property:
    def get(self: ChargedUsage) -> int:
        return int(getattr(self._targets[0], name))

    def set_(self: ChargedUsage, value: int) -> None:
        delta = value - getattr(self._targets[0], name)
        for target in self._targets:
            setattr(target, name, getattr(target, name) + delta)

    return property(get, set_, doc=f"``{name}``, counted for every target")


for _name in COUNTERS:
    setattr(ChargedUsage, _name, _forward(_name))
