"""Every error asynctg raises on purpose, in one tree.

::

    AsyncTGError
    ├── ConfigError                 (also a ValueError) bad settings or input, found before sending
    │   ├── SandboxUnavailableError the code sandbox (bubblewrap) is missing or refused here
    │   ├── NotAVariableError       (also TypeError, AttributeError) a Variable was expected
    │   └── BadValueError           (also AssertionError) a Variable's value of the wrong type
    ├── APIError                    the provider could not give us an answer
    │   ├── APIStatusError          an HTTP error status; carries status, request_id, body
    │   │   ├── BadRequestError             400, 404, 422 and other 4xx we don't name
    │   │   │   └── ContextLengthError      the prompt does not fit the model's context window
    │   │   │       └── ContextBudgetError  ... found before sending: nothing was sent (status 0)
    │   │   ├── AuthenticationError         401
    │   │   ├── PermissionDeniedError       403
    │   │   ├── RedirectError               3xx: an API call is never followed elsewhere
    │   │   ├── RateLimitError              429 (retried; raised when retries run out)
    │   │   │   └── InsufficientQuotaError  429 insufficient_quota, Anthropic's 400 low credit
    │   │   │                               balance (never retried)
    │   │   └── ServerError                 5xx, 408 and 409 (retried; raised when retries run out)
    │   ├── APIConnectionError      the connection failed or dropped (retried)
    │   │   └── APITimeoutError     no answer (or no connection) in time (retried)
    │   │       └── BudgetTimeoutError  the engine's own budget held a request past
    │   │                               RetryPolicy.max_total_seconds (never sent; not retried)
    │   ├── ResponseParseError      an answer arrived but is not a usable completion (retried)
    │   ├── StreamInterruptedError  a stream broke after its first delta (not retried)
    │   ├── BatchError              a provider batch could not be submitted, read or finished
    │   │   └── BatchTimeoutError   ... it had not ended by the engine's batch_deadline
    │   └── ResponseTooLargeError   the answer is larger than max_response_bytes (never retried)
    │       └── StreamEventTooLargeError  one server-sent event is larger than its cap
    ├── BudgetExceededError         a call would pass a cap (max_cost, a job's max_calls); not sent
    ├── DeadlineExceededError       a job's deadline passed: its calls were stopped
    ├── JobClosedError              a call of a job whose context was left (or whose holder was
    │                               cancelled): stopped, nothing more was sent for it
    ├── ReplayMissError             a replayed run made a request its journal does not hold
    ├── GraphError                  a computation graph that cannot be built or differentiated
    ├── WorkerError                 a function run in a worker pool (asynctg.workers) failed
    │   ├── WorkerFunctionError     ... it raised; carries the worker's traceback text
    │   ├── WorkerTimeoutError      ... it ran past the pool's timeout (the worker was stopped)
    │   └── WorkerLostError         ... its worker died (killed, crashed) and retries ran out
    ├── EvaluationParseError        (also a ValueError) an evaluator's reply lacks its tags
    └── OptimizerError              an optimizer step that could not be applied
        └── OptimizerParseError     the optimizer LLM's reply lacks the new-variable tags

Lower-layer exceptions (aiohttp, msgspec, OSError) are re-raised as one of these ``from`` the
original, so ``except asynctg.AsyncTGError`` catches every failure of ours and the cause is still
in the traceback. Cancellation is never turned into one of these.

Errors leave a task group one way (``first_error``): the first failure is raised as itself, not
as an ``ExceptionGroup``, with a note naming the others' kinds (several calls of one fan-out often
fail for one reason, such as an exhausted quota); a ``KeyboardInterrupt`` or ``SystemExit``
among them wins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncTGError",
    "AuthenticationError",
    "BadRequestError",
    "BadValueError",
    "BatchError",
    "BatchTimeoutError",
    "BudgetExceededError",
    "BudgetTimeoutError",
    "ConfigError",
    "ContextBudgetError",
    "ContextLengthError",
    "DeadlineExceededError",
    "EvaluationParseError",
    "GraphError",
    "InsufficientQuotaError",
    "JobClosedError",
    "NotAVariableError",
    "OptimizerError",
    "OptimizerParseError",
    "PermissionDeniedError",
    "RateLimitError",
    "RedirectError",
    "ReplayMissError",
    "ResponseParseError",
    "ResponseTooLargeError",
    "SandboxUnavailableError",
    "ServerError",
    "StreamEventTooLargeError",
    "StreamInterruptedError",
    "WorkerError",
    "WorkerFunctionError",
    "WorkerLostError",
    "WorkerTimeoutError",
]


class AsyncTGError(Exception):
    """Root of every error asynctg raises on purpose."""


class ConfigError(AsyncTGError, ValueError):
    """A setting or an input is wrong; raised before anything is sent."""


class NotAVariableError(ConfigError, TypeError, AttributeError):
    """Something else was given where a ``Variable`` is needed. Also a ``TypeError`` and an
    ``AttributeError``: what TextGrad code (and its tests) catch for the same mistake."""


class BadValueError(ConfigError, AssertionError):
    """A ``Variable`` value that is not text, an int or image bytes. Also an
    ``AssertionError``: what TextGrad raises for it."""


class SandboxUnavailableError(ConfigError):
    """Model-written code cannot run isolated here; nothing was run. The message says how to fix
    it (install bubblewrap, run in a container) and names ``--unsafe-no-sandbox``."""


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@contextlib.contextmanager
def first_error() -> Iterator[None]:
    """Around ``async with TaskGroup()``: re-raise the first failure itself (see the module)."""
    try:
        yield
    except BaseExceptionGroup as eg:
        leaves = list(_leaves(eg))
        first = next((e for e in leaves if not isinstance(e, Exception)), leaves[0])
        others = sorted({type(e).__name__ for e in leaves if e is not first})
        if others:
            # their kinds, not their number: how many siblings fail before the group's
            # cancellation reaches them is a matter of timing, and messages must not vary
            first.add_note(f"(more errors in the same task group: {', '.join(others)})")
        raise first from None


def require_int(
    name: str, value: object, minimum: int, *, optional: bool = False, noun: str = "an integer"
) -> None:
    """ConfigError unless ``value`` is an int >= ``minimum`` (or None, when ``optional``).

    ``bool`` is refused although it is an ``int``: ``True`` as a count is always a mistake.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        alternative = " or None" if optional else ""
        raise ConfigError(f"{name} must be {noun} >= {minimum}{alternative}, got {value!r}")


