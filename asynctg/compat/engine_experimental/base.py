"""``textgrad.engine_experimental.base``: the same ``EngineLM`` as ``textgrad.engine.base``."""

from asynctg.compat.engine.base import EngineLM

__all__ = ["EngineLM"]
