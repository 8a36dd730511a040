"""TextGrad's engine API, blocking: ``tg.get_engine(name)``, ``engine.generate(prompt)``.

The compat ``Engine`` wraps an asynctg ``ChatEngine``; every call runs on the compat layer's
private loop, where the native engine opens its HTTP session on first use. Compat functions
accept a compat engine, a native engine, or (as TextGrad does) a model name.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from asynctg import runtime
from asynctg.compat._loop import close_soon, run, track_engine
from asynctg.engine.client import ChatEngine
from asynctg.engine.client import get_engine as _native_get_engine
from asynctg.engine.usage import UsageStats
from asynctg.errors import ConfigError

__all__ = ["Engine", "EngineLM", "get_engine", "native_engine", "set_backward_engine"]


class Engine:
    """A chat engine with TextGrad's blocking interface (TextGrad's ``EngineLM``).

    >>> # engine = tg.get_engine("gpt-4o")
    >>> # engine.generate("What is 2+2?", system_prompt="Be brief.")  -> '4'

    ``native`` is the asynctg ``ChatEngine`` underneath (its ``stats()`` and ``usage`` are here
    too). ``system_prompt`` is sent when a call gives none; unlike TextGrad's engines there is
    no built-in default, so a call without one sends no system message (documented deviation).
    """

    def __init__(
        self, native: ChatEngine, system_prompt: str | None = None, *, owned: bool = False
    ) -> None:
        if not isinstance(native, ChatEngine):
            raise ConfigError(
                f"Engine wraps an asynctg ChatEngine, got {type(native).__name__}; "
                "use tg.get_engine('model-name')"
            )
        self.native = track_engine(native)
        self.system_prompt = system_prompt
        if owned:
            # TextGrad scripts never close engines: one made here closes its HTTP session when
            # it is dropped (else at exit), instead of leaking it.
            weakref.finalize(self, close_soon, native)

    @property
    def model_string(self) -> str:
        """The model name, under TextGrad's attribute name."""
        return self.native.model

    def generate(
        self, content: str | Sequence[Any], system_prompt: str | None = None, **kwargs: Any
    ) -> str:
        """One chat call (text, or a list of text and image bytes) -> the reply text; blocks."""
        if system_prompt is None:
            system_prompt = self.system_prompt
        return run(self.native.generate(content, system_prompt, **kwargs))

    def __call__(self, content: str | Sequence[Any], **kwargs: Any) -> str:
        """``engine(prompt, system_prompt=...)`` is ``engine.generate(...)``, as in TextGrad."""
        return self.generate(content, **kwargs)

    def stats(self) -> dict[str, Any]:
        """Calls, retries, 429s, tokens, cache hits and cost so far (see ``ChatEngine.stats``)."""
        return self.native.stats()

    @property
    def usage(self) -> UsageStats:
        """The native engine's running counters."""
        return self.native.usage

    def close(self) -> None:
        """Close the HTTP session now (it is also closed at exit); reopened if used again."""
        run(self.native.aclose())

    def __repr__(self) -> str:
        return f"<compat Engine {self.native.model!r} at {self.native.base_url}>"


#: TextGrad's name for the engine base class, for scripts that annotate with it.
EngineLM = Engine


def get_engine(engine_name: str, **kwargs: Any) -> Engine:
    """An engine for ``engine_name`` on any OpenAI-compatible endpoint; TextGrad's ``get_engine``.

    ``base_url``/``api_key`` default to ``OPENAI_BASE_URL``/``OPENAI_API_KEY``; every option of
    ``asynctg.get_engine`` (``rpm``, ``tpm``, ``max_concurrency``, ``seed``, ``cache``, ...) is
    accepted, plus ``system_prompt`` (sent when a call gives none). The name goes to the provider
    as is: TextGrad's routing prefixes (``"experimental:"``, ``"together-"``, ...) are not
    interpreted.
    """
    system_prompt = kwargs.pop("system_prompt", None)
    native = _native_get_engine(engine_name, **kwargs)
    return Engine(native, system_prompt=system_prompt, owned=True)


def native_engine(engine: Engine | ChatEngine | str | None) -> ChatEngine | None:
    """The asynctg engine behind ``engine`` (a model name gets a new engine); None stays None."""
    if engine is None:
        return None
    if isinstance(engine, Engine):
        return engine.native
    if isinstance(engine, ChatEngine):
        return track_engine(engine)
    if isinstance(engine, str):
        return get_engine(engine).native
    raise ConfigError(
        f"expected an engine from tg.get_engine(...) (or a model name), got {type(engine).__name__}"
    )


def set_backward_engine(
    engine: Engine | ChatEngine | str, override: bool = False, **kwargs: Any
) -> None:
    """Use ``engine`` for backward passes and optimizer steps not given one (a model name is
    turned into an engine with ``kwargs``); setting it again needs ``override=True``.
    """
    if isinstance(engine, str):
        engine = get_engine(engine, **kwargs)
    native = native_engine(engine)
    if native is None:
        raise ConfigError("set_backward_engine needs an engine, e.g. tg.get_engine('gpt-4o')")
    # TextGrad's setting is one per process, whichever thread sets it: the compat loop's tasks,
    # and every thread calling the blocking API, see the same engine.
    runtime.set_process_backward_engine(native, override=override)
