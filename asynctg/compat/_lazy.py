"""Deferred outputs: a compat call returns at once, and its LLM call runs in the background.

TextGrad's scripts build a minibatch one sample at a time::

    for x, y in zip(batch_x, batch_y):
        response = model(x)                       # an LLM call
        losses.append(eval_fn(inputs=dict(prediction=response, ground_truth_answer=y)))
    tg.sum(losses).backward()

If ``model(x)`` waited for its reply, the B forward calls would run one after another. Instead
each compat call starts its native coroutine on the compat loop and returns a *pending*
variable straight away; the calls of the whole loop are then in flight together. A pending
variable becomes an ordinary one, in place, when its call completes, so identity holds (it can
already be an input of later calls, of ``tg.sum``, of a loss). Reading anything that needs the
call's result (``.value``, ``.predecessors``, ``str(v)``, ...) blocks the reading thread until it
is there, and raises the call's exception if the call failed. Backward first waits for every
pending variable in the graph; downstream compat calls wait for their pending inputs on the loop.

The call sees what TextGrad's would have seen at the moment it was made: the values of its
inputs and of the module's own variables (a system prompt) are read at the call, and a
pending input's value is the one its call produced, whatever the script changes afterwards
(``q.set_value(w)`` in a loop, a new system prompt before the replies are in). The forward
rules read them through ``asynctg.graph.variable.read_value``.

Where TextGrad raises at the call (a bad argument type, a malformed ``inputs`` mapping), the
compat call still does: the arguments are checked before anything is deferred. Failures of the
call itself (a provider error after retries) surface where the result is first read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from asynctg.compat import _loop
from asynctg.compat.variable import Variable
from asynctg.errors import ConfigError, NotAVariableError
from asynctg.graph import Variable as NativeVariable
from asynctg.graph import variable as _variable_module
from asynctg.graph.variable import frozen_values

__all__ = ["Pending", "defer", "is_pending", "resolve_graph", "resolved"]

#: The storage behind each slot of ``Variable``, read and written past the properties below.
_SLOT = {name: NativeVariable.__dict__[name] for name in NativeVariable.__slots__}
_SLOT.pop("__weakref__")
#: While a variable is pending, its ``grad_fn`` slot holds the future of its call.
_DONE = _SLOT["grad_fn"]
#: Copied from the finished native output, in this order; ``grad_fn`` last (it replaces the
#: future, so a reader that sees no future any more sees every other slot filled in).
_COPIED = [n for n in _SLOT if n not in ("_id", "grad_fn")] + ["grad_fn"]


def _future(variable: object) -> concurrent.futures.Future[Any] | None:
    """The future of ``variable``'s call while it runs (or failed); None once it is a value."""
    if type(variable) is not Pending:
        return None
    done = _DONE.__get__(variable)
    return done if isinstance(done, concurrent.futures.Future) else None


def _wait(variable: NativeVariable) -> None:
    done = _future(variable)
    if done is None:
        return  # finished while this thread was looking
    if _loop.on_loop_thread():
        raise RuntimeError(
            "internal error: a pending compat variable was read on the compat loop before its "
            "call finished"
        )
    # A reader giving up (Ctrl-C) leaves the call running: it belongs to the variable.
    _loop.wait(done, cancel_on_exit=False)


def _slot_property(name: str) -> property:
    slot = _SLOT[name]

    def get(self: NativeVariable) -> Any:
        _wait(self)
        return slot.__get__(self)

    def set_(self: NativeVariable, value: Any) -> None:
        _wait(self)
        slot.__set__(self, value)

    return property(get, set_, doc=f"``{name}``, once the call that produces it has finished.")


class Pending(Variable):
    """A compat variable whose call is still running; it turns into a ``Variable`` when done."""

    __slots__ = ()

    value = _slot_property("value")  # type: ignore[assignment]
    requires_grad = _slot_property("requires_grad")  # type: ignore[assignment]
    role_description = _slot_property("role_description")  # type: ignore[assignment]
    predecessors = _slot_property("predecessors")  # type: ignore[assignment]
    grad_fn = _slot_property("grad_fn")
    gradients = _slot_property("gradients")
    gradients_context = _slot_property("gradients_context")
    _merges = _slot_property("_merges")

    def __repr__(self) -> str:
        # As TextGrad's (eager) variables do, show the value: wait for it. A failed call shows
        # its error instead of raising from repr().
        done = _future(self)
        if done is not None and not _loop.on_loop_thread():
            with contextlib.suppress(BaseException):
                _loop.wait(done, cancel_on_exit=False)
            if done.cancelled():
                return "<compat Variable, call cancelled>"
            error = done.exception() if done.done() else None
            if error is not None:
                return f"<compat Variable, call failed: {type(error).__name__}: {error}>"
        elif done is not None:
            return "<compat Variable, call still running>"
        return Variable.__repr__(self)  # self is a plain Variable by now (not a Pending)


