"""``textgrad.autograd.multimodal_backward_prompts``: the image-input conversation template
under TextGrad's name and placeholders (asynctg's text)."""

from asynctg.prompts import TEXTGRAD_TEMPLATES as _T

__all__ = ["MULTIMODAL_CONVERSATION_TEMPLATE"]

MULTIMODAL_CONVERSATION_TEMPLATE = _T["MULTIMODAL_CONVERSATION_TEMPLATE"]
