"""``textgrad.engine.vllm``: ``ChatVLLM``
on a vLLM server (VLLM_BASE_URL, default http://localhost:8000/v1), through the provider's
OpenAI-compatible API and asynctg's engine (no provider SDK needed)."""

from asynctg.compat.engine._providers import ProviderChat
from asynctg.compat.engine.base import CachedEngine, EngineLM

__all__ = ["CachedEngine", "ChatVLLM", "EngineLM"]


class ChatVLLM(ProviderChat):
    """``ChatVLLM(model_string, system_prompt=..., is_multimodal=False)``, as in TextGrad."""

    routing_prefix = "vllm-"
    default_model = "meta-llama/Meta-Llama-3-8B-Instruct"
