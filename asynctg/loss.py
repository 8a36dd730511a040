"""Losses: evaluations whose output is the feedback signal at the top of a graph."""

from __future__ import annotations

from collections.abc import Sequence

from asynctg.engine.protocol import Engine
from asynctg.errors import ConfigError, EvaluationParseError
from asynctg.graph.function import Module
from asynctg.graph.ops import FormattedLLMCall, LLMCall, OrderedFieldsMultimodalLLMCall
from asynctg.graph.variable import Variable

__all__ = [
    "DEFAULT_TEST_TIME_SYSTEM_PROMPT",
    "ImageQALoss",
    "MultiChoiceTestTime",
    "MultiFieldEvaluation",
    "MultiFieldTokenParsedEvaluation",
    "TextLoss",
    "parse_tagged",
]


def _frozen(text: Variable | str, role: str) -> Variable:
    if isinstance(text, Variable):
        return text
    if not isinstance(text, str):
        raise ConfigError(
            f"expected a str or a tg.Variable for the {role}, got {type(text).__name__}"
        )
    return Variable(text, requires_grad=False, role_description=role)


class TextLoss(Module):
    """Evaluate a text with an LLM; the evaluation is the loss.

    >>> # loss = await tg.TextLoss("Evaluate the answer; be critical.", engine=engine)(response)
    """

    def __init__(self, eval_system_prompt: Variable | str, engine: Engine | None = None):
        self.eval_system_prompt = _frozen(eval_system_prompt, "system prompt for the evaluation")
        self.engine = engine
        self.llm_call = LLMCall(engine, self.eval_system_prompt)

    def parameters(self) -> list[Variable]:
        return []

    async def __call__(self, instance: Variable) -> Variable:
        return await self.llm_call(instance)

    forward = __call__


class MultiFieldEvaluation(Module):
    """Evaluate several named variables together (question, ground truth, prediction, ...)."""

    DEFAULT_SYSTEM_PROMPT = "You are an evaluation system that compares two variables."

    def __init__(
        self,
        evaluation_instruction: Variable | str,
        role_descriptions: Sequence[str],
        engine: Engine | None = None,
        system_prompt: Variable | None = None,
    ):
        self.evaluation_instruction = _frozen(
            evaluation_instruction, "evaluation instruction for the task"
        )
        roles = list(role_descriptions)
        if not roles or not all(isinstance(r, str) and r for r in roles):
            raise ConfigError("role_descriptions must be a non-empty list of strings")
        if len(set(roles)) != len(roles) or "instruction" in roles:
            raise ConfigError("role_descriptions must be distinct and not 'instruction'")
        self.role_descriptions = roles
        self.engine = engine
        self.system_prompt = system_prompt or Variable(
            self.DEFAULT_SYSTEM_PROMPT,
            requires_grad=False,
            role_description="system prompt for the evaluation",
        )
        # Each field is labelled with its role description, as in TextGrad; placeholders get
        # plain names so any role text (dots, brackets, braces) is safe in a format string.
        self._keys = [f"field_{i}" for i in range(len(roles))]
        lines = ["{instruction}"] + [
            f"**{_escape(r)}**: {{{k}}}" for r, k in zip(roles, self._keys, strict=True)
        ]
        self.format_string = "\n".join(lines)
        self.fields = ["instruction", *self._keys]
        self.formatted_llm_call = FormattedLLMCall(
            engine, self.format_string, self.fields, system_prompt=self.system_prompt
        )

    def parameters(self) -> list[Variable]:
        return []

    async def __call__(self, inputs: Sequence[Variable]) -> Variable:
        inputs = list(inputs)
        if len(inputs) != len(self.role_descriptions):
            raise ConfigError(
                f"expected {len(self.role_descriptions)} inputs ({self.role_descriptions}), "
                f"got {len(inputs)}"
            )
        for role, var in zip(self.role_descriptions, inputs, strict=True):
            var.set_role_description(role)  # as TextGrad does: the role names the field
        call_inputs = {
            "instruction": self.evaluation_instruction,
            **dict(zip(self._keys, inputs, strict=True)),
        }
        return await self.formatted_llm_call(
            inputs=call_inputs, response_role_description="evaluation of a prediction"
        )

    forward = __call__


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def parse_tagged(text: str, tags: Sequence[str]) -> str:
    """The text between the first ``tags[0]`` and the next ``tags[1]``, stripped.

    Raises ``EvaluationParseError`` (carrying the reply) when either tag is missing.
    """
    start, end = tags[0], tags[1]
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise EvaluationParseError(
            f"the evaluator's reply has no {start}...{end} span; use a model that follows the "
            "format, or catch EvaluationParseError to score it as a failure. "
            f"Reply: {text[:300]!r}",
            reply=text,
            tags=(start, end),
        )
    return text[i + len(start) : j].strip()


