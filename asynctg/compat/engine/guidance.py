"""``textgrad.engine.guidance``: TextGrad's engine for the ``guidance`` library. asynctg does
not run guidance programs: ``GuidanceEngine`` raises ``ConfigError`` when constructed."""

from __future__ import annotations

from typing import Any

from asynctg.compat.engine.base import CachedEngine, EngineLM
from asynctg.errors import ConfigError

__all__ = ["CachedEngine", "EngineLM", "GuidanceEngine"]


class GuidanceEngine(EngineLM):
    """Not supported under asynctg (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError(
            "GuidanceEngine needs the guidance library, which asynctg does not drive; use "
            "tg.get_engine(...) (any OpenAI-compatible server, local ones included)"
        )

    def generate(self, prompt: Any, system_prompt: str | None = None, **kwargs: Any) -> Any:
        raise ConfigError("GuidanceEngine is not supported under asynctg")
