"""TextGrad's ``Variable``: the native one, with TextGrad's argument order and a blocking backward.

The compat ``Variable`` is a slot-less subclass of ``asynctg.Variable``: values, gradients,
``gradients_context``, ``get_gradient_text()``, ``set_value()`` and the rest are the native
ones. Only construction (TextGrad's positional order, ints accepted) and ``backward()`` (blocking)
differ. Outputs of compat calls are adopted into this class, so ``loss.backward()`` blocks on
whatever variable a compat call returned.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable

from asynctg.compat._loop import run
from asynctg.compat.engine import Engine, native_engine
from asynctg.engine.client import ChatEngine
from asynctg.graph import Variable as NativeVariable

__all__ = ["Variable", "adopt"]


class Variable(NativeVariable):
    """A text (or image) node of the graph, created as in TextGrad.

    >>> import asynctg.compat as tg
    >>> x = tg.Variable(3, requires_grad=False, role_description="number of items")
    >>> x.value
    '3'

    Positional arguments follow TextGrad: ``value, image_path, predecessors, requires_grad``;
    ``role_description`` is keyword-only. ``gradients`` is an ordered list (TextGrad: a set).
    """

    __slots__ = ()  # same layout as the native class, so native outputs can be adopted

    def __init__(
        self,
        value: str | bytes | int = "",
        image_path: str | os.PathLike[str] | None = "",
        predecessors: Iterable[NativeVariable] | None = None,
        requires_grad: bool = True,
        *,
        role_description: str | None = None,
    ) -> None:
        # TextGrad turns ints into text (BBH answers arrive as ints); bool is not a count.
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = str(int(value))
        super().__init__(
            value,  # type: ignore[arg-type]  # anything else is refused by the native check
            requires_grad,
            role_description=role_description,
            predecessors=predecessors,
            image_path=image_path or None,
        )

    def backward(self, engine: Engine | ChatEngine | str | None = None) -> None:  # type: ignore[override]
        """Compute feedback for everything this variable depends on; blocks until done.

        The feedback calls run concurrently on the compat loop, each as soon as what it needs
        is ready. Feedback is written to the variables only if the whole pass succeeded.
        """
        run(_backward(self, native_engine(engine)))

    def __add__(self, other: NativeVariable) -> Variable:
        """``a + b`` is ``tg.sum([a, b])``, as in TextGrad."""
        if not isinstance(other, NativeVariable):
            return NotImplemented
        from asynctg.compat.autograd import sum as compat_sum

        return compat_sum([self, other])


async def _backward(root: NativeVariable, engine: ChatEngine | None) -> None:
    # Forward calls may still be running (compat calls return before their reply is in):
    # wait for every one the graph depends on, then differentiate.
    from asynctg.compat._lazy import resolve_graph

    await resolve_graph(root)
    await NativeVariable.backward(root, engine)


def adopt(variable: NativeVariable) -> Variable:
    """Make a native variable (a compat call's output) a compat one, in place; returns it.

    Only the class changes, so identity holds: the graph, the gradients and every reference to
    the variable stay as they are.
    """
    if type(variable) is NativeVariable:
        variable.__class__ = Variable
    return variable  # type: ignore[return-value]
