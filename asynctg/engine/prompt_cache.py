"""Prompt-cache hints: which requests should land on the same provider cache.

Providers cache the leading part of a prompt; OpenAI routes a request by a hash of its first
tokens and, when given, its ``prompt_cache_key``, so requests that share a prefix and a key
reach the same cache machine and are billed at the cached-input price. asynctg sets one key
per run and variable: the apps open a ``run_scope(name)`` around a run, the graph and the
optimizer a nested ``cache_scope(variable_role)`` around the calls that concern one variable,
and ``ChatEngine.request`` puts ``current_key()`` on every request built inside (unless the
caller passed ``prompt_cache_key=`` itself, or the engine has ``prompt_cache=False``).

A key is a hash of the scope's parts, never their text: a run id or a role description may
carry anything a user wrote, and the key goes to the provider. The key does not enter the
response cache's or the journal's request hash (``asynctg.engine.types.request_key``): it
changes where the answer is computed, not the answer, so caches and journals hit whatever
key a request carried.

>>> with cache_scope("run-1"), cache_scope("system prompt"):
...     key = current_key()
>>> key.startswith("atg-") and len(key) == 36
True
>>> current_key() is None
True
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["MAX_KEY_CHARS", "cache_key", "cache_scope", "current_key", "run_scope"]

#: The longest ``prompt_cache_key`` accepted on a request (OpenAI's own limit is 64).
MAX_KEY_CHARS = 64

_SCOPE: ContextVar[tuple[str, ...]] = ContextVar("asynctg_prompt_cache_scope", default=())


def cache_key(*parts: str) -> str:
    """The key for a scope's parts: ``atg-`` and 32 hex digits of their SHA-256."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no ambiguity
    return "atg-" + digest.hexdigest()[:32]


@contextlib.contextmanager
def cache_scope(part: str) -> Iterator[None]:
    """Nest ``part`` (a run id, a variable's role) into the scope of the calls made inside,
    in this task and in the tasks it starts."""
    token = _SCOPE.set((*_SCOPE.get(), str(part)))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def run_scope(name: str) -> contextlib.AbstractContextManager[None]:
    """A ``cache_scope`` for a run called ``name`` (the app and its task).

    Deterministic on purpose: the same run sends byte-identical requests every time (DESIGN:
    prompts, journals and seeded answers stay reproducible), and two runs of one task share
    their prompts' prefixes anyway, so landing on the same cache is what a key is for.
    """
    return cache_scope(f"run:{name}")


def current_key() -> str | None:
    """The ``prompt_cache_key`` of the current scope, or None outside any scope."""
    parts = _SCOPE.get()
    return cache_key(*parts) if parts else None
