"""The TextGrad paper's optimization loops, as async library functions (the CLI runs them).

- ``optimize_prompt``: prompt optimization (BBH, GSM8K): minibatches, ``tg.sum`` of losses,
  backward, a TGD step, optional validation with revert, test accuracy per step.
- ``optimize_solutions``: solution optimization at test time (MMLU, GPQA): refine each answer
  with a test-time loss, majority vote over the iterates.
- ``optimize_code``: code optimization (LeetCode-Hard): refine each program from the results of
  running its tests in a bubblewrap sandbox (see ``asynctg.runs.sandbox``).

Each takes a task from ``asynctg.tasks``, an engine, an optional ``Checkpoint`` (resumable
runs) and an optional event listener (e.g. ``Progress``), and returns a result with
``to_json()``; ``write_report`` turns that into a JSON file and an HTML page.

>>> import asynctg as tg
>>> from asynctg import apps, tasks
>>> async def main() -> None:                                     # doctest: +SKIP
...     async with tg.get_engine("gpt-4o-mini") as engine:
...         task = tasks.get_task("object_counting")
...         result = await apps.optimize_prompt(task, engine, config=apps.PromptConfig())
...         apps.write_report("report", "optimize", result.to_json(), {"task": task.name})
"""

from asynctg.apps.code import CodeConfig, CodeResult, CodeTestTimeLoss, optimize_code
from asynctg.apps.prompt import PromptConfig, PromptResult, optimize_prompt
from asynctg.apps.report import write_report
from asynctg.apps.solution import SolutionConfig, SolutionResult, optimize_solutions
from asynctg.runs.checkpoint import Checkpoint
from asynctg.runs.loop import Budget, EventSink, Meter, RunEvent
from asynctg.runs.progress import Progress
from asynctg.runs.sandbox import CodeRunner, TestOutcome, TestRun, extract_code, run_tests

__all__ = [
    "Budget",
    "Checkpoint",
    "CodeConfig",
    "CodeResult",
    "CodeRunner",
    "CodeTestTimeLoss",
    "EventSink",
    "Meter",
    "Progress",
    "PromptConfig",
    "PromptResult",
    "RunEvent",
    "SolutionConfig",
    "SolutionResult",
    "TestOutcome",
    "TestRun",
    "extract_code",
    "optimize_code",
    "optimize_prompt",
    "optimize_solutions",
    "run_tests",
    "write_report",
]
