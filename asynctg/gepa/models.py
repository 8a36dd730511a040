"""``task_lm`` / ``reflection_lm`` as engines: a model name, an asynctg engine, or a callable.

gepa 0.1.4 takes a model name (sent through litellm) or a plain callable: the task model gets
chat messages, the reflection model a prompt string, and both return the text. Here every one
of them becomes an ``Engine``, so its calls go through the scheduler like every other call
(budgets, in-flight cap, priorities, cache, journal, dollar cap, telemetry). A blocking callable
runs in a thread pool of the run's own, wide enough for a whole validation set at once; an
async one is awaited.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Sequence
from typing import Any, Literal

from asynctg.engine import Engine, as_engine, get_engine
from asynctg.errors import ConfigError

__all__ = ["FANOUT", "ModelCallable", "resolve_model"]

#: Requests in flight at once for engines this module creates (a 40-item validation set of a
#: handful of candidates fits in one wave).
FANOUT = 256


def _is_async(fn: Any) -> bool:
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - an object's own __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class ModelCallable:
    """A gepa-style model callable with the ``async chat(messages)`` an engine wraps.

    ``shape="messages"`` passes the chat messages (gepa's task model); ``"prompt"`` passes the
    text of the last user turn (gepa's reflection model).
    """

    def __init__(
        self,
        fn: Any,
        shape: Literal["messages", "prompt"],
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        self.fn = fn
        self.shape = shape
        self.pool = pool
        self.model = str(getattr(fn, "__name__", None) or type(fn).__name__)

    async def chat(self, messages: Sequence[dict[str, Any]]) -> str:
        arg: Any = list(messages)
        if self.shape == "prompt":
            users = [m for m in messages if m.get("role") == "user"]
            content = users[-1]["content"] if users else ""
            arg = content if isinstance(content, str) else str(content)
        if _is_async(self.fn):
            text = await self.fn(arg)
        else:
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(self.pool, self.fn, arg)
        return text if isinstance(text, str) else str(text)


def resolve_model(
    lm: Any,
    shape: Literal["messages", "prompt"],
    pool: concurrent.futures.ThreadPoolExecutor,
    owned: list[Engine],
) -> Engine:
    """``lm`` as an Engine; engines made here are appended to ``owned`` (to be closed)."""
    if isinstance(lm, str):
        engine: Engine = get_engine(lm, max_concurrency=FANOUT)
        owned.append(engine)
        return engine
    if isinstance(lm, Engine) and not inspect.isclass(lm):
        return lm
    if callable(getattr(lm, "generate", None)) or callable(getattr(lm, "chat", None)):
        return as_engine(lm)
    if callable(lm):
        engine = as_engine(ModelCallable(lm, shape, pool), max_concurrency=FANOUT)
        owned.append(engine)
        return engine
    raise ConfigError(
        f"a model must be a model name, an asynctg engine or a callable, got {type(lm).__name__}"
    )


async def complete(engine: Engine, messages: list[dict[str, Any]], priority: int = 0) -> str:
    """One chat call through ``engine``'s scheduler; the reply's text."""
    result = await engine.send(engine.request(messages), priority=priority)
    return result.text