class APIError(AsyncTGError):
    """The provider could not give us an answer."""


class APIStatusError(APIError):
    """The provider answered with an HTTP error status.

    ``status`` is the HTTP status, ``request_id`` the provider's ``x-request-id`` (if sent),
    ``body`` the raw response text, ``code`` the ``error.code`` field of an OpenAI-style body.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        request_id: str | None = None,
        body: str = "",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.body = body
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments need help to survive pickling (thread pools,
        # multiprocessing), which users of the compat layer rely on.
        return (
            _rebuild_status_error,
            (type(self), str(self), self.status, self.request_id, self.body, self.code),
        )


def _rebuild_status_error(
    cls: type[APIStatusError],
    message: str,
    status: int,
    request_id: str | None,
    body: str,
    code: str | None,
) -> APIStatusError:
    return cls(message, status=status, request_id=request_id, body=body, code=code)


class BadRequestError(APIStatusError):
    """The provider rejected the request itself (a 4xx other than 401, 403, 408, 409, 429)."""


class ContextLengthError(BadRequestError):
    """The prompt (plus max_tokens) does not fit the model's context window."""


class ContextBudgetError(ContextLengthError):
    """A request measured before sending does not fit the model's context window; nothing was
    sent (``status`` is 0). ``tokens`` is the estimated prompt plus the reply's reserve,
    ``window`` the context window, ``variable`` the role of the variable it was built for,
    ``sample`` (for a feedback request of a backward pass) the call whose feedback it carried:
    its output and inputs, shortened."""

    def __init__(
        self,
        message: str,
        *,
        tokens: int | None = None,
        window: int | None = None,
        variable: str | None = None,
        sample: str | None = None,
        status: int = 0,
        request_id: str | None = None,
        body: str = "",
        code: str | None = "context_budget",
    ) -> None:
        super().__init__(message, status=status, request_id=request_id, body=body, code=code)
        self.tokens = tokens
        self.window = window
        self.variable = variable
        self.sample = sample


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model or endpoint."""


class RedirectError(APIStatusError):
    """The endpoint answered an API call with a redirect (3xx). It is not followed: the
    prompt would go to whatever origin the ``Location`` names, and its answer would be used
    as the provider's. Point ``base_url`` at the final address instead. Never retried."""


class RateLimitError(APIStatusError):
    """429: the provider's budget is spent; raised only when retries ran out."""


class InsufficientQuotaError(RateLimitError):
    """429 with ``insufficient_quota``: the account is out of credit; waiting will not help."""


class ServerError(APIStatusError):
    """5xx (and 408/409, which mean "try again"): raised only when retries ran out."""


class APIConnectionError(APIError):
    """The connection could not be made, or it dropped before a full answer arrived."""


class APITimeoutError(APIConnectionError):
    """No full answer arrived within the request timeout."""


class BudgetTimeoutError(APITimeoutError):
    """A request waited for the engine's budget (rate limits, in-flight cap, a cool-down) past
    ``RetryPolicy.max_total_seconds``; it was never sent and is not retried."""


class ResponseTooLargeError(APIError):
    """The answer's body is larger than the transport's ``max_response_bytes`` cap.

    Not retried: the same request would most likely bring the same oversized answer back.
    """


