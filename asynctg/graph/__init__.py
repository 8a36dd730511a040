"""The graph layer: variables, differentiable functions and the concurrent backward executor."""

from asynctg.graph.executor import backward, compute_gradients, post_order
from asynctg.graph.function import BackwardContext, Function, GradientMerge, GradientPlan, Module
from asynctg.graph.ops import (
    BlackboxLLM,
    FormattedLLMCall,
    LLMCall,
    MultimodalLLMCall,
    OrderedFieldsMultimodalLLMCall,
    StringBasedFunction,
    Sum,
    sum,
)
from asynctg.graph.variable import Variable

__all__ = [
    "BackwardContext",
    "BlackboxLLM",
    "FormattedLLMCall",
    "Function",
    "GradientMerge",
    "GradientPlan",
    "LLMCall",
    "Module",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "StringBasedFunction",
    "Sum",
    "Variable",
    "backward",
    "compute_gradients",
    "post_order",
    "sum",
]
