"""Optimizer and judge replies in the wrong format: typed errors or the documented fallback.

(Split from the former ``tests/test_reliability.py``; shared helpers in
``tests/reliability_support.py``.)
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_support import (
    TAGS,
    Trainer,
    _batch,
    _is_optimizer_call,
    _no_backward_engine,  # noqa: F401  (autouse fixture)
    _scripted_reply,
    _user_text,
)
from support import engine_with, ok

import asynctg as tg
from asynctg.loss import parse_tagged
from asynctg.optim import extract_new_value
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

# --- 4. replies in the wrong format -----------------------------------------------------------

_S, _E = TAGS


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("I would make the prompt more specific.", None),
        (f"{_S}{_E}", None),
        (f"{_S}   \n {_E}", None),
        (f"{_S}new text but the tag never closes", None),
        (f"{_E}reversed{_S}", None),
        ("<improved_variable>lower case</improved_variable>", None),
        ("<NEW_VARIABLE>other tags</NEW_VARIABLE>", None),
        ("", None),
        (f"{_S}outer {_S}inner{_E} tail{_E}", "inner"),
        (f"{_S}first{_E} and {_S}second{_E}", "first"),
        (f"Sure!\n{_S}\n  padded  \n{_E}\nHope it helps.", "padded"),
    ],
    ids=[
        "no-tags",
        "empty",
        "blank",
        "unclosed",
        "reversed",
        "lower-case",
        "other-tags",
        "empty-reply",
        "nested",
        "repeated",
        "chatter-around",
    ],
)
async def test_optimizer_reply_formats_end_to_end(reply: str, expected: str | None) -> None:
    """A whole run where the optimizer answers one parameter in a bad format: a typed error
    carrying the reply and nothing changed (gradients kept, so a retry works), or the
    documented fallback (innermost span before the first end tag) applied to both."""
    bad_role = "instruction placed before each question"
    fixed = False

    def handler(request: HTTPRequest) -> HTTPResponse:
        body = msgspec.json.decode(request.body)
        if _is_optimizer_call(body) and f"<ROLE>{bad_role}</ROLE>" in _user_text(body):
            return ok(f"{_S}fixed{_E}" if fixed else reply)
        return ok(_scripted_reply(request))

    engine = engine_with(MockTransport(handler))
    trainer = Trainer(engine)
    start = trainer.values()
    if expected is not None:
        await trainer.step(_batch(0, 3))
        assert trainer.values()[1] == expected
        assert trainer.values()[0] != start[0]
        return
    with pytest.raises(tg.OptimizerParseError) as info:
        await trainer.step(_batch(0, 3))
    assert info.value.reply == reply
    assert info.value.variable == bad_role
    assert trainer.values() == start
    assert trainer.gradient_counts() == (3, 3)
    assert trainer.optimizer.steps == 0
    fixed = True
    await trainer.optimizer.step()
    assert trainer.values()[1] == "fixed" and trainer.values()[0] != start[0]


_ACC = ("<ACCURACY>", "</ACCURACY>")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("The prediction is correct. Accuracy: 1", None),
        ("<ACCURACY> 1", None),
        ("1 </ACCURACY>", None),
        ("</ACCURACY> 1 <ACCURACY>", None),
        ("<accuracy>1</accuracy>", None),
        ("", None),
        ("Looks right. <ACCURACY> 1 </ACCURACY>", "1"),
        ("<ACCURACY>0</ACCURACY> then <ACCURACY>1</ACCURACY>", "0"),
        ("<ACCURACY></ACCURACY>", ""),
    ],
)
async def test_judge_reply_outside_its_tags_is_an_evaluation_parse_error(
    reply: str, verdict: str | None
) -> None:
    """An evaluation fan-out judged by MultiFieldTokenParsedEvaluation: each verdict parses, or
    raises EvaluationParseError carrying the reply (a ValueError), never IndexError/KeyError;
    the judge still works as a loss, whatever its format."""

    def handler(request: HTTPRequest) -> HTTPResponse:
        body = msgspec.json.decode(request.body)
        if body["messages"][0]["content"].startswith("You are an evaluation system"):
            return ok(reply)
        return ok(_scripted_reply(request))

    engine = engine_with(MockTransport(handler))
    tg.set_backward_engine(engine, override=True)
    judge = tg.loss.MultiFieldTokenParsedEvaluation(
        "Is the prediction right? Answer 1 or 0 between <ACCURACY> and </ACCURACY>.",
        role_descriptions=["question", "ground truth answer", "prediction"],
        engine=engine,
        parse_tags=list(_ACC),
    )
    prompt = tg.Variable("Be right.", requires_grad=True, role_description="system prompt")
    model = tg.BlackboxLLM(engine, prompt)

    async def evaluate(i: int) -> tuple[tg.Variable, str | BaseException]:
        q = tg.Variable(f"question {i}", requires_grad=False, role_description="question")
        a = tg.Variable(str(i), requires_grad=False, role_description="ground truth answer")
        verdict_var = await judge([q, a, await model(q)])
        try:
            return verdict_var, judge.parse_output(verdict_var)
        except tg.EvaluationParseError as exc:
            return verdict_var, exc

    results = await asyncio.gather(*(evaluate(i) for i in range(4)))
    for _, outcome in results:
        if verdict is None:
            assert isinstance(outcome, tg.EvaluationParseError)
            assert isinstance(outcome, ValueError)
            assert outcome.reply == reply and outcome.tags == _ACC
        else:
            assert outcome == verdict
    await tg.sum([v for v, _ in results]).backward()
    assert len(prompt.gradients) == 4


_FRAGMENTS = [_S, _E, "<ACCURACY>", "</ACCURACY>", "<", ">", "/", " ", "\n", "x", "1", "é"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
def test_tag_parsers_never_raise_anything_untyped(reply: str) -> None:
    """Any mix of tag fragments: the new value is None or a non-empty stripped span, and the
    judge's verdict is a string or an EvaluationParseError."""
    value = extract_new_value(reply, TAGS)
    assert value is None or (value == value.strip() and value and value in reply)
    try:
        verdict = parse_tagged(reply, _ACC)
    except tg.EvaluationParseError as exc:
        assert exc.reply == reply
    else:
        assert verdict in reply
