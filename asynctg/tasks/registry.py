"""The named tasks of the CLI and the loops, built from generated data, files or the HF cache.

=====================  ========  ===============================  ===========================
task                   loop      data                             scored by
=====================  ========  ===============================  ===========================
``object_counting``    prompt    generated, or a BBH file         exact match (integers)
``word_sorting``       prompt    generated, or a BBH file         LLM judge (or exact words)
``gsm8k``              prompt    a GSM8K file or folder           exact match (integers)
``mmlu``               solution  an MMLU file                     answer letter, majority vote
``gpqa``               solution  a GPQA file                      answer letter, majority vote
``arithmetic_choice``  solution  generated                        answer letter, majority vote
``leetcode_hard``      code      a LeetCode-Hard file             the problem's tests
``python_basics``      code      built in (five problems)         the problem's tests
=====================  ========  ===============================  ===========================

Splits follow the paper: BBH files are split 50 / 100 / rest (train / validation / test) in file
order; GSM8K follows DSPy's split (a folder with ``train.jsonl`` and ``test.jsonl``: the
training file shuffled with seed 0 gives 200 train and 300 validation examples, the test file
is the test set; a single file is shuffled with seed 0 and split 200 / 300 / rest).

>>> task = get_task("object_counting", train_size=3, val_size=2, test_size=2)
>>> task.sizes()
{'train': 3, 'val': 2, 'test': 2}
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from asynctg import prompts
from asynctg.errors import ConfigError, require_int
from asynctg.tasks import files, generate, hub
from asynctg.tasks.types import (
    QA,
    CodeProblem,
    CodeTask,
    Evaluation,
    MultipleChoice,
    PromptTask,
    SolutionTask,
)

__all__ = ["TASKS", "Task", "TaskInfo", "get_task", "task_names"]

Task = PromptTask | SolutionTask | CodeTask
Kind = Literal["prompt", "solution", "code"]
T = TypeVar("T")


@dataclass(frozen=True)
class TaskInfo:
    """A task's loop, whether it needs ``--data``, and one line on what it is."""

    kind: Kind
    needs_data: bool
    summary: str


TASKS: dict[str, TaskInfo] = {
    "object_counting": TaskInfo("prompt", False, "BBH object counting (generated or a BBH file)"),
    "word_sorting": TaskInfo("prompt", False, "BBH word sorting (generated or a BBH file)"),
    "gsm8k": TaskInfo("prompt", True, "GSM8K grade-school maths (a GSM8K file)"),
    "mmlu": TaskInfo("solution", True, "MMLU multiple choice (an MMLU file)"),
    "gpqa": TaskInfo("solution", True, "GPQA multiple choice (a GPQA file)"),
    "arithmetic_choice": TaskInfo("solution", False, "generated arithmetic multiple choice"),
    "leetcode_hard": TaskInfo("code", True, "LeetCode-Hard (a LeetCode-Hard JSONL file)"),
    "python_basics": TaskInfo("code", False, "five built-in Python problems with tests"),
}

#: Sizes of the generated splits when none are given (BBH's 50 / 100 / 100).
DEFAULT_GENERATED_SIZES = (50, 100, 100)
_BBH_SPLIT = (50, 100)
_GSM8K_SPLIT = (200, 300)
_EVALUATIONS = ("exact_int", "exact_words", "judge")


def task_names(kind: Kind | None = None) -> list[str]:
    """The task names, all or those of one loop."""
    return [name for name, info in TASKS.items() if kind is None or info.kind == kind]


def _cap(items: Sequence[T], n: int | None) -> list[T]:
    return list(items if n is None else items[:n])


def _check_size(name: str, value: int | None) -> None:
    if value is not None:
        require_int(name, value, 0, noun="a whole number")


