"""Every prompt asynctg sends on its own account, in one place.

The wording is this project's; the information in each request and the tag protocol follow the
TextGrad method (Yuksekgonul et al., 2024), and the tags are part of the public contract:

- backward (feedback) requests mark the conversation with ``<LM_SYSTEM_PROMPT>``,
  ``<LM_INPUT>``, ``<LM_OUTPUT>`` (or ``<INPUTS_TO_FUNCTION>`` / ``<OUTPUT_OF_FUNCTION>`` for a
  Python function), the variable's ``<ROLE>``, the ``<VARIABLE>`` span to criticise, and the
  ``<OBJECTIVE_FUNCTION>``;
- optimizer requests mark ``<ROLE>``, ``<VARIABLE>``, ``<CONTEXT>`` holding one ``<FEEDBACK>``
  block per gradient, and ``<CONSTRAINTS>``, ``<EXAMPLES>``, ``<PAST_ITERATIONS>`` when used, and
  ask for the answer between the new-variable tags (``<IMPROVED_VARIABLE>`` by default), which
  appear in no other kind of request;
- reduce (aggregation) requests carry ``<FEEDBACK>`` blocks and no new-variable tags;
- text cut to fit a request (``cut_to_fit``) says so where it was cut (``CUT_NOTICE``), so the
  model reading it knows something is missing.

Deviations from TextGrad 0.1.8's prompts, on purpose:

- the optimizer sees the whole variable in ``<VARIABLE>``, not its first and last ten words;
- a gradient without a conversation behind it (one passed through ``tg.sum``, or a reduced
  one) still gets its own ``<FEEDBACK>`` block, so the optimizer sees one block per gradient;
- the format reminder names the tags actually in use, not always ``<IMPROVED_VARIABLE>``;
- gradient memory reaches the prompt (TextGrad 0.1.8 builds it and then drops it).

Each builder below returns plain text (or, with images, a list of text and image parts); the
callers turn that into chat requests.

The package splits by use; this module holds the paper's forward, backward, reduce and optimizer
templates and re-exports the rest, so ``asynctg.prompts.X`` names every template:

- ``cut``: ``cut_to_fit`` and ``CUT_NOTICE``;
- ``tasks``: the paper's tasks and loops (prompt, solution and code optimization);
- ``science``: the molecule and radiotherapy-plan loops;
- ``gepa``: GEPA's reflective step;
- ``textgrad_names``: ``TEXTGRAD_TEMPLATES``, this package's templates under TextGrad 0.1.8's
  names and placeholders (asynctg.compat re-exports them).
"""

from __future__ import annotations

from collections.abc import Sequence

from asynctg.prompts.cut import CUT_NOTICE, cut_to_fit
from asynctg.prompts.gepa import (
    GEPA_CURRENT_TEXT,
    GEPA_EXAMPLES,
    GEPA_REFLECTION_TEMPLATE,
    gepa_examples,
    gepa_feedback,
    gepa_reflection_prompt,
)
from asynctg.prompts.science import (
    MOLECULE_CONSTRAINT,
    MOLECULE_EVALUATION_PURPOSE,
    MOLECULE_ROLE,
    PLAN_EVALUATION_PURPOSE,
    PLAN_ROLE,
    molecule_loss_instruction,
    plan_constraint,
    plan_loss_instruction,
)
from asynctg.prompts.tasks import (
    CODE_CONSTRAINTS,
    CODE_EVALUATOR_SYSTEM_PROMPT,
    CODE_FIRST_SYSTEM_PROMPT,
    CODE_ROLE,
    JUDGE_ROLES,
    MULTIPLE_CHOICE_CONSTRAINT,
    NUMERIC_TASK_DESCRIPTION,
    PROMPT_OPTIMIZATION_ROLE,
    SOLUTION_ROLE,
    SOLUTION_SYSTEM_PROMPT,
    STRING_MATCH_PURPOSE,
    WORD_SORTING_TASK_DESCRIPTION,
    code_evaluation_prompt,
    judge_instruction,
    multiple_choice_query,
    solution_loss_instruction,
    unit_test_report,
)

