"""``textgrad.tasks.leetcode``: LeetCode-Hard problems from TextGrad's
``leetcode_with_tests.jsonl`` (read from the data root; asynctg downloads nothing)."""

from __future__ import annotations

from typing import Any

from asynctg.compat.tasks._files import data_root, find
from asynctg.compat.tasks.base import Dataset
from asynctg.tasks.files import load_leetcode

__all__ = ["Dataset", "LeetCodeHardEval"]


class LeetCodeHardEval(Dataset):
    """``ds[i]`` is ``(task_id, prompt, tests)``, as in TextGrad."""

    def __init__(self, root: Any = None) -> None:
        self.root = str(data_root(root))
        path = find(
            data_root(root),
            "leetcode_hard",
            ["leetcode_with_tests.jsonl", "leetcode_hard/leetcode_with_tests.jsonl"],
        )
        self.dataset = load_leetcode(path)
        self._task_description = "You need to solve the following LeetCode problem."

    def get_task_description(self) -> str:
        return self._task_description

    def __getitem__(self, index: int) -> Any:
        problem = self.dataset[index]
        return problem.task_id, problem.prompt, list(problem.tests)

    def __len__(self) -> int:
        return len(self.dataset)
