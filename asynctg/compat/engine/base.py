"""``textgrad.engine.base``: the ``EngineLM`` base class custom engines derive from.

>>> from asynctg.compat.engine.base import EngineLM
>>> class Upper(EngineLM):
...     model_string = "upper"
...     def generate(self, prompt, system_prompt=None, **kwargs):
...         return prompt.upper()
...     def __call__(self, prompt, **kwargs):
...         return self.generate(prompt, **kwargs)
>>> Upper()("hi")
'HI'

Any ``EngineLM`` (or any object with such a ``generate``) can be given to the compat API: its
calls are scheduled by asynctg, and run in a thread pool, so a minibatch's calls overlap.
"""

from __future__ import annotations

import abc
import hashlib
import os
import shelve
from typing import Any

import msgspec

from asynctg.engine.types import ChatResult

__all__ = ["DEFAULT_SYSTEM_PROMPT", "CachedEngine", "DiskCacheStore", "EngineLM"]

#: TextGrad's default system prompt for its engines.
DEFAULT_SYSTEM_PROMPT = "You are a helpful, creative, and smart assistant."


class EngineLM(abc.ABC):
    """TextGrad's engine interface: ``generate(prompt, system_prompt=None, **kwargs) -> str``."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    model_string: str

    @abc.abstractmethod
    def generate(self, prompt: Any, system_prompt: str | None = None, **kwargs: Any) -> Any:
        """One completion for ``prompt`` (text, or a list of text and image bytes)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.generate(*args, **kwargs)


def _open_store(cache_path: str) -> Any:
    """A ``diskcache.Cache`` at ``cache_path`` when diskcache is installed, else a stdlib
    ``shelve`` file there (asynctg does not depend on diskcache; engines deriving from
    ``CachedEngine`` work on a fresh install)."""
    try:
        import diskcache  # type: ignore[import-untyped]
    except ImportError:
        os.makedirs(cache_path, exist_ok=True)
        return shelve.open(os.path.join(cache_path, "replies"))
    return diskcache.Cache(cache_path)


class CachedEngine:
    """TextGrad's mixin caching replies on disk, keyed by the prompt (see ``_open_store``)."""

    def __init__(self, cache_path: str) -> None:
        super().__init__()
        self.cache_path = cache_path
        self.cache = _open_store(cache_path)

    def _hash_prompt(self, prompt: str) -> str:
        return hashlib.sha256(f"{prompt}".encode()).hexdigest()

    def _check_cache(self, prompt: str) -> Any:
        return self.cache[prompt] if prompt in self.cache else None

    def _save_cache(self, prompt: str, response: str) -> None:
        self.cache[prompt] = response

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["cache"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.cache = _open_store(self.cache_path)


class DiskCacheStore:
    """A ``diskcache.Cache`` as an engine's response cache (``get_engine(..., cache=Cache())``)."""

    _encoder = msgspec.msgpack.Encoder()
    _decoder = msgspec.msgpack.Decoder(ChatResult)

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def get(self, key: str) -> ChatResult | None:
        raw = self.cache.get(f"asynctg:{key}")
        return None if raw is None else self._decoder.decode(raw)

    def __contains__(self, key: object) -> bool:
        return f"asynctg:{key}" in self.cache

    def put(self, key: str, result: ChatResult) -> None:
        self.cache.set(f"asynctg:{key}", self._encoder.encode(result))

    def close(self) -> None:
        """The ``diskcache.Cache`` belongs to the caller, who closes it."""