__all__ = [
    "BACKWARD_SYSTEM_PROMPT",
    "CUT_NOTICE",
    "DEFAULT_NEW_VARIABLE_TAGS",
    "GEPA_CURRENT_TEXT",
    "GEPA_EXAMPLES",
    "GEPA_REFLECTION_TEMPLATE",
    "OPTIMIZER_SYSTEM_PROMPT",
    "REDUCE_SYSTEM_PROMPT",
    "SYSTEM_PROMPT_DEFAULT_ROLE",
    "VARIABLE_INPUT_DEFAULT_ROLE",
    "VARIABLE_OUTPUT_DEFAULT_ROLE",
    "backward_prompt",
    "cut_to_fit",
    "format_reminder",
    "gepa_examples",
    "gepa_feedback",
    "gepa_reflection_prompt",
    "gradient_block",
    "optimizer_prompt",
    "optimizer_system_prompt",
    "reduce_prompt",
    "string_function_backward_prompt",
    "sum_feedback",
]

__all__ += [
    "CODE_CONSTRAINTS",
    "CODE_EVALUATOR_SYSTEM_PROMPT",
    "CODE_FIRST_SYSTEM_PROMPT",
    "CODE_ROLE",
    "JUDGE_ROLES",
    "MOLECULE_CONSTRAINT",
    "MOLECULE_EVALUATION_PURPOSE",
    "MOLECULE_ROLE",
    "MULTIPLE_CHOICE_CONSTRAINT",
    "NUMERIC_TASK_DESCRIPTION",
    "PLAN_EVALUATION_PURPOSE",
    "PLAN_ROLE",
    "PROMPT_OPTIMIZATION_ROLE",
    "SOLUTION_ROLE",
    "SOLUTION_SYSTEM_PROMPT",
    "STRING_MATCH_PURPOSE",
    "WORD_SORTING_TASK_DESCRIPTION",
    "code_evaluation_prompt",
    "judge_instruction",
    "molecule_loss_instruction",
    "multiple_choice_query",
    "plan_constraint",
    "plan_loss_instruction",
    "solution_loss_instruction",
    "unit_test_report",
]
__all__ += ["TEXTGRAD_TEMPLATES", "textgrad_multichoice_query"]

# --- default role descriptions -----------------------------------------------------------

SYSTEM_PROMPT_DEFAULT_ROLE = (
    "system prompt to the language model, which sets its behaviour and strategy and is reused "
    "for every query"
)
VARIABLE_INPUT_DEFAULT_ROLE = "query to the language model"
VARIABLE_OUTPUT_DEFAULT_ROLE = "response from the language model"

DEFAULT_NEW_VARIABLE_TAGS = ("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")

# --- backward: asking for feedback ("textual gradients") -----------------------------------

_BACKWARD_TAGS = """
Tags you will see:
- <LM_SYSTEM_PROMPT>: the system prompt the language model was given.
- <LM_INPUT>: the input the language model was given.
- <LM_OUTPUT>: what the language model answered.
- <OBJECTIVE_FUNCTION>: the objective your feedback must serve.
- <VARIABLE>: the span of text your feedback is about.
- <ROLE>: the role description of that variable."""

BACKWARD_SYSTEM_PROMPT = (
    "You are the feedback step (the 'gradient') of an optimization system that improves a "
    "piece of text, called the variable. A variable may be a prompt for a language model, an "
    "answer to a problem, code, or any other text. Your one job is to criticise the variable "
    "constructively with respect to the objective given between <OBJECTIVE_FUNCTION> and "
    "</OBJECTIVE_FUNCTION>. Take the variable's role description and the context it is used in "
    "into account, and assume it will be used in similar contexts again. Explain what to "
    "change and why, in forms such as 'Because language models tend to X, adding Y would ...', "
    "'Removing X would help the objective since ...', 'Replacing X with Y fixes the error in "
    "...'. Do NOT write a new version of the variable: rewriting it is the optimizer's job, "
    "yours is feedback only. If the variable already does its job (the objective is met, or "
    "the evaluation finds the output correct), say that it needs no change rather than "
    "inventing criticism.\n" + _BACKWARD_TAGS
)

