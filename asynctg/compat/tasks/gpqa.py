"""``textgrad.tasks.gpqa``: GPQA questions, and the instance items of solution optimization.

Read from a local file (asynctg downloads nothing): ``gpqa/<subset>.csv`` or ``<subset>.csv``
under the data root, with GPQA's columns (``Question``, ``Correct Answer``,
``Incorrect Answer 1`` ... ``3``). The options are ordered as TextGrad orders them (the three
incorrect answers, then the correct one, shuffled by a generator seeded with 42 for each
question), so the answer letters match TextGrad's.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from asynctg.compat.loss import MultiChoiceTestTime, MultiFieldTokenParsedEvaluation
from asynctg.compat.tasks._files import data_root, find
from asynctg.compat.tasks.base import Dataset
from asynctg.compat.tasks.mmlu import (
    QUERY_TEMPLATE_MULTICHOICE,
    eval_string_based,
    multichoice_test_time_objective,
)
from asynctg.compat.variable import Variable
from asynctg.errors import ConfigError
from asynctg.prompts import TEXTGRAD_TEMPLATES
from asynctg.tasks.files import read_rows

__all__ = [
    "GPQA",
    "QUERY_TEMPLATE_MULTICHOICE",
    "Dataset",
    "GPQAInstanceDataset",
    "GPQAInstanceDatasetOpenAI",
    "MultiChoiceTestTime",
    "MultiFieldTokenParsedEvaluation",
    "Variable",
    "eval_string_based",
]


def _question(row: dict[str, Any]) -> tuple[str, str]:
    correct = str(row["Correct Answer"]).strip()
    choices = [str(row[f"Incorrect Answer {i}"]).strip() for i in (1, 2, 3)] + [correct]
    random.Random(42).shuffle(choices)
    prompt = QUERY_TEMPLATE_MULTICHOICE.format(
        Question=row["Question"], A=choices[0], B=choices[1], C=choices[2], D=choices[3]
    )
    return prompt, chr(65 + choices.index(correct))


class GPQA(Dataset):
    """GPQA: ``ds[i]`` is ``(question with choices, answer letter)``."""

    def __init__(self, subset: str = "gpqa_diamond", root: Any = None, *a: Any, **k: Any) -> None:
        self.root = str(data_root(root))
        self.subset = subset
        path = find(data_root(root), "gpqa", [f"gpqa/{subset}.csv", f"{subset}.csv"])
        self.data = read_rows(path)
        for i, row in enumerate(self.data):
            if "Question" not in row or "Correct Answer" not in row:
                raise ConfigError(f"{path}: record {i + 1} is not a GPQA record")
        self._task_description = "GPQA task"

    def __getitem__(self, index: int) -> Any:
        return _question(self.data[index])

    def __len__(self) -> int:
        return len(self.data)

    def get_default_task_instruction(self) -> str:
        return TEXTGRAD_TEMPLATES["MULTICHOICE_INSTRUCTION"]

    def get_task_description(self) -> str:
        return TEXTGRAD_TEMPLATES["MULTICHOICE_INSTRUCTION"]


class GPQAInstanceDataset(GPQA):
    """GPQA for test-time optimization: items as ``MMLUInstanceDataset``'s."""

    def __init__(
        self,
        evaluation_api: Any,
        subset: str = "gpqa_diamond",
        root: Any = None,
        split: str = "train",
        max_samples: int = -1,
    ) -> None:
        super().__init__(subset, root)
        if max_samples is not None and max_samples > 0:
            self.data = self.data[:max_samples]
        self.evaluation_api = evaluation_api

    def _get_instance_test_time_objective(self, question: str) -> Callable[[Variable], Variable]:
        return multichoice_test_time_objective(question, self.evaluation_api)

    def _get_instance_eval_fn(self, question_prompt: str, answer: str) -> Callable[[Any], float]:
        return lambda response: eval_string_based(response.value, answer)

    def __getitem__(self, index: int) -> Any:
        prompt, answer = _question(self.data[index])
        return (
            prompt,
            answer,
            self._get_instance_test_time_objective(prompt),
            self._get_instance_eval_fn(prompt, answer),
        )


#: TextGrad's variant for OpenAI's copy of GPQA; the same items from the same file here.
GPQAInstanceDatasetOpenAI = GPQAInstanceDataset
