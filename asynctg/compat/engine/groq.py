"""``textgrad.engine.groq``: ``ChatGroq`` on Groq's OpenAI-compatible API (``GROQ_API_KEY``),
through asynctg's engine (no provider SDK needed)."""

from asynctg.compat.engine._providers import ProviderChat
from asynctg.compat.engine.base import CachedEngine, EngineLM
from asynctg.compat.engine.engine_utils import get_image_type_from_bytes
from asynctg.compat.engine.openai import ChatOpenAI

__all__ = ["CachedEngine", "ChatGroq", "ChatOpenAI", "EngineLM", "get_image_type_from_bytes"]


class ChatGroq(ProviderChat):
    """``ChatGroq(model_string, system_prompt=..., is_multimodal=False)``, as in TextGrad."""

    routing_prefix = "groq-"
    default_model = "llama3-70b-8192"
