"""TextGrad's ``tg.tasks``: ``load_task``, ``load_instance_task`` and the ``DataLoader``.

>>> from asynctg.compat.tasks import DataLoader
>>> list(DataLoader([("q1", "a1"), ("q2", "a2"), ("q3", "a3")], batch_size=2, shuffle=False))
[(('q1', 'q2'), ('a1', 'a2')), (('q3',), ('a3',))]

The loaders hand out what TextGrad's hand out: the same splits, item shapes, evaluation
functions and (in this project's words, with TextGrad's answer-format line word for word) task
descriptions. They read local files only, from TextGrad's own download folder by default (see
``asynctg.compat.tasks._files``); docs/textgrad-deviations.md lists what still differs.
"""

from __future__ import annotations

from typing import Any

from asynctg.compat.engine.base import EngineLM
from asynctg.compat.tasks.base import DataLoader, Dataset
from asynctg.compat.tasks.leetcode import LeetCodeHardEval
from asynctg.compat.tasks.mmlu import MMLU, MMLUInstanceDataset
from asynctg.compat.variable import Variable

__all__ = [
    "AVAILABLE_DATASETS",
    "AVAILABLE_INSTANCE_DATASETS",
    "MMLU",
    "DataLoader",
    "Dataset",
    "EngineLM",
    "LeetCodeHardEval",
    "MMLUInstanceDataset",
    "Variable",
    "load_instance_task",
    "load_task",
]

#: TextGrad's task names.
AVAILABLE_DATASETS = ["BBH_object_counting", "BBH_word_sorting", "GSM8K_DSPy"]
AVAILABLE_INSTANCE_DATASETS = [
    "MMLU_machine_learning",
    "MMLU_college_physics",
    "GPQA_diamond",
    "LeetCodeHardEval",
]
#: Labels of the LLM judge's three fields, as TextGrad's loaders pass them.
_JUDGE_ROLES = [
    "Question for the task",
    "Ground truth answer",
    "Reasoning and prediction from the language model",
]


def load_task(
    task_name: str, evaluation_api: Any = None, *args: Any, **kwargs: Any
) -> tuple[Dataset, Dataset, Dataset, Any]:
    """TextGrad's ``load_task``: ``(train, val, test, eval_fn)`` for a task name.

    Object counting and GSM8K are scored by the exact-match ``StringBasedFunction``, the other
    BBH tasks by an LLM judge (``evaluation_api``) answering between ``<ACCURACY>`` tags, as in
    TextGrad. ``root=`` points at the data (default: TextGrad's download folder).
    """
    from asynctg import prompts
    from asynctg.compat.autograd import StringBasedFunction
    from asynctg.compat.loss import MultiFieldTokenParsedEvaluation
    from asynctg.compat.tasks.big_bench_hard import BigBenchHard, string_based_equality_fn
    from asynctg.compat.tasks.gsm8k import GSM8K_DSPy

    root = args[0] if args else kwargs.get("root")
    splits: list[Dataset]
    if "BBH" in task_name:
        name = task_name[4:]
        splits = [BigBenchHard(name, root, s) for s in ("train", "val", "test")]
    elif task_name == "GSM8K_DSPy":
        splits = [GSM8K_DSPy(root, s) for s in ("train", "val", "test")]
    else:
        raise ValueError(f"Task {task_name} not found.")
    train, val, test = splits
    if "BBH" in task_name and "object_counting" not in task_name:
        instruction = Variable(
            prompts.judge_instruction(),
            requires_grad=False,
            role_description="evaluation instruction for the task",
        )
        eval_fn: Any = MultiFieldTokenParsedEvaluation(
            instruction,
            engine=evaluation_api,
            role_descriptions=_JUDGE_ROLES,
            parse_tags=["<ACCURACY>", "</ACCURACY>"],
        )
    else:
        eval_fn = StringBasedFunction(
            string_based_equality_fn, function_purpose=prompts.STRING_MATCH_PURPOSE
        )
    return train, val, test, eval_fn


def load_instance_task(
    task_name: str, evaluation_api: Any = None, *args: Any, **kwargs: Any
) -> Any:
    """TextGrad's ``load_instance_task``: MMLU and GPQA items are ``(question, answer,
    test_time_objective, instance_eval_fn)``; LeetCode-Hard items ``(task_id, prompt, tests)``."""
    root = args[0] if args else kwargs.get("root")
    limit = kwargs.get("max_samples", -1)
    if "MMLU_" in task_name:
        return MMLUInstanceDataset(evaluation_api, task_name[5:], root, "test", limit)
    if "GPQA" in task_name:
        from asynctg.compat.tasks.gpqa import GPQAInstanceDataset

        return GPQAInstanceDataset(evaluation_api, task_name.lower(), *args, **kwargs)
    if task_name == "LeetCodeHardEval":
        return LeetCodeHardEval(*args, **kwargs)
    raise ValueError(f"Instance task {task_name} not found.")
