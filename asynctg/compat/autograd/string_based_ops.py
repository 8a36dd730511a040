"""``textgrad.autograd.string_based_ops``: ``StringBasedFunction`` and its templates."""

from asynctg.compat._log import logger
from asynctg.compat.autograd import StringBasedFunction
from asynctg.compat.autograd.function import BackwardContext, Function
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.prompts import BACKWARD_SYSTEM_PROMPT
from asynctg.prompts import TEXTGRAD_TEMPLATES as _T

__all__ = [
    "BACKWARD_SYSTEM_PROMPT",
    "CONVERSATION_START_INSTRUCTION_STRING_FN_BASE",
    "CONVERSATION_START_INSTRUCTION_STRING_FN_CHAIN",
    "CONVERSATION_TEMPLATE_STRING",
    "EVALUATE_VARIABLE_INSTRUCTION",
    "OBJECTIVE_INSTRUCTION_BASE",
    "OBJECTIVE_INSTRUCTION_CHAIN",
    "BackwardContext",
    "EngineLM",
    "Function",
    "StringBasedFunction",
    "Variable",
    "logger",
]

CONVERSATION_TEMPLATE_STRING = _T["CONVERSATION_TEMPLATE_STRING"]
CONVERSATION_START_INSTRUCTION_STRING_FN_CHAIN = _T[
    "CONVERSATION_START_INSTRUCTION_STRING_FN_CHAIN"
]
CONVERSATION_START_INSTRUCTION_STRING_FN_BASE = _T["CONVERSATION_START_INSTRUCTION_STRING_FN_BASE"]
OBJECTIVE_INSTRUCTION_CHAIN = _T["OBJECTIVE_INSTRUCTION_CHAIN_STRING_FN"]
OBJECTIVE_INSTRUCTION_BASE = _T["OBJECTIVE_INSTRUCTION_BASE"]
EVALUATE_VARIABLE_INSTRUCTION = _T["EVALUATE_VARIABLE_INSTRUCTION"]
