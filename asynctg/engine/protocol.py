"""What the graph, the optimizer, the losses and the apps need of an engine: the ``Engine``
protocol. ``ChatEngine`` implements it; ``as_engine`` (``asynctg.engine.adapters``) turns any
object with a ``generate``/``chat`` method, sync or async, into one.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from asynctg.engine.types import ChatRequest, ChatResult

__all__ = ["Engine"]


@runtime_checkable
class Engine(Protocol):
    """An engine the runtime can schedule: build a request, send it, say what it is.

    ``request`` validates messages and applies the engine's defaults; ``send`` sends a built
    request (``priority``: higher first when the budget binds); ``check_fits`` raises
    ``ContextBudgetError`` for a request past ``context_window``; ``is_multimodal`` says whether
    image parts may be sent.
    """

    model: str
    context_window: int | None
    defaults: dict[str, Any]

    @property
    def is_multimodal(self) -> bool: ...

    def request(self, messages: Any, **params: Any) -> ChatRequest: ...

    async def send(self, request: ChatRequest, *, priority: int = 0) -> ChatResult: ...

    def request_tokens(self, request: ChatRequest) -> int: ...

    def check_fits(self, request: ChatRequest, *, variable: str | None = None) -> None: ...

    async def generate(
        self, content: Any, system_prompt: str | None = None, **params: Any
    ) -> str: ...

    async def aclose(self) -> None: ...
