"""Settings of the simulated provider: latency models, budgets, faults, answers.

A :class:`SimConfig` is validated when it is built, so a typo in a benchmark's settings fails at
once with a message naming what is accepted, instead of silently simulating something else.

>>> cfg = SimConfig(latency="lognormal:100ms,0.5", rpm=600, fault_rate=0.05, faults=("500", "drop"))
>>> cfg.latency
LatencyModel(kind='lognormal', a=0.1, b=0.5)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from random import Random
from typing import Any, Literal

from asynctg.sim.billing import DEFAULT_ANTHROPIC_PRICES, DEFAULT_OPENAI_PRICES, Prices

__all__ = [
    "FAULT_KINDS",
    "LatencyModel",
    "Responder",
    "SimConfig",
    "parse_duration",
    "parse_latency",
]

#: Every fault the simulator can inject. HTTP statuses are answered with an error body; "drop"
#: closes the connection without a response; "malformed" is a 200 whose body is not JSON;
#: "truncated" a 200 whose JSON stops midway; "slow" sleeps ``slow_seconds`` and then answers
#: normally; "empty_choices" a 200 with ``"choices": []``; "no_content" a 200 whose message has
#: no ``content``; "529" Anthropic's ``overloaded_error`` (the OpenAI path answers it as a 503
#: with OpenAI's JSON error body, since OpenAI never sends 529). On the Anthropic path a stream
#: that faults with "500" or "529" starts normally and ends with an ``error`` event.
FAULT_KINDS: tuple[str, ...] = (
    "500",
    "502",
    "503",
    "504",
    "529",
    "drop",
    "malformed",
    "truncated",
    "slow",
    "empty_choices",
    "no_content",
)

#: A function overriding the answer text: gets the decoded request body, returns the text or
#: ``None`` to fall back to the default rules.
Responder = Callable[[Mapping[str, Any]], "str | None"]

LatencyKind = Literal["fixed", "uniform", "lognormal", "exp"]

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s|m|min)?\s*$")
_UNIT_SECONDS = {None: 1.0, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0}

_LATENCY_HELP = (
    'accepted latency specs: "0", "100ms", "0.1s", "2s", "uniform:50ms,150ms", '
    '"lognormal:100ms,0.5" (median, sigma), "exp:100ms" (mean), or a LatencyModel'
)


def parse_duration(text: str) -> float:
    """Parse ``"100ms"``, ``"2s"``, ``"250us"`` or ``"1m"`` into seconds.

    The unit is required (only ``"0"`` may go without): a bare ``"100"`` is read as 100 ms by
    some tools and 100 s by others, and a simulator taking 100 s per answer looks hung.

    >>> parse_duration("150ms")
    0.15
    """
    match = _DURATION_RE.match(text)
    if match is None or (match.group(2) is None and float(match.group(1)) != 0):
        raise ValueError(
            f"cannot parse duration {text!r}: expected a non-negative number with a unit us, "
            'ms, s or m, e.g. "100ms", "0.1s", "2s" (only "0" needs no unit)'
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """A distribution of response latencies, in seconds.

    ``kind`` is one of ``"fixed"`` (always ``a``), ``"uniform"`` (between ``a`` and ``b``),
    ``"lognormal"`` (median ``a``, sigma ``b``) or ``"exp"`` (exponential with mean ``a``).
    Build one from a spec string with :func:`parse_latency`.
    """

    kind: LatencyKind = "fixed"
    a: float = 0.0
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "uniform", "lognormal", "exp"):
            raise ValueError(
                f"unknown latency kind {self.kind!r}: accepted kinds are fixed, uniform, "
                "lognormal, exp"
            )
        if not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a < 0 or self.b < 0:
            raise ValueError(f"latency parameters must be finite and >= 0, got {self!r}")
        if self.kind == "uniform" and self.b < self.a:
            raise ValueError(f"uniform latency needs low <= high, got {self.a} > {self.b}")

    @property
    def is_zero(self) -> bool:
        """True when every draw is exactly 0, so the server can skip sleeping altogether."""
        return self.a == 0.0 and (self.kind != "uniform" or self.b == 0.0)

    def draw(self, rng: Random) -> float:
        """One latency in seconds, drawn from ``rng``."""
        kind = self.kind
        if kind == "fixed":
            return self.a
        if kind == "uniform":
            return rng.uniform(self.a, self.b)
        if kind == "lognormal":
            if self.a == 0.0:
                return 0.0
            return rng.lognormvariate(math.log(self.a), self.b)
        # exponential: mean a
        if self.a == 0.0:
            return 0.0
        return rng.expovariate(1.0 / self.a)

    def mean(self) -> float:
        """The distribution's mean, in seconds."""
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "lognormal":
            return self.a * math.exp(self.b * self.b / 2)
        return self.a

    def spec(self) -> str:
        """The spec string that :func:`parse_latency` turns back into this model."""
        if self.kind == "fixed":
            return f"{self.a}s"
        if self.kind == "uniform":
            return f"uniform:{self.a}s,{self.b}s"
        if self.kind == "lognormal":
            return f"lognormal:{self.a}s,{self.b}"
        return f"exp:{self.a}s"


