"""The provider engines of TextGrad's ``textgrad.engine.<provider>`` modules, each an OpenAI
(chat-completions) compatible endpoint driven by asynctg's one engine (see ``get_engine``)."""

from __future__ import annotations

from typing import Any

from asynctg.compat.engine import _provider
from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT
from asynctg.compat.engine.openai import ChatOpenAI
from asynctg.errors import ConfigError


class ProviderChat(ChatOpenAI):
    """A ``ChatOpenAI`` on the provider that ``routing_prefix + model_string`` routes to."""

    routing_prefix = ""
    default_model = ""

    def __init__(
        self,
        model_string: str | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        **kwargs: Any,
    ) -> None:
        model_string = model_string or self.default_model
        model, base_url, api_key = _provider(self.routing_prefix + model_string)
        kwargs.setdefault("base_url", base_url)
        if api_key is not None:
            kwargs.setdefault("api_key", api_key)
        if kwargs.get("api_key") is None and "localhost" not in str(kwargs["base_url"]):
            raise ConfigError(
                f"{type(self).__name__} needs an API key: set the provider's key variable "
                f"(see asynctg.compat.engine) or pass api_key="
            )
        kwargs.setdefault("cache", True)
        super().__init__(model, system_prompt, is_multimodal, **kwargs)
