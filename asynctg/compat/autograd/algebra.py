"""``textgrad.autograd.algebra``: the ``Sum`` and ``Aggregate`` functions behind ``tg.sum`` and
``tg.aggregate`` (asynctg's own; see ``asynctg.graph.ops`` and ``asynctg.optim.aggregation``)."""

from asynctg.compat._log import logger
from asynctg.compat.autograd.function import BackwardContext, Function
from asynctg.compat.autograd.reduce_prompts import (
    REDUCE_MEAN_SYSTEM_PROMPT,
    construct_reduce_prompt,
)
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.graph.ops import Sum
from asynctg.optim.aggregation import Aggregate

__all__ = [
    "REDUCE_MEAN_SYSTEM_PROMPT",
    "Aggregate",
    "BackwardContext",
    "EngineLM",
    "Function",
    "Sum",
    "Variable",
    "construct_reduce_prompt",
    "logger",
]
