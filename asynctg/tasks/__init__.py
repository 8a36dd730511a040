"""Tasks of the TextGrad paper: data, splits, and the evaluation functions that score them.

>>> from asynctg import tasks
>>> task = tasks.get_task("object_counting", train_size=6, val_size=0, test_size=4)
>>> task.evaluation, task.sizes()
('exact_int', {'train': 6, 'val': 0, 'test': 4})
>>> loader = tasks.DataLoader(task.train, batch_size=3, seed=1)
>>> [len(batch) for batch in loader]
[3, 3]

Object counting and word sorting are generated locally from a seed (no download); the paper's
data sets load from local files (``asynctg.tasks.files``, columns documented there) or from the
Hugging Face cache when ``datasets`` is installed (``asynctg.tasks.hub``).
"""

from asynctg.tasks.evaluation import (
    ACCURACY_TAGS,
    Evaluator,
    JudgeEvaluator,
    StringEvaluator,
    choice_score,
    final_answer,
    majority_vote,
    make_evaluator,
    parse_choice,
    parse_integer_answer,
    string_based_equality_fn,
    words_equality_fn,
)
from asynctg.tasks.files import (
    load_bbh,
    load_gpqa,
    load_gsm8k,
    load_leetcode,
    load_mmlu,
    read_rows,
)
from asynctg.tasks.generate import arithmetic_choice, object_counting, python_basics, word_sorting
from asynctg.tasks.loader import DataLoader
from asynctg.tasks.registry import TASKS, Task, TaskInfo, get_task, task_names
from asynctg.tasks.types import (
    QA,
    CodeProblem,
    CodeTask,
    Evaluation,
    MultipleChoice,
    PromptTask,
    SolutionTask,
)

__all__ = [
    "ACCURACY_TAGS",
    "QA",
    "TASKS",
    "CodeProblem",
    "CodeTask",
    "DataLoader",
    "Evaluation",
    "Evaluator",
    "JudgeEvaluator",
    "MultipleChoice",
    "PromptTask",
    "SolutionTask",
    "StringEvaluator",
    "Task",
    "TaskInfo",
    "arithmetic_choice",
    "choice_score",
    "final_answer",
    "get_task",
    "load_bbh",
    "load_gpqa",
    "load_gsm8k",
    "load_leetcode",
    "load_mmlu",
    "majority_vote",
    "make_evaluator",
    "object_counting",
    "parse_choice",
    "parse_integer_answer",
    "python_basics",
    "read_rows",
    "string_based_equality_fn",
    "task_names",
    "word_sorting",
    "words_equality_fn",
]
