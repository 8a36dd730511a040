"""``textgrad.autograd.functional``: ``sum``, ``aggregate`` and one-off LLM calls as functions.

>>> # out = llm_call(x, engine)            # LLMCall(engine, system_prompt)(x)
>>> # out = formatted_llm_call(inputs, response_role_description, engine, format_string, fields)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asynctg import prompts
from asynctg.compat.autograd import FormattedLLMCall, LLMCall, aggregate, sum
from asynctg.compat.autograd.algebra import Aggregate, Sum
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.graph import Variable as NativeVariable

__all__ = [
    "Aggregate",
    "EngineLM",
    "FormattedLLMCall",
    "LLMCall",
    "Sum",
    "Variable",
    "aggregate",
    "formatted_llm_call",
    "llm_call",
    "sum",
]


def llm_call(
    input_variable: NativeVariable,
    engine: Any = None,
    response_role_description: str | None = None,
    system_prompt: NativeVariable | None = None,
) -> Variable:
    """One LLM call on ``input_variable`` (with the backward engine when ``engine`` is None)."""
    role = response_role_description or prompts.VARIABLE_OUTPUT_DEFAULT_ROLE
    return LLMCall(engine, system_prompt)(input_variable, role)


def formatted_llm_call(
    inputs: Mapping[str, NativeVariable],
    response_role_description: str,
    engine: Any,
    format_string: str,
    fields: Mapping[str, Any] | Sequence[str],
    system_prompt: NativeVariable | None = None,
) -> Variable:
    """One LLM call whose prompt is ``format_string`` filled from ``inputs``."""
    call = FormattedLLMCall(engine, format_string, fields, system_prompt)
    return call(inputs, response_role_description)
