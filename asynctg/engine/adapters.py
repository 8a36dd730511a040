"""Custom engines: any object with ``generate`` (or ``chat``), sync or async, as an ``Engine``.

TextGrad users write engines as a class with a blocking ``generate(prompt, system_prompt=None,
**kwargs)``; async code has ``async def generate(...)`` or ``async def chat(messages)``.
``as_engine(obj)`` wraps such an object in a ``ChatEngine`` whose transport calls it instead of
a server, so a custom engine gets everything the HTTP engine has: one scheduler (budgets,
in-flight cap, priorities), single-flight and caching at temperature 0, retries when it raises
asynctg's retryable errors (``APIConnectionError``, ``APITimeoutError``, ``RateLimitError``,
``ServerError``), and usage counting (tokens estimated from the text). A blocking ``generate``
runs in a thread pool of its own, ``max_concurrency`` threads wide, so B calls of a minibatch
are in flight together instead of one after another. Any other exception it raises reaches
the caller unchanged.

>>> class Echo:
...     def generate(self, prompt, system_prompt=None, **kwargs):
...         return prompt.upper()
>>> engine = as_engine(Echo())
>>> engine.model
'Echo'
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import inspect
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from asynctg.engine.client import ChatEngine
from asynctg.engine.protocol import Engine
from asynctg.engine.types import estimate_tokens
from asynctg.errors import ConfigError
from asynctg.transport import HTTPRequest, HTTPResponse

__all__ = ["CallableTransport", "as_chat_engine", "as_engine"]

#: Threads a blocking ``generate`` may use at once, and requests in flight, unless told.
DEFAULT_CONCURRENCY = 16
_ADAPTED: weakref.WeakKeyDictionary[Any, ChatEngine] = weakref.WeakKeyDictionary()
_BY_ID: dict[int, ChatEngine] = {}  # objects that cannot be weakly referenced


def _decode_part(part: Mapping[str, Any]) -> str | bytes:
    if part.get("type") == "text":
        return str(part.get("text", ""))
    url = str(part.get("image_url", {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        return base64.b64decode(url.split(";base64,", 1)[1])
    return url


def _turns(messages: Sequence[Mapping[str, Any]]) -> tuple[str | list[str | bytes], str | None]:
    """(content, system prompt) for a ``generate(content, system_prompt=...)`` call."""
    system = None
    rest: list[Mapping[str, Any]] = []
    for m in messages:
        if m.get("role") == "system" and system is None and isinstance(m.get("content"), str):
            system = m["content"]
        else:
            rest.append(m)
    if len(rest) == 1:
        content = rest[0].get("content")
        if isinstance(content, list):
            return [_decode_part(p) for p in content], system
        return str(content or ""), system
    # Several turns (a format reminder after a reply): one text, each turn labelled.
    lines = []
    for m in rest:
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p for p in map(_decode_part, content) if isinstance(p, str))
        lines.append(f"[{m.get('role')}]\n{content}")
    return "\n\n".join(lines), system


def _completion(model: str, text: str, prompt_tokens: int) -> bytes:
    completion_tokens = (len(text) + 3) // 4
    return msgspec.json.encode(
        {
            "id": "custom",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def _is_async(fn: Any) -> bool:
    # an async function, or an object whose __call__ is one
    call = type(fn).__dict__.get("__call__")
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class CallableTransport:
    """A transport that answers chat requests by calling a Python object, not a server."""

    def __init__(self, target: Any, *, threads: int = DEFAULT_CONCURRENCY) -> None:
        self.target = target
        self._threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        chat = getattr(target, "chat", None)
        generate = getattr(target, "generate", None)
        if generate is None and callable(target) and not inspect.isclass(target):
            generate = target
        if inspect.iscoroutinefunction(chat):
            self._mode = "chat"
        elif generate is not None and _is_async(generate):
            self._mode = "async"
        elif generate is not None:
            self._mode = "sync"
        else:
            raise ConfigError(
                f"{type(target).__name__} is not an engine: give it generate(prompt, "
                "system_prompt=None, **kwargs) (sync or async) or async chat(messages), or use "
                "asynctg.get_engine(model, base_url=...)"
            )
        self._generate: Any = generate

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        body = msgspec.json.decode(request.body)
        messages = body.get("messages", [])
        model = str(body.get("model", ""))
        if self._mode == "chat":
            text = await self.target.chat(messages)
        else:
            content, system = _turns(messages)
            if self._mode == "async":
                text = await self._generate(content, system_prompt=system)
            else:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self._threads, thread_name_prefix="asynctg-engine"
                    )
                loop = asyncio.get_running_loop()
                text = await loop.run_in_executor(
                    self._pool, lambda: self._generate(content, system_prompt=system)
                )
        if not isinstance(text, str):
            text = str(getattr(text, "text", text))
        return HTTPResponse(200, {}, _completion(model, text, estimate_tokens(messages)))

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def as_engine(obj: Any, *, max_concurrency: int | None = None, **options: Any) -> Engine:
    """``obj`` as an ``Engine``: itself if it already is one, else wrapped (see the module).

    The same object always maps to the same wrapper (one scheduler, one budget). ``options``
    go to the wrapping ``ChatEngine`` (``rpm``, ``tpm``, ``cache``, ``retry``, ...); the model
    name is ``obj.model_string`` or ``obj.model``, else the class name.
    """
    if isinstance(obj, ChatEngine) or (isinstance(obj, Engine) and not inspect.isclass(obj)):
        return obj
    try:
        known = _ADAPTED.get(obj)
    except TypeError:
        known = _BY_ID.get(id(obj))
    if known is not None:
        return known
    cap = max_concurrency or DEFAULT_CONCURRENCY
    name = getattr(obj, "model_string", None) or getattr(obj, "model", None)
    if not isinstance(name, str) or not name.strip():
        name = type(obj).__name__
    engine = ChatEngine(
        name,
        base_url="http://custom-engine.invalid/v1",
        transport=CallableTransport(obj, threads=cap),
        max_concurrency=cap,
        **options,
    )
    engine.multimodal = bool(getattr(obj, "is_multimodal", True))
    try:
        _ADAPTED[obj] = engine
    except TypeError:
        _BY_ID[id(obj)] = engine
    return engine


def as_chat_engine(obj: Any, **options: Any) -> ChatEngine:
    """``obj`` as a ``ChatEngine`` (what the apps' meters and checkpoints need): itself, or a
    wrapper around its ``generate``/``chat``."""
    engine = obj if isinstance(obj, ChatEngine) else None
    if engine is None and (
        callable(getattr(obj, "generate", None)) or callable(getattr(obj, "chat", None))
    ):
        wrapped = as_engine(obj, **options)
        engine = wrapped if isinstance(wrapped, ChatEngine) else None
    if engine is None:
        raise ConfigError(
            f"the apps need an engine from asynctg.get_engine() or an object with generate(), "
            f"got {type(obj).__name__}"
        )
    return engine
