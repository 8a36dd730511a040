"""``textgrad.config``: the process-wide backward engine.

``SingletonBackwardEngine().get_engine()`` returns exactly the object given to
``set_backward_engine`` (a compat engine, a custom ``EngineLM``, ...); the native runtime is set
to the asynctg engine behind it, so backward passes and optimizer steps without an engine use it.
"""

from __future__ import annotations

from typing import Any

from asynctg import runtime
from asynctg.errors import ConfigError

__all__ = [
    "EngineLM",
    "SingletonBackwardEngine",
    "get_engine",
    "set_backward_engine",
    "validate_engine_or_get_default",
]


class SingletonBackwardEngine:
    """TextGrad's singleton holding the backward engine."""

    _instance: SingletonBackwardEngine | None = None
    _engine: Any
    _native: Any

    def __new__(cls) -> SingletonBackwardEngine:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance._engine = cls._instance._native = None
        return cls._instance

    @property
    def engine(self) -> Any:
        return self.get_engine()

    def set_engine(self, engine: Any, override: bool = False) -> None:
        current = self.get_engine()
        if current is not None and current is not engine and not override:
            raise ConfigError("Engine already set. Use override=True to override cautiously.")
        from asynctg.compat.engine import native_engine

        native = native_engine(engine)
        runtime.set_process_backward_engine(native, override=True)
        self._engine, self._native = engine, native

    def get_engine(self) -> Any:
        """The engine set here; one set through the native runtime since is returned as is."""
        native = runtime.process_backward_engine()
        if native is None:
            return None
        return self._engine if native is self._native else native


def set_backward_engine(engine: Any, override: bool = False, **kwargs: Any) -> None:
    """Use ``engine`` for backward passes and optimizer steps not given one (a model name is
    turned into an engine with ``kwargs``); setting another needs ``override=True``."""
    if isinstance(engine, str):
        from asynctg.compat.engine import get_engine

        engine = get_engine(engine, **kwargs)
    if engine is None:
        raise ConfigError("set_backward_engine needs an engine, e.g. tg.get_engine('gpt-4o')")
    SingletonBackwardEngine().set_engine(engine, override=override)


def validate_engine_or_get_default(engine: Any) -> Any:
    """``engine``, else the backward engine; an error naming both ways when neither is set."""
    if engine is None:
        engine = SingletonBackwardEngine().get_engine()
    if engine is None:
        raise ConfigError(
            "No engine provided. Either provide an engine as the argument to this call, or use "
            "`textgrad.set_backward_engine(engine)` to set the backward engine."
        )
    if isinstance(engine, str):
        from asynctg.compat.engine import get_engine

        engine = get_engine(engine)
    return engine


# TextGrad's config module exposes these two as well; imported last, as they import this module.
from asynctg.compat.engine import get_engine  # noqa: E402
from asynctg.compat.engine.base import EngineLM  # noqa: E402
