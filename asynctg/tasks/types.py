"""What the tasks hand to the loops: examples, and the three kinds of task built from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "QA",
    "CodeProblem",
    "CodeTask",
    "Evaluation",
    "MultipleChoice",
    "PromptTask",
    "SolutionTask",
]

#: How a prompt task scores a prediction: exact match with TextGrad's integer parsing
#: ("exact_int"), exact match of the final answer's words ("exact_words"), or the LLM judge
#: with ``<ACCURACY>`` tags ("judge").
Evaluation = Literal["exact_int", "exact_words", "judge"]


class QA(NamedTuple):
    """A question and its ground-truth answer (BBH, GSM8K)."""

    question: str
    answer: str


class MultipleChoice(NamedTuple):
    """A multiple-choice question (MMLU, GPQA).

    ``query`` is the full text sent to the model (question, lettered options and the answer
    format); ``answer`` the correct letter.
    """

    query: str
    answer: str
    choices: tuple[str, ...]


class CodeProblem(NamedTuple):
    """A coding problem (LeetCode-Hard): a signature with its docstring, and assert-line tests."""

    task_id: str
    prompt: str
    tests: tuple[str, ...]
    entry_point: str = ""


@dataclass(frozen=True)
class PromptTask:
    """A prompt-optimization task: splits, the starting system prompt and how to score.

    ``source`` says where the data came from (a generator and its seed, or a file and its
    SHA-256); checkpoints use it to refuse resuming on other data.
    """

    name: str
    train: Sequence[QA]
    val: Sequence[QA]
    test: Sequence[QA]
    system_prompt: str
    evaluation: Evaluation
    source: str = ""
    kind: Literal["prompt"] = field(default="prompt", init=False)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass(frozen=True)
class SolutionTask:
    """A solution-optimization task: questions, and the test-time loss's flavour."""

    name: str
    questions: Sequence[MultipleChoice]
    loss_kind: Literal["mmlu", "gpqa"] = "mmlu"
    source: str = ""
    kind: Literal["solution"] = field(default="solution", init=False)

    def sizes(self) -> dict[str, int]:
        return {"questions": len(self.questions)}


@dataclass(frozen=True)
class CodeTask:
    """A code-optimization task: problems with their visible tests."""

    name: str
    problems: Sequence[CodeProblem]
    source: str = ""
    kind: Literal["code"] = field(default="code", init=False)

    def sizes(self) -> dict[str, int]:
        return {"problems": len(self.problems)}
