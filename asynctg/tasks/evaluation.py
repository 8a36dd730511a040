"""The paper's evaluation functions: exact match with TextGrad's integer parsing, word match,
multiple-choice letters with majority vote, and the LLM judge with ``<ACCURACY>`` tags.

>>> parse_integer_answer("Let me count... 3 + 4 = 7.\\nAnswer: 7")
7
>>> parse_choice("The options differ.\\nAnswer: (C)")
'C'
>>> majority_vote(["Answer: B", "Answer: C", "Answer: B"])
'Answer: B'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import multimode
from typing import Protocol

from asynctg import prompts
from asynctg.engine.protocol import Engine
from asynctg.errors import ConfigError, EvaluationParseError
from asynctg.graph.ops import StringBasedFunction
from asynctg.graph.variable import Variable
from asynctg.loss import MultiFieldTokenParsedEvaluation
from asynctg.tasks.types import Evaluation

__all__ = [
    "ACCURACY_TAGS",
    "Evaluator",
    "JudgeEvaluator",
    "StringEvaluator",
    "choice_score",
    "final_answer",
    "majority_vote",
    "make_evaluator",
    "parse_choice",
    "parse_integer_answer",
    "string_based_equality_fn",
    "words_equality_fn",
]

ACCURACY_TAGS = ("<ACCURACY>", "</ACCURACY>")

# TextGrad reads "Answer: C"; a model that writes "Answer: (C)" means the same, so the
# parenthesis is allowed (the simulator answers that way, as BBH's options are written).
_CHOICE_RE = re.compile(r"(?i)answer\s*:\s*\(?\s*([A-J])\b")
_ANSWER_RE = re.compile(r"(?i)answer\s*:")


def parse_integer_answer(answer: str, only_first_line: bool = False) -> int:
    """The integer a reply ends with, parsed the way TextGrad (after DSPy) parses it.

    Take the last whitespace-separated token that contains a digit, cut it at its first ".",
    keep its digits only (so signs and thousands separators go), and read an int; 0 when there
    is none. ``only_first_line`` looks at the first line only.

    >>> parse_integer_answer("It costs $1,250.50 in total")
    1250
    >>> parse_integer_answer("no number here")
    0
    """
    text = answer.strip()
    if only_first_line:
        text = text.split("\n")[0].strip()
    tokens = [token for token in text.split() if any(c.isdigit() for c in token)]
    if not tokens:
        return 0
    digits = "".join(c for c in tokens[-1].split(".")[0] if c.isdigit())
    return int(digits) if digits else 0


def string_based_equality_fn(prediction: Variable, ground_truth_answer: Variable) -> int:
    """1 if both parse to the same integer (``parse_integer_answer``), else 0."""
    return int(
        parse_integer_answer(str(prediction.value))
        == parse_integer_answer(str(ground_truth_answer.value))
    )


def final_answer(text: str) -> str:
    """What follows the last ``Answer:`` of a reply (its last line if there is none).

    >>> final_answer("Sorted.\\nAnswer: apple pear")
    'apple pear'
    """
    found = list(_ANSWER_RE.finditer(text))
    if found:
        return text[found[-1].end() :].strip().split("\n")[0].strip()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def words_equality_fn(prediction: Variable, ground_truth_answer: Variable) -> int:
    """1 if the prediction's final answer has the ground truth's words, in order, else 0."""
    predicted = _words(final_answer(str(prediction.value)))
    return int(predicted == _words(str(ground_truth_answer.value)))


def parse_choice(text: str) -> str | None:
    """The letter after the first ``Answer:`` (``Answer: C`` or ``Answer: (C)``), or None."""
    match = _CHOICE_RE.search(text)
    return match.group(1).upper() if match else None


def choice_score(text: str, answer: str) -> int:
    """1 if the reply's letter is ``answer``, else 0."""
    return int(parse_choice(text) == answer.strip().upper())


def majority_vote(texts: Sequence[str]) -> str:
    """``"Answer: X"`` for the most common letter among the replies (first seen wins a tie).

    A reply without a letter votes for None, as in the paper's script, so if most replies have
    no letter the vote is ``"Answer: None"`` and scores 0.
    """
    if not texts:
        raise ConfigError("majority_vote needs at least one prediction")
    return f"Answer: {multimode([parse_choice(t) for t in texts])[0]}"


class Evaluator(Protocol):
    """How a prompt task turns a model's response into a loss and a 0/1 score."""

    kind: Evaluation

    async def loss(self, question: Variable, answer: Variable, response: Variable) -> Variable:
        """The loss variable for one example (backward starts from it)."""
        ...

    def score(self, loss: Variable) -> int:
        """1 if the loss says the response is right, else 0."""
        ...


class StringEvaluator:
    """Exact match as a ``StringBasedFunction``: its output "1"/"0" is the loss."""

    def __init__(self, kind: Evaluation = "exact_int") -> None:
        if kind == "exact_int":
            fn = string_based_equality_fn
        elif kind == "exact_words":
            fn = words_equality_fn
        else:
            raise ConfigError(f"StringEvaluator does {kind!r}? use exact_int or exact_words")
        self.kind: Evaluation = kind
        self.function = StringBasedFunction(fn, function_purpose=prompts.STRING_MATCH_PURPOSE)

    async def loss(self, question: Variable, answer: Variable, response: Variable) -> Variable:
        return await self.function(inputs=dict(prediction=response, ground_truth_answer=answer))

    def score(self, loss: Variable) -> int:
        return 1 if str(loss.value).strip() == "1" else 0


class JudgeEvaluator:
    """The LLM judge: a multi-field evaluation answering 0/1 between ``<ACCURACY>`` tags.

    A verdict that cannot be read (no tags, not 0 or 1) scores 0 and is counted in
    ``unreadable``.
    """

    kind: Evaluation = "judge"

    def __init__(self, engine: Engine) -> None:
        instruction = Variable(
            prompts.judge_instruction(),
            requires_grad=False,
            role_description="evaluation instruction for the task",
        )
        self.evaluation = MultiFieldTokenParsedEvaluation(
            instruction,
            role_descriptions=list(prompts.JUDGE_ROLES),
            engine=engine,
            parse_tags=list(ACCURACY_TAGS),
        )
        self.unreadable = 0

    async def loss(self, question: Variable, answer: Variable, response: Variable) -> Variable:
        return await self.evaluation([question, answer, response])

    def score(self, loss: Variable) -> int:
        try:
            verdict = self.evaluation.parse_output(loss).strip()
        except EvaluationParseError:
            self.unreadable += 1
            return 0
        if verdict not in ("0", "1"):
            self.unreadable += 1
            return 0
        return int(verdict)


def make_evaluator(kind: Evaluation, engine: Engine) -> StringEvaluator | JudgeEvaluator:
    """The evaluator for ``kind``; the judge calls ``engine``."""
    if kind == "judge":
        return JudgeEvaluator(engine)
    return StringEvaluator(kind)
