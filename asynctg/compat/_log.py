"""The ``textgrad`` logger: compat calls log to it what TextGrad 0.1.8 logs (same messages,
same ``extra`` keys), so handlers and verbose modes written for TextGrad see the same records.
Nothing is written anywhere unless the program configures logging (TextGrad writes a JSON log
file on import; asynctg does not).

Forward records are written when a call's reply is in. Backward records come from
``log_backward``, the observer compat hands the graph's backward executor: it is told each
piece of feedback with the rule that asked for it, and writes TextGrad's pair of records (the
prompt, then the reply) for it, so under concurrency each pair stays together. The optimizer's
records are written by ``asynctg.compat.optimizer`` through ``ReplyTap``, which sees the raw
reply, as TextGrad logs it, before the new value is cut out of it.

Deviations (each follows from a documented behaviour difference, not from the logging):
``tg.sum`` and ``tg.aggregate`` log one record per summand that requires feedback (TextGrad:
one per summand for ``sum``, one in all for ``aggregate``); a string function under a
``tg.sum`` logs the ``_backward_through_string_fn prompt`` record of the first-in-chain
prompt it is sent (TextGrad's summands receive a blank feedback twice and take the chain
branch); merging an aggregate's feedback and multimodal calls log nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asynctg.graph.function import GradientPlan
from asynctg.graph.ops import LLMCall, StringBasedFunction, Sum
from asynctg.graph.variable import Variable, read_value
from asynctg.optim.aggregation import Aggregate

__all__ = ["CustomJsonFormatter", "ReplyTap", "log_backward", "logger"]

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
    make: Callable[[], Awaitable[Any]], system_prompt: Any
) -> Callable[[], Awaitable[Any]]:
    """``make`` (a deferred LLM call), logging TextGrad's forward record once it returns.

    The query is the one the call sent (its output's backward rule saved it), so a formatted
    call logs its filled-in format string, as TextGrad's does.
    """

    async def call() -> Any:
        output = await make()
        if logger.isEnabledFor(logging.INFO):
            system = None if system_prompt is None else str(read_value(system_prompt))
            saved = output.grad_fn.saved if output.grad_fn is not None else {}
            asked = saved.get("prompt", "")
            text = f"System:{system}\nQuery: {asked!s}\nResponse: {output.value!s}"
            logger.info("LLMCall function forward", extra={"text": text})
        return output

    return call


def _user_content(plan: GradientPlan) -> Any:
    """What a feedback request asks (its last user message), as TextGrad logs its prompt."""
    if plan.request is None:
        return plan.value
    users = [m for m in plan.request.messages if m.get("role") == "user"]
    return users[-1]["content"] if users else ""


def log_backward(output: Variable, feedback: str, plan: GradientPlan, text: str) -> None:
    """TextGrad's records for one piece of feedback (a ``BackwardObserver``)."""
    if not logger.isEnabledFor(logging.INFO) or output.grad_fn is None:
        return
    function = output.grad_fn.function
    if isinstance(function, StringBasedFunction):
        key = "_backward_through_string_fn"
        # TextGrad's chain branch (the output had feedback) logs its prompt under the bare key.
        logger.info(key if feedback else f"{key} prompt", extra={key: _user_content(plan)})
        logger.info(f"{key} gradient", extra={key: text})
    elif isinstance(function, LLMCall):
        key = "_backward_through_llm"
        logger.info(f"{key} prompt", extra={key: _user_content(plan)})
        logger.info(f"{key} gradient", extra={key: text})
    elif isinstance(function, Aggregate):  # before Sum: an Aggregate is a Sum
        role = output.role_description
        logger.info(
            "aggregation backward", extra={"v_gradient_value": text, "aggregation_role": role}
        )
    elif isinstance(function, Sum):
        role = output.role_description
        logger.info("Idempotent backward", extra={"v_gradient_value": text, "summation_role": role})
    # Any other rule is the program's own: TextGrad writes no record for it either.


class ReplyTap:
    """An engine that tells ``on_reply`` each raw reply it returns; otherwise the engine itself.

    The optimizer parses the new value out of its reply; TextGrad logs the reply as received.
    """

    def __init__(self, engine: Any, on_reply: Callable[[str], None]) -> None:
        self._engine = engine
        self._on_reply = on_reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def send(self, request: Any, **options: Any) -> Any:
        result = await self._engine.send(request, **options)
        self._on_reply(result.text)
        return result
