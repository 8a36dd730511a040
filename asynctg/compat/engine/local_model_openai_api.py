"""``textgrad.engine.local_model_openai_api``: ``ChatExternalClient`` takes an ``openai.OpenAI``
client (LM Studio, llama.cpp, vLLM, ...) and uses its base URL and key; the calls themselves go
through asynctg's engine, not through the client."""

from __future__ import annotations

from typing import Any

from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT
from asynctg.compat.engine.openai import ChatOpenAI

__all__ = ["ChatExternalClient"]


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
        self.client = client
        kwargs.setdefault("api_key", getattr(client, "api_key", None) or "none")
        base_url = str(getattr(client, "base_url", "") or "") or None
        super().__init__(model_string, system_prompt, base_url=base_url, **kwargs)
