"""Building an engine from a model name: ``get_engine``, the provider and the environment.

``get_engine`` picks the wire format (``provider=``, else Anthropic's for a ``claude-*`` model
when no OpenAI-compatible server is named), fills ``base_url`` and ``api_key`` from the
provider's environment variables, checks every option once as an ``EngineConfig`` and builds
the ``ChatEngine`` (``asynctg.engine.client``, which re-exports it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from asynctg.engine.config import EngineConfig
from asynctg.engine.providers.anthropic import ANTHROPIC_BASE_URL

if TYPE_CHECKING:
    from asynctg.engine.client import ChatEngine

__all__ = ["OPENAI_BASE_URL", "get_engine"]

#: The OpenAI API, used when a key is known but no base URL is.
OPENAI_BASE_URL = "https://api.openai.com/v1"


def get_engine(
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_concurrency: int = 64,
    **options: Any,
) -> ChatEngine:
    """An engine for any OpenAI-compatible chat-completions endpoint.

    ``base_url`` and ``api_key`` default to ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``; with a
    key but no URL, the OpenAI API is used. ``rpm``/``tpm`` are the provider's budgets (None:
    learned from rate-limit headers and 429s); ``max_concurrency`` caps requests in flight.
    Other options: ``timeout``, ``retry`` (a ``RetryPolicy``), ``cache`` (a path or a
    ``ResponseCache``), ``cache_sampled``, ``price``, ``temperature`` (default 0),
    ``max_tokens``, ``seed``, ``transport``, ``clock``, ``context_window`` (tokens; default:
    the model table, else learned from the provider's first context-length error),
    ``cache_mode`` ("readwrite", "record": send everything and journal it, "replay": answer
    everything from ``cache``, send nothing, ``ReplayMissError`` on a miss),
    ``max_cost`` (dollars, or a ``CostCap`` shared by several engines: each call's worst-case
    price is reserved before it is sent, so spending never passes it; a reservation that does
    not fit beside others outstanding waits for them to settle, and ``BudgetExceededError`` is
    raised only when the settled spending plus its worst case would pass the cap; the requests
    sent are the same as without a cap), ``cost_reserve_tokens`` (the reply tokens that cap
    reserves for a request without ``max_tokens``; default: the model's reply cap from
    ``asynctg.engine.models``, else 4096),
    ``input_tpm`` / ``output_tpm`` (separate input- and output-token budgets, for providers
    that have them), ``redis_url`` / ``redis_namespace`` / ``reservation_ttl`` (share rpm, tpm,
    cool-downs and the dollar cap with every process on that Redis:
    ``asynctg.engine.shared``), ``price`` (a ``tg.Price(input=, output=, cached_input=,
    cache_write=)`` in dollars per million tokens, or the two-number form (input, output);
    default: the model's entry in ``asynctg.engine.usage.PRICES``), ``provider`` (the
    wire-format adapter, ``asynctg.engine.providers``: "openai" or "anthropic"),
    ``prompt_cache`` (default True: OpenAI requests carry a ``prompt_cache_key`` per run and
    variable, ``asynctg.engine.prompt_cache``; Anthropic's stable prefixes get ``cache_control``
    breakpoints where that pays, ``asynctg.engine.providers.anthropic``; False: neither),
    the service tiers (``asynctg.engine.tiers``): ``tier`` (the default tier of a call),
    ``flex_deadline``, ``flex_timeout``, ``flex_concurrency`` (flex calls in flight at most,
    beside ``max_concurrency``, not within it; default: ``max_concurrency`` times the measured
    flex/standard latency ratio, clamped to 1-4x: ``asynctg.engine.tiers.FlexAllowance``),
    ``batch_min`` and ``batch_deadline``. The options are checked once, as an ``EngineConfig``
    (``engine.config``).

    **Anthropic** (``provider="anthropic"``): the Messages API, ``base_url`` and ``api_key``
    defaulting to ``ANTHROPIC_BASE_URL`` (else https://api.anthropic.com) and
    ``ANTHROPIC_API_KEY``. A ``claude-*`` model with no ``provider`` is sent there when no
    OpenAI-compatible server is named (no ``base_url`` and no ``OPENAI_BASE_URL``): with one,
    the model is asked of that server in OpenAI's format (a gateway serving Claude).

    >>> engine = get_engine("gpt-4o", base_url="http://127.0.0.1:8000/v1", rpm=600)
    """
    name = options.pop("provider", None)
    if name is None:
        claude = isinstance(model, str) and model.lower().startswith("claude")
        openai_named = base_url is not None or _env("OPENAI_BASE_URL") is not None
        name = "anthropic" if claude and not openai_named else "openai"
    if name == "anthropic":  # (never OpenAI's key: it would go to another company)
        if api_key is None:
            api_key = _env("ANTHROPIC_API_KEY")
        if base_url is None:
            base_url = _env("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL
    else:
        if api_key is None:
            api_key = _env("OPENAI_API_KEY")
        if base_url is None:
            base_url = _env("OPENAI_BASE_URL") or (OPENAI_BASE_URL if api_key else "")
    config = EngineConfig(
        model=model,
        base_url=base_url,
        api_key=api_key,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency,
        provider=name,
        **options,
    )
    from asynctg.engine.client import ChatEngine  # (it re-exports this module: no cycle)

    return ChatEngine(config)


def _env(name: str) -> str | None:
    """An environment variable's value; None when unset or empty."""
    return os.environ.get(name) or None
