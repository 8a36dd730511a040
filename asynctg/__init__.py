"""asynctg: TextGrad's automatic differentiation via text, as an async, high-throughput runtime.

>>> import asynctg as tg
>>> engine = tg.get_engine("gpt-4o", base_url="http://127.0.0.1:8000/v1", rpm=600)
"""

from asynctg import autograd, loss, prompts
from asynctg._version import __version__
from asynctg.engine import (
    ChatEngine,
    ChatRequest,
    ChatResult,
    Engine,
    RetryPolicy,
    as_engine,
    get_engine,
)
from asynctg.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncTGError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    BudgetTimeoutError,
    ConfigError,
    ContextBudgetError,
    ContextLengthError,
    EvaluationParseError,
    GraphError,
    InsufficientQuotaError,
    OptimizerError,
    OptimizerParseError,
    PermissionDeniedError,
    RateLimitError,
    ReplayMissError,
    ResponseParseError,
    ResponseTooLargeError,
    SandboxUnavailableError,
    ServerError,
)
from asynctg.graph import BlackboxLLM, Module, Variable, sum
from asynctg.loss import (
    ImageQALoss,
    MultiChoiceTestTime,
    MultiFieldEvaluation,
    MultiFieldTokenParsedEvaluation,
    TextLoss,
)
from asynctg.optim import (
    TGD,
    Optimizer,
    TextualGradientDescent,
    TextualGradientDescentwithMomentum,
)
from asynctg.optim.aggregation import aggregate
from asynctg.runtime import get_backward_engine, run, set_backward_engine

__all__ = [
    "TGD",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncTGError",
    "AuthenticationError",
    "BadRequestError",
    "BlackboxLLM",
    "BudgetExceededError",
    "BudgetTimeoutError",
    "ChatEngine",
    "ChatRequest",
    "ChatResult",
    "ConfigError",
    "ContextBudgetError",
    "ContextLengthError",
    "Engine",
    "EvaluationParseError",
    "GraphError",
    "ImageQALoss",
    "InsufficientQuotaError",
    "Module",
    "MultiChoiceTestTime",
    "MultiFieldEvaluation",
    "MultiFieldTokenParsedEvaluation",
    "Optimizer",
    "OptimizerError",
    "OptimizerParseError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReplayMissError",
    "ResponseParseError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "SandboxUnavailableError",
    "ServerError",
    "TextLoss",
    "TextualGradientDescent",
    "TextualGradientDescentwithMomentum",
    "Variable",
    "__version__",
    "aggregate",
    "as_engine",
    "autograd",
    "get_backward_engine",
    "get_engine",
    "loss",
    "prompts",
    "run",
    "set_backward_engine",
    "sum",
]
