"""``textgrad.engine_experimental.openai``: ``OpenAIEngine`` (OpenAI's API, or
``OPENAI_BASE_URL``) and ``OpenAICompatibleEngine`` (whatever endpoint an ``openai`` client
points at, with everything the client carries: see ``asynctg.compat.engine._client``), both on
asynctg's engine. ``cache`` is TextGrad's: ``False``, ``True`` (on disk under
``asynctg.compat.engine.cache_dir()``) or a ``diskcache.Cache``."""

from __future__ import annotations

import os
from typing import Any

from asynctg.compat.engine import Engine, make_native
from asynctg.compat.engine._client import engine_options
from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT
from asynctg.compat.engine_experimental.base import EngineLM, cached
from asynctg.compat.engine_experimental.engine_utils import open_ai_like_formatting

__all__ = [
    "EngineLM",
    "OpenAICompatibleEngine",
    "OpenAIEngine",
    "cached",
    "open_ai_like_formatting",
]


class OpenAIEngine(Engine):
    """An OpenAI chat engine; ``OPENAI_API_KEY`` (or ``OPENAI_BASE_URL``) must be set."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        cache: Any = False,
        **kwargs: Any,
    ) -> None:
        if "base_url" not in kwargs and not (
            os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        ):
            raise ValueError("Please set the OPENAI_API_KEY environment variable.")
        native = make_native(model_string, cache=cache, **kwargs)
        super().__init__(native, system_prompt, owned=True, is_multimodal=is_multimodal)


class OpenAICompatibleEngine(OpenAIEngine):
    """The endpoint of an ``openai`` client (``OpenAI(base_url=..., api_key=...)``)."""

    def __init__(
        self,
        client: Any,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        cache: Any = False,
        **kwargs: Any,
    ) -> None:
        self.client = client
        for key, value in engine_options(client, model_string).items():
            kwargs.setdefault(key, value)
        super().__init__(model_string, system_prompt, is_multimodal, cache, **kwargs)
