"""``textgrad.tasks.gsm8k``: GSM8K questions with their final numeric answers.

Read from local files (asynctg downloads nothing): ``<root>/gsm8k/{train,test}.jsonl``,
``<root>/gsm8k.jsonl`` or ``<root>/test.jsonl`` (GSM8K's own JSON-lines files). ``GSM8K_DSPy``
splits as TextGrad does when both files are there (train shuffled with seed 0: 200 train, 300
validation; the test file shuffled with seed 0); with only a test file it splits that one
(asynctg's ``gsm8k`` task).
"""

from __future__ import annotations

import random
from typing import Any

from asynctg.compat.tasks._files import data_root, find
from asynctg.compat.tasks.base import Dataset
from asynctg.errors import ConfigError
from asynctg.prompts import TEXTGRAD_TEMPLATES
from asynctg.tasks.files import load_gsm8k

__all__ = ["GSM8K", "Dataset", "GSM8K_DSPy"]


def gsm8k_splits(root: Any = None) -> dict[str, list[tuple[str, str]]]:
    """``train``/``val``/``test`` lists of ``(question, final answer)``."""
    folder = data_root(root)
    train_file = folder / "gsm8k" / "train.jsonl"
    test_file = folder / "gsm8k" / "test.jsonl"
    if train_file.exists() and test_file.exists():
        train = [(qa.question, qa.answer) for qa in load_gsm8k(train_file)]
        test = [(qa.question, qa.answer) for qa in load_gsm8k(test_file)]
        random.Random(0).shuffle(train)
        random.Random(0).shuffle(test)
        return {"train": train[:200], "val": train[200:500], "test": test}
    from asynctg.tasks import get_task

    path = find(folder, "gsm8k", ["gsm8k", "gsm8k.jsonl", "test.jsonl"])
    task = get_task("gsm8k", data=str(path))
    return {s: [tuple(x) for x in getattr(task, s)] for s in ("train", "val", "test")}  # type: ignore[misc]


class GSM8K(Dataset):
    """One split of GSM8K: ``ds[i]`` is ``("Question: ...", answer)``."""

    def __init__(
        self, subset: str = "main", root: Any = None, split: str = "train", *a: Any, **k: Any
    ) -> None:
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split must be one of train, val, test; got {split!r}")
        self.root = str(data_root(root))
        self.subset = subset
        self.split = split
        self.data = gsm8k_splits(root)[split]

    def __getitem__(self, index: int) -> tuple[str, str]:
        question, answer = self.data[index]
        return f"Question: {question}", answer

    def __len__(self) -> int:
        return len(self.data)

    def get_task_description(self) -> str:
        return TEXTGRAD_TEMPLATES["GSM8K_TASK_DESCRIPTION"]


class GSM8K_DSPy(GSM8K):
    """GSM8K with DSPy's splits (see the module)."""

    def __init__(self, root: Any = None, split: str = "train") -> None:
        super().__init__("main", root, split)
