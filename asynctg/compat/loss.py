"""TextGrad's ``tg.loss`` namespace, blocking: evaluations that start the backward pass.

Each loss wraps the native one (``asynctg.compat._blocking``) and gives it a blocking
``__call__``/``forward``; ``loss_fn.native`` is the awaitable one. Deviation from TextGrad:
``MultiFieldTokenParsedEvaluation.parse_output`` raises ``asynctg.EvaluationParseError`` (a
``ValueError``) when the tags are missing, where TextGrad raises a bare ``IndexError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from asynctg import loss as native
from asynctg.compat._blocking import Blocking
from asynctg.compat._lazy import defer, reads_of
from asynctg.compat._log import forward_logged
from asynctg.compat.autograd import (
    FormattedLLMCall,
    LLMCall,
    Module,
    OrderedFieldsMultimodalLLMCall,
)
from asynctg.compat.config import SingletonBackwardEngine
from asynctg.compat.engine import Engine, get_engine, native_engine
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.engine.client import ChatEngine
from asynctg.graph import Variable as NativeVariable

#: The test-time loss's default system prompt (asynctg's wording).
DEFAULT_TEST_TIME = native.DEFAULT_TEST_TIME_SYSTEM_PROMPT

__all__ = [
    "DEFAULT_TEST_TIME",
    "EngineLM",
    "FormattedLLMCall",
    "ImageQALoss",
    "LLMCall",
    "Module",
    "MultiChoiceTestTime",
    "MultiFieldEvaluation",
    "MultiFieldTokenParsedEvaluation",
    "OrderedFieldsMultimodalLLMCall",
    "SingletonBackwardEngine",
    "TextLoss",
    "Variable",
    "get_engine",
]

AnyEngine = Engine | ChatEngine | str | None


class TextLoss(Blocking[native.TextLoss], native=native.TextLoss):
    """Evaluate a text with an LLM; the evaluation is the loss. Calling it blocks.

    >>> # loss = tg.TextLoss("Evaluate the answer; be critical.", engine=engine)(response)
    """

    def __init__(self, eval_system_prompt: NativeVariable | str, engine: AnyEngine = None):
        super().__init__(native.TextLoss(eval_system_prompt, native_engine(engine)))

    def __call__(self, instance: NativeVariable) -> Variable:
        call = forward_logged(partial(self.native.__call__, instance), self.eval_system_prompt)
        return defer(call, [instance], reads=reads_of(self.native))

    forward = __call__


class MultiFieldEvaluation(
    Blocking[native.MultiFieldEvaluation], native=native.MultiFieldEvaluation
):
    """Evaluate several named variables together (question, ground truth, prediction, ...)."""

    def __init__(
        self,
        evaluation_instruction: NativeVariable | str,
        role_descriptions: Sequence[str],
        engine: AnyEngine = None,
        system_prompt: NativeVariable | None = None,
    ):
        super().__init__(
            native.MultiFieldEvaluation(
                evaluation_instruction, role_descriptions, native_engine(engine), system_prompt
            )
        )

    def __call__(self, inputs: Sequence[NativeVariable]) -> Variable:
        return defer(partial(self.native.__call__, inputs), inputs, reads=reads_of(self.native))

    forward = __call__


class MultiFieldTokenParsedEvaluation(
    Blocking[native.MultiFieldTokenParsedEvaluation], native=native.MultiFieldTokenParsedEvaluation
):
    """A multi-field evaluation whose verdict is read from between ``parse_tags``."""

    def __init__(
        self,
        evaluation_instruction: NativeVariable | str,
        role_descriptions: Sequence[str],
        engine: AnyEngine = None,
        system_prompt: NativeVariable | None = None,
        parse_tags: Sequence[str] | None = None,
    ):
        super().__init__(
            native.MultiFieldTokenParsedEvaluation(
                evaluation_instruction,
                role_descriptions,
                native_engine(engine),
                system_prompt,
                parse_tags,
            )
        )

    def __call__(self, inputs: Sequence[NativeVariable]) -> Variable:
        return defer(partial(self.native.__call__, inputs), inputs, reads=reads_of(self.native))

    forward = __call__


class MultiChoiceTestTime(Blocking[native.MultiChoiceTestTime], native=native.MultiChoiceTestTime):
    """The test-time loss for an answer to a multiple-choice question; blocking."""

    def __init__(
        self,
        evaluation_instruction: str,
        engine: AnyEngine = None,
        system_prompt: NativeVariable | None = None,
    ):
        super().__init__(
            native.MultiChoiceTestTime(evaluation_instruction, native_engine(engine), system_prompt)
        )

    def __call__(self, question: str, prediction: NativeVariable) -> Variable:
        call = partial(self.native.__call__, question, prediction)
        return defer(call, [prediction], reads=reads_of(self.native))

    forward = __call__


class ImageQALoss(Blocking[native.ImageQALoss], native=native.ImageQALoss):
    """Evaluate an answer to a question about an image; blocking."""

    def __init__(
        self,
        evaluation_instruction: str,
        engine: AnyEngine = None,
        system_prompt: NativeVariable | None = None,
    ):
        super().__init__(
            native.ImageQALoss(evaluation_instruction, native_engine(engine), system_prompt)
        )

    def __call__(
        self, image: NativeVariable, question: NativeVariable, response: NativeVariable
    ) -> Variable:
        call = partial(self.native.__call__, image, question, response)
        return defer(call, [image, question, response], reads=reads_of(self.native))

    forward = __call__