_CONVERSATION = (
    "<LM_SYSTEM_PROMPT> {system_prompt} </LM_SYSTEM_PROMPT>\n\n"
    "<LM_INPUT> {prompt} </LM_INPUT>\n\n"
    "<LM_OUTPUT> {response} </LM_OUTPUT>\n\n"
)
# With images the input travels as message parts before the text; the text points back at them.
_MULTIMODAL_CONVERSATION = (
    "\nThe messages above are the <LM_INPUT>.\n\n"
    "<LM_SYSTEM_PROMPT> {system_prompt} </LM_SYSTEM_PROMPT>\n\n"
    "<LM_OUTPUT> {response} </LM_OUTPUT>\n\n"
)
_FUNCTION_CONVERSATION = (
    "Purpose of the function: {purpose}\n\n"
    "<INPUTS_TO_FUNCTION> {inputs} </INPUTS_TO_FUNCTION>\n\n"
    "<OUTPUT_OF_FUNCTION> {response} </OUTPUT_OF_FUNCTION>\n\n"
)

_START_CHAIN = (
    "Give feedback on a variable whose role is <ROLE> {role} </ROLE>. It took part in this "
    "exchange with a language model (LM):\n\n{conversation}"
)
_START_BASE = (
    "Give feedback on a variable whose role is <ROLE> {role} </ROLE>. A language model "
    "evaluated it as follows:\n\n{conversation}"
)
_START_FUNCTION_CHAIN = (
    "Give feedback on a variable whose role is <ROLE> {role} </ROLE>. It was an input of this "
    "call of a Python function:\n\n{conversation}"
)
_START_FUNCTION_BASE = (
    "Give feedback on a variable whose role is <ROLE> {role} </ROLE>. A Python function "
    "evaluated it as follows:\n\n{conversation}"
)
_OBJECTIVE_CHAIN = (
    "This exchange is one step of a larger system: the <{output_tag}> was then used as "
    "{response_role}.\n\n"
    "<OBJECTIVE_FUNCTION>Give the variable feedback that addresses this feedback received on "
    "the {output_tag}: {response_feedback} </OBJECTIVE_FUNCTION>\n\n"
)
_OBJECTIVE_BASE = (
    "<OBJECTIVE_FUNCTION>Using the evaluation output above, give the variable feedback and "
    "criticism. The one goal is a better result on that evaluation. </OBJECTIVE_FUNCTION>\n\n"
)
_EXAMPLES_FOR_FEEDBACK = (
    "Ground your feedback in these examples:\n\n<EXAMPLES>{examples}</EXAMPLES>\n\n"
)
_SPAN = (
    "Your feedback concerns the {role} in this exchange, namely this span of text:\n\n"
    "<VARIABLE> {span} </VARIABLE>\n\n"
    "From the exchange above, explain how the {role} could change to do better on the "
    "<OBJECTIVE_FUNCTION>. Be critical, specific and creative.\n\n"
)


def conversation_text(system_prompt: str | None, prompt: str, response: str) -> str:
    """The LM exchange as the backward engine and the optimizer see it."""
    return _CONVERSATION.format(system_prompt=system_prompt, prompt=prompt, response=response)


def multimodal_conversation_text(system_prompt: str | None, response: str) -> str:
    """The text that follows an image-bearing input in a backward request."""
    return _MULTIMODAL_CONVERSATION.format(system_prompt=system_prompt, response=response)


