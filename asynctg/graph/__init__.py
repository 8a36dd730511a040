"""The graph layer: variables, differentiable functions and the concurrent backward executor."""

from asynctg.graph.executor import backward, compute_gradients, post_order
from asynctg.graph.function import BackwardContext, Function, GradientPlan, Module, ReduceGroup
from asynctg.graph.ops import (
    Aggregate,
    BlackboxLLM,
    FormattedLLMCall,
    LLMCall,
    MultimodalLLMCall,
    OrderedFieldsMultimodalLLMCall,
    StringBasedFunction,
    Sum,
    aggregate,
    sum,
)
from asynctg.graph.variable import Variable

__all__ = [
    "Aggregate",
    "BackwardContext",
    "BlackboxLLM",
    "FormattedLLMCall",
    "Function",
    "GradientPlan",
    "LLMCall",
    "Module",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "ReduceGroup",
    "StringBasedFunction",
    "Sum",
    "Variable",
    "aggregate",
    "backward",
    "compute_gradients",
    "post_order",
    "sum",
]
