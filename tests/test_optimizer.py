"""Textual gradient descent: concurrent, all-or-nothing steps; re-asking; memory and momentum."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from support import engine_with, ok

import asynctg as tg
from asynctg import prompts, runtime
from asynctg.optim import extract_new_value
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

TAGS = prompts.DEFAULT_NEW_VARIABLE_TAGS


@pytest.fixture(autouse=True)
def _no_backward_engine() -> Iterator[None]:
    runtime._global_backward_engine = None
    yield
    runtime._global_backward_engine = None


def param(value: str, role: str, *feedback: str) -> tg.Variable:
    """A trainable variable carrying the given feedback (no context), as after a backward."""
    v = tg.Variable(value, requires_grad=True, role_description=role)
    give(v, *feedback)
    return v


def give(v: tg.Variable, *feedback: str) -> None:
    for text in feedback:
        g = tg.Variable(
            text, requires_grad=False, role_description=f"feedback to {v.role_description}"
        )
        v.gradients.append(g)
        v.gradients_context[g] = None


def decoded(request: HTTPRequest) -> dict[str, Any]:
    return msgspec.json.decode(request.body)


def user_of(request: HTTPRequest) -> str:
    """The first user message (the optimizer's prompt) of a request."""
    return next(m["content"] for m in decoded(request)["messages"] if m["role"] == "user")


def by_role(replies: dict[str, Callable[[int], str]]) -> MockTransport:
    """A provider replying per parameter role (found in <ROLE>), given the attempt number."""
    attempts: dict[str, int] = {}

    def handler(request: HTTPRequest) -> HTTPResponse:
        text = user_of(request)
        for role, reply in replies.items():
            if f"<ROLE>{role}</ROLE>" in text:
                attempts[role] = attempts.get(role, 0) + 1
                return ok(reply(attempts[role]))
        raise AssertionError(f"unexpected request: {text[:200]}")

    return MockTransport(handler)


def tagged(value: str) -> str:
    return f"Here it is: {TAGS[0]}{value}{TAGS[1]}"


async def test_step_updates_all_parameters_concurrently() -> None:
    """Both parameters' optimizer calls are in flight together, and both values change."""
    arrived = 0
    both_in = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_in.set()
        await both_in.wait()  # a sequential step would never get here with the second call
        role = "first" if "<ROLE>first prompt</ROLE>" in user_of(request) else "second"
        return ok(tagged(f"new {role}"))

    engine = engine_with(MockTransport(handler))
    a = param("old a", "first prompt", "be shorter")
    b = param("old b", "second prompt", "be kinder")
    async with asyncio.timeout(10):
        await tg.TGD(engine=engine, parameters=[a, b]).step()
    assert (a.value, b.value) == ("new first", "new second")


async def test_step_is_atomic_when_one_reply_never_has_tags() -> None:
    """One parameter's replies lack tags even after re-asking: OptimizerParseError, no change."""
    transport = by_role(
        {"first prompt": lambda n: tagged("new a"), "second prompt": lambda n: f"chatter {n}"}
    )
    engine = engine_with(transport)
    a = param("old a", "first prompt", "be shorter")
    b = param("old b", "second prompt", "be kinder")
    optimizer = tg.TGD(engine=engine, parameters=[a, b])
    with pytest.raises(tg.OptimizerParseError, match="second prompt") as info:
        await optimizer.step()
    assert info.value.reply == "chatter 3"  # the last of 1 + format_retries tries
    assert info.value.variable == "second prompt"
    assert isinstance(info.value, tg.OptimizerError)
    assert (a.value, b.value) == ("old a", "old b")
    assert len(transport.requests) == 1 + 3
    assert optimizer.steps == 0
    assert [g.value for g in a.gradients] == ["be shorter"]


async def test_reply_without_tags_is_asked_again_with_a_format_reminder() -> None:
    """A tagless reply is followed up with itself as assistant turn and a reminder; then parsed."""
    transport = by_role({"prompt": lambda n: "I would say: be nice." if n == 1 else tagged("v2")})
    engine = engine_with(transport)
    p = param("v1", "prompt", "be nicer")
    await tg.TGD(engine=engine, parameters=[p]).step()
    assert p.value == "v2"
    first, second = (decoded(r)["messages"] for r in transport.requests)
    assert second[:2] == first
    assert second[2] == {"role": "assistant", "content": "I would say: be nice."}
    assert second[3] == {"role": "user", "content": prompts.format_reminder(TAGS)}
    assert "<IMPROVED_VARIABLE>" in second[3]["content"]


async def test_format_retries_zero_fails_at_once() -> None:
    """With format_retries=0 a tagless reply is an OptimizerParseError after one call."""
    transport = by_role({"prompt": lambda n: "no tags"})
    p = param("v1", "prompt", "fb")
    with pytest.raises(tg.OptimizerParseError):
        await tg.TGD(engine=engine_with(transport), parameters=[p], format_retries=0).step()
    assert len(transport.requests) == 1 and p.value == "v1"


async def test_empty_tags_count_as_missing() -> None:
    """A reply with empty tags is re-asked, never written as an empty value."""
    transport = by_role({"prompt": lambda n: tagged("  ") if n == 1 else tagged("filled")})
    p = param("v1", "prompt", "fb")
    await tg.TGD(engine=engine_with(transport), parameters=[p]).step()
    assert p.value == "filled"
    assert len(transport.requests) == 2


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<T>x</T>", "x"),
        ("<T>  spaced  </T>", "spaced"),
        ("<T><T>inner</T></T>", "inner"),
        ("<T>first</T> then <T>second</T>", "first"),
        ("<T>multi\nline</T>", "multi\nline"),
        ("<T></T>", None),
        ("<T>   </T>", None),
        ("<T>never closed", None),
        ("x</T>", None),
        ("no tags at all", None),
    ],
)
def test_extract_new_value(reply: str, expected: str | None) -> None:
    """extract_new_value: stripped innermost span; None when missing, unclosed or empty."""
    assert extract_new_value(reply, ("<T>", "</T>")) == expected


