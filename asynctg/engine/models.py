"""What is known of models by name: their context windows (and the lookup prices share).

A provider may serve a model under a dated snapshot name (``gpt-4o-2024-08-06``); lookups match
the longest table entry the name starts with. A model missing here has no known window until
``get_engine(..., context_window=N)`` says it or a context-length 400 names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["CONTEXT_WINDOWS", "context_window_for", "lookup"]

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