def parse_latency(spec: str | float | LatencyModel) -> LatencyModel:
    """Turn a latency spec into a :class:`LatencyModel`.

    Accepted: a number of seconds, or a duration with its unit (``"0"``, ``"100ms"``, ``"0.1s"``,
    ``"2s"``; a bare ``"100"`` is refused: milliseconds or seconds?),
    ``"uniform:LOW,HIGH"``, ``"lognormal:MEDIAN,SIGMA"`` (sigma is unitless),
    ``"exp:MEAN"``, or a :class:`LatencyModel` (returned as is).

    >>> parse_latency("uniform:50ms,150ms")
    LatencyModel(kind='uniform', a=0.05, b=0.15)
    """
    if isinstance(spec, LatencyModel):
        return spec
    if isinstance(spec, bool):
        raise ValueError(f"invalid latency {spec!r}; {_LATENCY_HELP}")
    if isinstance(spec, int | float):
        if not math.isfinite(spec) or spec < 0:
            raise ValueError(f"invalid latency {spec!r}; {_LATENCY_HELP}")
        return LatencyModel("fixed", float(spec))
    if not isinstance(spec, str):
        raise ValueError(f"invalid latency {spec!r}; {_LATENCY_HELP}")
    text = spec.strip().lower()
    kind, sep, rest = text.partition(":")
    try:
        if not sep:
            return LatencyModel("fixed", parse_duration(text))
        args = [part.strip() for part in rest.split(",")]
        if kind in ("fixed", "constant") and len(args) == 1:
            return LatencyModel("fixed", parse_duration(args[0]))
        if kind == "uniform" and len(args) == 2:
            return LatencyModel("uniform", parse_duration(args[0]), parse_duration(args[1]))
        if kind == "lognormal" and len(args) == 2:
            return LatencyModel("lognormal", parse_duration(args[0]), float(args[1]))
        if kind in ("exp", "exponential") and len(args) == 1:
            return LatencyModel("exp", parse_duration(args[0]))
    except ValueError as exc:
        raise ValueError(f"invalid latency {spec!r} ({exc}); {_LATENCY_HELP}") from None
    raise ValueError(f"invalid latency {spec!r}; {_LATENCY_HELP}")


def _check_limit(name: str, value: int | None) -> None:
    # bool is an int subclass; True as a budget is always a mistake
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None (unlimited), got {value!r}")


def _check_number(name: str, value: Any, *, low: float, high: float = math.inf) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value <= high
        or not math.isfinite(value)
    ):
        bound = f"in [{low}, {high}]" if high < math.inf else f"finite and >= {low}"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def _normalise_faults(faults: Iterable[str | int] | str) -> tuple[str, ...]:
    items = faults.split(",") if isinstance(faults, str) else list(faults)
    kinds = tuple(str(item).strip() for item in items if str(item).strip())
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise ValueError(
            f"unknown fault kind(s) {', '.join(map(repr, unknown))}: accepted kinds are "
            f"{', '.join(FAULT_KINDS)}"
        )
    return kinds


