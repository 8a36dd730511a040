"""``textgrad.engine_experimental``: the LiteLLM- and OpenAI-style engines, on asynctg's engine."""

from asynctg.compat.engine_experimental.base import EngineLM
from asynctg.compat.engine_experimental.litellm import LiteLLMEngine
from asynctg.compat.engine_experimental.openai import OpenAIEngine

__all__ = ["EngineLM", "LiteLLMEngine", "OpenAIEngine"]
