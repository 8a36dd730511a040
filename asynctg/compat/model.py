"""TextGrad's ``BlackboxLLM``, blocking: ``response = model(x)``."""

from __future__ import annotations

from functools import partial

from asynctg import prompts
from asynctg.compat._blocking import Blocking
from asynctg.compat._lazy import defer
from asynctg.compat._log import forward_logged
from asynctg.compat.autograd import LLMCall, Module
from asynctg.compat.config import SingletonBackwardEngine
from asynctg.compat.engine import Engine, get_engine, native_engine
from asynctg.compat.engine.base import EngineLM
from asynctg.compat.variable import Variable
from asynctg.engine.client import ChatEngine
from asynctg.graph import BlackboxLLM as NativeBlackboxLLM
from asynctg.graph import Variable as NativeVariable

__all__ = [
    "BlackboxLLM",
    "EngineLM",
    "LLMCall",
    "Module",
    "SingletonBackwardEngine",
    "Variable",
    "get_engine",
]


class BlackboxLLM(Blocking[NativeBlackboxLLM], native=NativeBlackboxLLM):
    """A language model with an (optionally trainable) system prompt; calling it blocks.

    >>> # model = tg.BlackboxLLM(engine, system_prompt)
    >>> # response = model(x)

    ``engine`` may be a compat engine, a native one, a model name, or None for the backward
    engine (looked up at call time).
    """

    def __init__(
        self,
        engine: Engine | ChatEngine | str | None = None,
        system_prompt: NativeVariable | str | None = None,
    ) -> None:
        super().__init__(NativeBlackboxLLM(native_engine(engine), system_prompt))

    def __call__(
        self,
        x: NativeVariable,
        response_role_description: str = prompts.VARIABLE_OUTPUT_DEFAULT_ROLE,
    ) -> Variable:
        call = forward_logged(
            partial(self.native.__call__, x, response_role_description), self.system_prompt
        )
        return defer(call, [x], reads=[self.system_prompt] if self.system_prompt else [])

    forward = __call__