async def test_gradient_memory_enters_the_next_steps_prompt() -> None:
    """With gradient_memory, earlier steps' feedback is shown again in the next step's prompt."""
    transport = by_role({"prompt": lambda n: tagged(f"v{n + 1}")})
    p = param("v1", "prompt", "FIRST FEEDBACK")
    optimizer = tg.TGD(engine=engine_with(transport), parameters=[p], gradient_memory=2)
    await optimizer.step()
    assert "<FEEDBACK-1>" not in user_of(transport.requests[0])
    optimizer.zero_grad()
    give(p, "SECOND FEEDBACK")
    await optimizer.step()
    second = user_of(transport.requests[1])
    assert "<FEEDBACK-1> FIRST FEEDBACK </FEEDBACK-1>" in second
    assert "<FEEDBACK>SECOND FEEDBACK</FEEDBACK>" in second
    optimizer.zero_grad()
    give(p, "THIRD FEEDBACK")
    await optimizer.step()
    third = user_of(transport.requests[2])
    assert third.index("FIRST FEEDBACK") < third.index("<FEEDBACK-2> SECOND FEEDBACK")
    assert p.value == "v4"


async def test_gradient_memory_keeps_only_the_last_n_steps() -> None:
    """gradient_memory=1 shows only the most recent earlier step's feedback."""
    transport = by_role({"prompt": lambda n: tagged(f"v{n + 1}")})
    p = param("v1", "prompt", "FB-A")
    optimizer = tg.TGD(engine=engine_with(transport), parameters=[p], gradient_memory=1)
    for text in ("FB-B", "FB-C"):
        await optimizer.step()
        optimizer.zero_grad()
        give(p, text)
    await optimizer.step()
    last = user_of(transport.requests[-1])
    assert "<FEEDBACK-1> FB-B </FEEDBACK-1>" in last
    assert "FB-A" not in last


async def test_momentum_window_past_values_enter_past_iterations() -> None:
    """Momentum shows the last momentum_window earlier values in <PAST_ITERATIONS>."""
    transport = by_role({"prompt": lambda n: tagged(f"value-{n + 1}")})
    p = param("value-1", "prompt", "fb")
    optimizer = tg.TextualGradientDescentwithMomentum(
        engine=engine_with(transport), parameters=[p], momentum_window=2
    )
    for _ in range(4):
        await optimizer.step()
    sent = [user_of(r) for r in transport.requests]
    assert "<PAST_ITERATIONS>" not in sent[0]
    past = [s.split("<PAST_ITERATIONS>")[1].split("</PAST_ITERATIONS>")[0] for s in sent[1:]]
    assert past[0] == "\nprompt at step 1: value-1.\n"
    assert "step 1: value-1." in past[1] and "step 2: value-2." in past[1]
    assert "step 1: value-2." in past[2] and "step 2: value-3." in past[2]
    assert "value-1" not in past[2]  # the window holds two values
    assert "<VARIABLE> value-4 </VARIABLE>" in sent[3]
    assert p.value == "value-5"


