"""Compat by composition: each blocking compat object wraps the native async one, and still
looks like TextGrad's to the code that uses it (attributes, isinstance, user subclasses)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import asynctg
import asynctg.compat as tg
from asynctg import runtime
from asynctg.compat._blocking import native_of
from asynctg.graph import LLMCall as NativeLLMCall
from asynctg.graph import StringBasedFunction as NativeStringBasedFunction


class Echo(tg.EngineLM):
    """A TextGrad-style custom engine: the reply shows what was sent."""

    model_string = "echo"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0

    def generate(self, prompt: str, system_prompt: str | None = None, **kwargs: object) -> str:
        with self.lock:
            self.calls += 1
        return f"[{system_prompt}] {prompt}"

    def __call__(self, prompt: str, system_prompt: str | None = None) -> str:
        return self.generate(prompt, system_prompt=system_prompt)


@pytest.fixture(autouse=True)
def _no_backward_engine() -> Iterator[None]:
    yield
    tg.config.SingletonBackwardEngine()._engine = None
    runtime._global_backward_engine = None


def _prompt() -> tg.Variable:
    return tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")


def test_compat_objects_hold_the_native_async_ones() -> None:
    """Losses, calls, models and optimizers wrap a native object (``.native``) instead of
    subclassing it, so none of them claims to be a native object whose methods it blocks."""
    engine = Echo()
    prompt = _prompt()
    objects: list[Any] = [
        tg.TextLoss("Evaluate.", engine=engine),
        tg.autograd.LLMCall(engine, prompt),
        tg.BlackboxLLM(engine, prompt),
        tg.TGD(engine=engine, parameters=[prompt]),
    ]
    natives = [asynctg.TextLoss, NativeLLMCall, asynctg.BlackboxLLM, asynctg.TGD]
    for compat_object, native_class in zip(objects, natives, strict=True):
        assert isinstance(compat_object.native, native_class)
        assert not isinstance(compat_object, native_class)
        assert native_of(compat_object) is compat_object.native


def test_attributes_read_and_write_through_to_the_native_object() -> None:
    """What a TextGrad script reads or assigns (``optimizer.constraints``, ``.parameters``,
    a loss's ``eval_system_prompt``) is the native object's own attribute."""
    engine = Echo()
    prompt = _prompt()
    optimizer = tg.TGD(engine=engine, parameters=[prompt])
    assert optimizer.parameters == [prompt]
    optimizer.constraints = ["Keep it under ten words."]
    assert optimizer.native.constraints == ["Keep it under ten words."]
    assert "constraints" not in vars(optimizer)
    loss_fn = tg.TextLoss("Evaluate.", engine=engine)
    assert loss_fn.eval_system_prompt is loss_fn.native.eval_system_prompt
    assert "zero_grad" in dir(optimizer)


def test_a_user_subclass_keeps_its_own_attributes_and_still_calls() -> None:
    """A script's subclass of a compat class adds attributes of its own (kept on its object)
    and its calls still run the native forward rule."""

    class CountingLoss(tg.TextLoss):
        def __init__(self, instruction: str, engine: Any) -> None:
            super().__init__(instruction, engine=engine)
            self.uses = 0

        def __call__(self, instance: Any) -> Any:
            self.uses += 1
            return super().__call__(instance)

    engine = Echo()
    loss_fn = CountingLoss("Evaluate.", engine)
    answer = tg.Variable("42", requires_grad=True, role_description="answer")
    loss = loss_fn(answer)
    assert "[Evaluate.] 42" in loss.value
    assert loss_fn.uses == 1 and vars(loss_fn)["uses"] == 1
    assert not hasattr(loss_fn.native, "uses")
    assert isinstance(loss_fn, tg.TextLoss) and engine.calls == 1


def test_the_functions_the_graph_records_count_as_compat_ones() -> None:
    """An output's backward rule is the native function, and it is an instance of the compat
    class, as TextGrad code checking ``isinstance(v.grad_fn.function, ...)`` expects."""
    check = tg.autograd.StringBasedFunction(lambda prediction: "1", function_purpose="check")
    x = tg.Variable("a", requires_grad=True, role_description="input")
    out = check(inputs={"prediction": x})
    function = out.grad_fn.function
    assert isinstance(function, NativeStringBasedFunction)
    assert isinstance(function, tg.autograd.StringBasedFunction)
    assert function is check.native
    assert isinstance(NativeLLMCall(Echo(), None), tg.autograd.LLMCall)


def test_a_blocking_step_updates_through_the_wrapper() -> None:
    """``optimizer.step()`` blocks, rewrites the parameter through the native optimizer and
    ``zero_grad()`` (the native method) clears the feedback."""

    class Improve(tg.EngineLM):
        model_string = "improve"

        def generate(self, prompt: str, system_prompt: str | None = None, **kw: object) -> str:
            return "<IMPROVED_VARIABLE>Be very brief.</IMPROVED_VARIABLE>"

        def __call__(self, prompt: str, system_prompt: str | None = None) -> str:
            return self.generate(prompt, system_prompt=system_prompt)

    prompt = _prompt()
    prompt.gradients.add(tg.Variable("shorter", requires_grad=False, role_description="feedback"))
    optimizer = tg.TGD(engine=Improve(), parameters=[prompt])
    assert optimizer.step() is None
    assert prompt.value == "Be very brief." and optimizer.native.steps == 1
    optimizer.zero_grad()
    assert list(prompt.gradients) == []
