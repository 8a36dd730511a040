"""The provider-side bill: what the simulated provider would charge, in integer nano-dollars.

Tests compare an engine's own cost accounting with this bill, so it is computed the way a
provider's invoice is: per request, from the usage the response reported, at the configured
prices. Prices are US dollars per million tokens (as providers publish them); one token at
``p`` dollars per million costs ``p * 1000`` nano-dollars.

Each billed request costs, exactly (in fractions)::

    factor * (input * p.input + cached * p.cached_input + written * p.cache_write
              + output * p.output) * 1000

where ``input`` excludes cached and written tokens, ``factor`` is 1 (standard),
``p.flex_factor`` (OpenAI ``service_tier: "flex"``) or ``p.batch_factor`` (batch APIs), and the
result is rounded once to the nearest nano-dollar (ties to even). Sums of integers never drift,
so a bill of a million requests is still exact.

>>> bill = Bill()
>>> bill.charge("openai", "standard", Prices(input=2.5, output=10), input=1000, output=100)
3500000
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

__all__ = ["DEFAULT_ANTHROPIC_PRICES", "DEFAULT_OPENAI_PRICES", "TIERS", "Bill", "Prices"]

#: The tiers a request is billed under.
TIERS: tuple[str, ...] = ("standard", "flex", "batch")


@functools.lru_cache(maxsize=256)  # the hot path bills every request at a handful of prices
def _as_fraction(value: float) -> Fraction:
    # via str: 0.3 means 3/10 as written in a config, not the nearest binary double
    return Fraction(str(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class Prices:
    """Dollars per million tokens of one API, and the discount factors of its tiers.

    ``cached_input`` is the price of a cache read, ``cache_write`` that of a 5-minute cache
    write (OpenAI does not charge extra for writes: leave it equal to ``input``).
    ``batch_factor`` and ``flex_factor`` multiply the whole request's cost (both 0.5 at the
    providers today). Invalid values raise :class:`ValueError`.
    """

    input: float = 2.5
    output: float = 10.0
    cached_input: float = 1.25
    cache_write: float = 2.5
    batch_factor: float = 0.5
    flex_factor: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < math.inf
            ):
                raise ValueError(f"price {f.name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_value(cls, value: Prices | dict[str, Any]) -> Prices:
        """A :class:`Prices` from itself or a JSON object of its fields (``ValueError`` if bad)."""
        if isinstance(value, Prices):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"prices must be an object of dollars per 1M tokens, got {value!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown price field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}"
            )
        return cls(**value)

    def to_dict(self) -> dict[str, float]:
        """The prices as a JSON-friendly dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def cost_nano(
        self, tier: str, *, input: int, output: int, cached: int = 0, written: int = 0
    ) -> int:
        """One request's cost in nano-dollars (see the module docstring for the formula)."""
        exact = (
            input * _as_fraction(self.input)
            + cached * _as_fraction(self.cached_input)
            + written * _as_fraction(self.cache_write)
            + output * _as_fraction(self.output)
        ) * 1000
        if tier == "batch":
            exact *= _as_fraction(self.batch_factor)
        elif tier == "flex":
            exact *= _as_fraction(self.flex_factor)
        return round(exact)


#: gpt-4o's published prices.
DEFAULT_OPENAI_PRICES = Prices(input=2.5, output=10.0, cached_input=1.25, cache_write=2.5)
#: Claude Sonnet's published prices (cache reads 0.1x, 5-minute writes 1.25x the input price).
DEFAULT_ANTHROPIC_PRICES = Prices(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)


class _Account:
    __slots__ = (
        "by_tier",
        "cache_write_tokens",
        "cached_tokens",
        "input_tokens",
        "nano",
        "output_tokens",
        "requests",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = 0
        self.cached_tokens = 0
        self.cache_write_tokens = 0
        self.output_tokens = 0
        self.nano = 0
        self.by_tier: dict[str, int] = dict.fromkeys(TIERS, 0)


class Bill:
    """What each API (``"openai"``, ``"anthropic"``) has charged since the last reset."""

    __slots__ = ("_accounts",)

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {"openai": _Account(), "anthropic": _Account()}

    def charge(
        self,
        api: str,
        tier: str,
        prices: Prices,
        *,
        input: int,
        output: int,
        cached: int = 0,
        written: int = 0,
    ) -> int:
        """Bill one request; ``input`` excludes cached and written tokens. Returns its cost."""
        nano = prices.cost_nano(tier, input=input, output=output, cached=cached, written=written)
        acct = self._accounts[api]
        acct.requests += 1
        acct.input_tokens += input
        acct.cached_tokens += cached
        acct.cache_write_tokens += written
        acct.output_tokens += output
        acct.nano += nano
        acct.by_tier[tier] += nano
        return nano

    def snapshot(self) -> dict[str, Any]:
        """Per API: requests billed, tokens by kind, ``nano_dollars`` and ``by_tier``; plus
        ``total_nano_dollars``."""
        out: dict[str, Any] = {}
        for api, a in self._accounts.items():
            out[api] = {
                "requests": a.requests,
                "input_tokens": a.input_tokens,
                "cached_input_tokens": a.cached_tokens,
                "cache_write_tokens": a.cache_write_tokens,
                "output_tokens": a.output_tokens,
                "nano_dollars": a.nano,
                "by_tier": dict(a.by_tier),
            }
        out["total_nano_dollars"] = sum(a.nano for a in self._accounts.values())
        return out
