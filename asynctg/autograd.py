"""TextGrad's ``tg.autograd`` namespace: the differentiable functions.

>>> import asynctg as tg
>>> tg.autograd.StringBasedFunction  # doctest: +ELLIPSIS
<class '...StringBasedFunction'>
"""

from asynctg.graph import (
    BackwardContext,
    FormattedLLMCall,
    Function,
    LLMCall,
    Module,
    MultimodalLLMCall,
    OrderedFieldsMultimodalLLMCall,
    StringBasedFunction,
    Sum,
    compute_gradients,
    sum,
)
from asynctg.optim.aggregation import Aggregate, aggregate

__all__ = [
    "Aggregate",
    "BackwardContext",
    "FormattedLLMCall",
    "Function",
    "LLMCall",
    "Module",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "StringBasedFunction",
    "Sum",
    "aggregate",
    "compute_gradients",
    "sum",
]