class MultiFieldTokenParsedEvaluation(MultiFieldEvaluation):
    """A multi-field evaluation whose verdict is read from between ``parse_tags``."""

    def __init__(
        self,
        evaluation_instruction: Variable | str,
        role_descriptions: Sequence[str],
        engine: Engine | None = None,
        system_prompt: Variable | None = None,
        parse_tags: Sequence[str] | None = None,
    ):
        super().__init__(evaluation_instruction, role_descriptions, engine, system_prompt)
        if parse_tags is None or len(parse_tags) != 2:
            raise ConfigError(
                "parse_tags must be [start_tag, end_tag], e.g. ['<ACCURACY>', '</ACCURACY>']"
            )
        self.parse_tags = list(parse_tags)

    def parse_output(self, response: Variable) -> str:
        """The verdict between the parse tags; ``EvaluationParseError`` if they are missing."""
        return parse_tagged(str(response.value), self.parse_tags)


DEFAULT_TEST_TIME_SYSTEM_PROMPT = (
    "You are an intelligent evaluator inside an optimization system. You will examine a "
    "solution to a multiple-choice problem: study its reasoning and its answer. Do not solve "
    "the problem yourself; only point out possible issues and mistakes in the answer. Be "
    "creative, look at it from different angles, and be very critical."
)


class MultiChoiceTestTime(Module):
    """The test-time loss for an answer to a multiple-choice question (solution optimization)."""

    def __init__(
        self,
        evaluation_instruction: str,
        engine: Engine | None = None,
        system_prompt: Variable | None = None,
    ):
        self.tt_system_prompt = system_prompt or Variable(
            DEFAULT_TEST_TIME_SYSTEM_PROMPT,
            requires_grad=False,
            role_description="system prompt for the test-time evaluation",
        )
        self.engine = engine
        self.format_string = (
            _escape(evaluation_instruction)
            + "\nQuestion: {question}\nAnswer by the language model: {prediction}"
        )
        self.formatted_llm_call = FormattedLLMCall(
            engine,
            self.format_string,
            ["prediction", "question"],
            system_prompt=self.tt_system_prompt,
        )

    def parameters(self) -> list[Variable]:
        return []

    async def __call__(self, question: str, prediction: Variable) -> Variable:
        question_variable = Variable(
            question, requires_grad=False, role_description="the multiple choice question"
        )
        return await self.formatted_llm_call(
            inputs={"prediction": prediction, "question": question_variable},
            response_role_description=f"evaluation of the {prediction.role_description}",
        )

    forward = __call__


class ImageQALoss(Module):
    """Evaluate an answer to a question about an image; the image goes to the evaluator too."""

    def __init__(
        self,
        evaluation_instruction: str,
        engine: Engine | None = None,
        system_prompt: Variable | None = None,
    ):
        self.evaluation_instruction = Variable(
            evaluation_instruction, requires_grad=False, role_description="evaluation instruction"
        )
        self.system_prompt = system_prompt or Variable(
            "You are an evaluation system that evaluates image-related questions.",
            requires_grad=False,
            role_description="system prompt for the evaluation",
        )
        self.engine = engine
        self.multimodal_llm_call = OrderedFieldsMultimodalLLMCall(
            engine,
            ["Evaluation Instruction", "Question", "Image", "Answer"],
            system_prompt=self.system_prompt,
        )

    def parameters(self) -> list[Variable]:
        return []

    async def __call__(self, image: Variable, question: Variable, response: Variable) -> Variable:
        return await self.multimodal_llm_call(
            inputs={
                "Evaluation Instruction": self.evaluation_instruction,
                "Question": question,
                "Image": image,
                "Answer": response,
            },
            response_role_description=f"evaluation of the {response.role_description}",
        )

    forward = __call__
