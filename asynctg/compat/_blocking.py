"""Compat by composition: a blocking object that holds the native async one.

TextGrad's API is synchronous (``loss = loss_fn(response)``, ``optimizer.step()``); asynctg's
is awaited. A compat class does not subclass the native class and override its ``async def``
methods with blocking ones (which breaks substitution: code holding "a native TextLoss" would
get a variable where it awaits a coroutine). It wraps an instance instead::

    class TextLoss(Blocking[native.TextLoss], native=native.TextLoss):
        def __init__(self, eval_system_prompt, engine=None):
            super().__init__(native.TextLoss(eval_system_prompt, native_engine(engine)))

        def __call__(self, instance):           # the blocking method
            return defer(partial(self.native.__call__, instance), [instance])

Everything the compat class does not define itself is the native object's, read and written
through (``loss_fn.eval_system_prompt``, ``optimizer.constraints = [...]``,
``optimizer.zero_grad()``), so a TextGrad script sees the attributes it knows. The native
class counts as a (virtual) subclass of the compat one: the graph records the native function
as an output's backward rule, and ``isinstance(loss.grad_fn.function,
tg.autograd.StringBasedFunction)`` holds as it does in TextGrad. User classes may subclass a
compat class as in TextGrad (attributes they add stay on their object).

``Variable`` is the exception: a graph node must be a native variable (native code receives
it, and a compat call's output is adopted in place), so the compat ``Variable`` subclasses the
native one and overrides ``backward`` alone.

How a blocking method waits is the compat loop's (``asynctg.compat._loop``): a forward call
returns a pending variable at once (``asynctg.compat._lazy.defer``), ``step()`` and
``backward()`` run to completion (``_loop.run``).
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

__all__ = ["Blocking", "native_of"]

N = TypeVar("N")


class _BlockingMeta(abc.ABCMeta):
    """Registers the class given as ``native=`` as a virtual subclass: the native objects the
    graph records (``grad_fn.function``) count as instances of the compat class."""

    def __init__(
        cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> None:
        native = kwargs.pop("native", None)
        super().__init__(name, bases, namespace, **kwargs)
        if native is not None:
            # here, not in __init_subclass__: ABCMeta sets up the registry after that runs
            cls.register(native)


class Blocking(Generic[N], metaclass=_BlockingMeta):
    """A compat object: blocking methods of its own, every other attribute the native
    object's (``native``)."""

    native: N

    def __init_subclass__(cls, native: type | None = None, **kwargs: Any) -> None:
        # ``native=`` is the metaclass's (see _BlockingMeta); accepted here so type() allows it
        super().__init_subclass__(**kwargs)

    def __init__(self, native: N) -> None:
        object.__setattr__(self, "native", native)

    def __getattr__(self, name: str) -> Any:
        # Reached only for names neither the object nor its class has: the native object's.
        # (Read from __dict__: before __init__, or while unpickling, there is none yet.)
        inner = self.__dict__.get("native")
        if inner is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # An attribute the native object has is set there (TextGrad scripts assign e.g.
        # optimizer.constraints); one it lacks (a user subclass's own) stays here.
        inner = self.__dict__.get("native")
        if inner is not None and not hasattr(type(self), name) and hasattr(inner, name):
            setattr(inner, name, value)
        else:
            object.__setattr__(self, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(self.__dict__.get("native"))))


def native_of(value: Any) -> Any:
    """The native object behind a compat one; anything else as it is."""
    # the MRO, not isinstance: the native classes are virtual subclasses of Blocking
    if Blocking in type(value).__mro__:
        return value.__dict__.get("native", value)
    return value