def function_conversation_text(purpose: str, inputs: str, response: str) -> str:
    """A Python function's call as the backward engine sees it."""
    return _FUNCTION_CONVERSATION.format(purpose=purpose, inputs=inputs, response=response)


def backward_prompt(
    *,
    conversation: str,
    role: str,
    span: str,
    response_role: str,
    response_feedback: str,
    examples: Sequence[str] = (),
    function: bool = False,
) -> str:
    """The user prompt asking for feedback on one variable of one call.

    With ``response_feedback`` empty (the call's output is the evaluation itself) the objective
    is the evaluation; otherwise it is to address the feedback the output received (the chain
    rule). ``function=True`` words it for a Python function instead of a language model.
    """
    chain = response_feedback.strip() != ""
    if function:
        start = _START_FUNCTION_CHAIN if chain else _START_FUNCTION_BASE
        output_tag = "OUTPUT_OF_FUNCTION"
    else:
        start = _START_CHAIN if chain else _START_BASE
        output_tag = "LM_OUTPUT"
    text = start.format(role=role, conversation=conversation)
    if chain:
        text += _OBJECTIVE_CHAIN.format(
            output_tag=output_tag, response_role=response_role, response_feedback=response_feedback
        )
    else:
        text += _OBJECTIVE_BASE
    if examples:
        text += _EXAMPLES_FOR_FEEDBACK.format(examples="\n".join(examples))
    text += _SPAN.format(role=role, span=span)
    return text


def string_function_backward_prompt(**kwargs: str) -> str:
    """``backward_prompt`` worded for a Python function (``StringBasedFunction``)."""
    return backward_prompt(function=True, **kwargs)  # type: ignore[arg-type]


def function_inputs_text(items: Sequence[tuple[str, str, str]]) -> str:
    """A function's named inputs: (argument name, role description, short value) each."""
    return "\n\n".join(
        f"**{name.replace('_', ' ').capitalize()} (role: {role})**: {value}"
        for name, role, value in items
    )


def sum_feedback(role: str, combined: str) -> str:
    """The feedback a summand receives from the feedback on a sum (no LLM call)."""
    if combined == "":
        return ""
    return (
        f"This is the combined feedback received for this {role} together with the other "
        f"variables it was summed with: {combined}."
    )


# --- reduce: many feedbacks into one (tg.aggregate, the optimizer's "tree") -----------------

REDUCE_SYSTEM_PROMPT = (
    "You are part of an optimization system that improves a piece of text (the variable). Your "
    "one job is to merge feedback from several sources into one critical summary. Variables "
    "may be prompts, answers to problems, code, or any other text. Each source's feedback "
    "arrives between <FEEDBACK> and </FEEDBACK>. Reply with the core of the feedback only, "
    "critically combined; do not propose a new version of the variable."
)

_REDUCE_HEAD = (
    "Below are {n} pieces of feedback on the {role}, from {samples} samples in all; a piece "
    "marked (from K samples) was given identically by K of them.{twice}\n\n"
)
_REDUCE_TWICE = (
    " Each sample's feedback was shown to two such merges, so counts of samples in other "
    "summaries overlap."
)
_REDUCE_TASK = (
    "\n\nMerge them into one summary of criticism. Keep every distinct criticism, once, with "
    "the evidence given for it (the input and output it concerns, briefly), and say how many of "
    "the samples raised it; put the criticisms from failing samples, and the most frequent, "
    "first. Merge points that say the same thing; drop praise that asks for no change. Do not "
    "write a new version of the {role}."
)


def reduce_prompt(
    feedback: Sequence[tuple[str, int]],
    *,
    role: str = "variable",
    samples: int | None = None,
    twice: bool = False,
) -> str:
    """The reduce request: one ``<FEEDBACK>`` block per (text, samples it stands for)."""
    blocks = "\n".join(
        f"<FEEDBACK>{f'(from {k} samples) ' if k > 1 else ''}{text}</FEEDBACK>"
        for text, k in feedback
    )
    head = _REDUCE_HEAD.format(
        n=len(feedback),
        role=role,
        samples=samples if samples is not None else sum(k for _, k in feedback),
        twice=_REDUCE_TWICE if twice else "",
    )
    return head + blocks + _REDUCE_TASK.format(role=role)


