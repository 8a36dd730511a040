"""``textgrad.autograd.multimodal_ops``: the image-and-text LLM calls (TextGrad's names)."""

from asynctg.compat._log import logger
from asynctg.compat.autograd import MultimodalLLMCall, OrderedFieldsMultimodalLLMCall
from asynctg.compat.autograd.function import BackwardContext, Function
from asynctg.compat.autograd.llm_backward_prompts import (
    BACKWARD_SYSTEM_PROMPT,
    CONVERSATION_START_INSTRUCTION_BASE,
    CONVERSATION_START_INSTRUCTION_CHAIN,
    EVALUATE_VARIABLE_INSTRUCTION,
    OBJECTIVE_INSTRUCTION_BASE,
    OBJECTIVE_INSTRUCTION_CHAIN,
)
from asynctg.compat.autograd.multimodal_backward_prompts import MULTIMODAL_CONVERSATION_TEMPLATE
from asynctg.compat.config import validate_engine_or_get_default
from asynctg.compat.engine import validate_multimodal_engine
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.prompts import SYSTEM_PROMPT_DEFAULT_ROLE, VARIABLE_OUTPUT_DEFAULT_ROLE

__all__ = [
    "BACKWARD_SYSTEM_PROMPT",
    "CONVERSATION_START_INSTRUCTION_BASE",
    "CONVERSATION_START_INSTRUCTION_CHAIN",
    "EVALUATE_VARIABLE_INSTRUCTION",
    "MULTIMODAL_CONVERSATION_TEMPLATE",
    "OBJECTIVE_INSTRUCTION_BASE",
    "OBJECTIVE_INSTRUCTION_CHAIN",
    "SYSTEM_PROMPT_DEFAULT_ROLE",
    "VARIABLE_OUTPUT_DEFAULT_ROLE",
    "BackwardContext",
    "EngineLM",
    "Function",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "Variable",
    "logger",
    "validate_engine_or_get_default",
    "validate_multimodal_engine",
]
