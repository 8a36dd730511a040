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
"""

from __future__ import annotations

from collections.abc import Sequence

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


# --- cutting text that cannot fit a request ------------------------------------------------

#: Put where text was removed, so the model that reads it knows something is missing.
CUT_NOTICE = " [... {n} characters cut here to fit the context window ...] "
# Spans cut first, longest first: the conversation's parts and the feedback, never the
# instructions around them, so the tags stay balanced and the request keeps its shape.
_CUT_TAGS = (
    "LM_INPUT",
    "LM_OUTPUT",
    "LM_SYSTEM_PROMPT",
    "INPUTS_TO_FUNCTION",
    "OUTPUT_OF_FUNCTION",
    "FEEDBACK",
    "OBJECTIVE_FUNCTION",
)
#: Characters kept of a span that is cut (half from its start, half from its end).
_CUT_KEEP = 200
_NOTICE_WIDTH = len(CUT_NOTICE.format(n=10**15))
#: Spans cut at most: model-written text may hold any number of tag pairs, and a few of the
#: longest always free enough (the rest is cut as a whole).
_MAX_CUTS = 16


def _tag_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the text inside each ``<TAG>...</TAG>`` of ``_CUT_TAGS``; linear."""
    spans = []
    for tag in _CUT_TAGS:
        start_tag, end_tag = f"<{tag}>", f"</{tag}>"
        pos = 0
        while True:  # each find moves on past the last span: bounded by len(text)
            i = text.find(start_tag, pos)
            if i < 0:
                break
            j = text.find(end_tag, i + len(start_tag))
            if j < 0:
                break
            spans.append((i + len(start_tag), j))
            pos = j + len(end_tag)
    return spans


def _cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    if limit <= _NOTICE_WIDTH:
        return text[:limit]
    keep = limit - _NOTICE_WIDTH
    head, tail = keep - keep // 2, keep // 2
    cut = len(text) - head - tail
    return text[:head] + CUT_NOTICE.format(n=cut) + (text[len(text) - tail :] if tail else "")


def cut_to_fit(text: str, limit: int, *, spans_only: bool = False) -> str:
    """``text`` in at most ``limit`` characters, the cuts marked with ``CUT_NOTICE``.

    The middles of the longest tagged spans (the input, output and system prompt of a
    conversation, the feedback) go first, each keeping its start and end; only when that is
    not enough is the middle of the whole text cut (never with ``spans_only``: the result may
    then be longer than ``limit``). Text within ``limit`` is returned as is.
    """
    if len(text) <= limit:
        return text
    accepted: list[tuple[int, int]] = []
    for s in sorted(_tag_spans(text), key=lambda s: s[0] - s[1]):  # longest first
        if all(s[1] <= a[0] or s[0] >= a[1] for a in accepted):  # nested spans: the outer one
            accepted.append(s)
            if len(accepted) == _MAX_CUTS:
                break
    need = len(text) - limit
    cuts: list[tuple[int, int]] = []
    for start, end in accepted:
        if need <= 0:
            break
        room = end - start - _CUT_KEEP
        if room <= _NOTICE_WIDTH:
            continue
        take = min(room, need + _NOTICE_WIDTH)
        mid = start + (end - start - take) // 2
        cuts.append((mid, mid + take))
        need -= take - _NOTICE_WIDTH
    out, pos = [], 0
    for start, end in sorted(cuts):
        out += [text[pos:start], CUT_NOTICE.format(n=end - start)]
        pos = end
    out.append(text[pos:])
    shorter = "".join(out)
    return shorter if spans_only else _cut_middle(shorter, limit)


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