def is_pending(variable: object) -> bool:
    """True while ``variable`` is the output of a compat call that has not finished."""
    return _future(variable) is not None


async def resolved(variables: Iterable[object]) -> None:
    """On the compat loop: wait until none of ``variables`` is pending (raises their errors)."""
    for variable in variables:
        done = _future(variable)
        if done is not None:
            await asyncio.wrap_future(done)


async def resolve_graph(root: NativeVariable) -> None:
    """On the compat loop: wait for every pending variable ``root`` depends on (iteratively)."""
    seen: set[int] = set()
    stack: list[NativeVariable] = [root]
    while stack:
        variable = stack.pop()
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        await resolved((variable,))
        stack.extend(variable.predecessors)


def reads_of(module: object) -> list[NativeVariable]:
    """The variables a module reads in its forward rule besides its inputs (system prompts,
    evaluation instructions), one level into the calls it holds."""
    found: list[NativeVariable] = []
    for value in getattr(module, "__dict__", {}).values():
        if isinstance(value, NativeVariable):
            found.append(value)
        elif hasattr(value, "forward") and hasattr(value, "__dict__"):
            found.extend(v for v in vars(value).values() if isinstance(v, NativeVariable))
    return found


def defer(
    make: Callable[[], Awaitable[NativeVariable]],
    inputs: Iterable[object] = (),
    *,
    reads: Iterable[NativeVariable] = (),
) -> Variable:
    """A pending variable for the native output ``make()`` builds, once ``inputs`` are ready.

    ``make`` is called on the compat loop after every pending input has finished, with the
    values of ``inputs`` and ``reads`` frozen as they were now (a pending input: as its call
    produced it); the native output it returns is then copied into the pending variable, which
    becomes a ``Variable``. An input that is not a variable is a ``ConfigError`` here, at the
    call, as in TextGrad.
    """
    waiting_on = list(inputs)
    for value in waiting_on:
        if not isinstance(value, NativeVariable):
            raise NotAVariableError(
                f"expected a tg.Variable, got {type(value).__name__}; wrap it: "
                "tg.Variable(value, requires_grad=False, role_description='...')"
            )
    watched: list[NativeVariable] = list(
        {id(v): v for v in [*waiting_on, *reads] if isinstance(v, NativeVariable)}.values()
    )
    now: list[tuple[NativeVariable, str | bytes]] = []
    later: list[tuple[NativeVariable, concurrent.futures.Future[Any]]] = []
    for v in watched:
        fut = _future(v)
        if fut is None:
            now.append((v, v.value))
        else:
            later.append((v, fut))
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    pending = Pending.__new__(Pending)
    _SLOT["_id"].__set__(pending, next(_variable_module._ids))
    _DONE.__set__(pending, done)

    async def work() -> None:
        try:
            await resolved(waiting_on)
            frozen = now + [(v, await asyncio.wrap_future(fut)) for v, fut in later]
            with frozen_values(frozen):
                output = await make()
            if not isinstance(output, NativeVariable):
                raise ConfigError(f"a compat call produced {type(output).__name__}, not a Variable")
            produced = _SLOT["value"].__get__(output)
            _become(pending, output)
        except asyncio.CancelledError:
            done.cancel()
            raise
        except BaseException as exc:  # kept for whoever reads the variable
            done.set_exception(exc)
        else:
            done.set_result(produced)  # what downstream calls made before any change will see

    _loop.submit(work())
    return pending


def _become(pending: Pending, output: NativeVariable) -> None:
    for name in _COPIED:
        _SLOT[name].__set__(pending, _SLOT[name].__get__(output))
    pending.__class__ = Variable  # type: ignore[assignment]  # same layout: becomes plain
