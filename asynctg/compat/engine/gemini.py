"""``textgrad.engine.gemini``: ``ChatGemini``
on Google Gemini (GEMINI_API_KEY or GOOGLE_API_KEY), through the provider's
OpenAI-compatible API and asynctg's engine (no provider SDK needed)."""

from asynctg.compat.engine._providers import ProviderChat
from asynctg.compat.engine.base import CachedEngine, EngineLM

__all__ = ["CachedEngine", "ChatGemini", "EngineLM"]


class ChatGemini(ProviderChat):
    """``ChatGemini(model_string, system_prompt=..., is_multimodal=False)``, as in TextGrad."""

    routing_prefix = ""
    default_model = "gemini-pro"
