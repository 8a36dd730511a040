"""``textgrad.engine.cohere``: ``ChatCohere`` on Cohere (COHERE_API_KEY), through the provider's
OpenAI-compatible API and asynctg's engine (no provider SDK needed)."""

from asynctg.compat.engine._providers import ProviderChat
from asynctg.compat.engine.base import CachedEngine, EngineLM

__all__ = ["CachedEngine", "ChatCohere", "EngineLM"]


class ChatCohere(ProviderChat):
    """``ChatCohere(model_string, system_prompt=..., is_multimodal=False)``, as in TextGrad."""

    routing_prefix = ""
    default_model = "command-r-plus"
