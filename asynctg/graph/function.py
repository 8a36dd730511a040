"""What a differentiable function is: a forward rule and a backward rule, side by side.

A backward rule does not call an LLM. Given the output variable, the feedback it received and
the backward engine, it returns one ``GradientPlan`` per predecessor that needs feedback: either
a chat request to send, or the feedback text itself (``tg.sum`` needs no call). The executor
sends the requests (concurrently, through the engine's scheduler) and records the answers.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from asynctg.engine.types import ChatRequest
from asynctg.graph.variable import GradientContext, Variable

if TYPE_CHECKING:
    from asynctg.engine.protocol import Engine

__all__ = ["BackwardContext", "Function", "GradientMerge", "GradientPlan", "Module"]


class GradientMerge(Protocol):
    """A point of the graph whose descendants' gradients are combined before use.

    A backward rule may mark its plans with one (``tg.aggregate`` does); every gradient that
    descends from them carries it, and when a variable holds two or more such gradients, the
    executor hands them to ``merge`` before the variable's own backward runs. What merging
    means (prompts, budgets, strategy) is the hook's business: it lives in
    ``asynctg.optim.aggregation``; the executor only calls it.
    """

    async def merge(
        self,
        target: Variable,
        gradients: Sequence[tuple[Variable, GradientContext | None]],
        engine: Engine,
        priority: int,
    ) -> Variable | None:
        """One gradient standing for ``gradients`` (None: keep them as they are)."""
        ...


@dataclass(eq=False)
class GradientPlan:
    """How one predecessor (``target``) gets its feedback from one backward rule.

    Exactly one of ``request`` (an LLM call whose answer is the feedback) and ``value`` (the
    feedback itself) is used. ``context`` is stored with the gradient for the optimizer;
    ``merge`` marks the gradient (and what descends from it) for a ``GradientMerge``.
    """

    target: Variable
    request: ChatRequest | None = None
    value: str = ""
    context: GradientContext | None = None
    merge: GradientMerge | None = None


@dataclass(eq=False)
class BackwardContext:
    """A node's backward rule with what its forward pass saved for it."""

    function: Function
    saved: dict[str, Any] = field(default_factory=dict)

    def plans(self, output: Variable, feedback: str, engine: Engine) -> list[GradientPlan]:
        return self.function.backward(output, feedback, engine, **self.saved)

    @property
    def name(self) -> str:
        return type(self.function).__name__

    def __repr__(self) -> str:
        return f"<backward of {self.name}>"


class Function(abc.ABC):
    """A differentiable operation: ``forward`` builds the output, ``backward`` plans feedback."""

    @abc.abstractmethod
    def backward(self, *args: Any, **kwargs: Any) -> list[GradientPlan]:
        """The feedback plans for ``output``'s predecessors, given ``output``'s own feedback.

        Called as ``backward(output, feedback, engine, **saved)``, where ``saved`` is what the
        forward pass passed to ``attach``.
        """

    def attach(self, output: Variable, **saved: Any) -> Variable:
        """Record this function as ``output``'s backward rule, with what it needs saved."""
        output.grad_fn = BackwardContext(self, saved)
        return output


class Module(abc.ABC):
    """A reusable piece with parameters, like ``torch.nn.Module``; call it to run it."""

    @abc.abstractmethod
    def parameters(self) -> list[Variable]:
        """The variables this module would have optimised."""

    def named_parameters(self) -> Iterator[tuple[str, Variable]]:
        for p in self.parameters():
            yield p.role_description, p

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.reset_gradients()
