"""TextGrad's ``tg.autograd`` namespace: the differentiable functions.

>>> import asynctg as tg
>>> tg.autograd.StringBasedFunction  # doctest: +ELLIPSIS
<class '...StringBasedFunction'>
"""

from asynctg.graph import (
    Aggregate,
    BackwardContext,
    FormattedLLMCall,
    Function,
    LLMCall,
    Module,
    MultimodalLLMCall,
    OrderedFieldsMultimodalLLMCall,
    StringBasedFunction,
    Sum,
    aggregate,
    compute_gradients,
    sum,
)

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
