"""TextGrad's ``tg.tasks`` namespace: the ``DataLoader`` of its training scripts.

>>> from asynctg.compat.tasks import DataLoader
>>> list(DataLoader([("q1", "a1"), ("q2", "a2"), ("q3", "a3")], batch_size=2, shuffle=False))
[(('q1', 'q2'), ('a1', 'a2')), (('q3',), ('a3',))]
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asynctg.errors import ConfigError

__all__ = ["DataLoader", "Dataset", "load_instance_task", "load_task"]


class DataLoader:
    """Batches of a dataset, iterated as TextGrad's ``DataLoader`` iterates them.

    ``iter()`` reshuffles (when ``shuffle``) and restarts; each batch holds ``batch_size``
    items (the last one may hold fewer). When items are tuples, a batch is a tuple of columns,
    ``(xs, ys)``, ready for ``for x, y in zip(xs, ys)``; otherwise it is a list of items
    (TextGrad: a numpy array). Shuffling uses ``random`` (the module's global generator, as
    TextGrad uses numpy's), or the ``rng`` given. The loader is its own iterator, as in
    TextGrad, so two loops over it at once share one position.
    """

    def __init__(
        self,
        data: Sequence[Any],
        batch_size: int = 32,
        shuffle: bool = True,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            # TextGrad loops forever on batch_size=0; refuse it instead.
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.indices = list(range(len(data)))
        self.current_index = 0
        self._rng = rng

    def __iter__(self) -> DataLoader:
        if self.shuffle:
            (self._rng or random).shuffle(self.indices)
        self.current_index = 0
        return self

    def __next__(self) -> tuple[tuple[Any, ...], ...] | list[Any]:
        if self.current_index >= len(self.data):
            raise StopIteration
        chosen = self.indices[self.current_index : self.current_index + self.batch_size]
        self.current_index += self.batch_size
        batch = [self.data[i] for i in chosen]
        if isinstance(batch[0], tuple):
            return tuple(zip(*batch, strict=False))  # ragged tuples truncate, as in TextGrad
        return batch

    def __len__(self) -> int:
        """Batches per pass (TextGrad's loader has no length; progress bars like one)."""
        return -(-len(self.data) // self.batch_size)


# --- load_task / load_instance_task ------------------------------------------------------------

#: TextGrad's task names.
AVAILABLE_DATASETS = ["BBH_object_counting", "BBH_word_sorting", "GSM8K_DSPy"]
AVAILABLE_INSTANCE_DATASETS = [
    "MMLU_machine_learning",
    "MMLU_college_physics",
    "GPQA_diamond",
    "LeetCodeHardEval",
]
_SOURCES = {
    "object_counting": "https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/main/bbh/"
    "object_counting.json",
    "word_sorting": "https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/main/bbh/"
    "word_sorting.json",
    "gsm8k": "https://raw.githubusercontent.com/openai/grade-school-math/master/"
    "grade_school_math/data/test.jsonl (and train.jsonl)",
}


class Dataset:
    """One split of a task: ``ds[i]`` is an ``(x, y)`` pair (a question, its answer), as in
    TextGrad; ``get_task_description()`` is the starting system prompt."""

    def __init__(self, items: Sequence[Any], description: str) -> None:
        self._items = [tuple(item) for item in items]
        self._task_description = description

    def __getitem__(self, index: int) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def get_task_description(self) -> str:
        return self._task_description

    def get_default_task_instruction(self) -> str:
        return self._task_description


def _root(root: str | os.PathLike[str] | None) -> Path:
    """Where task files are looked for: ``root``, ``$TEXTGRAD_DATA_DIR``, then TextGrad's own
    download folder (``~/.cache/textgrad``), so data TextGrad fetched before is found."""
    if root is not None:
        return Path(root)
    explicit = os.environ.get("TEXTGRAD_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "textgrad"


def _find(root: Path, name: str, candidates: Sequence[str]) -> Path:
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    raise ConfigError(
        f"{name}: no data under {root} (looked for {', '.join(candidates)}). asynctg downloads "
        f"nothing; fetch {_SOURCES.get(name, 'the data set')} into {root} (or pass root=DIR, or "
        "set TEXTGRAD_DATA_DIR)."
    )


def _bbh_from_csvs(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """TextGrad's own download layout: ``<root>/<task>/{train,val,test}.csv`` (x, y columns)."""
    import csv

    out = {}
    for split in ("train", "val", "test"):
        with open(folder / f"{split}.csv", newline="", encoding="utf-8") as f:
            out[split] = [(row["x"], row["y"]) for row in csv.DictReader(f)]
    return out


def load_task(
    task_name: str, evaluation_api: Any = None, *args: Any, root: Any = None, **kwargs: Any
) -> tuple[Dataset, Dataset, Dataset, Any]:
    """TextGrad's ``load_task``: ``(train, val, test, eval_fn)`` for a task name, from local
    files (see ``_root``); never downloads: a missing file is a ``ConfigError`` naming what to
    fetch where. BBH tasks split 50 / 100 / rest, as TextGrad does."""
    from asynctg import prompts
    from asynctg.compat.autograd import StringBasedFunction
    from asynctg.compat.loss import MultiFieldTokenParsedEvaluation
    from asynctg.compat.variable import Variable
    from asynctg.tasks import get_task, string_based_equality_fn

    folder = _root(root)
    if task_name.startswith("BBH_"):
        name = task_name[4:]
        if (folder / name / "train.csv").exists():
            splits = _bbh_from_csvs(folder / name)
            description = (
                prompts.NUMERIC_TASK_DESCRIPTION
                if name == "object_counting"
                else prompts.WORD_SORTING_TASK_DESCRIPTION
            )
        else:
            path = _find(folder, name, [f"{name}.json", f"bbh/{name}.json"])
            task = get_task(name, data=str(path))
            splits = {s: list(getattr(task, s)) for s in ("train", "val", "test")}
            description = task.system_prompt  # type: ignore[union-attr]
    elif task_name == "GSM8K_DSPy":
        path = _find(folder, "gsm8k", ["gsm8k", "gsm8k.jsonl", "test.jsonl"])
        task = get_task("gsm8k", data=str(path))
        splits = {s: list(getattr(task, s)) for s in ("train", "val", "test")}
        description = task.system_prompt  # type: ignore[union-attr]
    else:
        raise ValueError(f"Task {task_name} not found.")
    train, val, test = (Dataset(splits[s], description) for s in ("train", "val", "test"))
    if task_name == "BBH_word_sorting":
        instruction = Variable(
            prompts.judge_instruction(),
            requires_grad=False,
            role_description="evaluation instruction for the task",
        )
        eval_fn: Any = MultiFieldTokenParsedEvaluation(
            instruction,
            engine=evaluation_api,
            role_descriptions=[
                "Question for the task",
                "Ground truth answer",
                "Reasoning and prediction from the language model",
            ],
            parse_tags=["<ACCURACY>", "</ACCURACY>"],
        )
    else:
        eval_fn = StringBasedFunction(
            string_based_equality_fn, function_purpose=prompts.STRING_MATCH_PURPOSE
        )
    return train, val, test, eval_fn


def load_instance_task(
    task_name: str, evaluation_api: Any = None, *args: Any, root: Any = None, **kwargs: Any
) -> Any:
    """TextGrad's ``load_instance_task``: MMLU / GPQA questions or LeetCode-Hard problems from
    local files (``root``, ``$TEXTGRAD_DATA_DIR``); items are ``(question, answer)`` pairs for
    MMLU and GPQA, ``CodeProblem`` records for LeetCode-Hard."""
    from asynctg.tasks import get_task

    folder = _root(root)
    if task_name.startswith("MMLU_"):
        subset = task_name[5:]
        path = _find(folder, f"mmlu {subset}", [f"{subset}_test.csv", f"mmlu/{subset}_test.csv"])
        task = get_task("mmlu", data=str(path))
        return Dataset([(q.query, q.answer) for q in task.questions], "")  # type: ignore[union-attr]
    if task_name.startswith("GPQA"):
        path = _find(folder, "gpqa", ["gpqa_diamond.csv", "gpqa/gpqa_diamond.csv"])
        task = get_task("gpqa", data=str(path))
        return Dataset([(q.query, q.answer) for q in task.questions], "")  # type: ignore[union-attr]
    if task_name == "LeetCodeHardEval":
        path = _find(folder, "leetcode_hard", ["leetcode_with_tests.jsonl"])
        return get_task("leetcode_hard", data=str(path)).problems  # type: ignore[union-attr]
    raise ValueError(f"Instance task {task_name} not found.")
