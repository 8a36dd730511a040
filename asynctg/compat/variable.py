"""TextGrad's ``Variable``: the native one, with TextGrad's signature and a blocking backward.

The compat ``Variable`` is a slot-less subclass of ``asynctg.Variable``: values, gradients,
``gradients_context``, ``get_gradient_text()``, ``set_value()`` and the rest are the native
ones. What follows TextGrad here: the constructor (``value, image_path, predecessors,
requires_grad``, then a required keyword ``role_description``, whose absence is a
``TypeError``; ints become text; an ``image_path`` may be a URL), ``a + b`` (the values joined
as they are, roles joined with "and"), ``generate_graph()`` and a blocking ``backward()``.
Outputs of compat calls are adopted into this class, so ``loss.backward()`` blocks on whatever
variable a compat call returned. ``gradients`` is an ordered list with the set methods
(``add``), so prompts are reproducible where TextGrad's set is not.

The one compat class that subclasses its native class rather than wrapping it
(``asynctg.compat._blocking``): a variable is a graph node, passed into native code and
adopted in place, so it must be a native ``Variable``; its blocking ``backward()`` is the one
sync-over-async override left.
"""

from __future__ import annotations

import html
import numbers
import os
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

from asynctg.compat._log import log_backward
from asynctg.compat._loop import run
from asynctg.compat.engine import native_engine
from asynctg.engine.client import ChatEngine
from asynctg.errors import BadValueError, ConfigError
from asynctg.graph import Sum
from asynctg.graph import Variable as NativeVariable
from asynctg.graph.executor import backward as graph_backward

__all__ = [
    "EngineLM",
    "SingletonBackwardEngine",
    "Variable",
    "adopt",
    "is_valid_url",
    "logger",
]


def _fetch(url: str) -> bytes:
    """An image behind a URL, as TextGrad fetches it (with httpx)."""
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - httpx comes with the compat extra
        raise ConfigError("reading an image_path URL needs httpx: pip install httpx") from exc
    return bytes(httpx.get(url).content)


class Variable(NativeVariable):
    """A text (or image) node of the graph, created as in TextGrad.

    >>> import asynctg.compat as tg
    >>> x = tg.Variable(3, requires_grad=False, role_description="number of items")
    >>> x.value
    '3'
    """

    __slots__ = ()  # same layout as the native class, so native outputs can be adopted

    def __init__(
        self,
        value: str | bytes | int = "",
        image_path: str | os.PathLike[str] | None = "",
        predecessors: Iterable[NativeVariable] | None = None,
        requires_grad: bool = True,
        *,
        role_description: str,
    ) -> None:
        if hasattr(value, "item") and not isinstance(value, str | bytes):
            value = value.item()  # numpy scalars, as TextGrad converts them
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = str(int(value))
        if not isinstance(value, str | bytes):
            raise BadValueError(
                f"Value must be a string, int, or image (bytes). Got: {type(value).__name__}"
            )
        if (
            image_path
            and isinstance(image_path, str)
            and image_path.startswith(("http://", "https://"))
        ):
            if value not in ("", b""):
                raise ConfigError("give either a value or an image_path, not both")
            value, image_path = _fetch(image_path), None
        super().__init__(
            value,
            requires_grad,
            role_description=role_description,
            predecessors=predecessors,
            image_path=image_path or None,
        )

    def backward(self, engine: Any = None) -> None:  # type: ignore[override]
        """Compute feedback for everything this variable depends on; blocks until done.

        The feedback calls run concurrently on the compat loop, each as soon as what it needs
        is ready. Feedback is written to the variables only if the whole pass succeeded.
        """
        run(_backward(self, native_engine(engine)))

    def __add__(self, other: NativeVariable) -> Variable:
        """``a + b`` as in TextGrad: the values joined as they are, the roles with "and";
        feedback on the total reaches both."""
        if not isinstance(other, NativeVariable):
            return NotImplemented
        return _Add()([self, other])

    def generate_graph(self, print_gradients: bool = False) -> Any:
        """The computation graph behind this variable, as a ``graphviz`` graph (TextGrad's).

        With the ``graphviz`` package and its ``dot`` program a ``graphviz.Source`` (drawn in a
        notebook); without them (TextGrad fails there), an object showing the Graphviz source.
        """
        dot = self.to_dot(show_gradients=print_gradients)
        if shutil.which("dot") is None:
            return _DotText(dot)
        try:
            import graphviz  # type: ignore[import-untyped]
        except ImportError:
            return _DotText(dot)
        return graphviz.Source(dot)

    def __repr__(self) -> str:
        grads = {str(g.value) for g in self.gradients}
        return f"Variable(value={self.value!s}, role={self.role_description}, grads={grads})"

    def _repr_html_(self) -> str:
        return (
            f"<b>Variable</b> ({html.escape(self.role_description)}):<pre>"
            f"{html.escape(str(self))}</pre>"
        )


class _DotText:
    """Graphviz source that shows itself in a notebook when graphviz is not installed."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.source)}</pre>"

    def __str__(self) -> str:
        return self.source


class _Add(Sum):
    """``a + b``: TextGrad joins the values without a separator and the roles with "and"."""

    name = "add"

    def __call__(self, variables: Sequence[NativeVariable]) -> Variable:
        a, b = variables
        total = NativeVariable(
            str(a.value) + str(b.value),
            requires_grad=a.requires_grad or b.requires_grad,
            predecessors=[a, b],
            role_description=f"{a.role_description} and {b.role_description}",
        )
        self.attach(total, **self.saved())
        return adopt(total)


async def _backward(root: NativeVariable, engine: ChatEngine | None) -> None:
    # Forward calls may still be running (compat calls return before their reply is in):
    # wait for every one the graph depends on, then differentiate.
    from asynctg.compat._lazy import resolve_graph

    await resolve_graph(root)
    # The executor tells compat's observer each piece of feedback: TextGrad's log records.
    await graph_backward(root, engine, observer=log_backward)


def adopt(variable: NativeVariable) -> Variable:
    """Make a native variable (a compat call's output) a compat one, in place; returns it.

    Only the class changes, so identity holds: the graph, the gradients and every reference to
    the variable stay as they are.
    """
    if type(variable) is NativeVariable:
        variable.__class__ = Variable
    return variable  # type: ignore[return-value]


# TextGrad's variable module exposes these too; imported last (they import this module).
from asynctg.compat._log import logger  # noqa: E402
from asynctg.compat.config import SingletonBackwardEngine  # noqa: E402
from asynctg.compat.engine.base import EngineLM  # noqa: E402
from asynctg.compat.utils.image_utils import is_valid_url  # noqa: E402
