"""Textual gradient descent: an LLM rewrites each parameter from the feedback it received.

``await optimizer.step()`` asks for every parameter's new value at once (one optimizer call
per parameter, concurrently) and applies them only when all have arrived and parsed: either
every parameter changes, or, on any failure or cancellation, none does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from asynctg import fanout, prompts, telemetry
from asynctg.engine.adapters import as_engine
from asynctg.engine.prompt_cache import cache_scope
from asynctg.engine.protocol import Engine
from asynctg.errors import (
    ConfigError,
    ContextBudgetError,
    ContextLengthError,
    OptimizerError,
    OptimizerParseError,
)
from asynctg.graph.variable import Variable
from asynctg.optim.aggregation import (
    AggregationReport,
    Strategy,
    check_strategy,
    gradient_parts,
    optimizer_content,
)
from asynctg.optim.momentum import SampledMomentum
from asynctg.runtime import get_backward_engine

__all__ = [
    "OPTIMIZER_PRIORITY",
    "Optimizer",
    "TextualGradientDescent",
    "TextualGradientDescentwithMomentum",
    "extract_new_value",
]

logger = logging.getLogger("asynctg.optim")

#: Optimizer calls end a step: nothing else can proceed until they are back.
OPTIMIZER_PRIORITY = 1_000
#: Times a reply without the new-variable tags is asked again before giving up.
DEFAULT_FORMAT_RETRIES = 2


def extract_new_value(reply: str, tags: Sequence[str]) -> str | None:
    """The text between the new-variable tags, or None when it is missing or empty.

    With nested or repeated start tags the innermost span before the first end tag is taken:
    ``<T><T>x</T></T>`` gives ``x``.
    """
    start, end = tags[0], tags[1]
    j = reply.find(end)
    if j < 0:
        return None
    i = reply.rfind(start, 0, j)
    if i < 0:
        return None
    value = reply[i + len(start) : j].strip()
    return value or None


class Optimizer:
    """Base class: holds the parameters; ``zero_grad()`` clears their feedback."""

    def __init__(self, parameters: Sequence[Variable]) -> None:
        if isinstance(parameters, Variable) or not isinstance(parameters, Sequence | list):
            raise ConfigError("parameters must be a list of tg.Variable, e.g. parameters=[prompt]")
        params = list(parameters)
        if not params:
            raise ConfigError(
                "the optimizer got an empty parameter list; pass the variables to optimise, "
                "e.g. parameters=[system_prompt]"
            )
        for p in params:
            if not isinstance(p, Variable):
                raise ConfigError(f"parameters must be tg.Variable, got {type(p).__name__}")
            if isinstance(p.value, bytes):
                raise ConfigError(
                    f"parameter {p.role_description!r} is an image; only text can be optimised"
                )
            if not p.requires_grad:
                raise ConfigError(
                    f"parameter {p.role_description!r} has requires_grad=False, so it would "
                    "never receive feedback; create it with requires_grad=True"
                )
        self.parameters = params

    def zero_grad(self) -> None:
        """Forget the feedback on every parameter (call before the next backward)."""
        for p in self.parameters:
            p.reset_gradients()


class TextualGradientDescent(Optimizer):
    require_feedback = True

    """Textual gradient descent (TGD): ``await optimizer.step()`` rewrites every parameter.

    >>> # optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])
    >>> # await loss.backward(); await optimizer.step(); optimizer.zero_grad()

    ``constraints`` (natural-language rules), ``in_context_examples`` and ``gradient_memory``
    (how many past steps' feedback to show again) enter the optimizer's prompt;
    ``new_variable_tags`` are the tags the answer must come between. A reply without them is
    asked again up to ``format_retries`` times, then ``OptimizerParseError`` is raised and no
    parameter changes. Parameters without any feedback are left alone (no call).
    ``verbose`` logs each new value at INFO level on the ``asynctg.optim`` logger.

    ``step()`` with no feedback on any parameter raises ``OptimizerError`` (a forgotten
    ``await loss.backward()`` would otherwise pass silently); ``require_feedback = False`` on a
    subclass turns that off.

    ``aggregation`` says how many feedbacks reach the optimizer (``asynctg.optim.aggregation``):
    ``"concat"`` (the paper: one ``<FEEDBACK>`` block each), ``"tree"`` (reduced by concurrent
    LLM calls first) or ``"auto"`` (concat while it fits the context budget). ``step()``
    returns one ``AggregationReport`` per parameter changed, also kept in ``last_step``.

    ``momentum_samples=k`` turns on TSGD-M (``asynctg.optim.momentum``): each step shows the
    optimizer k past values of the parameter with the feedback each got, drawn with weight
    ``momentum_decay ** age`` from a generator seeded with ``momentum_seed``.
    """

    def __init__(
        self,
        parameters: Sequence[Variable],
        verbose: int = 0,
        engine: Engine | None = None,
        constraints: Sequence[str] | None = None,
        new_variable_tags: Sequence[str] | None = None,
        optimizer_system_prompt: str = prompts.OPTIMIZER_SYSTEM_PROMPT,
        in_context_examples: Sequence[str] | None = None,
        gradient_memory: int = 0,
        *,
        format_retries: int = DEFAULT_FORMAT_RETRIES,
        aggregation: Strategy = "auto",
        momentum_samples: int = 0,
        momentum_decay: float = 0.5,
        momentum_seed: int = 0,
    ) -> None:
        super().__init__(parameters)
        # TSGD-M (asynctg.optim.momentum): sampled past values and feedback, by recency
        self.sampled_momentum = (
            SampledMomentum(momentum_samples, momentum_decay, momentum_seed)
            if momentum_samples
            else None
        )
        self.aggregation: Strategy = check_strategy(aggregation)
        self.last_step: list[AggregationReport] = []
        if engine is not None:
            engine = as_engine(engine)  # a custom engine (anything with generate) is wrapped
        tags = tuple(new_variable_tags or prompts.DEFAULT_NEW_VARIABLE_TAGS)
        if len(tags) != 2 or not all(isinstance(t, str) and t for t in tags):
            raise ConfigError("new_variable_tags must be [start_tag, end_tag]")
        if not isinstance(gradient_memory, int) or gradient_memory < 0:
            raise ConfigError("gradient_memory must be an integer >= 0")
        if format_retries < 0:
            raise ConfigError("format_retries must be >= 0")
        self.engine = engine
        self.verbose = verbose
        self.constraints = list(constraints or [])
        self.in_context_examples = list(in_context_examples or [])
        self.new_variable_tags: tuple[str, str] = (tags[0], tags[1])
        try:
            self.optimizer_system_prompt = prompts.optimizer_system_prompt(
                optimizer_system_prompt, self.new_variable_tags
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                "optimizer_system_prompt must be a format string using only "
                "{new_variable_start_tag} and {new_variable_end_tag} (double other braces)"
            ) from exc
        self.gradient_memory = gradient_memory
        self.gradient_memory_dict: dict[Variable, list[str]] = {}
        self.format_retries = format_retries
        self.steps = 0

    # --- prompts ------------------------------------------------------------------------------

    def _extra(self, variable: Variable) -> dict[str, Any]:
        memory: list[str] = []
        if self.gradient_memory:
            memory = self.gradient_memory_dict.get(variable, [])[-self.gradient_memory :]
        extra: dict[str, Any] = {"memory": memory}
        if self.sampled_momentum is not None:
            drawn = self.sampled_momentum.draw(variable, self.steps)
            extra["past_values"] = [value for value, _ in drawn]
            extra["past_feedback"] = [feedback for _, feedback in drawn]
        return extra

    def update_prompt(self, variable: Variable) -> str | list[str | bytes]:
        """The optimizer's user prompt for ``variable`` as it stands now, every feedback in its
        own block (the "concat" strategy)."""
        return self.render_prompt(variable, gradient_parts(variable))

    def render_prompt(
        self, variable: Variable, gradients: Sequence[str | bytes]
    ) -> str | list[str | bytes]:
        """The optimizer's user prompt for ``variable`` with ``gradients`` as its context."""
        return prompts.optimizer_prompt(
            role=variable.role_description,
            value=str(variable.value),
            gradients=gradients,
            tags=self.new_variable_tags,
            constraints=self.constraints,
            examples=self.in_context_examples,
            **self._extra(variable),
        )

    # --- the step -----------------------------------------------------------------------------

    async def _content(
        self, engine: Engine, variable: Variable, strategy: Strategy
    ) -> tuple[str | list[str | bytes], AggregationReport]:
        return await optimizer_content(
            engine,
            variable,
            lambda gradients: self.render_prompt(variable, gradients),
            self.optimizer_system_prompt,
            strategy=strategy,
            priority=OPTIMIZER_PRIORITY,
        )

    async def _new_value(self, engine: Engine, variable: Variable) -> tuple[str, AggregationReport]:
        content, report = await self._content(engine, variable, self.aggregation)
        try:
            return await self._ask(engine, variable, content, report), report
        except ContextLengthError as exc:
            # The window was unknown and the provider's error named it: reduce, then ask again.
            if (
                isinstance(exc, ContextBudgetError)
                or self.aggregation != "auto"
                or report.strategy != "concat"
                or engine.context_window is None
            ):
                raise
            content, report = await self._content(engine, variable, "tree")
            return await self._ask(engine, variable, content, report), report

    async def _scoped(self, engine: Engine, variable: Variable) -> tuple[str, AggregationReport]:
        """``_new_value`` with the variable's prompt-cache scope (``engine.prompt_cache``)."""
        with cache_scope(variable.role_description):
            return await self._new_value(engine, variable)

    async def _ask(
        self,
        engine: Engine,
        variable: Variable,
        content: str | list[str | bytes],
        report: AggregationReport,
    ) -> str:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.optimizer_system_prompt},
            {"role": "user", "content": content},
        ]
        reply = ""
        for attempt in range(self.format_retries + 1):
            request = engine.request(messages)
            engine.check_fits(request, variable=variable.role_description)
            report.calls += 1
            result = await engine.send(request, priority=OPTIMIZER_PRIORITY)
            reply = result.text
            value = extract_new_value(reply, self.new_variable_tags)
            if value is not None:
                return value
            if attempt < self.format_retries:
                messages = [
                    *messages[:2],
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": prompts.format_reminder(self.new_variable_tags)},
                ]
        start, end = self.new_variable_tags
        raise OptimizerParseError(
            f"the optimizer's reply for {variable.role_description!r} has no non-empty "
            f"{start}...{end} span after {self.format_retries + 1} tries; no parameter was "
            "changed. Use a model that follows the format, or raise format_retries.",
            reply=reply,
            variable=variable.role_description,
        )

    async def step(self) -> list[AggregationReport]:
        """Rewrite every parameter that has feedback, all at once; all change, or none does.

        Returns what each changed parameter's aggregation did (also in ``last_step``).
        """
        engine = get_backward_engine(self.engine)
        todo = [p for p in self.parameters if p.gradients]
        if not todo and self.require_feedback:
            raise OptimizerError(
                f"optimizer.step(): none of the {len(self.parameters)} parameter(s) has feedback, "
                "so nothing would change. Run `await loss.backward()` first: a backward called "
                "without `await` does nothing."
            )
        with telemetry.span("step", asynctg__step__parameters=len(todo)):
            results = await fanout.gather(self._scoped(engine, p) for p in todo)
        new_values = [value for value, _ in results]
        # Every reply is in and parsed: only now does anything change.
        self.last_step = [report for _, report in results]
        for p, value in zip(todo, new_values, strict=True):
            self._remember(p)
            p.set_value(value)
            if self.verbose:
                logger.info("new value of %s:\n%s", p.role_description, value)
        self.steps += 1
        return self.last_step

    def _remember(self, variable: Variable) -> None:
        if self.sampled_momentum is not None:
            self.sampled_momentum.record(
                variable, str(variable.value), variable.get_gradient_text()
            )
        if self.gradient_memory:
            self.gradient_memory_dict.setdefault(variable, []).append(variable.get_gradient_text())

    # --- state, for checkpoints ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume this optimizer (values, memory, step count)."""
        return {
            "steps": self.steps,
            "values": [p.value for p in self.parameters],
            "gradient_memory": [self.gradient_memory_dict.get(p, []) for p in self.parameters],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["values"]) != len(self.parameters):
            raise ConfigError("the saved state is for a different number of parameters")
        self.steps = int(state["steps"])
        for p, value, memory in zip(
            self.parameters, state["values"], state["gradient_memory"], strict=True
        ):
            p.set_value(value)
            if memory:
                self.gradient_memory_dict[p] = list(memory)


