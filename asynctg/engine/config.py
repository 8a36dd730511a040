"""``EngineConfig``: every option of a chat engine, typed and validated once.

``get_engine(model, **options)`` (and the command line, through it) builds one;
``ChatEngine(config)`` runs it. Building checks every value and says what is wrong with a
``ConfigError``; the engine then trusts it. See ``asynctg.engine.client.get_engine`` for what
each option means.

>>> config = EngineConfig(model="gpt-4o", base_url="http://127.0.0.1:8000/v1/", rpm=600)
>>> config.base_url, config.price
('http://127.0.0.1:8000/v1', Price(input=2.5, output=10.0, cached_input=1.25, cache_write=None))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from asynctg.engine.budget import CostCap
from asynctg.engine.cache import ResponseStore
from asynctg.engine.clock import Clock
from asynctg.engine.retry import DEFAULT_RETRY, RetryPolicy
from asynctg.engine.tiers import DEFAULT_BATCH_MIN, DEFAULT_FLEX_DEADLINE, FLEX_TIMEOUT, check_tier
from asynctg.engine.usage import Price, check_price, price_for
from asynctg.errors import ConfigError, require_int
from asynctg.transport import Transport

__all__ = ["CACHE_MODES", "DEFAULT_TIMEOUT", "EngineConfig", "check_params"]

#: Seconds one HTTP attempt may take; a long completion from a slow model fits in it.
DEFAULT_TIMEOUT = 120.0
#: Seconds a provider batch may take before ``BatchTimeoutError``: its 24-hour window, and an
#: hour for the provider to finalize it.
DEFAULT_BATCH_DEADLINE = 25 * 3600.0
#: What ``cache_mode`` may be (see ``ChatEngine.cache_mode``).
CACHE_MODES = ("readwrite", "record", "replay")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """A chat engine's options (see the module). ``price`` is the one given, else the model
    table's (None: unpriced); ``base_url`` is normalised (no trailing slash). ``prompt_cache``
    (default True) lets requests carry the provider's prompt-cache hints (OpenAI's
    ``prompt_cache_key``; Anthropic's ``cache_control`` breakpoints); False sends none."""

    model: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    provider: str = "openai"
    rpm: float | None = None
    tpm: float | None = None
    input_tpm: float | None = None
    output_tpm: float | None = None
    max_concurrency: int = 64
    timeout: float | None = DEFAULT_TIMEOUT
    retry: RetryPolicy = DEFAULT_RETRY
    cache: ResponseStore | str | os.PathLike[str] | None = None
    cache_sampled: bool = False
    cache_mode: str = "readwrite"
    #: a ``Price``; the two-number form (prompt, completion) is accepted and turned into one
    price: Price | None = None
    temperature: float | None = 0.0
    max_tokens: int | None = None
    seed: int | None = None
    transport: Transport | None = None
    clock: Clock | None = None
    context_window: int | None = None
    max_cost: float | CostCap | None = None
    cost_reserve_tokens: int | None = None
    redis_url: str | None = None
    redis_namespace: str = "asynctg"
    reservation_ttl: float | None = None
    prompt_cache: bool = True
    #: service tiers (asynctg.engine.tiers, asynctg.engine.batch)
    tier: str = "standard"
    flex_deadline: float = DEFAULT_FLEX_DEADLINE
    flex_timeout: float | None = FLEX_TIMEOUT
    #: flex calls in flight at most, beside (not within) max_concurrency (None: adaptive,
    #: max_concurrency times the flex/standard latency ratio clamped to 1-4x: FlexAllowance)
    flex_concurrency: int | None = None
    batch_min: int = DEFAULT_BATCH_MIN
    batch_deadline: float = DEFAULT_BATCH_DEADLINE

    def __post_init__(self) -> None:
        model = self.model
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("model must be a non-empty string, e.g. get_engine('gpt-4o')")
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ConfigError(
                    f"{name} must be a positive number (or None to learn it), got {value!r}"
                )
        n = self.max_concurrency
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {n!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout must be positive seconds or None, got {self.timeout!r}")
        require_int("context_window", self.context_window, 16, optional=True)
        require_int("cost_reserve_tokens", self.cost_reserve_tokens, 1, optional=True)
        check_tier(self.tier)
        require_int("batch_min", self.batch_min, 1)
        require_int("flex_concurrency", self.flex_concurrency, 1, optional=True)
        for name, seconds in (
            ("flex_deadline", self.flex_deadline),
            ("flex_timeout", self.flex_timeout),
            ("batch_deadline", self.batch_deadline),
        ):
            if seconds is not None and not (isinstance(seconds, int | float) and seconds >= 0):
                raise ConfigError(f"{name} must be seconds >= 0, got {seconds!r}")
        if not isinstance(self.prompt_cache, bool):
            raise ConfigError(f"prompt_cache must be True or False, got {self.prompt_cache!r}")
        price = check_price(self.price) if self.price is not None else price_for(model)
        object.__setattr__(self, "price", price)
        object.__setattr__(self, "base_url", _check_base_url(self.base_url))
        if self.cache_mode not in CACHE_MODES:
            raise ConfigError(
                f"cache_mode must be one of {', '.join(CACHE_MODES)}, got {self.cache_mode!r}"
            )
        if self.cache_mode != "readwrite" and self.cache is None:
            raise ConfigError(f"cache_mode={self.cache_mode!r} needs cache=PATH (the journal)")
        cap = self.max_cost
        if cap is not None:
            if price is None:
                raise ConfigError(
                    f"max_cost needs a price for {model!r}: pass price=tg.Price(input=, output=, "
                    "cached_input=, cache_write=) (dollars per 1M tokens) to get_engine()"
                )
            if not isinstance(cap, CostCap) and not (
                isinstance(cap, int | float) and 0 < cap < math.inf
            ):
                raise ConfigError(f"max_cost must be a positive number of dollars, got {cap!r}")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(f"redis_url must be redis://host:port/db, got {self.redis_url!r}")

    @property
    def defaults(self) -> dict[str, Any]:
        """The sampling parameters every request gets unless it says otherwise."""
        given = (("temperature", self.temperature), ("max_tokens", self.max_tokens))
        out = {k: v for k, v in given if v is not None}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def _check_base_url(base_url: str) -> str:
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError(
            "no base URL: pass base_url='http://host:port/v1' to get_engine() or set "
            "OPENAI_BASE_URL (for the built-in simulator: `asynctg sim --port 8000`, then "
            "http://127.0.0.1:8000/v1)"
        )
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
        )
    return base_url.strip().rstrip("/")


def check_params(fields: Mapping[str, Any]) -> None:
    """``ConfigError`` unless every sampling parameter in ``fields`` has a valid value."""
    t = fields.get("temperature")
    if t is not None and (not isinstance(t, int | float) or not 0 <= t <= 2):
        raise ConfigError(f"temperature must be a number within [0, 2], got {t!r}")
    p = fields.get("top_p")
    if p is not None and (not isinstance(p, int | float) or not 0 <= p <= 1):
        raise ConfigError(f"top_p must be a number within [0, 1], got {p!r}")
    m = fields.get("max_tokens")
    if m is not None and (not isinstance(m, int) or m < 1):
        raise ConfigError(f"max_tokens must be an integer >= 1, got {m!r}")
    n = fields.get("n")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    s = fields.get("seed")
    if s is not None and not isinstance(s, int):
        raise ConfigError(f"seed must be an integer, got {s!r}")
    stop = fields.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list | tuple) and all(isinstance(x, str) for x in stop))
    ):
        raise ConfigError("stop must be a string or a list of strings")