# --- optimizer: rewriting the variable from its feedback -----------------------------------

_OPTIMIZER_TAGS = """
Tags you will see:
- <ROLE>: the role description of the variable.
- <VARIABLE>: the current text of the variable.
- <CONTEXT>: the conversations the variable took part in, with the feedback on each.
- <CONVERSATION>: one such conversation; <LM_SYSTEM_PROMPT>, <LM_INPUT> and <LM_OUTPUT> mark
  its parts.
- <FEEDBACK>: feedback on the variable.
- <CONSTRAINTS>, <EXAMPLES>, <PAST_ITERATIONS>: rules to respect, examples to build on, and
  earlier versions of the variable, when given."""

OPTIMIZER_SYSTEM_PROMPT: str = (
    "You are the optimizer of a system that improves text (the variable). You will be asked to "
    "improve prompts, solutions to problems, code, or any other text, creatively and "
    "critically. You receive feedback on the variable and use it to write a better version. "
    "The feedback can be noisy: find what is important and correct in it. Respect the "
    "variable's role description and the context it is used in. This is essential: you MUST "
    "answer with the improved variable between {new_variable_start_tag} and "
    "{new_variable_end_tag}, as {new_variable_start_tag}{{improved variable}}"
    "{new_variable_end_tag}. The text between the tags replaces the variable exactly as "
    "written.\n" + _OPTIMIZER_TAGS
)


def optimizer_system_prompt(
    template: str = OPTIMIZER_SYSTEM_PROMPT,
    tags: tuple[str, str] = DEFAULT_NEW_VARIABLE_TAGS,
) -> str:
    """The optimizer's system prompt with its new-variable tags filled in."""
    return template.format(new_variable_start_tag=tags[0], new_variable_end_tag=tags[1])


_GRADIENT_WITH_CONTEXT = (
    "A conversation:\n\n<CONVERSATION>{context}</CONVERSATION>\n\n"
    "This conversation may be one part of a larger system; its output is used as "
    "{response_role}\n\n"
    "The feedback received for the {variable_role} in this conversation:\n\n"
    "<FEEDBACK>{feedback}</FEEDBACK>\n\n"
)
_GRADIENT_AFTER_PARTS = (
    "The messages above are a conversation with a language model. It may be one part of a "
    "larger system; its output is used as {response_role}\n\n"
    "The feedback received for the {variable_role} in this conversation:\n\n"
    "<FEEDBACK>{feedback}</FEEDBACK>\n\n"
)
_GRADIENT_ALONE = "<FEEDBACK>{feedback}</FEEDBACK>\n\n"


def gradient_block(
    feedback: str,
    *,
    context: str | None = None,
    response_role: str = "",
    variable_role: str = "",
    after_parts: bool = False,
) -> str:
    """One gradient as the optimizer sees it: its conversation (if any), then ``<FEEDBACK>``."""
    if after_parts:
        return _GRADIENT_AFTER_PARTS.format(
            response_role=response_role, variable_role=variable_role, feedback=feedback
        )
    if context is None:
        return _GRADIENT_ALONE.format(feedback=feedback)
    return _GRADIENT_WITH_CONTEXT.format(
        context=context,
        response_role=response_role,
        variable_role=variable_role,
        feedback=feedback,
    )


