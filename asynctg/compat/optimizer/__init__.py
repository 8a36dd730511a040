"""TextGrad's ``tg.optimizer`` namespace, blocking: ``optimizer.step()`` (see ``.optimizer``)."""

from asynctg.compat.optimizer.optimizer import (
    TGD,
    Optimizer,
    TextualGradientDescent,
    TextualGradientDescentwithMomentum,
)

__all__ = ["TGD", "Optimizer", "TextualGradientDescent", "TextualGradientDescentwithMomentum"]
