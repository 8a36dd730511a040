"""``textgrad.autograd.llm_ops``: the LLM-call functions and their templates (TextGrad's names)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from asynctg import prompts
from asynctg.compat._lazy import defer, reads_of
from asynctg.compat._log import logger
from asynctg.compat.autograd import FormattedLLMCall, LLMCall
from asynctg.compat.autograd.function import BackwardContext, Function
from asynctg.compat.autograd.llm_backward_prompts import (
    BACKWARD_SYSTEM_PROMPT,
    CONVERSATION_START_INSTRUCTION_BASE,
    CONVERSATION_START_INSTRUCTION_CHAIN,
    CONVERSATION_TEMPLATE,
    EVALUATE_VARIABLE_INSTRUCTION,
    IN_CONTEXT_EXAMPLE_PROMPT_ADDITION,
    OBJECTIVE_INSTRUCTION_BASE,
    OBJECTIVE_INSTRUCTION_CHAIN,
)
from asynctg.compat.config import validate_engine_or_get_default
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.graph import LLMCall as NativeLLMCall
from asynctg.graph import Variable as NativeVariable
from asynctg.prompts import SYSTEM_PROMPT_DEFAULT_ROLE, VARIABLE_OUTPUT_DEFAULT_ROLE

__all__ = [
    "BACKWARD_SYSTEM_PROMPT",
    "CONVERSATION_START_INSTRUCTION_BASE",
    "CONVERSATION_START_INSTRUCTION_CHAIN",
    "CONVERSATION_TEMPLATE",
    "EVALUATE_VARIABLE_INSTRUCTION",
    "IN_CONTEXT_EXAMPLE_PROMPT_ADDITION",
    "OBJECTIVE_INSTRUCTION_BASE",
    "OBJECTIVE_INSTRUCTION_CHAIN",
    "SYSTEM_PROMPT_DEFAULT_ROLE",
    "VARIABLE_OUTPUT_DEFAULT_ROLE",
    "BackwardContext",
    "EngineLM",
    "FormattedLLMCall",
    "Function",
    "LLMCall",
    "LLMCall_with_in_context_examples",
    "Variable",
    "logger",
    "validate_engine_or_get_default",
]


class LLMCall_with_in_context_examples(LLMCall):
    """An ``LLMCall`` whose backward feedback is grounded in examples given with each call."""

    def __call__(
        self,
        input_variable: NativeVariable,
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
        in_context_examples: Sequence[str] | None = None,
    ) -> Variable:
        examples = tuple(in_context_examples or ())
        call = NativeLLMCall(self.engine, self.system_prompt, feedback_examples=examples)
        make = partial(call.__call__, input_variable, response_role_description)
        return defer(make, [input_variable], reads=reads_of(self.native))

    forward = __call__
