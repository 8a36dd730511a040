"""The engine layer: an OpenAI-compatible chat client, its scheduler, retries, cache and usage,
and jobs (one run's share of a shared engine: ``engine.job(...)``).

>>> import asynctg as tg
>>> engine = tg.get_engine("gpt-4o", base_url="http://127.0.0.1:8000/v1", rpm=600, tpm=200_000)
"""

from asynctg.engine.adapters import as_engine
from asynctg.engine.cache import ResponseCache
from asynctg.engine.client import DEFAULT_TIMEOUT, ChatEngine, get_engine
from asynctg.engine.clock import Clock, FakeClock, LoopClock
from asynctg.engine.jobs import Job
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
from asynctg.engine.usage import PRICES, UsageStats

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "PRICES",
    "ChatEngine",
    "ChatRequest",
    "ChatResult",
    "Clock",
    "Engine",
    "FakeClock",
    "Flow",
    "Job",
    "LoopClock",
    "ResponseCache",
    "RetryPolicy",
    "Scheduler",
    "TokenBucket",
    "Usage",
    "UsageStats",
    "as_engine",
    "estimate_tokens",
    "get_engine",
    "image_part",
    "request_key",
    "validate_messages",
]