_OPT_HEAD = (
    "The role of the variable you will improve: <ROLE>{role}</ROLE>.\n\n"
    "The variable is the text in this span: <VARIABLE> {value} </VARIABLE>\n\n"
    "The context and feedback received for the variable:\n\n"
)
_OPT_CONTEXT = "<CONTEXT>{gradients}</CONTEXT>\n\n"
_OPT_TASK = "Improve the variable ({role}) using the feedback given in the <FEEDBACK> tags.\n"
_OPT_PAST_ITERATIONS = (
    "Earlier versions of this variable:\n\n<PAST_ITERATIONS>{past}</PAST_ITERATIONS>\n\n"
    "If similar feedback keeps coming back across steps, the earlier changes were not enough: "
    "change the variable more substantially.\n\n"
)
_OPT_MEMORY = (
    "Feedback the variable received in earlier steps, oldest first:\n\n{memory}\n\n"
    "Weigh it together with the current feedback.\n\n"
)
_OPT_CONSTRAINTS = (
    "You must respect these constraints:\n\n<CONSTRAINTS>{constraints}</CONSTRAINTS>\n\n"
)
_OPT_EXAMPLES = (
    "Base your changes to the {role} on these examples:\n\n<EXAMPLES>{examples}</EXAMPLES>\n\n"
)
_OPT_FORMAT = (
    "Answer with the improved variable in this format:\n\n{start}{{the improved variable}}{end}"
    "\n\nSend only the improved variable between the {start} tags, and nothing else."
)


def optimizer_prompt(
    *,
    role: str,
    value: str,
    gradients: Sequence[str | bytes],
    tags: tuple[str, str] = DEFAULT_NEW_VARIABLE_TAGS,
    constraints: Sequence[str] = (),
    examples: Sequence[str] = (),
    past_values: Sequence[str] = (),
    memory: Sequence[str] = (),
    past_feedback: Sequence[str] = (),
) -> str | list[str | bytes]:
    """The optimizer's user prompt for one variable.

    ``gradients`` are gradient blocks (``gradient_block``) and, for image-bearing contexts, the
    image bytes and texts that precede a block; with any bytes the prompt is a list of parts.
    """
    head = _OPT_HEAD.format(role=role, value=value)
    tail = _OPT_TASK.format(role=role)
    if past_values:
        past = "".join(f"\n{role} at step {i + 1}: {v}.\n" for i, v in enumerate(past_values))
        if past_feedback:  # TSGD-M: each sampled past value with the feedback it received
            past = "".join(
                f"\n{role} at an earlier step: {v}\nFeedback it received: {f}\n"
                for v, f in zip(past_values, past_feedback, strict=True)
            )
        tail += _OPT_PAST_ITERATIONS.format(past=past)
    if memory:
        blocks = "\n".join(
            f"<FEEDBACK-{i + 1}> {text} </FEEDBACK-{i + 1}>" for i, text in enumerate(memory)
        )
        tail += _OPT_MEMORY.format(memory=blocks)
    if constraints:
        numbered = "\n".join(f"Constraint {i + 1}: {c}" for i, c in enumerate(constraints))
        tail += _OPT_CONSTRAINTS.format(constraints=numbered)
    if examples:
        tail += _OPT_EXAMPLES.format(role=role, examples="\n".join(examples))
    tail += _OPT_FORMAT.format(start=tags[0], end=tags[1])
    if all(isinstance(g, str) for g in gradients):
        return head + _OPT_CONTEXT.format(gradients="".join(gradients)) + tail  # type: ignore[arg-type]
    # With images the context is a run of parts; the tags still frame it.
    return [head + "<CONTEXT>", *gradients, "</CONTEXT>\n\n" + tail]


def format_reminder(tags: tuple[str, str]) -> str:
    """The follow-up sent when an optimizer reply lacks the new-variable tags."""
    return (
        f"Your reply did not contain the improved variable between {tags[0]} and {tags[1]}. "
        f"Send the improved variable again, between {tags[0]} and {tags[1]}, and nothing else."
    )


# Last: textgrad_names builds its templates from the fragments above, so it imports them from
# this (by now filled) module.
from asynctg.prompts.textgrad_names import (  # noqa: E402
    TEXTGRAD_TEMPLATES,
    textgrad_multichoice_query,
)
