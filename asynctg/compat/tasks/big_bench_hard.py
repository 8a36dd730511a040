"""``textgrad.tasks.big_bench_hard``: BIG-Bench Hard splits and the exact-match check.

``BigBenchHard(task, split=...)`` reads TextGrad's download layout, ``<root>/<task>/<split>.csv``
(columns ``x``, ``y``), or else ``<root>/<task>.json`` (BIG-Bench Hard's own file, which TextGrad
downloads first), split 50 / 100 / rest in file order as TextGrad splits it.
"""

from __future__ import annotations

import csv
from typing import Any

from asynctg.compat.tasks._files import data_root, find
from asynctg.compat.tasks.base import Dataset
from asynctg.errors import ConfigError
from asynctg.prompts import TEXTGRAD_TEMPLATES
from asynctg.tasks.evaluation import parse_integer_answer, string_based_equality_fn
from asynctg.tasks.files import load_bbh

__all__ = ["BigBenchHard", "Dataset", "parse_integer_answer", "string_based_equality_fn"]

_SPLITS = {"train": slice(0, 50), "val": slice(50, 150), "test": slice(150, None)}


def bbh_split(task_name: str, split: str, root: Any = None) -> list[tuple[str, str]]:
    """The ``(x, y)`` pairs of one split of a BIG-Bench Hard task (see the module)."""
    if split not in _SPLITS:
        raise ConfigError(f"split must be one of train, val, test; got {split!r}")
    folder = data_root(root)
    table = folder / task_name / f"{split}.csv"
    if table.exists():
        with open(table, newline="", encoding="utf-8") as f:
            return [(row["x"], row["y"]) for row in csv.DictReader(f)]
    path = find(folder, task_name, [f"{task_name}.json", f"bbh/{task_name}.json"])
    return [(qa.question, qa.answer) for qa in load_bbh(path)][_SPLITS[split]]


class BigBenchHard(Dataset):
    """One split of a BIG-Bench Hard task: ``ds[i]`` is ``(question, answer)``."""

    def __init__(
        self, task_name: str, root: Any = None, split: str = "train", *args: Any, **kwargs: Any
    ) -> None:
        self.root = str(data_root(root))
        self.split = split
        self.task_name = task_name
        self.data = bbh_split(task_name, split, root)
        # TextGrad gives every BBH task (word sorting too) this one description.
        self._task_description = TEXTGRAD_TEMPLATES["BBH_TASK_DESCRIPTION"]

    def __getitem__(self, index: int) -> tuple[str, str]:
        return self.data[index]

    def __len__(self) -> int:
        return len(self.data)

    def get_task_description(self) -> str:
        return self._task_description

    def get_default_task_instruction(self) -> str:
        return self._task_description
