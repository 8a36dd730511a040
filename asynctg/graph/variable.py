"""``Variable``: a node of a computation graph over text (or, as an input, an image)."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from asynctg.engine.types import sniff_image
from asynctg.errors import ConfigError, GraphError

if TYPE_CHECKING:
    from asynctg.engine.protocol import Engine
    from asynctg.graph.function import BackwardContext

__all__ = [
    "GradientContext",
    "GradientList",
    "Variable",
    "describe_sample",
    "frozen_values",
    "read_value",
]

#: Context stored with a gradient: the conversation it was computed from (text, or a list of
#: text and image parts), the role of the call's output, and the role of the variable.
GradientContext = dict[str, Any]

_ids = itertools.count()


class GradientList(list["Variable"]):
    """A variable's gradients: an ordered list (so prompts are reproducible) that also has the
    set methods TextGrad code calls (``add``, ``update``, ``discard``)."""

    def add(self, gradient: Variable) -> None:
        """Append ``gradient`` unless this very object is already here."""
        if not any(g is gradient for g in self):
            self.append(gradient)

    def update(self, gradients: Iterable[Variable]) -> None:
        for g in gradients:
            self.add(g)

    def discard(self, gradient: Variable) -> None:
        self[:] = [g for g in self if g is not gradient]


#: Values forward rules read instead of the variables' current ones (see ``frozen_values``).
_FROZEN: contextvars.ContextVar[Mapping[int, tuple[Variable, str | bytes]] | None] = (
    contextvars.ContextVar("asynctg_frozen_values", default=None)
)


def read_value(variable: Variable) -> str | bytes:
    """``variable.value``, or the value frozen for it by ``frozen_values`` in this context.

    Forward rules read their inputs through this, so a call that runs later than it was made
    (``asynctg.compat`` defers calls) sees the values its inputs had when it was made.
    """
    frozen = _FROZEN.get()
    if frozen is not None:
        hit = frozen.get(id(variable))
        if hit is not None and hit[0] is variable:
            return hit[1]
    return variable.value


@contextlib.contextmanager
def frozen_values(values: Iterable[tuple[Variable, str | bytes]]) -> Iterator[None]:
    """Within the block (this task's context), forward rules read these values instead."""
    token = _FROZEN.set({id(v): (v, value) for v, value in values})
    try:
        yield
    finally:
        _FROZEN.reset(token)


class Variable:
    """Text (or image bytes) in a computation graph, with the feedback it has received.

    ``role_description`` says what the text is for; the feedback engine and the optimizer rely
    on it, so be specific ("system prompt to a model that answers counting questions").

    >>> import asynctg as tg
    >>> prompt = tg.Variable("Be concise.", requires_grad=True,
    ...                      role_description="system prompt to the language model")
    >>> prompt.get_short_value()
    'Be concise.'

    Feedback arrives through ``await loss.backward()``: ``gradients`` is the ordered list of
    feedback entries (each a ``Variable``), ``gradients_context[g]`` the conversation ``g`` was
    computed from (or None), as in TextGrad.
    """

    value: str | bytes
    requires_grad: bool
    role_description: str
    predecessors: tuple[Variable, ...]

    __slots__ = (
        "__weakref__",
        "_id",
        "_merges",
        "grad_fn",
        "gradients",
        "gradients_context",
        "predecessors",
        "requires_grad",
        "role_description",
        "value",
    )

    def __init__(
        self,
        value: str | bytes = "",
        requires_grad: bool = True,
        *,
        role_description: str | None = None,
        predecessors: Iterable[Variable] | None = None,
        image_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if role_description is None:
            raise ConfigError(
                "Variable needs role_description=...: say what the text is for, e.g. "
                "role_description='system prompt to the language model'; the feedback and the "
                "optimizer are written from it"
            )
        if not isinstance(role_description, str) or not role_description.strip():
            raise ConfigError("role_description must be a non-empty string")
        if image_path is not None:
            if value not in ("", b""):
                raise ConfigError("give either a value or an image_path, not both")
            try:
                with open(image_path, "rb") as f:
                    value = f.read()
            except OSError as exc:
                raise ConfigError(f"cannot read image_path {image_path}: {exc}") from exc
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        if not isinstance(value, str | bytes):
            raise ConfigError(
                f"a Variable's value must be text (str) or an image (bytes), got "
                f"{type(value).__name__}; convert it first, e.g. str(value)"
            )
        if isinstance(value, bytes):
            if sniff_image(value) is None:
                raise ConfigError(
                    "bytes values are images and must be PNG, JPEG, GIF or WebP; for text, "
                    "pass a str"
                )
            if requires_grad:
                raise ConfigError(
                    "an image Variable cannot have requires_grad=True: images are inputs and are "
                    "never optimised; pass requires_grad=False"
                )
        preds: tuple[Variable, ...] = ()
        if predecessors is not None:
            preds = tuple(predecessors)
            for p in preds:
                if not isinstance(p, Variable):
                    raise GraphError(f"predecessors must be Variables, got {type(p).__name__}")
        if not requires_grad:
            needing = [p.role_description for p in preds if p.requires_grad]
            if needing:
                raise GraphError(
                    "a Variable with requires_grad=False cannot have predecessors that require "
                    f"gradients ({', '.join(repr(r) for r in needing)}): feedback could not flow "
                    "to them. Set requires_grad=True, or freeze those predecessors."
                )
        self.value = value
        self.requires_grad = bool(requires_grad)
        self.role_description = role_description
        self.predecessors = preds
        self.grad_fn: BackwardContext | None = None
        self.gradients: list[Variable] = GradientList()
        self.gradients_context: dict[Variable, GradientContext | None] = {}
        #: the merge hooks (``GradientMerge``) this variable, as a gradient, descends from
        self._merges: tuple[Any, ...] = ()
        self._id = next(_ids)

    # --- TextGrad-style accessors -------------------------------------------------------------

    def get_value(self) -> str | bytes:
        return self.value

    def set_value(self, value: str) -> None:
        self.value = value

    def get_role_description(self) -> str:
        return self.role_description

    def set_role_description(self, role_description: str) -> None:
        if not isinstance(role_description, str) or not role_description.strip():
            raise ConfigError("role_description must be a non-empty string")
        self.role_description = role_description

    def get_grad_fn(self) -> BackwardContext | None:
        return self.grad_fn

    def set_grad_fn(self, grad_fn: BackwardContext | None) -> None:
        self.grad_fn = grad_fn

    @property
    def is_image(self) -> bool:
        return isinstance(self.value, bytes)

    def get_short_value(self, n_words_offset: int = 10) -> str:
        """The first and last ``n_words_offset`` words, for long texts in backward prompts."""
        if isinstance(self.value, bytes):
            return f"<image, {len(self.value)} bytes>"
        words = self.value.split(" ")
        if len(words) <= 2 * n_words_offset:
            return self.value
        return " ".join(words[:n_words_offset]) + " (...) " + " ".join(words[-n_words_offset:])

    def get_gradient_text(self) -> str:
        """All feedback received, one entry per line, in order."""
        return "\n".join(str(g.value) for g in self.gradients)

    def reset_gradients(self) -> None:
        self.gradients = GradientList()
        self.gradients_context = {}

    # --- the backward pass --------------------------------------------------------------------

    async def backward(self, engine: Engine | None = None) -> None:
        """Compute feedback for every variable this one depends on that requires it.

        LLM calls run concurrently, each as soon as what it needs is ready, through ``engine``
        (default: the one set with ``tg.set_backward_engine``). Feedback is added to the
        variables only when the whole pass succeeded.
        """
        from asynctg.graph.executor import backward

        await backward(self, engine)

    # --- inspection ---------------------------------------------------------------------------

    def walk(self) -> Iterator[Variable]:
        """This variable and everything it depends on, each once (depth first, iterative)."""
        seen: set[int] = set()
        stack: list[Variable] = [self]
        while stack:
            v = stack.pop()
            if v._id in seen:
                continue
            seen.add(v._id)
            yield v
            stack.extend(reversed(v.predecessors))

    def to_dot(self, *, show_gradients: bool = False) -> str:
        """The graph behind this variable in Graphviz DOT text (no graphviz needed)."""
        from asynctg.graph.export import to_dot

        return to_dot(self, show_gradients=show_gradients)

    def to_mermaid(self, *, show_gradients: bool = False) -> str:
        """The graph behind this variable as a Mermaid flowchart."""
        from asynctg.graph.export import to_mermaid

        return to_mermaid(self, show_gradients=show_gradients)

    def __str__(self) -> str:
        return self.value if isinstance(self.value, str) else f"<image, {len(self.value)} bytes>"

    def __repr__(self) -> str:
        value = self.get_short_value(5)
        return (
            f"Variable(value={value!r}, role={self.role_description!r}, "
            f"requires_grad={self.requires_grad}, gradients={len(self.gradients)})"
        )

    def __add__(self, other: Variable) -> Variable:
        """``a + b`` is ``tg.sum([a, b])``, as in TextGrad."""
        from asynctg.graph.ops import sum as sum_

        if not isinstance(other, Variable):
            return NotImplemented
        return sum_([self, other])


#: Characters of each value ``describe_sample`` shows, and the inputs it lists at most.
_SAMPLE_CHARS = 60
_SAMPLE_INPUTS = 3


def _preview(v: Variable) -> str:
    if isinstance(v.value, bytes):
        return f"<image, {len(v.value)} bytes>"
    text = " ".join(v.value[: 4 * _SAMPLE_CHARS].split())
    return repr(text[:_SAMPLE_CHARS] + ("..." if len(text) > _SAMPLE_CHARS else ""))


def describe_sample(output: Variable) -> str:
    """The call that produced ``output``, shortened, to name it in an error: its output and the
    inputs that are not being optimised (in a minibatch, what tells one sample from another)."""
    inputs = [p for p in output.predecessors if not p.requires_grad][:_SAMPLE_INPUTS]
    parts = [f"{output.role_description} {_preview(output)}"]
    parts += [f"{p.role_description} {_preview(p)}" for p in inputs]
    return "; ".join(parts)
