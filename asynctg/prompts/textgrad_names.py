"""TextGrad's template names (asynctg.compat's module paths re-export these).

Code written for TextGrad imports its template constants by name and fills them with its
placeholder names; these are this package's own templates under those placeholders, so such
code formats them without a KeyError. asynctg's own requests are built by the functions in
``asynctg.prompts``.
"""

from __future__ import annotations

from collections.abc import Sequence

# asynctg.prompts imports this module last, once every template below is defined there.
from asynctg.prompts import (
    _BACKWARD_TAGS,
    _CONVERSATION,
    _EXAMPLES_FOR_FEEDBACK,
    _FUNCTION_CONVERSATION,
    _GRADIENT_AFTER_PARTS,
    _GRADIENT_WITH_CONTEXT,
    _MULTIMODAL_CONVERSATION,
    _OBJECTIVE_BASE,
    _OBJECTIVE_CHAIN,
    _OPT_CONSTRAINTS,
    _OPT_CONTEXT,
    _OPT_EXAMPLES,
    _OPT_FORMAT,
    _OPT_HEAD,
    _OPT_PAST_ITERATIONS,
    _OPT_TASK,
    _OPTIMIZER_TAGS,
    _SPAN,
    _START_BASE,
    _START_CHAIN,
    _START_FUNCTION_BASE,
    _START_FUNCTION_CHAIN,
    OPTIMIZER_SYSTEM_PROMPT,
    REDUCE_SYSTEM_PROMPT,
)

__all__ = ["TEXTGRAD_TEMPLATES", "textgrad_multichoice_query"]