class TextualGradientDescentwithMomentum(TextualGradientDescent):
    """TGD that also shows the optimizer the last ``momentum_window`` values of each parameter.

    TextGrad 0.1.8's version never builds its prompt (the step crashes); here the past values
    enter the prompt in ``<PAST_ITERATIONS>``. A window of 0 is plain TGD.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        parameters: Sequence[Variable] = (),
        momentum_window: int = 0,
        constraints: Sequence[str] | None = None,
        new_variable_tags: Sequence[str] | None = None,
        in_context_examples: Sequence[str] | None = None,
        optimizer_system_prompt: str = prompts.OPTIMIZER_SYSTEM_PROMPT,
        verbose: int = 0,
        gradient_memory: int = 0,
        *,
        format_retries: int = DEFAULT_FORMAT_RETRIES,
        aggregation: Strategy = "auto",
    ) -> None:
        super().__init__(
            parameters,
            verbose=verbose,
            engine=engine,
            constraints=constraints,
            new_variable_tags=new_variable_tags,
            optimizer_system_prompt=optimizer_system_prompt,
            in_context_examples=in_context_examples,
            gradient_memory=gradient_memory,
            format_retries=format_retries,
            aggregation=aggregation,
        )
        if not isinstance(momentum_window, int) or momentum_window < 0:
            raise ConfigError("momentum_window must be an integer >= 0")
        self.momentum_window = momentum_window
        self.momentum_storage: dict[Variable, list[str]] = {}

    def _extra(self, variable: Variable) -> dict[str, Any]:
        extra = super()._extra(variable)
        if self.momentum_window:
            extra["past_values"] = self.momentum_storage.get(variable, [])[-self.momentum_window :]
        return extra

    def _remember(self, variable: Variable) -> None:
        super()._remember(variable)
        if self.momentum_window:
            past = self.momentum_storage.setdefault(variable, [])
            past.append(str(variable.value))
            del past[: -self.momentum_window]
