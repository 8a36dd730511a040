"""``textgrad.engine.bedrock``: ``ChatBedrockEngine`` through an OpenAI-compatible Bedrock
endpoint. asynctg does not sign AWS requests: give ``base_url=`` (Bedrock's OpenAI-compatible
URL, or a gateway in front of Bedrock) and ``api_key=`` (a Bedrock API key), else
``ConfigError``."""

from __future__ import annotations

from typing import Any

from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT, CachedEngine, EngineLM
from asynctg.compat.engine.engine_utils import get_image_type_from_bytes
from asynctg.compat.engine.openai import ChatOpenAI
from asynctg.errors import ConfigError

__all__ = ["CachedEngine", "ChatBedrockEngine", "EngineLM", "get_image_type_from_bytes"]


class ChatBedrockEngine(ChatOpenAI):
    """A Bedrock model behind an OpenAI-compatible URL (see the module)."""

    def __init__(
        self,
        model_string: str = "anthropic.claude-3-sonnet-20240229-v1:0",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        **kwargs: Any,
    ) -> None:
        if not kwargs.get("base_url"):
            raise ConfigError(
                "ChatBedrockEngine under asynctg needs base_url= (an OpenAI-compatible Bedrock "
                "endpoint) and api_key=; asynctg does not sign AWS requests"
            )
        super().__init__(model_string, system_prompt, is_multimodal, **kwargs)
