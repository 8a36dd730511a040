"""``textgrad.engine.together``: ``ChatTogether``
on Together (TOGETHER_API_KEY), through the provider's
OpenAI-compatible API and asynctg's engine (no provider SDK needed)."""

from asynctg.compat.engine._providers import ProviderChat
from asynctg.compat.engine.base import CachedEngine, EngineLM

__all__ = ["CachedEngine", "ChatTogether", "EngineLM"]


class ChatTogether(ProviderChat):
    """``ChatTogether(model_string, system_prompt=..., is_multimodal=False)``, as in TextGrad."""

    routing_prefix = "together-"
    default_model = "meta-llama/Llama-3-70b-chat-hf"
