"""Process-level helpers: running a coroutine on the fastest loop, the backward engine."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

from asynctg.engine.adapters import as_engine
from asynctg.engine.protocol import Engine
from asynctg.errors import ConfigError

__all__ = [
    "get_backward_engine",
    "run",
    "set_backward_engine",
    "set_process_backward_engine",
]

T = TypeVar("T")


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # not on Linux, or not installed: the default loop is fine
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on uvloop when it is installed, else on the default loop.

    >>> import asynctg as tg
    >>> async def main() -> int:
    ...     return 42
    >>> tg.run(main())
    42
    """
    with asyncio.Runner(debug=debug, loop_factory=_loop_factory()) as runner:
        return runner.run(main)


_backward_engine: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "asynctg_backward_engine", default=None
)
# The process-wide fallback, for code that sets the engine once at start-up and then starts
# tasks from a context copied before that (every asyncio task copies the context it starts in).
_global_backward_engine: Engine | None = None


def set_backward_engine(engine: Engine | Any, override: bool = False) -> None:
    """Use ``engine`` for backward passes and optimizer steps that are not given one.

    The setting is held in a context variable, so concurrent tasks may each set their own
    (a task sees what its context set, and tasks it starts afterwards inherit it), and it also
    becomes the process default, seen by contexts that never set one (tasks started before the
    call, other threads, the compat layer's loop). Setting it again needs ``override=True``, as
    in TextGrad.
    """
    engine = _check_engine(engine)
    current = _backward_engine.get() or _global_backward_engine
    if current is not None and current is not engine and not override:
        raise ConfigError("a backward engine is already set; pass override=True to replace it")
    _backward_engine.set(engine)
    _set_process_default(engine)


def set_process_backward_engine(engine: Engine | Any, override: bool = False) -> None:
    """Set only the process default (TextGrad's global setting; what ``asynctg.compat`` uses).

    Contexts that set their own engine with ``set_backward_engine`` keep it.
    """
    engine = _check_engine(engine)
    if _global_backward_engine not in (None, engine) and not override:
        raise ConfigError("a backward engine is already set; pass override=True to replace it")
    _set_process_default(engine)


def _check_engine(engine: object) -> Engine:
    if engine is None or isinstance(engine, str):
        raise ConfigError(
            "set_backward_engine needs an engine: asynctg.get_engine(model, ...) or an object "
            f"with a generate(prompt, system_prompt=None) method, got {engine!r}"
        )
    return as_engine(engine)


def _set_process_default(engine: Engine) -> None:
    global _global_backward_engine
    _global_backward_engine = engine


def process_backward_engine() -> Engine | None:
    """The process-wide backward engine (TextGrad's global setting), or None."""
    return _global_backward_engine


def get_backward_engine(engine: Engine | Any | None = None) -> Engine:
    """``engine`` if given (a custom one wrapped by ``as_engine``), else the one set with
    ``set_backward_engine``; else ConfigError."""
    if engine is not None:
        return as_engine(engine)
    found = _backward_engine.get() or _global_backward_engine
    if found is None:
        raise ConfigError(
            "no backward engine: call tg.set_backward_engine(tg.get_engine(...)) first, "
            "or pass engine=... to this call"
        )
    return found
