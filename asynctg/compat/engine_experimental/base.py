"""``textgrad.engine_experimental.base``: the ``EngineLM`` base class and the ``cached``
decorator for engines that keep replies in ``self.cache`` (a ``diskcache.Cache``-like
mapping, or False)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from asynctg.compat.engine.base import EngineLM

__all__ = ["EngineLM", "cached"]

F = TypeVar("F", bound=Callable[..., Any])


def cached(func: F) -> F:
    """Answer a ``(content, system_prompt)`` seen before from ``self.cache`` (when it is set)."""

    @functools.wraps(func)
    def wrapper(self: Any, content: Any, system_prompt: Any = None, **kwargs: Any) -> Any:
        cache: Any = getattr(self, "cache", False)
        if cache is False or cache is None:
            return func(self, content, system_prompt, **kwargs)
        key = hashlib.sha256(repr((content, system_prompt)).encode()).hexdigest()
        if key in cache:
            return cache[key]
        reply = func(self, content, system_prompt, **kwargs)
        cache[key] = reply
        return reply

    return wrapper  # type: ignore[return-value]