def get_task(
    name: str,
    *,
    data: str | os.PathLike[str] | None = None,
    data_seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    limit: int | None = None,
    evaluation: Evaluation | None = None,
) -> Task:
    """Build task ``name``.

    ``data`` is a local file (or, for GSM8K, a folder), or ``"hf"`` / ``"hf:NAME[:CONFIG]"``
    for the Hugging Face cache; generated tasks ignore it when None. For prompt tasks
    ``train_size`` / ``val_size`` / ``test_size`` are the sizes generated, or caps on the
    splits of a file; for solution and code tasks ``limit`` caps the number of items.
    ``evaluation`` overrides how a prompt task is scored.
    """
    info = TASKS.get(name)
    if info is None:
        raise ConfigError(
            f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (see `asynctg tasks`)"
        )
    for what, value in (
        ("train size", train_size),
        ("validation size", val_size),
        ("test size", test_size),
        ("limit", limit),
    ):
        _check_size(what, value)
    if evaluation is not None and evaluation not in _EVALUATIONS:
        raise ConfigError(
            f"evaluation must be one of {', '.join(_EVALUATIONS)}, got {evaluation!r}"
        )
    if info.needs_data and data is None:
        raise ConfigError(
            f"task {name!r} needs its data: pass --data PATH to your copy of the data set "
            "(the columns are listed in `asynctg tasks`), or --data hf to read the Hugging Face "
            "cache"
        )
    if info.kind == "prompt":
        return _prompt_task(name, data, data_seed, (train_size, val_size, test_size), evaluation)
    if evaluation is not None:
        raise ConfigError(f"--eval applies to prompt-optimization tasks, not to {name!r}")
    if info.kind == "solution":
        return _solution_task(name, data, data_seed, limit)
    return _code_task(name, data, limit)


def _prompt_task(
    name: str,
    data: str | os.PathLike[str] | None,
    data_seed: int,
    sizes: tuple[int | None, int | None, int | None],
    evaluation: Evaluation | None,
) -> PromptTask:
    default_eval: Evaluation = "judge" if name == "word_sorting" else "exact_int"
    description = (
        prompts.WORD_SORTING_TASK_DESCRIPTION
        if name == "word_sorting"
        else prompts.NUMERIC_TASK_DESCRIPTION
    )
    train_n, val_n, test_n = sizes
    if data is None:
        make: Callable[[int, int | str], list[QA]] = (
            generate.word_sorting if name == "word_sorting" else generate.object_counting
        )
        d_train, d_val, d_test = DEFAULT_GENERATED_SIZES
        n = (
            d_train if train_n is None else train_n,
            d_val if val_n is None else val_n,
            d_test if test_n is None else test_n,
        )
        train = make(n[0], f"{data_seed}/train")
        val = make(n[1], f"{data_seed}/val")
        test = make(n[2], f"{data_seed}/test")
        source = f"generated:{name}:seed={data_seed}:sizes={n[0]},{n[1]},{n[2]}"
    else:
        train, val, test, source = _prompt_splits(name, data)
        train, val, test = _cap(train, train_n), _cap(val, val_n), _cap(test, test_n)
    if not train:
        raise ConfigError(f"task {name!r} has no training examples; raise the train size")
    return PromptTask(
        name=name,
        train=train,
        val=val,
        test=test,
        system_prompt=description,
        evaluation=evaluation or default_eval,
        source=source,
    )


def _is_hub(data: str | os.PathLike[str]) -> bool:
    return isinstance(data, str) and (data == "hf" or data.startswith("hf:"))


