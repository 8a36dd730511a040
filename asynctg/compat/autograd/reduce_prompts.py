"""``textgrad.autograd.reduce_prompts``: the prompt that merges several feedbacks into one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asynctg.prompts import REDUCE_SYSTEM_PROMPT, reduce_prompt

__all__ = ["REDUCE_MEAN_SYSTEM_PROMPT", "construct_reduce_prompt"]

REDUCE_MEAN_SYSTEM_PROMPT = REDUCE_SYSTEM_PROMPT


def construct_reduce_prompt(gradients: Iterable[Any]) -> str:
    """The merge request for ``gradients`` (variables, or texts), one ``<FEEDBACK>`` each."""
    return reduce_prompt([(str(getattr(g, "value", g)), 1) for g in gradients])
