"""``textgrad.engine_experimental.litellm``: ``LiteLLMEngine`` (``get_engine("experimental:X")``).

TextGrad routes these through LiteLLM to any provider; here the model goes to the
OpenAI-compatible endpoint in ``OPENAI_BASE_URL`` (else OpenAI's API), which covers LiteLLM's
proxy, vLLM, llama.cpp, Ollama and hosted OpenAI-compatible APIs. ``cache`` is TextGrad's:
``False`` (default), ``True`` (on disk under ``asynctg.compat.engine.cache_dir()``), or a
``diskcache.Cache``.
"""

from __future__ import annotations

from typing import Any

from asynctg.compat.engine import Engine, make_native
from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT
from asynctg.compat.engine_experimental.base import EngineLM, cached
from asynctg.compat.engine_experimental.engine_utils import open_ai_like_formatting

__all__ = ["EngineLM", "LiteLLMEngine", "cached", "open_ai_like_formatting"]


class LiteLLMEngine(Engine):
    """An engine for ``model_string`` on the OpenAI-compatible endpoint (see the module)."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = True,
        cache: Any = False,
        **kwargs: Any,
    ) -> None:
        native = make_native(model_string, cache=cache, **kwargs)
        super().__init__(native, system_prompt, owned=True, is_multimodal=is_multimodal)
