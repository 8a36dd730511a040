"""Usage and cost accounting, per engine and per job.

Money is integer nano-dollars (``asynctg.engine.budget.NANO`` per dollar) everywhere in the
engine: ``nano_dollars`` prices a call, dollar caps reserve and settle in it, and the dollar
figures a user reads (``cost_usd``, ``UsageStats.cost``) are derived from it at the edge.
Prices are given in dollars per million tokens, as providers publish them.
"""

from __future__ import annotations

import math
from typing import Any

from asynctg.engine.models import lookup
from asynctg.errors import ConfigError

__all__ = [
    "PRICES",
    "ChargedUsage",
    "UsageStats",
    "check_price",
    "nano_dollars",
    "price_for",
]

#: US dollars per million (prompt, completion) tokens, from the providers' public price pages.
#: A model missing here reports no cost unless ``price=`` is given to ``get_engine``.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
}


def price_for(model: str) -> tuple[float, float] | None:
    """The price entry for ``model``, matching dated snapshots (``gpt-4o-2024-08-06``) too."""
    return lookup(PRICES, model)


def check_price(price: Any) -> tuple[float, float]:
    """``price`` as (dollars per 1M prompt tokens, per 1M completion tokens); ``ConfigError``
    unless it is two finite numbers >= 0 (a NaN would make every cost, and every comparison
    with a dollar cap, meaningless).

    >>> check_price((2.5, 10))
    (2.5, 10.0)
    """
    try:
        prompt, completion = (float(x) for x in price)
    except (TypeError, ValueError):
        raise ConfigError(
            f"price must be (dollars per 1M prompt tokens, per 1M completion), got {price!r}"
        ) from None
    if not (0 <= prompt < math.inf and 0 <= completion < math.inf):
        raise ConfigError(
            f"prices must be finite numbers >= 0 (dollars per 1M tokens), got {price!r}"
        )
    return prompt, completion


def nano_dollars(price: tuple[float, float], prompt_tokens: int, completion_tokens: int) -> int:
    """What the tokens cost at ``price`` (dollars per million prompt, completion tokens), in
    whole nano-dollars (rounded down), the engine's one unit of money.

    >>> nano_dollars((2.5, 10.0), 1000, 100)
    3500000
    """
    return int((prompt_tokens * price[0] + completion_tokens * price[1]) * 1000)


class UsageStats:
    """Counters one engine keeps; ``snapshot()`` returns them as a dict."""

    __slots__ = (
        "batch_calls",
        "batch_tokens",
        "cache_hits",
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

    def __init__(self, price: tuple[float, float] | None) -> None:
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
        return (
            nano_dollars(self.price, self.prompt_tokens, self.completion_tokens) - self.saved_nano
        )

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