OPTIMIZER_SYSTEM_PROMPT = (
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


# --- applications: the paper's tasks and loops (asynctg.tasks, asynctg.apps) ---------------
# Same information as the TextGrad paper's evaluation scripts, in this project's words. The
# starting system prompts ask for a final "Answer: $VALUE" line, which the evaluation functions
# (and the simulator) read.

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


# --- science loops: molecules (the paper's §3.4) and radiotherapy plans (§3.5) ---------------

MOLECULE_ROLE = (
    "SMILES string of a candidate drug molecule, to be improved for binding to the target "
    "protein and for drug-likeness"
)
MOLECULE_CONSTRAINT = (
    "The new value must be exactly one valid SMILES string and nothing else: no name, no "
    "explanation, no spaces or line breaks."
)
MOLECULE_EVALUATION_PURPOSE = (
    "docks the molecule into the target's binding pocket with AutoDock Vina and computes its "
    "drug-likeness (QED) and its Lipinski rule-of-five violations"
)


def molecule_loss_instruction(target: str) -> str:
    """The molecule loop's loss: a critique of the measured numbers against both objectives."""
    return (
        f"You review candidate drug molecules designed to bind {target}. You are given a "
        "molecule's SMILES and what was measured for it: its Vina docking score in kcal/mol "
        "(more negative is better; around -6 is weak, below -10 is very strong), its QED "
        "drug-likeness from 0 to 1 (above 0.6 is good) and its Lipinski rule-of-five "
        "violations (0 is best). The goal is stronger binding while the molecule stays "
        "drug-like and synthesizable. Critically evaluate the molecule on each objective: "
        "what holds it back and which structural changes (groups to add, remove or replace, "
        "rings, polarity, size) would most likely improve it. If it could not be evaluated, "
        "explain why and what a valid molecule needs. Be concise; do not write out a full new "
        "SMILES."
    )


PLAN_ROLE = (
    "objective set of a radiotherapy treatment plan (a JSON array of objectives: weights and "
    "dose limits per structure), to be tuned until the plan meets the clinical goals"
)
PLAN_EVALUATION_PURPOSE = (
    "optimises the beam intensities (fluence) for the objective set and reports the resulting "
    "plan's dose metrics"
)


def plan_constraint(structures: Sequence[str], kinds: Sequence[str]) -> str:
    """The optimizer's format constraint for an objective set."""
    return (
        "The new value must be a JSON array of objectives and nothing else. Each objective is "
        'an object {"structure": S, "kind": K, "dose_gy": D, "weight": W} (kinds "max_dvh" '
        'and "min_dvh" also take "volume_pct"), where S is one of '
        + ", ".join(structures)
        + " and K one of "
        + ", ".join(kinds)
        + "; weights are positive, doses in Gy."
    )


def plan_loss_instruction(prescription_gy: float, goals: str) -> str:
    """The radiotherapy loop's loss: a critique of the plan's dose metrics against the goals."""
    return (
        "You review radiotherapy treatment plans for the AAPM TG-119 C-shape case: a C-shaped "
        "target (OuterTarget) wrapped around an organ at risk (Core). The prescription is "
        f"{prescription_gy:g} Gy to the target. Clinical goals: {goals} You are given the "
        "objective set the plan was optimised with (weights and dose limits per structure) "
        "and the resulting dose metrics. Critically evaluate how well each goal is met and "
        "which objectives (their weights, dose limits or missing objectives) cause each "
        "shortfall or trade-off, and in which direction they should change. If the objective "
        "set was rejected, explain what is wrong with it. Be concise; do not write out a full "
        "new objective set."
    )


# --- TextGrad's template names (asynctg.compat's module paths re-export these) -------------
# Code written for TextGrad imports its template constants by name and fills them with its
# placeholder names; these are this module's own templates under those placeholders, so such
# code formats them without a KeyError. asynctg's own requests are built by the functions above.

__all__ += ["TEXTGRAD_TEMPLATES", "textgrad_multichoice_query"]

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


# --- GEPA's reflective step (asynctg.gepa) ----------------------------------------------------

#: Where a reflection template puts the component's current text and the rendered examples;
#: the same placeholders gepa 0.1.4 uses, so a template written for gepa works unchanged.
GEPA_CURRENT_TEXT = "<curr_param>"
GEPA_EXAMPLES = "<side_info>"

GEPA_REFLECTION_TEMPLATE = """An assistant was given these instructions for a task I need done:
```
<curr_param>
```
Below are some task inputs it received, what it answered, and feedback on each answer saying \
how the answer falls short or what the right result was:
```
<side_info>
```
Write improved instructions for the assistant. Work out from the inputs what format they \
come in and what exactly the task asks. Study every answer together with its feedback: \
collect the specific, domain-dependent facts the feedback reveals and put them into the \
instructions, because the assistant will not see this feedback again. If an answer shows a \
general strategy that works, state that strategy in the instructions too.
Return only the new instructions, inside a ``` block."""


def _gepa_value(value: object, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(value, dict):
        lines: list[str] = []
        for k, v in value.items():
            lines.append(f"{pad}[{k}]")
            lines.extend(_gepa_value(v, depth + 1))
        return lines or [f"{pad}(empty)"]
    if isinstance(value, list | tuple):
        lines = []
        for n, item in enumerate(value, 1):
            lines.append(f"{pad}[item {n}]")
            lines.extend(_gepa_value(item, depth + 1))
        return lines or [f"{pad}(empty)"]
    return [pad + line for line in str(value).strip().splitlines()] or [pad]


def gepa_examples(records: Sequence[object]) -> str:
    """A reflective dataset (one mapping per example: inputs, outputs, feedback, ...) as text."""
    blocks = []
    for n, record in enumerate(records, 1):
        lines = [f"=== Example {n} ==="]
        items = record.items() if isinstance(record, dict) else [("Record", record)]
        for key, value in items:
            lines.append(f"[{key}]")
            lines.extend(_gepa_value(value, 1))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def gepa_reflection_prompt(current: str, records: Sequence[object], template: str | None) -> str:
    """The reflective step's request: ``template`` (gepa's placeholders) filled in."""
    text = GEPA_REFLECTION_TEMPLATE if template is None else template
    return text.replace(GEPA_CURRENT_TEXT, current).replace(GEPA_EXAMPLES, gepa_examples(records))


def gepa_feedback(correct: bool, answer: str, context: dict[str, str]) -> str:
    """The default adapter's feedback on one answer (the contains-the-answer check)."""
    if correct:
        return f"Correct: the response contains the expected answer '{answer}'."
    text = (
        f"Incorrect: the expected answer is '{answer}'. The response must contain it exactly "
        "as written."
    )
    if context:
        text += " Context that may help:\n" + "\n".join(f"{k}: {v}" for k, v in context.items())
    return text
