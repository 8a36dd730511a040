"""``textgrad.defaults``: the default role descriptions (asynctg's wording)."""

from asynctg.prompts import (
    SYSTEM_PROMPT_DEFAULT_ROLE,
    VARIABLE_INPUT_DEFAULT_ROLE,
    VARIABLE_OUTPUT_DEFAULT_ROLE,
)

__all__ = [
    "SYSTEM_PROMPT_DEFAULT_ROLE",
    "VARIABLE_INPUT_DEFAULT_ROLE",
    "VARIABLE_OUTPUT_DEFAULT_ROLE",
]
