"""What is known of models by name: context windows, reply caps (and the lookup prices share).

A provider may serve a model under a dated snapshot name (``gpt-4o-2024-08-06``); lookups match
the longest table entry the name starts with. A model missing here has no known window until
``get_engine(..., context_window=N)`` says it or a context-length 400 names it. A model missing
from ``MAX_OUTPUT_TOKENS`` has no known reply cap: a dollar cap then reserves
``get_engine(..., cost_reserve_tokens=N)`` reply tokens per call (see ``asynctg.engine.client``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "CONTEXT_WINDOWS",
    "MAX_OUTPUT_TOKENS",
    "context_window_for",
    "lookup",
    "max_output_tokens_for",
]

T = TypeVar("T")

#: Context windows in tokens (prompt and completion together), from the providers' model pages.
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}

#: The most tokens one reply may have, from the providers' model pages: the worst case a dollar
#: cap reserves for a request that sets no ``max_tokens`` (nothing is added to the request).
MAX_OUTPUT_TOKENS: dict[str, int] = {
    "gpt-4o": 16_384,
    "gpt-4o-mini": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.1-mini": 32_768,
    "gpt-4.1-nano": 32_768,
    "gpt-4-turbo": 4_096,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 4_096,
    "o1": 100_000,
    "o3": 100_000,
    "o3-mini": 100_000,
    "o4-mini": 100_000,
}


def lookup(table: Mapping[str, T], model: str) -> T | None:
    """``table[model]``, or the entry of the longest name ``model`` extends with ``-...``."""
    if model in table:
        return table[model]
    best = None
    for name in table:
        if model.startswith(name + "-") and (best is None or len(name) > len(best)):
            best = name
    return table[best] if best is not None else None


def context_window_for(model: str) -> int | None:
    """The context window of ``model`` in tokens, if the table knows it."""
    return lookup(CONTEXT_WINDOWS, model)


def max_output_tokens_for(model: str) -> int | None:
    """The most tokens one reply of ``model`` may have, if the table knows it."""
    return lookup(MAX_OUTPUT_TOKENS, model)
