"""``textgrad.tasks.mmlu``: MMLU questions, and the instance items of solution optimization.

Read from local files (asynctg downloads nothing) under the data root (``_files.data_root``):
``mmlu/<subset>_<split>.{jsonl,json,csv}`` with Hugging Face's ``cais/mmlu`` fields
(``question``, ``choices``, ``answer`` as an index), or MMLU's original header-less CSV
(``question, A, B, C, D, answer-letter``) as ``<subset>_<split>.csv`` or
``<split>/<subset>_<split>.csv``. TextGrad's ``split="train"`` is MMLU's ``dev`` split.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from typing import Any

from asynctg.compat.loss import MultiChoiceTestTime, MultiFieldTokenParsedEvaluation
from asynctg.compat.tasks._files import data_root, find
from asynctg.compat.tasks.base import Dataset
from asynctg.compat.variable import Variable
from asynctg.errors import ConfigError
from asynctg.prompts import TEXTGRAD_TEMPLATES
from asynctg.tasks.files import read_rows

__all__ = [
    "MMLU",
    "QUERY_TEMPLATE_MULTICHOICE",
    "Dataset",
    "MMLUInstanceDataset",
    "MultiChoiceTestTime",
    "MultiFieldTokenParsedEvaluation",
    "Variable",
    "eval_string_based",
]

#: A four-option question with the ``Answer: $LETTER`` last-line format TextGrad asks for.
QUERY_TEMPLATE_MULTICHOICE = TEXTGRAD_TEMPLATES["QUERY_TEMPLATE_MULTICHOICE"]
_ANSWER_LETTER = re.compile(r"answer\s*:\s*([A-D])", re.IGNORECASE)
_COLUMNS = ("question", "A", "B", "C", "D", "answer")


def eval_string_based(response_text: str, correct_answer: str) -> float:
    """1.0 when the first ``Answer: X`` (X in A-D) in the text is the correct letter, else 0.0."""
    found = _ANSWER_LETTER.search(response_text)
    return 1.0 if found is not None and found.group(1) == correct_answer else 0.0


def _letter(answer: Any) -> str:
    text = str(answer).strip()
    if text.isdigit():
        return chr(65 + int(text))
    return text.upper()


def mmlu_rows(subset: str, split: str, root: Any = None) -> list[tuple[str, list[str], str]]:
    """``(question, choices, answer letter)`` for one subset and split (see the module)."""
    if split not in ("train", "validation", "test"):
        raise ConfigError(f"split must be one of train, validation, test; got {split!r}")
    name = "dev" if split == "train" else split
    folder = data_root(root)
    stem = f"{subset}_{name}"
    path = find(
        folder,
        "mmlu",
        [
            *(f"mmlu/{stem}.{ext}" for ext in ("jsonl", "json", "csv")),
            f"{stem}.csv",
            f"{name}/{stem}.csv",
            f"mmlu/{name}/{stem}.csv",
        ],
    )
    rows = read_rows(path)
    out = []
    if rows and "question" not in rows[0]:  # MMLU's original files have no header row
        with open(path, newline="", encoding="utf-8") as f:
            rows = [dict(zip(_COLUMNS, r, strict=False)) for r in csv.reader(f)]
    for i, row in enumerate(rows):
        choices = row.get("choices")
        if isinstance(choices, str):
            choices = json.loads(choices)
        if choices is None:
            choices = [row.get(c, "") for c in "ABCD"]
        if not isinstance(choices, list) or "question" not in row or "answer" not in row:
            raise ConfigError(f"{path}: record {i + 1} is not an MMLU record")
        out.append((str(row["question"]), [str(c) for c in choices], _letter(row["answer"])))
    return out


def multichoice_test_time_objective(question: str, engine: Any) -> Callable[[Variable], Variable]:
    """TextGrad's test-time loss for one multiple-choice question: the critique of an answer."""
    loss = MultiChoiceTestTime(TEXTGRAD_TEMPLATES["MULTICHOICE_TEST_TIME_INSTRUCTION"], engine)

    def test_time_objective(instance: Variable) -> Variable:
        return loss(question, instance)

    return test_time_objective


class MMLU(Dataset):
    """One split of an MMLU subset: ``ds[i]`` is ``(question with choices, answer letter)``."""

    def __init__(
        self, subset: str, root: Any = None, split: str = "train", *args: Any, **kwargs: Any
    ) -> None:
        self.root = str(data_root(root))
        self.subset = subset
        self.split = split
        self.data = mmlu_rows(subset, split, root)
        self._task_description = TEXTGRAD_TEMPLATES["MMLU_TASK_DESCRIPTION"]

    def __getitem__(self, index: int) -> Any:
        question, choices, answer = self.data[index]
        listed = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
        return f"Question: {question}\nChoices:\n{listed}", answer

    def __len__(self) -> int:
        return len(self.data)

    def get_default_task_instruction(self) -> str:
        return TEXTGRAD_TEMPLATES["MULTICHOICE_INSTRUCTION"]


class MMLUInstanceDataset(MMLU):
    """MMLU for test-time optimization: ``ds[i]`` is ``(question_prompt, answer,
    test_time_objective, instance_eval_fn)``, as in TextGrad: the objective maps a solution
    variable to its test-time loss (an LLM critique), the evaluation function a solution to
    1.0 or 0.0 by its ``Answer: X`` line."""

    def __init__(
        self,
        evaluation_api: Any,
        subset: str,
        root: Any = None,
        split: str = "train",
        max_samples: int = -1,
    ) -> None:
        super().__init__(subset, root, split)
        if max_samples is not None and max_samples > 0:
            self.data = self.data[:max_samples]
        self.evaluation_api = evaluation_api

    def _get_instance_test_time_objective(self, question: str) -> Callable[[Variable], Variable]:
        return multichoice_test_time_objective(question, self.evaluation_api)

    def _get_instance_eval_fn(self, question_prompt: str, answer: str) -> Callable[[Any], float]:
        return lambda response: eval_string_based(response.value, answer)

    def __getitem__(self, index: int) -> Any:
        question, choices, answer = self.data[index]
        a, b, c, d = [*choices, "", "", "", ""][:4]
        prompt = QUERY_TEMPLATE_MULTICHOICE.format(Question=question, A=a, B=b, C=c, D=d)
        return (
            prompt,
            answer,
            self._get_instance_test_time_objective(prompt),
            self._get_instance_eval_fn(prompt, answer),
        )
