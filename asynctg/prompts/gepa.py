"""GEPA's reflective step (asynctg.gepa): the reflection template and how examples render."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "GEPA_CURRENT_TEXT",
    "GEPA_EXAMPLES",
    "GEPA_REFLECTION_TEMPLATE",
    "gepa_examples",
    "gepa_feedback",
    "gepa_reflection_prompt",
]

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