def _prompt_splits(
    name: str, data: str | os.PathLike[str]
) -> tuple[list[QA], list[QA], list[QA], str]:
    if _is_hub(data):
        dataset, config = hub.parse_spec(str(data), name)
        source = f"hf:{dataset}:{config}"
        if name == "gsm8k":
            train_rows = hub.load_rows(dataset, config, "train")
            test_rows = hub.load_rows(dataset, config, "test")
            train = [
                QA(str(r["question"]), files.gsm8k_final_answer(str(r["answer"])))
                for r in train_rows
            ]
            test = [
                QA(str(r["question"]), files.gsm8k_final_answer(str(r["answer"])))
                for r in test_rows
            ]
            return (*_dspy_split(train, test), source)
        rows = hub.load_rows(dataset, config, "test")
        examples = [QA(str(r["input"]), str(r["target"])) for r in rows]
        return (*_bbh_split(examples), source)
    path = Path(data)
    if name == "gsm8k":
        if path.is_dir():
            train_file, test_file = path / "train.jsonl", path / "test.jsonl"
            if not train_file.exists() or not test_file.exists():
                raise ConfigError(
                    f"{path} is a folder without train.jsonl and test.jsonl; pass those, or one "
                    "GSM8K file"
                )
            train = files.load_gsm8k(train_file)
            test = files.load_gsm8k(test_file)
            source = f"files:sha256={files.file_digest(train_file)},{files.file_digest(test_file)}"
            return (*_dspy_split(train, test), source)
        examples = files.load_gsm8k(path)
        random.Random(0).shuffle(examples)
        a, b = _GSM8K_SPLIT
        source = f"file:sha256={files.file_digest(path)}"
        return examples[:a], examples[a : a + b], examples[a + b :], source
    examples = files.load_bbh(path)
    return (*_bbh_split(examples), f"file:sha256={files.file_digest(path)}")


def _bbh_split(examples: list[QA]) -> tuple[list[QA], list[QA], list[QA]]:
    a, b = _BBH_SPLIT
    return examples[:a], examples[a : a + b], examples[a + b :]


def _dspy_split(train: list[QA], test: list[QA]) -> tuple[list[QA], list[QA], list[QA]]:
    train, test = list(train), list(test)
    random.Random(0).shuffle(train)
    random.Random(0).shuffle(test)
    a, b = _GSM8K_SPLIT
    return train[:a], train[a : a + b], test


def _solution_task(
    name: str, data: str | os.PathLike[str] | None, data_seed: int, limit: int | None
) -> SolutionTask:
    questions: list[MultipleChoice]
    if name == "arithmetic_choice":
        n = 20 if limit is None else limit
        questions = generate.arithmetic_choice(n, data_seed)
        source = f"generated:{name}:seed={data_seed}:n={n}"
    elif data is not None and _is_hub(data):
        dataset, config = hub.parse_spec(str(data), name)
        source = f"hf:{dataset}:{config}"
        if name == "gpqa":
            rows = hub.load_rows(dataset, config, "train")
            questions = files.gpqa_questions(rows, data_seed, source)
        else:
            rows = hub.load_rows(dataset, config, "test")
            questions = [
                MultipleChoice(
                    prompts.multiple_choice_query(str(r["question"]), list(map(str, r["choices"]))),
                    chr(65 + int(r["answer"])),
                    tuple(map(str, r["choices"])),
                )
                for r in rows
            ]
    else:
        assert data is not None  # checked by get_task
        loaded = files.load_gpqa(data, seed=data_seed) if name == "gpqa" else files.load_mmlu(data)
        questions = loaded
        source = f"file:sha256={files.file_digest(data)}:seed={data_seed}"
    questions = _cap(questions, limit)
    if not questions:
        raise ConfigError(f"task {name!r} has no questions")
    kind: Literal["mmlu", "gpqa"] = "gpqa" if name == "gpqa" else "mmlu"
    return SolutionTask(name=name, questions=questions, loss_kind=kind, source=source)


def _code_task(name: str, data: str | os.PathLike[str] | None, limit: int | None) -> CodeTask:
    problems: list[CodeProblem]
    if name == "python_basics":
        problems = generate.python_basics()
        source = "builtin:python_basics"
    else:
        if data is not None and _is_hub(data):
            raise ConfigError("leetcode_hard has no Hugging Face data set; pass --data PATH")
        assert data is not None
        problems = files.load_leetcode(data)
        source = f"file:sha256={files.file_digest(data)}"
    return CodeTask(name=name, problems=_cap(problems, limit), source=source)