_TG_CHAIN = _OBJECTIVE_CHAIN.replace("{response_role}", "{response_desc}").replace(
    "{response_feedback}", "{response_gradient}"
)
#: Template name -> text, with TextGrad 0.1.8's placeholder names.
TEXTGRAD_TEMPLATES: dict[str, str] = {
    "GLOSSARY_TEXT_BACKWARD": _BACKWARD_TAGS,
    "GLOSSARY_TEXT": _OPTIMIZER_TAGS,
    "CONVERSATION_TEMPLATE": _CONVERSATION.replace("{response}", "{response_value}"),
    "MULTIMODAL_CONVERSATION_TEMPLATE": _MULTIMODAL_CONVERSATION.replace(
        "{response}", "{response_value}"
    ),
    "CONVERSATION_TEMPLATE_STRING": _FUNCTION_CONVERSATION.replace(
        "{purpose}", "{function_purpose}"
    )
    .replace("{inputs}", "{inputs_string}")
    .replace("{response}", "{response_value}"),
    "CONVERSATION_START_INSTRUCTION_CHAIN": _START_CHAIN.replace("{role}", "{variable_desc}"),
    "CONVERSATION_START_INSTRUCTION_BASE": _START_BASE.replace("{role}", "{variable_desc}"),
    "CONVERSATION_START_INSTRUCTION_STRING_FN_CHAIN": _START_FUNCTION_CHAIN.replace(
        "{role}", "{variable_desc}"
    ),
    "CONVERSATION_START_INSTRUCTION_STRING_FN_BASE": _START_FUNCTION_BASE.replace(
        "{role}", "{variable_desc}"
    ),
    "OBJECTIVE_INSTRUCTION_CHAIN": _TG_CHAIN.replace("{output_tag}", "LM_OUTPUT"),
    "OBJECTIVE_INSTRUCTION_CHAIN_STRING_FN": _TG_CHAIN.replace(
        "{output_tag}", "OUTPUT_OF_FUNCTION"
    ),
    "OBJECTIVE_INSTRUCTION_BASE": _OBJECTIVE_BASE,
    "EVALUATE_VARIABLE_INSTRUCTION": _SPAN.replace("{role}", "{variable_desc}").replace(
        "{span}", "{variable_short}"
    ),
    "IN_CONTEXT_EXAMPLE_PROMPT_ADDITION_BACKWARD": _EXAMPLES_FOR_FEEDBACK.replace(
        "{examples}", "{in_context_examples}"
    ),
    "SEARCH_QUERY_BACKWARD_INSTRUCTION": (
        "Here is the query given to the search engine {engine_name}:\n\n<QUERY> {query} "
        "</QUERY>\n\nand the results it returned:\n\n<RESULTS> {results} </RESULTS>\n\n"
    ),
    "GRADIENT_OF_RESULTS_INSTRUCTION": (
        "The results of {engine_name} received this feedback:\n\n<FEEDBACK> {results_gradient} "
        "</FEEDBACK>\n\n"
    ),
    "REDUCE_MEAN_SYSTEM_PROMPT": REDUCE_SYSTEM_PROMPT,
    "OPTIMIZER_SYSTEM_PROMPT": OPTIMIZER_SYSTEM_PROMPT,
    "TGD_PROMPT_PREFIX": (
        _OPT_HEAD.replace("{role}", "{variable_desc}").replace("{value}", "{variable_short}")
        + _OPT_CONTEXT.replace("{gradients}", "{variable_grad}")
        + _OPT_TASK.replace("{role}", "{variable_desc}")
    ),
    "TGD_MULTIPART_PROMPT_INIT": _OPT_HEAD.replace("{role}", "{variable_desc}").replace(
        "{value}", "{variable_short}"
    ),
    "TGD_MULTIPART_PROMPT_PREFIX": _OPT_TASK.replace("{role}", "{variable_desc}"),
    "TGD_PROMPT_SUFFIX": _OPT_FORMAT.replace("{start}", "{new_variable_start_tag}").replace(
        "{end}", "{new_variable_end_tag}"
    ),
    "MOMENTUM_PROMPT_ADDITION": _OPT_PAST_ITERATIONS.replace("{past}", "{past_values}"),
    "CONSTRAINT_PROMPT_ADDITION": _OPT_CONSTRAINTS.replace("{constraints}", "{constraint_text}"),
    "IN_CONTEXT_EXAMPLE_PROMPT_ADDITION": _OPT_EXAMPLES.replace(
        "{role}", "{variable_desc}"
    ).replace("{examples}", "{in_context_examples}"),
    "GRADIENT_TEMPLATE": _GRADIENT_WITH_CONTEXT.replace(
        "{response_role}", "{response_desc}"
    ).replace("{variable_role}", "{variable_desc}"),
    "GRADIENT_MULTIPART_TEMPLATE": _GRADIENT_AFTER_PARTS.replace(
        "{response_role}", "{response_desc}"
    ).replace("{variable_role}", "{variable_desc}"),
    # The task texts TextGrad's loaders hand out. The answer-format sentence is the one TextGrad
    # uses, word for word: evaluation scripts parse the reply's last line by it.
    "BBH_TASK_DESCRIPTION": (
        "You will answer a reasoning question. Work through it step by step. The last line of "
        "your response should be of the following format: 'Answer: $VALUE' where VALUE is a "
        "numerical value."
    ),
    "GSM8K_TASK_DESCRIPTION": (
        "You will answer a mathematical reasoning question. Work through it step by step. The "
        "last line of your response should be of the following format: 'Answer: $VALUE' where "
        "VALUE is a numerical value."
    ),
    "MMLU_TASK_DESCRIPTION": "You will answer multiple-choice questions. Reason step by step.",
    "MULTICHOICE_INSTRUCTION": (
        "Given a multiple-choice question, the goal is to pick the correct final answer among "
        "the choices."
    ),
    "QUERY_TEMPLATE_MULTICHOICE": (
        "Answer the multiple-choice question below. The last line of your response should be "
        "of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of "
        "ABCD. Reason step by step before you answer.\n\n{Question}\n\n"
        "A) {A}\nB) {B}\nC) {C}\nD) {D}"
    ),
    "MULTICHOICE_TEST_TIME_INSTRUCTION": (
        "Below are a multiple-choice question and an answer to it. You are an expert "
        "scientist: examine the answer. Go through its reasoning step by step, bring in what "
        "you know, and find out whether the answer is right or contains critical mistakes."
    ),
    "MULTICHOICE_CONSTRAINT": (
        "The last line of your response should be of the following format: 'Answer: $LETTER' "
        "(without quotes) where LETTER is one of ABCD."
    ),
}


def textgrad_multichoice_query(question: str, choices: Sequence[str]) -> str:
    """A four-option question in the layout TextGrad's MMLU and GPQA loaders hand out."""
    a, b, c, d = [*choices, "", "", "", ""][:4]
    return TEXTGRAD_TEMPLATES["QUERY_TEMPLATE_MULTICHOICE"].format(
        Question=question, A=a, B=b, C=c, D=d
    )