async def test_zero_grad_clears_feedback_and_context() -> None:
    """zero_grad empties every parameter's gradients and their contexts."""
    p = param("v", "prompt", "a", "b")
    q = param("w", "other", "c")
    optimizer = tg.TGD(engine=engine_with(MockTransport(lambda r: ok())), parameters=[p, q])
    optimizer.zero_grad()
    assert p.gradients == [] == q.gradients
    assert p.gradients_context == {} == q.gradients_context
    assert p.get_gradient_text() == ""


async def test_parameters_without_feedback_make_no_call() -> None:
    """Only parameters that received feedback are rewritten; the rest stay and cost nothing."""
    transport = by_role({"has feedback": lambda n: tagged("changed")})
    p = param("v", "has feedback", "fb")
    q = param("w", "no feedback")
    optimizer = tg.TGD(engine=engine_with(transport), parameters=[p, q])
    await optimizer.step()
    assert (p.value, q.value) == ("changed", "w")
    assert len(transport.requests) == 1
    optimizer.zero_grad()
    with pytest.raises(tg.OptimizerError, match=r"await loss\.backward"):
        await optimizer.step()  # no feedback anywhere: said, not silently skipped
    assert len(transport.requests) == 1


async def test_cancelled_step_changes_no_parameter() -> None:
    """Cancelling a step while one reply is in and another is pending changes nothing."""
    first_answered = asyncio.Event()
    second_in = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        if "<ROLE>first prompt</ROLE>" in user_of(request):
            first_answered.set()
            return ok(tagged("new a"))
        second_in.set()
        await release.wait()
        return ok(tagged("new b"))

    engine = engine_with(MockTransport(handler))
    a = param("old a", "first prompt", "fb")
    b = param("old b", "second prompt", "fb")
    optimizer = tg.TGD(engine=engine, parameters=[a, b], gradient_memory=1)
    task = asyncio.create_task(optimizer.step())
    async with asyncio.timeout(10):
        await first_answered.wait()
        await second_in.wait()
    for _ in range(20):  # let the first reply be parsed
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (a.value, b.value) == ("old a", "old b")
    assert optimizer.steps == 0 and optimizer.gradient_memory_dict == {}
    release.set()


async def test_step_without_engine_is_a_config_error() -> None:
    """A step with no engine given and none set is a ConfigError."""
    runtime._backward_engine.set(None)
    p = param("v", "prompt", "fb")
    with pytest.raises(tg.ConfigError, match="set_backward_engine"):
        await tg.TGD(parameters=[p]).step()
    assert p.value == "v"


def test_optimizer_over_no_parameters_is_a_config_error() -> None:
    """An empty parameter list, a bare Variable, frozen or image parameters are ConfigErrors."""
    with pytest.raises(tg.ConfigError, match="empty parameter list"):
        tg.TGD(parameters=[])
    with pytest.raises(tg.ConfigError, match="list"):
        tg.TGD(parameters=param("v", "p"))  # type: ignore[arg-type]
    with pytest.raises(tg.ConfigError, match="requires_grad=False"):
        tg.TGD(parameters=[tg.Variable("v", requires_grad=False, role_description="p")])
    with pytest.raises(tg.ConfigError, match="empty parameter list"):
        tg.TextualGradientDescentwithMomentum(parameters=[], momentum_window=2)


def test_bad_optimizer_settings_are_config_errors() -> None:
    """Malformed tags, memory or a system prompt with stray braces are ConfigErrors."""
    p = [param("v", "p")]
    with pytest.raises(tg.ConfigError, match="new_variable_tags"):
        tg.TGD(parameters=p, new_variable_tags=["<ONLY_ONE>"])
    with pytest.raises(tg.ConfigError, match="gradient_memory"):
        tg.TGD(parameters=p, gradient_memory=-1)
    with pytest.raises(tg.ConfigError, match="double other braces"):
        tg.TGD(parameters=p, optimizer_system_prompt="Use {json} please")


async def test_state_dict_round_trips_values_memory_and_steps() -> None:
    """state_dict/load_state_dict restore values, gradient memory and the step count."""
    transport = by_role({"prompt": lambda n: tagged(f"v{n + 1}")})
    p = param("v1", "prompt", "fb one")
    optimizer = tg.TGD(engine=engine_with(transport), parameters=[p], gradient_memory=3)
    await optimizer.step()
    state = msgspec.json.decode(msgspec.json.encode(optimizer.state_dict()))
    q = param("fresh", "prompt")
    restored = tg.TGD(engine=engine_with(transport), parameters=[q], gradient_memory=3)
    restored.load_state_dict(state)
    assert (q.value, restored.steps) == ("v2", 1)
    give(q, "fb two")
    assert "<FEEDBACK-1> fb one </FEEDBACK-1>" in str(restored.update_prompt(q))
