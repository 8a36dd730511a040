"""``textgrad.prompts``: the optimizer's gradient template under TextGrad's name."""

from asynctg.prompts import TEXTGRAD_TEMPLATES as _T

__all__ = ["GRADIENT_TEMPLATE"]

GRADIENT_TEMPLATE = _T["GRADIENT_TEMPLATE"]
