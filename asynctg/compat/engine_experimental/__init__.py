"""``textgrad.engine_experimental``: the LiteLLM-style engines, here on asynctg's engine."""

from asynctg.compat.engine_experimental.base import EngineLM
from asynctg.compat.engine_experimental.litellm import LiteLLMEngine

__all__ = ["EngineLM", "LiteLLMEngine"]
