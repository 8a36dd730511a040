"""``textgrad.engine.openai``: ``ChatOpenAI`` (and Azure), on asynctg's engine.

``ChatOpenAI()`` without ``OPENAI_API_KEY`` (and without ``base_url``) is a ``ValueError``, as in
TextGrad. Replies are cached on disk by default (``cache=False`` turns it off), as TextGrad's
``ChatOpenAI`` caches every reply: under ``asynctg.compat.engine.cache_dir()``.
"""

from __future__ import annotations

import os
from typing import Any

from asynctg.compat.engine import OLLAMA_BASE_URL, Engine, make_native
from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT, CachedEngine, EngineLM
from asynctg.compat.engine.engine_utils import get_image_type_from_bytes
from asynctg.errors import ConfigError

__all__ = [
    "OLLAMA_BASE_URL",
    "AzureChatOpenAI",
    "CachedEngine",
    "ChatOpenAI",
    "EngineLM",
    "get_image_type_from_bytes",
]


class _KeyMissing(ConfigError):
    pass


class ChatOpenAI(Engine):
    """An OpenAI (or any OpenAI-compatible) chat engine, created as in TextGrad."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        model_string: str = "gpt-3.5-turbo-0613",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        base_url: str | None = None,
        *,
        cache: Any = True,
        **kwargs: Any,
    ) -> None:
        api_key = kwargs.pop("api_key", None)
        if base_url == OLLAMA_BASE_URL and api_key is None:
            api_key = "ollama"
        if api_key is None and base_url is None:
            api_key = os.environ.get("OPENAI_API_KEY")
            if api_key is None and not os.environ.get("OPENAI_BASE_URL"):
                raise _KeyMissing(
                    "Please set the OPENAI_API_KEY environment variable if you'd like to use "
                    "OpenAI models (or OPENAI_BASE_URL for another OpenAI-compatible server)."
                )
        native = make_native(
            model_string, base_url=base_url, api_key=api_key, cache=cache, **kwargs
        )
        super().__init__(native, system_prompt, owned=True, is_multimodal=is_multimodal)


class AzureChatOpenAI(ChatOpenAI):
    """Azure OpenAI through its OpenAI-compatible v1 API (``AZURE_OPENAI_ENDPOINT``)."""

    def __init__(
        self,
        model_string: str = "gpt-35-turbo",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        **kwargs: Any,
    ) -> None:
        endpoint = (os.environ.get("AZURE_OPENAI_ENDPOINT") or "").rstrip("/")
        if not endpoint and "base_url" not in kwargs:
            raise ValueError("Please set the AZURE_OPENAI_ENDPOINT environment variable.")
        kwargs.setdefault("base_url", f"{endpoint}/openai/v1")
        kwargs.setdefault("api_key", os.environ.get("AZURE_OPENAI_API_KEY"))
        super().__init__(model_string, system_prompt, **kwargs)
