"""Optimizers: textual gradient descent and its variants."""

from asynctg.optim.tgd import (
    Optimizer,
    TextualGradientDescent,
    TextualGradientDescentwithMomentum,
    extract_new_value,
)

TGD = TextualGradientDescent

__all__ = [
    "TGD",
    "Optimizer",
    "TextualGradientDescent",
    "TextualGradientDescentwithMomentum",
    "extract_new_value",
]