class StreamEventTooLargeError(ResponseTooLargeError):
    """One event of a streamed answer (or a whole answer sent unstreamed) is larger than the
    stream parser's cap (``SSEParser.max_event_bytes``): a chat chunk is a few hundred bytes,
    so this is a misbehaving server, not an answer."""


class StreamInterruptedError(APIError):
    """A streamed answer broke (connection lost, a malformed or missing last chunk) after the
    caller had read part of it; not retried, since the part read cannot be taken back."""


class BatchError(APIError):
    """A provider batch (``asynctg.engine.batch``) could not be submitted, polled or read;
    ``batch_id`` names it when it was created (None: it never was)."""

    def __init__(self, message: str, *, batch_id: str | None = None) -> None:
        super().__init__(message)
        self.batch_id = batch_id


class BatchTimeoutError(BatchError):
    """A provider batch had not ended by the engine's ``batch_deadline``; it was left running
    (a resumed run re-attaches to it) and its calls were not answered."""


class ResponseParseError(APIError):
    """An answer arrived but is not a usable chat completion (bad JSON, no choices, ...)."""

    def __init__(self, message: str, *, body: str = "") -> None:
        super().__init__(message)
        self.body = body


class BudgetExceededError(AsyncTGError):
    """Sending a call could take it past a cap; it was not sent.

    ``limit`` names the cap: "max_cost" (``cap`` and ``spent`` in dollars; ``spent``: settled
    so far, by every process sharing the cap) or "max_calls" (``cap`` and ``spent`` in calls).
    ``job`` is the name of the job whose cap it is (``engine.job(...)``), None for the
    engine's own (or a Redis-shared) cap.
    """

    def __init__(
        self,
        message: str,
        *,
        cap: float = 0.0,
        spent: float = 0.0,
        limit: str = "max_cost",
        job: str | None = None,
    ) -> None:
        super().__init__(message)
        self.cap = cap
        self.spent = spent
        self.limit = limit
        self.job = job


class DeadlineExceededError(AsyncTGError):
    """A job's deadline passed: its calls still queued or in flight were stopped, and later
    calls are refused unsent. ``job`` is the name of the job whose deadline it was (a nested
    job's calls stop at an enclosing job's deadline too), ``deadline`` its length in seconds
    and ``limit`` is "deadline"."""

    limit = "deadline"

    def __init__(self, message: str, *, job: str | None = None, deadline: float = 0.0) -> None:
        super().__init__(message)
        self.job = job
        self.deadline = deadline


class JobClosedError(AsyncTGError):
    """A call of a job that was closed: its ``async with`` block was left (or the task holding
    it was cancelled) while the call was queued or in flight, or the call came after. The call
    was stopped; nothing more was sent for it. ``job`` is the closed job's name."""

    def __init__(self, message: str, *, job: str | None = None) -> None:
        super().__init__(message)
        self.job = job


class ReplayMissError(AsyncTGError):
    """An engine in ``cache_mode="replay"`` got a request its journal does not hold (``key``:
    the request's hash). Nothing was sent."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class GraphError(AsyncTGError):
    """A computation graph that cannot be built or differentiated as asked."""


class WorkerError(AsyncTGError):
    """A function run in an ``asynctg.workers`` pool did not return a result (``function``:
    its qualified name)."""

    def __init__(self, message: str, *, function: str = "") -> None:
        super().__init__(message)
        self.function = function


class WorkerFunctionError(WorkerError):
    """The function raised in its worker; ``kind`` is the exception's type name and
    ``remote_traceback`` the worker's traceback text."""

    def __init__(
        self, message: str, *, function: str = "", kind: str = "", remote_traceback: str = ""
    ) -> None:
        super().__init__(message, function=function)
        self.kind = kind
        self.remote_traceback = remote_traceback


class WorkerTimeoutError(WorkerError):
    """The function ran longer than the pool's ``timeout``; its worker was stopped."""


class WorkerLostError(WorkerError):
    """The worker running the function died (killed, crashed, out of memory) on every try."""


class EvaluationParseError(AsyncTGError, ValueError):
    """An evaluator's reply does not contain the tags its answer must be in.

    ``reply`` holds the reply; ``tags`` the (start, end) tags looked for.
    """

    def __init__(self, message: str, *, reply: str, tags: tuple[str, str]) -> None:
        super().__init__(message)
        self.reply = reply
        self.tags = tags


class OptimizerError(AsyncTGError):
    """An optimizer step could not be applied; no parameter was changed."""


class OptimizerParseError(OptimizerError):
    """The optimizer LLM's reply lacks the new-variable tags, even after re-asking.

    ``reply`` holds the last reply received, ``variable`` the role of the variable concerned.
    """

    def __init__(self, message: str, *, reply: str, variable: str = "") -> None:
        super().__init__(message)
        self.reply = reply
        self.variable = variable