@dataclass(slots=True, kw_only=True)
class SimConfig:
    """Everything that shapes the simulator's behaviour; validated on construction.

    ``latency`` accepts a spec string (see :func:`parse_latency`), seconds, or a
    :class:`LatencyModel`, and always holds a :class:`LatencyModel` afterwards; ``faults``
    accepts any iterable of kinds (or a comma-separated string) and always holds a tuple.
    Invalid values raise :class:`ValueError` saying what is accepted.
    """

    latency: LatencyModel | str | float = "0"
    #: extra latency per completion token: completion_tokens / tokens_per_second seconds
    tokens_per_second: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    fault_rate: float = 0.0
    #: any sequence of kinds, or one comma-separated string; stored as a tuple
    #: fast faults by default; add "slow" (a response held for slow_seconds) to test timeouts
    faults: Sequence[str] = ("500", "503", "drop", "malformed")
    slow_seconds: float = 30.0
    seed: int = 0
    quota_tokens: int | None = None
    context_window: int | None = None
    #: rough length of backward (feedback) replies in tokens; real models write a few hundred
    feedback_tokens: int | None = 300
    api_key: str | None = None
    rate_limit_headers: bool = True
    #: send only ``x-ratelimit-limit-*`` (no remaining/reset), as some gateways do
    rate_limit_headers_limit_only: bool = False
    #: a 429 carries only ``retry-after`` in whole seconds (no ``retry-after-ms``), as many
    #: gateways and self-hosted servers send
    retry_after_whole_seconds: bool = False
    record: bool = False
    responder: Responder | None = None
    model_name: str = "sim-1"
    # --- Anthropic Messages API budgets (None: unlimited); separate from rpm/tpm above
    anthropic_rpm: int | None = None
    anthropic_itpm: int | None = None
    anthropic_otpm: int | None = None
    # --- prompt prefix cache (both APIs)
    prompt_cache: bool = True
    #: seconds a remembered prefix lives after its last use, on the simulator's clock
    prompt_cache_ttl: float = 300.0
    prompt_cache_max_entries: int = 65536
    #: OpenAI cache machines; > 1 makes prompt_cache_key matter (see asynctg.sim.prefix_cache)
    prompt_cache_shards: int = 1
    # --- prices (dollars per million tokens) behind the provider-side bill
    openai_prices: Prices | dict[str, Any] = DEFAULT_OPENAI_PRICES
    anthropic_prices: Prices | dict[str, Any] = DEFAULT_ANTHROPIC_PRICES
    # --- OpenAI flex processing (service_tier "flex")
    #: flex latency = drawn latency * this factor
    flex_latency_factor: float = 3.0
    #: share of flex requests refused with 429 resource_unavailable (never billed)
    flex_unavailable_rate: float = 0.0
    # --- batch APIs (OpenAI /v1/batches, Anthropic /v1/messages/batches)
    #: seconds on the simulator's clock from creation until a batch has ended
    batch_completion_seconds: float = 60.0
    #: share of batch requests that fail (an error line, an "errored" result)
    batch_failure_rate: float = 0.0
    #: when true a batch never finishes in time: at the end of its 24 h window it expires with
    #: its first half done and the rest expired
    batch_expire: bool = False
    _latency_model: LatencyModel = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._latency_model = parse_latency(self.latency)
        self.latency = self._latency_model
        if self.tokens_per_second is not None and (
            isinstance(self.tokens_per_second, bool)
            or not isinstance(self.tokens_per_second, int | float)
            or not self.tokens_per_second > 0
        ):
            raise ValueError(
                f"tokens_per_second must be a positive number or None, got "
                f"{self.tokens_per_second!r}"
            )
        _check_limit("rpm", self.rpm)
        _check_limit("tpm", self.tpm)
        _check_limit("quota_tokens", self.quota_tokens)
        _check_limit("context_window", self.context_window)
        _check_limit("feedback_tokens", self.feedback_tokens)
        if (
            isinstance(self.fault_rate, bool)
            or not isinstance(self.fault_rate, int | float)
            or not 0.0 <= self.fault_rate <= 1.0
        ):
            raise ValueError(f"fault_rate must be a number in [0, 1], got {self.fault_rate!r}")
        self.faults = _normalise_faults(self.faults)
        if self.fault_rate > 0 and not self.faults:
            raise ValueError(
                f"fault_rate > 0 needs at least one fault kind; accepted kinds are "
                f"{', '.join(FAULT_KINDS)}"
            )
        if (
            isinstance(self.slow_seconds, bool)
            or not isinstance(self.slow_seconds, int | float)
            or not 0.0 <= self.slow_seconds < math.inf
        ):
            raise ValueError(
                f"slow_seconds must be a finite number >= 0, got {self.slow_seconds!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be a non-empty string or None (no authentication)")
        if self.responder is not None and not callable(self.responder):
            raise ValueError("responder must be a callable(request_dict) -> str | None, or None")
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError("model_name must be a non-empty string")
        _check_limit("anthropic_rpm", self.anthropic_rpm)
        _check_limit("anthropic_itpm", self.anthropic_itpm)
        _check_limit("anthropic_otpm", self.anthropic_otpm)
        _check_limit("prompt_cache_max_entries", self.prompt_cache_max_entries)
        _check_limit("prompt_cache_shards", self.prompt_cache_shards)
        for name in ("prompt_cache", "batch_expire"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_number("prompt_cache_ttl", self.prompt_cache_ttl, low=0.0)
        _check_number("flex_latency_factor", self.flex_latency_factor, low=0.0)
        _check_number("batch_completion_seconds", self.batch_completion_seconds, low=0.0)
        _check_number("flex_unavailable_rate", self.flex_unavailable_rate, low=0.0, high=1.0)
        _check_number("batch_failure_rate", self.batch_failure_rate, low=0.0, high=1.0)
        self.openai_prices = Prices.from_value(self.openai_prices)
        self.anthropic_prices = Prices.from_value(self.anthropic_prices)

    @property
    def latency_model(self) -> LatencyModel:
        """The parsed latency distribution."""
        return self._latency_model

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names accepted by the constructor and by ``SimServer.update``."""
        return tuple(f.name for f in fields(cls) if f.init)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view of the settings (the responder is shown by name only)."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            value = getattr(self, name)
            if name == "latency":
                value = self._latency_model.spec()
            elif name == "faults":
                value = list(value)
            elif name == "responder":
                value = None if value is None else getattr(value, "__name__", repr(value))
            elif name == "api_key":
                value = None if value is None else "***"
            elif isinstance(value, Prices):
                value = value.to_dict()
            out[name] = value
        return out
