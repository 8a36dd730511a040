"""``textgrad.optimizer.optimizer_prompts``: the optimizer's templates under TextGrad's names and
placeholders (asynctg's texts), and ``construct_tgd_prompt`` to assemble them."""

from __future__ import annotations

from typing import Any

from asynctg.prompts import TEXTGRAD_TEMPLATES as _T

__all__ = [
    "CONSTRAINT_PROMPT_ADDITION",
    "GLOSSARY_TEXT",
    "GRADIENT_MULTIPART_TEMPLATE",
    "GRADIENT_TEMPLATE",
    "IN_CONTEXT_EXAMPLE_PROMPT_ADDITION",
    "MOMENTUM_PROMPT_ADDITION",
    "OPTIMIZER_SYSTEM_PROMPT",
    "TGD_MULTIPART_PROMPT_INIT",
    "TGD_MULTIPART_PROMPT_PREFIX",
    "TGD_PROMPT_PREFIX",
    "TGD_PROMPT_SUFFIX",
    "construct_tgd_prompt",
]

GLOSSARY_TEXT = _T["GLOSSARY_TEXT"]
OPTIMIZER_SYSTEM_PROMPT = _T["OPTIMIZER_SYSTEM_PROMPT"]
TGD_PROMPT_PREFIX = _T["TGD_PROMPT_PREFIX"]
TGD_MULTIPART_PROMPT_INIT = _T["TGD_MULTIPART_PROMPT_INIT"]
TGD_MULTIPART_PROMPT_PREFIX = _T["TGD_MULTIPART_PROMPT_PREFIX"]
TGD_PROMPT_SUFFIX = _T["TGD_PROMPT_SUFFIX"]
MOMENTUM_PROMPT_ADDITION = _T["MOMENTUM_PROMPT_ADDITION"]
CONSTRAINT_PROMPT_ADDITION = _T["CONSTRAINT_PROMPT_ADDITION"]
IN_CONTEXT_EXAMPLE_PROMPT_ADDITION = _T["IN_CONTEXT_EXAMPLE_PROMPT_ADDITION"]
GRADIENT_TEMPLATE = _T["GRADIENT_TEMPLATE"]
GRADIENT_MULTIPART_TEMPLATE = _T["GRADIENT_MULTIPART_TEMPLATE"]


def construct_tgd_prompt(
    do_momentum: bool = False,
    do_constrained: bool = False,
    do_in_context_examples: bool = False,
    **optimizer_kwargs: Any,
) -> str | list[Any]:
    """The optimizer's user prompt from TextGrad's keyword arguments (``variable_desc``,
    ``variable_short``, ``variable_grad``, ``new_variable_start_tag``, ... as TextGrad names
    them). A ``variable_grad`` that is a list (images) gives a list of parts."""
    grad = optimizer_kwargs["variable_grad"]
    if isinstance(grad, str):
        prompt = TGD_PROMPT_PREFIX.format(**optimizer_kwargs)
    else:
        prompt = TGD_MULTIPART_PROMPT_INIT.format(**optimizer_kwargs)
    tail = ""
    if do_momentum:
        tail += MOMENTUM_PROMPT_ADDITION.format(**optimizer_kwargs)
    if do_constrained:
        tail += CONSTRAINT_PROMPT_ADDITION.format(**optimizer_kwargs)
    if do_in_context_examples:
        tail += IN_CONTEXT_EXAMPLE_PROMPT_ADDITION.format(**optimizer_kwargs)
    tail += TGD_PROMPT_SUFFIX.format(**optimizer_kwargs)
    if isinstance(grad, str):
        return prompt + tail
    return [prompt, *grad, TGD_MULTIPART_PROMPT_PREFIX.format(**optimizer_kwargs) + tail]
