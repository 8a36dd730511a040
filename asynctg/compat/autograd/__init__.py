"""TextGrad's ``tg.autograd`` namespace, blocking: the differentiable functions.

Each class wraps the native one (``asynctg.compat._blocking``) with a blocking ``__call__`` (and
``forward``); the graph records the native function, so backward rules are the native ones and
a compat graph differentiates exactly like a native graph.

>>> import asynctg.compat as tg
>>> tg.autograd.StringBasedFunction  # doctest: +ELLIPSIS
<class '...StringBasedFunction'>
"""

from __future__ import annotations

import abc
import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from asynctg import prompts
from asynctg.compat._blocking import Blocking
from asynctg.compat._lazy import defer, is_pending, reads_of
from asynctg.compat._log import forward_logged, logger
from asynctg.compat._loop import run
from asynctg.compat.engine import Engine, native_engine
from asynctg.compat.variable import Variable, adopt
from asynctg.engine.client import ChatEngine
from asynctg.graph import FormattedLLMCall as NativeFormattedLLMCall
from asynctg.graph import LLMCall as NativeLLMCall
from asynctg.graph import Module as NativeModule
from asynctg.graph import MultimodalLLMCall as NativeMultimodalLLMCall
from asynctg.graph import OrderedFieldsMultimodalLLMCall as NativeOrderedFieldsMultimodalLLMCall
from asynctg.graph import StringBasedFunction as NativeStringBasedFunction
from asynctg.graph import Variable as NativeVariable
from asynctg.graph import sum as native_sum
from asynctg.graph.variable import read_value
from asynctg.optim.aggregation import aggregate as native_aggregate

__all__ = [
    "FormattedLLMCall",
    "LLMCall",
    "LLMCall_with_in_context_examples",
    "Module",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "StringBasedFunction",
    "aggregate",
    "sum",
]

AnyEngine = Engine | ChatEngine | str | None


def sum(variables: Sequence[NativeVariable]) -> Variable:
    """Concatenate variables into one; its feedback reaches each of them (no LLM call)."""
    if any(is_pending(v) for v in variables):
        return defer(partial(_now, native_sum, variables), variables)
    return adopt(native_sum(variables))


def aggregate(variables: Sequence[NativeVariable]) -> Variable:
    """Like ``sum``, but feedback flowing back through it is merged into one by an LLM call."""
    if any(is_pending(v) for v in variables):
        return defer(partial(_now, native_aggregate, variables), variables)
    return adopt(native_aggregate(variables))


async def _now(fn: Callable[..., NativeVariable], *args: Any) -> NativeVariable:
    return fn(*args)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _as_it_was(variable: NativeVariable) -> NativeVariable:
    """``variable`` itself, or a stand-in holding the value it had when the call was made."""
    value = read_value(variable)
    if value == variable.value:
        return variable
    return adopt(
        NativeVariable(value, requires_grad=False, role_description=variable.role_description)
    )


class Module(NativeModule):
    """TextGrad's ``Module``: a ``forward`` that calling the module runs; ``parameters()``
    returns none unless overridden (TextGrad does not require it)."""

    def parameters(self) -> list[NativeVariable]:
        return []

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's computation (blocking, built from compat calls)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)


