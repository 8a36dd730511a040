"""``textgrad.optimizer.guidance_optimizer``: TextGrad's optimizer driven by the ``guidance``
library. asynctg does not run guidance programs: ``GuidedTextualGradientDescent`` raises
``ConfigError`` when constructed (use ``TextualGradientDescent``, whose reply format is
enforced by its tags and ``format_retries``)."""

from __future__ import annotations

from typing import Any

from asynctg.compat._log import logger
from asynctg.compat.config import validate_engine_or_get_default
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.engine.guidance import GuidanceEngine
from asynctg.compat.optimizer.optimizer import (
    GRADIENT_MULTIPART_TEMPLATE,
    GRADIENT_TEMPLATE,
    OPTIMIZER_SYSTEM_PROMPT,
    Optimizer,
    TextualGradientDescent,
    construct_tgd_prompt,
    get_gradient_and_context_text,
)
from asynctg.compat.variable import Variable
from asynctg.errors import ConfigError

__all__ = [
    "GRADIENT_MULTIPART_TEMPLATE",
    "GRADIENT_TEMPLATE",
    "OPTIMIZER_SYSTEM_PROMPT",
    "EngineLM",
    "GuidanceEngine",
    "GuidedTextualGradientDescent",
    "Optimizer",
    "TextualGradientDescent",
    "Variable",
    "construct_tgd_prompt",
    "get_gradient_and_context_text",
    "logger",
    "validate_engine_or_get_default",
]


class GuidedTextualGradientDescent(TextualGradientDescent):
    """Not supported under asynctg (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError(
            "GuidedTextualGradientDescent needs the guidance library, which asynctg does not "
            "drive; use tg.TextualGradientDescent (its reply format is checked, and re-asked "
            "up to format_retries times)"
        )
