"""``textgrad.autograd.function``: ``Function``, ``BackwardContext`` and ``Module`` for
differentiable functions written the TextGrad way.

A TextGrad-style function builds its output in ``forward`` and attaches
``BackwardContext(backward_fn=self.backward, ...)``; its ``backward(..., backward_engine)``
calls the engine itself (blocking) and adds feedback to the inputs with
``variable.gradients.add(...)``. Under ``asynctg.compat`` such a backward runs in a worker
thread when the executor reaches its node (other nodes' calls go on meanwhile); it sees the
feedback its output received, as in TextGrad, and what it adds becomes the inputs' gradients
in the same all-or-nothing way as every other rule's.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any

from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.graph.function import GradientPlan
from asynctg.graph.variable import GradientList
from asynctg.graph.variable import Variable as NativeVariable

__all__ = ["BackwardContext", "EngineLM", "Function", "Module", "Variable"]


class Function(abc.ABC):
    """A function that can be called and back-propagated through (TextGrad's)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Build the output variable (and attach a ``BackwardContext``)."""

    @abc.abstractmethod
    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """Add feedback to the inputs, given ``backward_engine``."""


class BackwardContext:
    """``BackwardContext(backward_fn, *args, **kwargs)``: call ``backward_fn(*args, **kwargs,
    backward_engine=engine)`` when the backward pass reaches the node."""

    def __init__(self, backward_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.backward_fn = backward_fn
        self.fn_name = f"{backward_fn.__module__}.{backward_fn.__qualname__}"
        self.args = args
        self.kwargs = kwargs

    def __call__(self, backward_engine: Any) -> Any:
        return self.backward_fn(*self.args, **self.kwargs, backward_engine=backward_engine)

    @property
    def name(self) -> str:
        return self.fn_name

    def __repr__(self) -> str:
        return self.fn_name

    async def plans(self, output: NativeVariable, feedback: str, engine: Any) -> list[GradientPlan]:
        """Run the TextGrad-style backward in a worker thread; what it adds to the inputs
        becomes their gradient plans (removed again from the inputs: the executor commits)."""
        from asynctg.compat.engine import Engine

        inputs = list(output.predecessors)
        before = {id(v): list(v.gradients) for v in inputs}
        shown = NativeVariable(
            feedback, requires_grad=False, role_description=f"feedback to {output.role_description}"
        )
        saved = output.gradients, output.gradients_context
        output.gradients = GradientList([shown] if feedback else [])
        output.gradients_context = {shown: None}
        try:
            await asyncio.to_thread(self, Engine(engine))
        finally:
            output.gradients, output.gradients_context = saved
        plans = []
        for v in inputs:
            known = {id(g) for g in before[id(v)]}
            added = [g for g in v.gradients if id(g) not in known]
            v.gradients = GradientList(before[id(v)])
            for g in added:
                context = v.gradients_context.pop(g, None)
                plans.append(GradientPlan(v, value=str(g.value), context=context))
        return plans


class Module(abc.ABC):
    """A module with parameters, like ``torch.nn.Module`` (TextGrad's)."""

    def parameters(self) -> list[NativeVariable]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.reset_gradients()

    def named_parameters(self) -> Any:
        for p in self.parameters():
            yield p.get_role_description(), p

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's computation."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)
