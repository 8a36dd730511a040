"""asynctg: TextGrad's automatic differentiation via text, as an async, high-throughput runtime.

>>> import asynctg as tg
>>> engine = tg.get_engine("gpt-4o", base_url="http://127.0.0.1:8000/v1", rpm=600)
"""

from asynctg._version import __version__
from asynctg.engine import ChatEngine, ChatRequest, ChatResult, RetryPolicy, get_engine
from asynctg.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncTGError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    GraphError,
    InsufficientQuotaError,
    OptimizerError,
    OptimizerParseError,
    PermissionDeniedError,
    RateLimitError,
    ResponseParseError,
    ServerError,
)
from asynctg.runtime import get_backward_engine, run, set_backward_engine

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncTGError",
    "AuthenticationError",
    "BadRequestError",
    "ChatEngine",
    "ChatRequest",
    "ChatResult",
    "ConfigError",
    "ContextLengthError",
    "GraphError",
    "InsufficientQuotaError",
    "OptimizerError",
    "OptimizerParseError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseParseError",
    "RetryPolicy",
    "ServerError",
    "__version__",
    "get_backward_engine",
    "get_engine",
    "run",
    "set_backward_engine",
]
