"""The ``textgrad`` logger: compat calls log to it what TextGrad 0.1.8 logs (same messages,
same ``extra`` keys), so handlers and verbose modes written for TextGrad see the same records.
Nothing is written anywhere unless the program configures logging (TextGrad writes a JSON log
file on import; asynctg does not)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asynctg.graph.variable import read_value

__all__ = ["CustomJsonFormatter", "logger"]

logger = logging.getLogger("textgrad")


class CustomJsonFormatter(logging.Formatter):
    """One JSON object per record: the message, plus the record's ``extra`` fields."""

    _standard = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        super().format(record)
        data: dict[str, Any] = {"name": record.name, "msg": record.getMessage()}
        data.update({k: v for k, v in vars(record).items() if k not in self._standard})
        return json.dumps(data, default=str)


def forward_logged(
    make: Callable[[], Awaitable[Any]], system_prompt: Any, query: Any
) -> Callable[[], Awaitable[Any]]:
    """``make`` (a deferred LLM call), logging TextGrad's forward record once it returns."""

    async def call() -> Any:
        output = await make()
        if logger.isEnabledFor(logging.INFO):
            system = None if system_prompt is None else str(read_value(system_prompt))
            asked = str(read_value(query))
            text = f"System:{system}\nQuery: {asked}\nResponse: {output.value!s}"
            logger.info("LLMCall function forward", extra={"text": text})
        return output

    return call
