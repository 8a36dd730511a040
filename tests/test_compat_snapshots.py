"""Compat equals TextGrad at the moment of the call: deferred calls see the values their
inputs (and the module's system prompt) had when they were made, and custom engines work."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asynctg.compat as tg
from asynctg import runtime


class Echo(tg.EngineLM):
    """A TextGrad-style custom engine: the reply shows exactly what was sent."""

    model_string = "echo"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def generate(self, prompt: str, system_prompt: str | None = None, **kwargs: object) -> str:
        with self.lock:
            self.calls.append(prompt)
        return f"[{system_prompt}] {prompt}"

    def __call__(self, prompt: str, system_prompt: str | None = None) -> str:
        return self.generate(prompt, system_prompt=system_prompt)


@pytest.fixture(autouse=True)
def _no_backward_engine() -> Iterator[None]:
    yield
    tg.config.SingletonBackwardEngine()._engine = None
    runtime._global_backward_engine = None


def test_a_loop_that_reuses_one_variable_gets_one_answer_per_value() -> None:
    """`q.set_value(w); model(q)` in a loop sends one request per word and answers each."""
    engine = Echo()
    model = tg.BlackboxLLM(engine, tg.Variable("S", requires_grad=False, role_description="sp"))
    q = tg.Variable("", requires_grad=False, role_description="query")
    outs = []
    for word in ["alpha", "beta", "gamma", "delta"]:
        q.set_value(word)
        outs.append(model(q))
    assert [o.value for o in outs] == [f"[S] {w}" for w in ["alpha", "beta", "gamma", "delta"]]
    assert sorted(engine.calls) == ["alpha", "beta", "delta", "gamma"]


def test_changing_the_system_prompt_after_the_call_changes_nothing_sent() -> None:
    """The system prompt is read at the call, as TextGrad reads it."""
    engine = Echo()
    system = tg.Variable("first", requires_grad=True, role_description="system prompt")
    model = tg.BlackboxLLM(engine, system)
    out = model(tg.Variable("x", requires_grad=False, role_description="query"))
    system.set_value("second")
    assert out.value == "[first] x"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("set_input"), st.integers(0, 2), st.text("abc", min_size=1, max_size=3)),
        st.tuples(st.just("set_system"), st.just(0), st.text("xyz", min_size=1, max_size=3)),
        st.tuples(st.just("call_input"), st.integers(0, 2), st.just("")),
        st.tuples(st.just("call_output"), st.integers(0, 9), st.just("")),
        st.tuples(st.just("set_output"), st.integers(0, 9), st.text("pq", min_size=1, max_size=2)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_compat_matches_eager_execution_on_random_mutations(
    script: list[tuple[str, int, str]],
) -> None:
    """Random sequences of value changes and calls (on inputs, on earlier outputs still being
    computed) give the values eager, TextGrad-style execution gives."""
    engine = Echo()
    system = tg.Variable("s0", requires_grad=False, role_description="sp")
    model = tg.BlackboxLLM(engine, system)
    inputs = [tg.Variable(f"i{k}", requires_grad=False, role_description="q") for k in range(3)]
    eager_inputs = [f"i{k}" for k in range(3)]
    eager_system = "s0"
    outputs: list[tg.Variable] = []
    eager_outputs: list[str] = []
    for op, k, text in script:
        if op == "set_input":
            inputs[k].set_value(text)
            eager_inputs[k] = text
        elif op == "set_system":
            system.set_value(text)
            eager_system = text
        elif op == "call_input":
            outputs.append(model(inputs[k]))
            eager_outputs.append(f"[{eager_system}] {eager_inputs[k]}")
        elif outputs:
            j = k % len(outputs)
            if op == "call_output":
                outputs.append(model(outputs[j]))
                eager_outputs.append(f"[{eager_system}] {eager_outputs[j]}")
            else:
                outputs[j].set_value(text)
                eager_outputs[j] = text
    assert [o.value for o in outputs] == eager_outputs


class Slow(tg.EngineLM):
    """A blocking custom engine that takes 0.2 s a call and records how many overlap."""

    model_string = "slow"

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def generate(self, prompt: str, system_prompt: str | None = None, **kwargs: object) -> str:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.2)
        with self.lock:
            self.active -= 1
        if "<IMPROVED_VARIABLE>" in prompt:
            return "<IMPROVED_VARIABLE>Count carefully.</IMPROVED_VARIABLE>"
        return f"reply to {prompt[-20:]}"


@pytest.mark.timeout(60)
def test_a_blocking_custom_engine_runs_a_batch_of_eight_together() -> None:
    """A TextGrad-style engine (blocking generate) under compat: the B=8 forward calls of the
    script's one-at-a-time loop overlap, and the step completes with a new prompt."""
    engine = Slow()
    tg.set_backward_engine(engine, override=True)
    system = tg.Variable("Answer.", requires_grad=True, role_description="system prompt")
    model = tg.BlackboxLLM(engine, system)
    losses = []
    for i in range(8):
        response = model(tg.Variable(f"question {i}", requires_grad=False, role_description="q"))
        losses.append(tg.TextLoss("Judge the answer.", engine=engine)(response))
    assert all(loss.value for loss in losses)
    assert engine.peak == 8  # forward calls and loss calls, in flight together
    tg.sum(losses).backward()
    tg.TGD(parameters=[system]).step()
    assert system.value == "Count carefully."


def test_a_textgrad_style_function_backpropagates() -> None:
    """A user-defined Function written the TextGrad way (forward attaches a BackwardContext,
    backward calls the engine and adds to `gradients`) works inside a compat backward pass."""
    from asynctg.compat.autograd.function import BackwardContext, Function

    class Shout(Function):
        def forward(self, x: tg.Variable) -> tg.Variable:
            out = tg.Variable(str(x.value).upper(), predecessors=[x], role_description="shout")
            out.set_grad_fn(BackwardContext(backward_fn=self.backward, x=x, out=out))
            return out

        def backward(self, x: tg.Variable, out: tg.Variable, backward_engine: object) -> None:
            text = backward_engine(f"how should '{x.value}' change? {out.get_gradient_text()}")
            x.gradients.add(tg.Variable(text, requires_grad=False, role_description="feedback"))

    engine = Echo()
    x = tg.Variable("hello", requires_grad=True, role_description="a word")
    shouted = Shout()(x)
    loss = tg.TextLoss("Is it loud enough?", engine=engine)(shouted)
    loss.backward(engine)
    (gradient,) = x.gradients
    assert "how should 'hello' change?" in str(gradient.value)
    assert len(shouted.gradients) == 1  # the loss's feedback on the output, kept as TextGrad does
