"""``textgrad.engine.anthropic``: ``ChatAnthropic``
on Anthropic (ANTHROPIC_API_KEY), through the provider's
OpenAI-compatible API and asynctg's engine (no provider SDK needed)."""

from asynctg.compat.engine._providers import ProviderChat
from asynctg.compat.engine.base import CachedEngine, EngineLM
from asynctg.compat.engine.engine_utils import get_image_type_from_bytes

__all__ = ["CachedEngine", "ChatAnthropic", "EngineLM", "get_image_type_from_bytes"]


class ChatAnthropic(ProviderChat):
    """``ChatAnthropic(model_string, system_prompt=..., is_multimodal=False)``, as in TextGrad."""

    routing_prefix = ""
    default_model = "claude-3-opus-20240229"