class LLMCall(Blocking[NativeLLMCall], native=NativeLLMCall):
    """One LLM call, ``LLMCall(engine, system_prompt)(x)``; blocks until the reply is in."""

    def __init__(self, engine: AnyEngine = None, system_prompt: NativeVariable | None = None):
        super().__init__(NativeLLMCall(native_engine(engine), system_prompt))

    def __call__(
        self,
        input_variable: NativeVariable,
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        call = forward_logged(
            partial(self.native.__call__, input_variable, response_role_description),
            self.system_prompt,
        )
        return defer(call, [input_variable], reads=reads_of(self.native))

    forward = __call__


class FormattedLLMCall(Blocking[NativeFormattedLLMCall], native=NativeFormattedLLMCall):
    """An LLM call whose input is a format string filled from several variables; blocking.

    >>> # call = tg.autograd.FormattedLLMCall(engine, "Q: {q}\\nA: {a}", fields=["q", "a"])
    >>> # out = call(inputs={"q": q, "a": a})
    """

    def __init__(
        self,
        engine: AnyEngine,
        format_string: str,
        fields: Mapping[str, Any] | Sequence[str],
        system_prompt: NativeVariable | None = None,
    ):
        super().__init__(
            NativeFormattedLLMCall(native_engine(engine), format_string, fields, system_prompt)
        )

    def __call__(
        self,
        inputs: Mapping[str, NativeVariable],
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        self.native._check_fields(inputs)  # at the call, as in TextGrad; the call itself runs later
        call = forward_logged(
            partial(self.native.__call__, inputs, response_role_description), self.system_prompt
        )
        return defer(call, inputs.values(), reads=reads_of(self.native))

    forward = __call__


class MultimodalLLMCall(Blocking[NativeMultimodalLLMCall], native=NativeMultimodalLLMCall):
    """An LLM call on text and image variables together; blocking."""

    def __init__(self, engine: AnyEngine, system_prompt: NativeVariable | None = None):
        super().__init__(NativeMultimodalLLMCall(native_engine(engine), system_prompt))

    def __call__(
        self,
        inputs: Sequence[NativeVariable],
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        call = partial(self.native.__call__, inputs, response_role_description)
        return defer(call, inputs, reads=reads_of(self.native))

    forward = __call__


class OrderedFieldsMultimodalLLMCall(
    Blocking[NativeOrderedFieldsMultimodalLLMCall], native=NativeOrderedFieldsMultimodalLLMCall
):
    """A multimodal call over named fields, sent in the given order; blocking."""

    def __init__(
        self,
        engine: AnyEngine,
        fields: Sequence[str],
        system_prompt: NativeVariable | None = None,
    ):
        super().__init__(
            NativeOrderedFieldsMultimodalLLMCall(native_engine(engine), fields, system_prompt)
        )

    def __call__(
        self,
        inputs: Mapping[str, NativeVariable],
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        self.native._check_fields(inputs)  # at the call, as in TextGrad; the call itself runs later
        call = partial(self.native.__call__, inputs, response_role_description)
        return defer(call, inputs.values(), reads=reads_of(self.native))

    forward = __call__


class StringBasedFunction(Blocking[NativeStringBasedFunction], native=NativeStringBasedFunction):
    """A Python function in the graph, e.g. an exact-match check; calling it blocks.

    >>> # check = tg.autograd.StringBasedFunction(exact_match, function_purpose="checks the answer")
    >>> # loss = check(inputs=dict(prediction=response, ground_truth_answer=y))

    The function runs in the caller's thread, as in TextGrad, not on the shared loop: a slow
    one (running tests, say) then never holds up other threads' calls, and it may itself use
    the blocking API. An async function is awaited on the loop. When an input is still being
    computed (a compat call returns before its reply is in), the call returns at once and the
    function runs once its inputs are ready, in a worker thread.
    """

    def __init__(self, fn: Callable[..., Any | Awaitable[Any]], function_purpose: str):
        super().__init__(NativeStringBasedFunction(fn, function_purpose))

    def __call__(
        self,
        inputs: Mapping[str, NativeVariable],
        response_role_description: str | None = None,
    ) -> Variable:
        self.native._check_inputs(inputs)
        if any(is_pending(v) for v in inputs.values()):
            # An input is still being computed (a deferred model call): run the function once
            # it is ready, and return now.
            return defer(partial(self._later, inputs, response_role_description), inputs.values())
        result = self.native.fn(**inputs)
        if inspect.isawaitable(result):  # an async function: awaited on the loop
            result = run(_awaited(result))
        return adopt(
            self._logged(inputs, self.native._output(inputs, result, response_role_description))
        )

    @staticmethod
    def _logged(inputs: Mapping[str, NativeVariable], output: NativeVariable) -> NativeVariable:
        logger.info("StringBasedFunction", extra={"text": f"In: {inputs}, Out: {output.value!s}"})
        return output

    async def _later(
        self, inputs: Mapping[str, NativeVariable], response_role_description: str | None
    ) -> NativeVariable:
        # The function sees its inputs as they were at the call (TextGrad ran it then).
        seen = {k: _as_it_was(v) for k, v in inputs.items()}
        fn = self.native.fn
        if inspect.iscoroutinefunction(fn):
            result = await fn(**seen)
        else:  # the user's blocking code: in a worker thread, never on the loop
            result = await asyncio.to_thread(fn, **seen)
        if inspect.isawaitable(result):
            result = await result
        return self._logged(seen, self.native._output(inputs, result, response_role_description))

    forward = __call__


# Defined in llm_ops (TextGrad's home for it), which builds on the classes above.
from asynctg.compat.autograd.llm_ops import LLMCall_with_in_context_examples  # noqa: E402
