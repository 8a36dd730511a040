"""The engine layer: a chat client built as a small pipeline (``EngineConfig`` -> budget
permits -> one attempt through a provider adapter -> parse; see ``asynctg.engine.client`` and
docs/engine.md), its scheduler, retries, cache and usage, and jobs (one run's share of a shared
engine: ``engine.job(...)``).

>>> import asynctg as tg
>>> engine = tg.get_engine("gpt-4o", base_url="http://127.0.0.1:8000/v1", rpm=600, tpm=200_000)
"""

from asynctg.engine.adapters import as_engine
from asynctg.engine.budget import Budget, CostCap, Permit
from asynctg.engine.cache import ResponseCache
from asynctg.engine.client import DEFAULT_TIMEOUT, ChatEngine, get_engine
from asynctg.engine.clock import Clock, FakeClock, LoopClock
from asynctg.engine.config import EngineConfig
from asynctg.engine.jobs import Job
from asynctg.engine.prompt_cache import cache_key, cache_scope
from asynctg.engine.protocol import Engine
from asynctg.engine.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy
from asynctg.engine.scheduler import Flow, Scheduler, TokenBucket
from asynctg.engine.types import (
    ChatRequest,
    ChatResult,
    Usage,
    estimate_tokens,
    image_part,
    request_key,
    validate_messages,
)
from asynctg.engine.usage import PRICES, Price, UsageStats

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "PRICES",
    "Budget",
    "ChatEngine",
    "ChatRequest",
    "ChatResult",
    "Clock",
    "CostCap",
    "Engine",
    "EngineConfig",
    "FakeClock",
    "Flow",
    "Job",
    "LoopClock",
    "Permit",
    "Price",
    "ResponseCache",
    "RetryPolicy",
    "Scheduler",
    "TokenBucket",
    "Usage",
    "UsageStats",
    "as_engine",
    "cache_key",
    "cache_scope",
    "estimate_tokens",
    "get_engine",
    "image_part",
    "request_key",
    "validate_messages",
]
