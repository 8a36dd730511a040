"""The differentiable operations: LLM calls, Python functions, sums and aggregations.

Each class holds its forward rule (``__call__``, awaited when it calls an LLM) next to its
backward rule (``backward``, which plans feedback and never calls anything itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from asynctg import prompts, telemetry
from asynctg.engine.prompt_cache import cache_scope
from asynctg.engine.protocol import Engine
from asynctg.engine.types import CONTEXT_FRACTION, ChatRequest
from asynctg.errors import ConfigError, ContextBudgetError, NotAVariableError
from asynctg.graph.function import Function, GradientPlan, Module
from asynctg.graph.variable import Variable, describe_sample, read_value
from asynctg.runtime import get_backward_engine

__all__ = [
    "BlackboxLLM",
    "FormattedLLMCall",
    "LLMCall",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "StringBasedFunction",
    "Sum",
    "sum",
]

_NO_SYSTEM_PROMPT = "(none)"


def _engine(engine: Engine | Any | None) -> Engine:
    """The engine to call: ``engine`` (a custom one wrapped), else the backward engine."""
    return get_backward_engine(engine)


def _unique(variables: Sequence[Variable]) -> list[tuple[int, Variable]]:
    """(argument position, variable) for each distinct variable, first position kept."""
    seen: set[int] = set()
    out = []
    for pos, v in enumerate(variables):
        if id(v) not in seen:
            seen.add(id(v))
            out.append((pos, v))
    return out


def _check_variable(value: Any, what: str) -> Variable:
    if inspect.iscoroutine(value) or isinstance(value, asyncio.Future):
        raise NotAVariableError(
            f"{what} is a coroutine, not a tg.Variable: await the call that made it, e.g. "
            "`response = await model(x)` (every LLM-bound call of the native API is awaited)"
        )
    if not isinstance(value, Variable):
        raise NotAVariableError(
            f"{what} must be a tg.Variable, got {type(value).__name__}; wrap it: "
            f"tg.Variable(value, requires_grad=False, role_description='...')"
        )
    return value


def _feedback_request(
    engine: Engine, content: str | list[Any], variable: Variable, output: Variable
) -> ChatRequest:
    """The feedback request for ``variable`` from the call that made ``output``, within the
    window.

    One sample's conversation too long for the window does not end the backward pass (the
    other samples' calls are paid for by then): the longest parts of the conversation (its
    input, output, system prompt, the feedback passed on) are cut in the middle, with a notice
    saying how much, so the request fits ``CONTEXT_FRACTION`` of the window. The instructions
    and the variable's role are never cut: if the request still cannot fit,
    ``ContextBudgetError`` is raised, naming the variable and the sample; nothing is sent.
    """
    request = _backward_messages(engine, content, variable)
    window = engine.context_window
    if window is None or engine.request_tokens(request) <= window:
        return request
    target = int(window * CONTEXT_FRACTION)
    texts = [i for i, part in enumerate(content) if isinstance(part, str)]
    if isinstance(content, str):
        over = engine.request_tokens(request) - target
        cut: str | list[Any] = prompts.cut_to_fit(
            content, max(0, len(content) - 4 * over), spans_only=True
        )
    elif texts:
        longest = max(texts, key=lambda i: len(content[i]))
        over = engine.request_tokens(request) - target
        cut = list(content)
        cut[longest] = prompts.cut_to_fit(
            content[longest], max(0, len(content[longest]) - 4 * over), spans_only=True
        )
    else:
        cut = content
    request = _backward_messages(engine, cut, variable)
    tokens = engine.request_tokens(request)
    if tokens > window:
        sample = describe_sample(output)
        raise ContextBudgetError(
            f"the feedback request for {variable.role_description!r} from the sample "
            f"[{sample}] is about {tokens} tokens even with its conversation cut, past the "
            f"{window}-token context window; it was not sent. Shorten the variable's role "
            "description or the feedback it passes on, or use a longer-context model.",
            tokens=tokens,
            window=window,
            variable=variable.role_description,
            sample=sample,
        )
    return request


def _backward_messages(engine: Engine, content: str | list[Any], variable: Variable) -> ChatRequest:
    with cache_scope(variable.role_description):  # one prompt_cache_key per run and variable
        return engine.request(
            [
                {"role": "system", "content": prompts.BACKWARD_SYSTEM_PROMPT},
                {"role": "user", "content": content},
            ]
        )


def _feedback_plans(
    output: Variable,
    engine: Engine,
    context: str | list[Any],
    content_for: Callable[[Variable], str | list[Any]],
) -> list[GradientPlan]:
    """The plan loop every LLM-side backward rule shares: for each distinct input that needs
    a gradient (first argument position kept), the feedback request ``content_for(input)``
    asks for, with the conversation ``context`` TextGrad keeps beside the gradient."""
    return [
        GradientPlan(
            variable,
            request=_feedback_request(engine, content_for(variable), variable, output),
            context={
                # a list per plan, as each gradient keeps its own context
                "context": list(context) if isinstance(context, list) else context,
                "response_desc": output.role_description,
                "variable_desc": variable.role_description,
            },
        )
        for _, variable in _unique(output.predecessors)
        if variable.requires_grad
    ]


class LLMCall(Function):
    """One call of a language model: ``await LLMCall(engine, system_prompt)(x)``.

    The output's backward asks the backward engine, for each predecessor that requires
    gradients (the system prompt and the input), how that predecessor should change: to address
    the feedback the output received, or, when the output is itself an evaluation (no feedback
    yet), to do better on that evaluation.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        system_prompt: Variable | None = None,
        *,
        feedback_examples: Sequence[str] = (),
    ):
        if system_prompt is not None:
            _check_variable(system_prompt, "system_prompt")
        if isinstance(feedback_examples, str) or not all(
            isinstance(e, str) for e in feedback_examples
        ):
            raise ConfigError("feedback_examples must be a list of strings")
        self.engine = engine
        self.system_prompt = system_prompt
        #: Examples of good feedback, shown to the backward engine in <EXAMPLES> tags.
        self.feedback_examples = tuple(feedback_examples)

    def _messages(self, content: str | list[Any]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": read_value(self.system_prompt)})
        messages.append({"role": "user", "content": content})
        return messages

    async def _complete(self, content: str | list[Any]) -> str:
        engine = _engine(self.engine)
        scope = (
            contextlib.nullcontext()
            if self.system_prompt is None
            else cache_scope(self.system_prompt.role_description)
        )
        with scope:  # the calls of one system prompt share a prompt_cache_key
            request = engine.request(self._messages(content))
        with telemetry.span(f"forward {type(self).__name__}"):
            result = await engine.send(request)
        return result.text

    def _system_text(self) -> str:
        if self.system_prompt is None:
            return _NO_SYSTEM_PROMPT
        return str(read_value(self.system_prompt))

    async def __call__(
        self,
        input_variable: Variable,
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        _check_variable(input_variable, "the input")
        if input_variable.is_image:
            raise ConfigError("LLMCall takes text; use MultimodalLLMCall for images")
        prompt = str(read_value(input_variable))
        text = await self._complete(prompt)
        preds = (
            [input_variable] if self.system_prompt is None else [self.system_prompt, input_variable]
        )
        response = Variable(text, predecessors=preds, role_description=response_role_description)
        return self.attach(
            response,
            prompt=prompt,
            system_prompt=self._system_text(),
            examples=self.feedback_examples,
        )

    forward = __call__

    def backward(
        self,
        output: Variable,
        feedback: str,
        engine: Engine,
        *,
        prompt: str,
        system_prompt: str,
        examples: Sequence[str] = (),
    ) -> list[GradientPlan]:
        conversation = prompts.conversation_text(system_prompt, prompt, str(output.value))
        return _feedback_plans(
            output,
            engine,
            conversation,
            lambda variable: prompts.backward_prompt(
                conversation=conversation,
                role=variable.role_description,
                span=variable.get_short_value(),
                response_role=output.role_description,
                response_feedback=feedback,
                examples=examples,
            ),
        )


class FormattedLLMCall(LLMCall):
    """An LLM call whose input is a format string filled from several variables.

    >>> # call = FormattedLLMCall(engine, "Q: {question}\\nA: {answer}",
    >>> #                         fields={"question": None, "answer": None})
    >>> # out = await call(inputs={"question": q, "answer": a})
    """

    def __init__(
        self,
        engine: Engine | None,
        format_string: str,
        fields: Mapping[str, Any] | Sequence[str],
        system_prompt: Variable | None = None,
        *,
        feedback_examples: Sequence[str] = (),
    ):
        super().__init__(engine, system_prompt, feedback_examples=feedback_examples)
        names = list(fields.keys()) if isinstance(fields, Mapping) else list(fields)
        try:
            parsed = [name for _, name, _, _ in string.Formatter().parse(format_string)]
        except ValueError as exc:
            raise ConfigError(f"format_string is not a valid format string: {exc}") from exc
        if any(name is not None and (name == "" or name.isdigit()) for name in parsed):
            raise ConfigError(
                "positional placeholders ('{}' or '{0}') are not supported in format_string; "
                "name them, e.g. {question}"
            )
        used = {name for name in parsed if name}
        unknown = used - set(names)
        if unknown:
            raise ConfigError(
                f"format_string uses {sorted(unknown)}, which are not among fields {names}"
            )
        self.format_string = format_string
        self.fields = names

    def _check_fields(self, inputs: Mapping[str, Variable]) -> None:
        """ConfigError unless ``inputs`` maps exactly the format's fields to variables."""
        if not isinstance(inputs, Mapping):
            raise ConfigError("FormattedLLMCall takes inputs={field: Variable, ...}")
        missing = [f for f in self.fields if f not in inputs]
        extra = [k for k in inputs if k not in self.fields]
        if missing or extra:
            raise ConfigError(
                f"FormattedLLMCall expects inputs for exactly {self.fields}; "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected {extra}" if extra else "")
            )
        for key, value in inputs.items():
            _check_variable(value, f"inputs[{key!r}]")

    async def __call__(  # type: ignore[override]
        self,
        inputs: Mapping[str, Variable],
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        self._check_fields(inputs)
        prompt = self.format_string.format(**{k: read_value(inputs[k]) for k in self.fields})
        text = await self._complete(prompt)
        values = [inputs[k] for k in self.fields]
        preds = values if self.system_prompt is None else [self.system_prompt, *values]
        response = Variable(text, predecessors=preds, role_description=response_role_description)
        return self.attach(
            response,
            prompt=prompt,
            system_prompt=self._system_text(),
            examples=self.feedback_examples,
        )

    forward = __call__  # type: ignore[assignment]


class MultimodalLLMCall(LLMCall):
    """An LLM call on text and image variables together; images stay in the backward prompts."""

    async def __call__(  # type: ignore[override]
        self,
        inputs: Sequence[Variable],
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        variables = [_check_variable(v, "each input") for v in inputs]
        content = [read_value(v) for v in variables]
        return await self._finish(variables, content, response_role_description)

    forward = __call__  # type: ignore[assignment]

    async def _finish(
        self, variables: list[Variable], content: list[str | bytes], role: str
    ) -> Variable:
        text = await self._complete(list(content))
        preds = variables if self.system_prompt is None else [self.system_prompt, *variables]
        response = Variable(text, predecessors=preds, role_description=role)
        return self.attach(response, content=content, system_prompt=self._system_text())

    def backward(  # type: ignore[override]
        self,
        output: Variable,
        feedback: str,
        engine: Engine,
        *,
        content: list[str | bytes],
        system_prompt: str,
    ) -> list[GradientPlan]:
        conversation = prompts.multimodal_conversation_text(system_prompt, str(output.value))
        return _feedback_plans(
            output,
            engine,
            [*content, conversation],
            lambda variable: [
                *content,
                prompts.backward_prompt(
                    conversation=conversation,
                    role=variable.role_description,
                    span=variable.get_short_value(),
                    response_role=output.role_description,
                    response_feedback=feedback,
                ),
            ],
        )


class OrderedFieldsMultimodalLLMCall(MultimodalLLMCall):
    """A multimodal call over named fields, sent in the given order (``field: text`` or image)."""

    def __init__(
        self,
        engine: Engine | None,
        fields: Sequence[str],
        system_prompt: Variable | None = None,
    ):
        super().__init__(engine, system_prompt)
        self.fields = list(fields)

    def _check_fields(self, inputs: Mapping[str, Variable]) -> None:
        """ConfigError unless ``inputs`` maps exactly the call's fields to variables."""
        if not isinstance(inputs, Mapping):
            raise ConfigError("OrderedFieldsMultimodalLLMCall takes inputs={field: Variable, ...}")
        if set(inputs) != set(self.fields):
            raise ConfigError(f"expected inputs for exactly {self.fields}, got {sorted(inputs)}")
        for f in self.fields:
            _check_variable(inputs[f], f"inputs[{f!r}]")

    async def __call__(  # type: ignore[override]
        self,
        inputs: Mapping[str, Variable],
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        self._check_fields(inputs)
        variables = [inputs[f] for f in self.fields]
        content: list[str | bytes] = [
            value if isinstance(value, bytes) else f"{f}: {value}"
            for f, value in zip(self.fields, map(read_value, variables), strict=True)
        ]
        return await self._finish(variables, content, response_role_description)

    forward = __call__  # type: ignore[assignment]


class StringBasedFunction(Function):
    """A Python function in the graph (an exact-match check, a parser, a test runner).

    ``fn`` receives the input variables as keyword arguments and returns the output text (or
    anything ``str()`` can turn into it); it may be async. Its backward asks the backward engine
    how each input that requires gradients should change, showing the function's purpose, its
    inputs and its output.

    With ``pool=`` (an ``asynctg.workers`` pool: local processes or a Dask cluster) a CPU-heavy
    ``fn`` runs in a worker instead of on the event loop, so LLM calls go on meanwhile; it then
    receives the inputs' *values* (text), must be an importable top-level function, and its
    results are cached by input in the pool.

    >>> # check = StringBasedFunction(exact_match, function_purpose="checks the answer")
    >>> # loss = await check(inputs=dict(prediction=response, ground_truth_answer=y))
    >>> # dock = StringBasedFunction(score_smiles, "docks the molecule", pool=ProcessPool(2))
    """

    def __init__(
        self,
        fn: Callable[..., Any | Awaitable[Any]],
        function_purpose: str,
        *,
        pool: Any = None,
    ):
        if not callable(fn):
            raise ConfigError("StringBasedFunction needs a callable")
        if not isinstance(function_purpose, str) or not function_purpose.strip():
            raise ConfigError("function_purpose must say what the function does")
        if pool is not None and not callable(getattr(pool, "run", None)):
            raise ConfigError("pool must be an asynctg.workers pool (ProcessPool, DaskPool)")
        self.fn = fn
        self.function_purpose = function_purpose
        self.pool = pool

    async def __call__(
        self,
        inputs: Mapping[str, Variable],
        response_role_description: str | None = None,
    ) -> Variable:
        self._check_inputs(inputs)
        if self.pool is not None:
            values = {name: variable.value for name, variable in inputs.items()}
            return self._output(
                inputs, await self.pool.run(self.fn, **values), response_role_description
            )
        result = self.fn(**inputs)
        if inspect.isawaitable(result):
            result = await result
        return self._output(inputs, result, response_role_description)

    forward = __call__

    def _check_inputs(self, inputs: Mapping[str, Variable]) -> None:
        """ConfigError unless ``inputs`` maps argument names to variables."""
        if not isinstance(inputs, Mapping):
            raise ConfigError("StringBasedFunction takes inputs={argument name: Variable, ...}")
        for key, value in inputs.items():
            _check_variable(value, f"inputs[{key!r}]")

    def _output(
        self,
        inputs: Mapping[str, Variable],
        result: Any,
        response_role_description: str | None,
    ) -> Variable:
        """The function's ``result`` as the output variable, with this backward rule attached."""
        if isinstance(result, Variable):
            result = result.value
        role = response_role_description or (
            f"output of the Python function whose purpose is: {self.function_purpose}"
        )
        response = Variable(
            result if isinstance(result, str) else str(result),
            predecessors=list(inputs.values()),
            role_description=role,
        )
        return self.attach(response, inputs=dict(inputs))

    def backward(
        self,
        output: Variable,
        feedback: str,
        engine: Engine,
        *,
        inputs: dict[str, Variable],
    ) -> list[GradientPlan]:
        inputs_text = prompts.function_inputs_text(
            [(k, v.role_description, v.get_short_value()) for k, v in inputs.items()]
        )
        conversation = prompts.function_conversation_text(
            self.function_purpose, inputs_text, str(output.value)
        )
        return _feedback_plans(
            output,
            engine,
            conversation,
            lambda variable: prompts.string_function_backward_prompt(
                conversation=conversation,
                role=variable.role_description,
                span=variable.get_short_value(),
                response_role=output.role_description,
                response_feedback=feedback,
            ),
        )


def _concat(variables: Sequence[Variable], what: str) -> tuple[str, str]:
    if isinstance(variables, Variable) or not isinstance(variables, Sequence) or not variables:
        raise ConfigError(f"tg.{what} takes a non-empty list of Variables")
    for v in variables:
        _check_variable(v, f"each item given to tg.{what}")
    values = "\n".join(str(read_value(v)) for v in variables)
    roles = ", ".join(dict.fromkeys(v.role_description for v in variables))
    return values, roles


class Sum(Function):
    """``tg.sum``: concatenate values; feedback on the sum flows unchanged to every summand.

    TextGrad 0.1.8 hands each summand that feedback twice, so an empty feedback looks non-empty
    downstream ("\\n") and sends an evaluation's backward down the wrong branch; here each
    summand gets it once.
    """

    name = "sum"
    role = "a combination of the following: {roles}"

    def __call__(self, variables: Sequence[Variable]) -> Variable:
        value, roles = _concat(variables, self.name)
        total = Variable(
            value,
            requires_grad=any(v.requires_grad for v in variables),
            predecessors=variables,
            role_description=self.role.format(roles=roles),
        )
        return self.attach(total, **self.saved())

    forward = __call__

    def saved(self) -> dict[str, Any]:
        """What the backward rule of this node needs (subclasses add to it)."""
        return {}

    def backward(
        self, output: Variable, feedback: str, engine: Engine, **saved: Any
    ) -> list[GradientPlan]:
        return [
            GradientPlan(v, value=prompts.sum_feedback(v.role_description, feedback))
            for _, v in _unique(output.predecessors)
            if v.requires_grad
        ]


def sum(variables: Sequence[Variable]) -> Variable:
    """Concatenate variables into one; its feedback reaches each of them (no LLM call)."""
    return Sum()(variables)


class BlackboxLLM(Module):
    """A language model with an (optionally trainable) system prompt.

    >>> # model = tg.BlackboxLLM(engine, system_prompt)
    >>> # response = await model(question)
    """

    def __init__(self, engine: Engine | None = None, system_prompt: Variable | str | None = None):
        if isinstance(system_prompt, str):
            system_prompt = Variable(
                system_prompt,
                requires_grad=False,
                role_description=prompts.SYSTEM_PROMPT_DEFAULT_ROLE,
            )
        self.engine = engine
        self.system_prompt = system_prompt
        self.llm_call = LLMCall(engine, system_prompt)

    def parameters(self) -> list[Variable]:
        return [self.system_prompt] if self.system_prompt is not None else []

    async def __call__(
        self,
        x: Variable,
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        return await self.llm_call(x, response_role_description)

    forward = __call__
