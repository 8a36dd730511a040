"""Prompts of the paper's tasks and loops (asynctg.tasks, asynctg.apps).

Same information as the TextGrad paper's evaluation scripts, in this project's words. The
starting system prompts ask for a final "Answer: $VALUE" line, which the evaluation functions
(and the simulator) read.
"""

from __future__ import annotations

__all__ = [
    "CODE_CONSTRAINTS",
    "CODE_EVALUATOR_SYSTEM_PROMPT",
    "CODE_FIRST_SYSTEM_PROMPT",
    "CODE_ROLE",
    "JUDGE_ROLES",
    "MULTIPLE_CHOICE_CONSTRAINT",
    "NUMERIC_TASK_DESCRIPTION",
    "PROMPT_OPTIMIZATION_ROLE",
    "SOLUTION_ROLE",
    "SOLUTION_SYSTEM_PROMPT",
    "STRING_MATCH_PURPOSE",
    "WORD_SORTING_TASK_DESCRIPTION",
    "code_evaluation_prompt",
    "judge_instruction",
    "multiple_choice_query",
    "solution_loss_instruction",
    "unit_test_report",
]

#: Starting system prompt of object counting and GSM8K (the paper's "task description").
NUMERIC_TASK_DESCRIPTION = (
    "You will answer a reasoning question. Work through it step by step. Your reply must end "
    "with a last line of the form 'Answer: $VALUE', where VALUE is a number."
)
#: Starting system prompt of word sorting.
WORD_SORTING_TASK_DESCRIPTION = (
    "You will answer a reasoning question. Work through it step by step. Your reply must end "
    "with a last line of the form 'Answer: $VALUE', where VALUE is the list of words in the "
    "requested order, separated by single spaces."
)
#: Role of the system prompt that prompt optimization rewrites.
PROMPT_OPTIMIZATION_ROLE = (
    "structured system prompt for a moderately capable language model; it sets out the "
    "model's behaviour and its strategy for the question-answering task"
)
#: Purpose shown to the feedback engine for the exact-match check.
STRING_MATCH_PURPOSE = (
    "a string-matching function that returns 1 if the prediction's final answer equals the "
    "ground truth answer, else 0"
)

#: Labels of the LLM judge's fields: question, ground truth, prediction (in that order).
JUDGE_ROLES = (
    "question of the task",
    "ground truth answer",
    "reasoning and final prediction of the language model",
)


def judge_instruction() -> str:
    """The LLM judge's instruction: a 0/1 verdict between ``<ACCURACY>`` tags."""
    return (
        "Below are a question from a question-answering task, its ground truth answer, and a "
        "language model's reasoning ending in a final prediction. Is the final prediction "
        "correct, that is, the same as the ground truth answer? Answer only 1 (yes) or 0 (no), "
        "between <ACCURACY> and </ACCURACY> tags, for example <ACCURACY> 0 </ACCURACY> or "
        "<ACCURACY> 1 </ACCURACY>."
    )


# Solution optimization (MMLU / GPQA): a zero-shot answer, then test-time refinement.

SOLUTION_SYSTEM_PROMPT = (
    "You are a knowledgeable, careful assistant. Reason about the question before answering "
    "and give your answer in exactly the format requested."
)
SOLUTION_ROLE = (
    "careful, precise solution to a multiple-choice question, ending with its predicted answer"
)
MULTIPLE_CHOICE_CONSTRAINT = (
    "The last line of the response must have the form 'Answer: $LETTER' (without quotes), "
    "where LETTER is one of the options' letters."
)


def multiple_choice_query(question: str, choices: list[str] | tuple[str, ...]) -> str:
    """A multiple-choice question with lettered options and the final-line answer format."""
    letters = "".join(chr(65 + i) for i in range(len(choices)))
    options = "\n".join(f"({chr(65 + i)}) {text}" for i, text in enumerate(choices))
    return (
        "Answer the multiple-choice question below. Think step by step before answering. The "
        f"last line of your reply must have the form 'Answer: $LETTER' (without quotes), where "
        f"LETTER is one of {letters}.\n\n{question}\n\n{options}"
    )


def solution_loss_instruction(kind: str = "mmlu") -> str:
    """The test-time loss's instruction: criticise a solution without solving the problem.

    ``kind="gpqa"`` adds the paper's push to weigh the other options (its "Janusian" step).
    """
    text = (
        "Below are a multiple-choice question and an answer to it. You are an expert "
        "scientist: examine the answer. Go through its reasoning step by step, bring in what "
        "you know, and find out whether the answer is right or contains critical mistakes."
    )
    if kind == "gpqa":
        text += (
            "\nHold the opposite possibilities in mind at once: ask whether another option "
            "could be the true answer, and raise creative, critical objections to the solution "
            "where they are warranted."
        )
    return text


# Code optimization (LeetCode-Hard): a first program, then refinement from test feedback.

CODE_ROLE = "code written to solve the problem, to be judged on correctness and run time"
CODE_FIRST_SYSTEM_PROMPT = (
    "You write Python code and nothing else: no English. You will receive a function "
    "signature with its docstring. Write the complete implementation, restating the "
    "signature, in one Python code block, for example:\n```python\nprint('Hello world!')\n```"
)
CODE_CONSTRAINTS = (
    "Do not add assert statements to the code.",
    "The code must include the imports it needs.",
)
CODE_EVALUATOR_SYSTEM_PROMPT = (
    "You evaluate code inside an optimization system. You will see a coding problem, an "
    "implementation and the results of running it on the problem's unit tests. The code will "
    "later face harder, hidden tests, so passing the given tests is not enough: think about "
    "its correctness and its speed on harder inputs. Be concise. For each failed test, begin "
    "with 'The code did not pass this test because ...' and explain why the implementation "
    "does not produce the expected output. Do not write a corrected implementation; point out "
    "the problems and say what should change."
)


def code_evaluation_prompt(role: str = CODE_ROLE) -> str:
    """The format string of the code test-time loss (fields ``problem``, ``program``, ``tests``)."""
    safe = role.replace("{", "{{").replace("}", "}}")
    return (
        "Evaluate a Python implementation.\n\n**The coding problem:**\n\n{problem}\n\n"
        f"**{safe}:**\n\n{{program}}\n\n**Results of the unit tests:**\n\n{{tests}}\n"
    )


def unit_test_report(passed: list[str], failed: list[str]) -> str:
    """Unit-test results as the code evaluator reads them: passed tests, then failed ones."""
    text = "**Tests the code passed:**\n"
    text += "\n".join(passed) if passed else "No test passed."
    text += "\n\n**Tests the code failed:**\n"
    text += "\n".join(failed) if failed else "No test failed."
    return text
