"""``textgrad.engine.local_model_openai_api``: ``ChatExternalClient`` takes an ``openai`` client
(LM Studio, llama.cpp, vLLM, Azure, ...) and sends what that client would send (base URL,
credential, default headers and query, timeout; see ``asynctg.compat.engine._client`` for the
exact list and what is not carried) through asynctg's engine, not through the client.
"""

from __future__ import annotations

import os
from typing import Any

from asynctg.compat._log import logger
from asynctg.compat.engine._client import engine_options
from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT
from asynctg.compat.engine.openai import ChatOpenAI

__all__ = ["ChatExternalClient", "ChatOpenAI", "logger"]


class ChatExternalClient(ChatOpenAI):
    """``ChatExternalClient(client=OpenAI(base_url=..., api_key=...), model_string=...)``."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        client: Any,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        **kwargs: Any,
    ) -> None:
        if os.getenv("OPENAI_API_KEY") is None and getattr(client, "api_key", None):
            # What TextGrad does (and warns about), for code that reads the variable later.
            logger.warning("OPENAI_API_KEY not set. Setting it from client.")
            os.environ["OPENAI_API_KEY"] = client.api_key
        self.client = client
        for key, value in engine_options(client, model_string).items():
            kwargs.setdefault(key, value)
        super().__init__(model_string, system_prompt, **kwargs)
