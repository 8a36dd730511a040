"""``textgrad.optimizer.optimizer``: the optimizers, blocking: ``optimizer.step()``.

Each optimizer wraps the native one (``asynctg.compat._blocking``) with a blocking ``step()``;
``optimizer.native`` is the awaitable one. Every parameter's new value is asked for at once, and
either all parameters change or none does. Deviation from TextGrad: a reply without the
new-variable tags (after ``format_retries`` re-asks) raises ``asynctg.OptimizerParseError``,
where TextGrad raises a bare ``IndexError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asynctg import optim as native
from asynctg import prompts
from asynctg.compat._blocking import Blocking
from asynctg.compat._log import ReplyTap, logger
from asynctg.compat._loop import run
from asynctg.compat.config import validate_engine_or_get_default
from asynctg.compat.engine import Engine, native_engine
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.optimizer.optimizer_prompts import (
    GRADIENT_MULTIPART_TEMPLATE,
    GRADIENT_TEMPLATE,
    OPTIMIZER_SYSTEM_PROMPT,
    construct_tgd_prompt,
)
from asynctg.compat.variable import Variable
from asynctg.engine.client import ChatEngine
from asynctg.graph import Variable as NativeVariable
from asynctg.optim.tgd import DEFAULT_FORMAT_RETRIES

__all__ = [
    "GRADIENT_MULTIPART_TEMPLATE",
    "GRADIENT_TEMPLATE",
    "OPTIMIZER_SYSTEM_PROMPT",
    "TGD",
    "EngineLM",
    "Optimizer",
    "TextualGradientDescent",
    "TextualGradientDescentwithMomentum",
    "Variable",
    "construct_tgd_prompt",
    "get_gradient_and_context_text",
    "logger",
    "validate_engine_or_get_default",
]

AnyEngine = Engine | ChatEngine | str | None

Optimizer = native.Optimizer


class _LoggedTGD(native.TextualGradientDescent):
    """The native optimizer with TextGrad's log records of each optimizer prompt and reply."""

    require_feedback = False  # TextGrad's step() with no feedback does not complain
    _log_name = "TextualGradientDescent"
    _log_prompt = "TextualGradientDescent prompt for update"

    async def _ask(self, engine: Any, variable: Any, content: Any, report: Any) -> str:
        return await _ask_logged(
            super()._ask, self._log_name, self._log_prompt, engine, variable, content, report
        )


class _LoggedMomentum(native.TextualGradientDescentwithMomentum):
    """``_LoggedTGD`` for the momentum optimizer (whose step() without feedback still raises,
    as it did before compat wrapped it)."""

    _log_name = "TextualGradientDescentwithMomentum"
    _log_prompt = "TextualGradientwithMomentum prompt for update"

    async def _ask(self, engine: Any, variable: Any, content: Any, report: Any) -> str:
        return await _ask_logged(
            super()._ask, self._log_name, self._log_prompt, engine, variable, content, report
        )


def get_gradient_and_context_text(variable: NativeVariable) -> str:
    """The feedback a variable holds, each gradient with the conversation it came from."""
    parts = []
    for gradient in variable.gradients:
        context: Any = variable.gradients_context.get(gradient)
        if isinstance(context, dict) and {"context", "response_desc", "variable_desc"} <= set(
            context
        ):
            parts.append(GRADIENT_TEMPLATE.format(feedback=gradient.value, **context))
        else:
            parts.append(str(gradient.value))
    return "\n".join(parts)


class TextualGradientDescent(
    Blocking[native.TextualGradientDescent], native=native.TextualGradientDescent
):
    """Textual gradient descent; ``step()`` rewrites every parameter and blocks until done.

    >>> # optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])
    >>> # loss.backward(); optimizer.step(); optimizer.zero_grad()
    """

    def __init__(
        self,
        parameters: Sequence[NativeVariable],
        verbose: int = 0,
        engine: AnyEngine = None,
        constraints: Sequence[str] | None = None,
        new_variable_tags: Sequence[str] | None = None,
        optimizer_system_prompt: str = prompts.OPTIMIZER_SYSTEM_PROMPT,
        in_context_examples: Sequence[str] | None = None,
        gradient_memory: int = 0,
        *,
        format_retries: int = DEFAULT_FORMAT_RETRIES,
    ) -> None:
        super().__init__(
            _LoggedTGD(
                parameters,
                verbose=verbose,
                engine=native_engine(engine),
                constraints=constraints,
                new_variable_tags=new_variable_tags,
                optimizer_system_prompt=optimizer_system_prompt,
                in_context_examples=in_context_examples,
                gradient_memory=gradient_memory,
                format_retries=format_retries,
            )
        )

    def step(self) -> None:
        """Rewrite every parameter that has feedback, concurrently; all change, or none does."""
        run(self.native.step())
        _log_updates(self.native)


class TextualGradientDescentwithMomentum(
    Blocking[native.TextualGradientDescentwithMomentum],
    native=native.TextualGradientDescentwithMomentum,
):
    """TGD that also shows the optimizer each parameter's recent values; ``step()`` blocks."""

    def __init__(
        self,
        engine: AnyEngine = None,
        parameters: Sequence[NativeVariable] = (),
        momentum_window: int = 0,
        constraints: Sequence[str] | None = None,
        new_variable_tags: Sequence[str] | None = None,
        in_context_examples: Sequence[str] | None = None,
        optimizer_system_prompt: str = prompts.OPTIMIZER_SYSTEM_PROMPT,
        verbose: int = 0,
        gradient_memory: int = 0,
        *,
        format_retries: int = DEFAULT_FORMAT_RETRIES,
    ) -> None:
        super().__init__(
            _LoggedMomentum(
                native_engine(engine),
                parameters,
                momentum_window,
                constraints,
                new_variable_tags,
                in_context_examples,
                optimizer_system_prompt,
                verbose,
                gradient_memory,
                format_retries=format_retries,
            )
        )

    def step(self) -> None:
        """Rewrite every parameter that has feedback, concurrently; all change, or none does."""
        run(self.native.step())
        _log_updates(self.native)


async def _ask_logged(ask: Any, name: str, prompt_message: str, engine: Any, *args: Any) -> str:
    """``ask`` through an engine that logs each raw reply, as TextGrad logs its response."""
    content = args[1]
    logger.info(prompt_message, extra={"prompt": content})

    def replied(text: str) -> None:
        logger.info(f"{name} optimizer response", extra={"optimizer.response": text})

    value: str = await ask(ReplyTap(engine, replied), *args)
    return value


def _log_updates(optimizer: Any) -> None:
    """TextGrad's record of each parameter's new value, after a step that changed them."""
    for parameter in optimizer.parameters:
        if parameter.gradients:
            logger.info(
                f"{optimizer._log_name} updated text", extra={"parameter.value": parameter.value}
            )


TGD = TextualGradientDescent
