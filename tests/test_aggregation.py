"""The aggregation stage: many feedbacks -> what the optimizer sees, within the context budget."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from golden_step import GOLDEN, optimizer_request
from support import completion, error, one_slow_rest_fail

import asynctg as tg
from asynctg import prompts, runtime
from asynctg.engine.prompt_cache import cache_key
from asynctg.graph import executor
from asynctg.optim import aggregation
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

MARK = re.compile(r"MARK-\d+")


@pytest.fixture(autouse=True)
def _no_backward_engine() -> Iterator[None]:
    runtime._global_backward_engine = None
    yield
    runtime._global_backward_engine = None


def _body(request: HTTPRequest) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.body)
    return body


def _kind(body: dict[str, Any]) -> str:
    if body["messages"][0]["content"] == prompts.REDUCE_SYSTEM_PROMPT:
        return "reduce"
    text = json.dumps(body["messages"])
    return "optimizer" if "<IMPROVED_VARIABLE>" in text else "other"


def _provider(fail_first_optimizer: str | None = None) -> MockTransport:
    """Reduce calls answer with every marker they saw (so nothing can silently vanish); the
    optimizer answers in tags."""
    state = {"failed": False}

    def handler(request: HTTPRequest) -> HTTPResponse:
        body = _body(request)
        kind = _kind(body)
        text = json.dumps(body["messages"])
        if kind == "reduce":
            marks = sorted(set(MARK.findall(text)), key=lambda m: int(m.split("-")[1]))
            return HTTPResponse(200, {}, completion("merged: " + " ".join(marks)))
        if kind == "optimizer":
            if fail_first_optimizer and not state["failed"]:
                state["failed"] = True
                return error(400, fail_first_optimizer, code="context_length_exceeded")
            return HTTPResponse(200, {}, completion("<IMPROVED_VARIABLE>new</IMPROVED_VARIABLE>"))
        return HTTPResponse(200, {}, completion("ok"))

    return MockTransport(handler)


def _engine(transport: MockTransport, window: int | None) -> Any:
    return tg.get_engine(
        "m",
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        transport=transport,
        context_window=window,
    )


def _param(feedback: list[str]) -> tg.Variable:
    v = tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")
    for text in feedback:
        g = tg.Variable(text, requires_grad=False, role_description="feedback to system prompt")
        v.gradients.append(g)
        v.gradients_context[g] = {
            "context": f"<LM_INPUT>question about {text[:12]}</LM_INPUT>",
            "response_desc": "response",
            "variable_desc": "system prompt",
        }
    return v


def _long(i: int, words: int = 120) -> str:
    return f"MARK-{i} " + " ".join(f"reason{i}x{k}" for k in range(words))


@pytest.mark.parametrize(
    ("strategy", "window"), [("concat", None), ("auto", None), ("auto", 128_000)]
)
async def test_under_the_budget_the_optimizer_request_is_byte_identical(
    strategy: str, window: int | None
) -> None:
    """Concat, and auto while it fits, send exactly the request TextGrad's method sent before
    the aggregation stage existed (pinned in tests/data/golden_optimizer_request.json), plus
    the prompt-cache routing hint of the variable it rewrites (which changes no answer)."""
    got = await optimizer_request(aggregation=strategy, context_window=window)
    assert got.pop("prompt_cache_key") == cache_key("system prompt to the language model")
    assert json.dumps(got, indent=1, sort_keys=True) == GOLDEN.read_text()


async def test_tree_reaches_every_feedback_twice_then_merges() -> None:
    """At n=50, level 1 has about sqrt(n) groups with each feedback in exactly two; level 2
    merges them; no feedback is dropped; the optimizer sees one merged block."""
    transport = _provider()
    engine = _engine(transport, 64_000)
    v = _param([_long(i) for i in range(50)])
    optimizer = tg.TGD(engine=engine, parameters=[v], aggregation="tree")
    (report,) = await optimizer.step()
    bodies = [_body(r) for r in transport.requests]
    reduce = [b for b in bodies if _kind(b) == "reduce"]
    level1 = [b for b in reduce if "merged:" not in json.dumps(b)]
    counts: dict[str, int] = {}
    for b in level1:
        for m in set(MARK.findall(json.dumps(b["messages"]))):
            counts[m] = counts.get(m, 0) + 1
    assert counts == {f"MARK-{i}": 2 for i in range(50)}
    assert report.strategy == "tree" and report.levels == 2
    assert report.groups == [len(level1), 1] and len(level1) >= 7
    assert report.calls == len(reduce) + 1 and report.feedbacks_in == 50
    (opt,) = [b for b in bodies if _kind(b) == "optimizer"]
    user = opt["messages"][1]["content"]
    assert user.count("</FEEDBACK>") == 1
    assert set(MARK.findall(user)) == {f"MARK-{i}" for i in range(50)}
    assert v.value == "new"
    assert optimizer.last_step == [report]


async def test_auto_switches_to_tree_past_the_budget_and_fits_the_window() -> None:
    """Auto concatenates while it fits; 200 long feedbacks in a 16k window are reduced, and no
    request the runtime sends is over the window."""
    for n, expected in ((3, "concat"), (200, "tree")):
        transport = _provider()
        engine = _engine(transport, 16_000)
        v = _param([_long(i) for i in range(n)])
        (report,) = await tg.TGD(engine=engine, parameters=[v]).step()
        assert report.strategy == expected
        for r in transport.requests:
            assert engine.request_tokens(engine.request(_body(r)["messages"])) <= 16_000
        if expected == "tree":
            assert report.levels >= 2 and report.prompt_tokens <= 16_000


async def test_duplicates_are_merged_and_counted() -> None:
    """Identical feedback from many samples is one block marked with its count."""
    transport = _provider()
    engine = _engine(transport, 64_000)
    same = "MARK-1 the prompt never asks for units."
    v = tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")
    for text in [same] * 12 + [_long(i) for i in range(2, 8)]:
        g = tg.Variable(text, requires_grad=False, role_description="feedback")
        v.gradients.append(g)
        v.gradients_context[g] = None
    (report,) = await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
    assert report.feedbacks_in == 18 and report.distinct == 7
    first = [_body(r) for r in transport.requests if _kind(_body(r)) == "reduce"]
    texts = [json.dumps(b["messages"]) for b in first]
    assert sum(t.count("(from 12 samples) MARK-1") for t in texts) == 2


async def test_failing_feedback_goes_first() -> None:
    """Feedback that asks for no change is dealt after the criticism."""
    pieces = [aggregation.Piece("MARK-0 no changes are needed", failing=False)] + [
        aggregation.Piece(f"MARK-{i} wrong count") for i in range(1, 3)
    ]
    transport = _provider()
    engine = _engine(transport, 64_000)
    v = _param([])
    for p in pieces:
        g = tg.Variable(p.text, requires_grad=False, role_description="feedback")
        v.gradients.append(g)
        v.gradients_context[g] = None
    await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
    (reduce,) = [_body(r) for r in transport.requests if _kind(_body(r)) == "reduce"]
    text = reduce["messages"][1]["content"]
    assert text.index("MARK-1") < text.index("MARK-2") < text.index("MARK-0")


async def test_a_concat_prompt_past_the_window_raises_before_anything_is_sent() -> None:
    """A concat prompt past the window raises ContextBudgetError naming the variable; no request
    is sent and the parameter is unchanged."""
    transport = _provider()
    engine = _engine(transport, 2_000)
    v = _param([_long(0, 4000), "MARK-1 short"])
    with pytest.raises(tg.ContextBudgetError, match="feedback blocks") as caught:
        await tg.TGD(engine=engine, parameters=[v], aggregation="concat").step()
    assert caught.value.variable == "system prompt" and caught.value.window == 2_000
    assert transport.requests == [] and v.value == "Be brief."


async def test_a_context_length_400_teaches_the_window_and_auto_reduces() -> None:
    """With the window unknown, a provider 400 naming it is learned; auto redoes the step with
    the tree and succeeds; the engine refuses oversize requests from then on, unsent."""
    message = "This model's maximum context length is 8000 tokens. However, you requested 9999."
    transport = _provider(fail_first_optimizer=message)
    engine = _engine(transport, None)
    v = _param([_long(i) for i in range(60)])
    (report,) = await tg.TGD(engine=engine, parameters=[v]).step()
    assert engine.context_window == 8000
    assert report.strategy == "tree" and v.value == "new"
    kinds = [_kind(_body(r)) for r in transport.requests]
    assert kinds[0] == "optimizer" and kinds[-1] == "optimizer" and "reduce" in kinds
    big = engine.request([{"role": "user", "content": "x" * 40_000}])
    sent = len(transport.requests)
    with pytest.raises(tg.ContextBudgetError):
        await engine.send(big)
    assert len(transport.requests) == sent


async def test_tg_aggregate_merges_a_batch_with_the_same_stage() -> None:
    """tg.aggregate's merge runs through reduce_feedback: 40 samples' feedback becomes one
    gradient on the shared prompt, every sample's feedback reaching the reduction."""
    transport = MockTransport(_aggregate_handler)
    engine = _engine(transport, 64_000)
    prompt = tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")
    model = tg.BlackboxLLM(engine, prompt)
    responses = [
        await model(tg.Variable(f"q{i}", requires_grad=False, role_description="query"))
        for i in range(40)
    ]
    await tg.aggregate(responses).backward(engine)
    assert len(prompt.gradients) == 1
    assert set(MARK.findall(str(prompt.gradients[0].value))) == {f"MARK-{i}" for i in range(40)}


def _aggregate_handler(request: HTTPRequest) -> HTTPResponse:
    body = _body(request)
    text = json.dumps(body["messages"])
    if _kind(body) == "reduce":
        marks = sorted(set(MARK.findall(text)), key=lambda m: int(m.split("-")[1]))
        return HTTPResponse(200, {}, completion("merged: " + " ".join(marks)))
    if "<OBJECTIVE_FUNCTION>" in text:
        (q,) = re.findall(r"q(\d+)", body["messages"][-1]["content"])[:1] or ["0"]
        return HTTPResponse(200, {}, completion(f"MARK-{q} " + "be precise " * 30))
    return HTTPResponse(200, {}, completion("answer"))


def test_the_executor_holds_no_aggregation_code() -> None:
    """The executor only calls merge hooks: no prompts, no requests built, no strategy."""
    source = inspect.getsource(executor)
    for word in ("import prompts", "prompts.", "REDUCE", "engine.request(", "reduce_feedback"):
        assert word not in source, word
    assert "aggregation" not in json.dumps(sorted(executor.__dict__))


def test_bad_strategy_is_a_config_error() -> None:
    """An unknown aggregation name says which exist."""
    v = _param(["x"])
    with pytest.raises(tg.ConfigError, match="concat, tree, auto"):
        tg.TGD(engine=None, parameters=[v], aggregation="mean")  # type: ignore[arg-type]


async def test_reduce_calls_are_journaled_and_replayed(tmp_path: Any) -> None:
    """Reduce calls go through the engine like any other: a resumed run replays them from the
    journal (the response cache) and sends none again."""
    journal = tmp_path / "journal.bin"
    sent = []
    for _ in range(2):
        transport = _provider()
        engine = tg.get_engine(
            "m",
            base_url="http://127.0.0.1:9/v1",
            api_key="k",
            transport=transport,
            context_window=64_000,
            cache=str(journal),
            cache_sampled=True,
        )
        v = _param([_long(i) for i in range(30)])
        (report,) = await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
        await engine.aclose()
        sent.append(len(transport.requests))
    assert sent == [report.calls, 0]


async def test_count_bounded_sums_everything_with_a_bounded_window() -> None:
    """The evaluation fan-out adds every result (no lost update across awaits) and never has
    more than its window in flight."""

    from asynctg.fanout import count_bounded

    in_flight = peak = 0

    async def one(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return i % 3 == 0

    total = await count_bounded((one(i) for i in range(3000)), 50)
    assert total == 1000 and peak == 50


@pytest.mark.timeout(180)
def test_batch_1024_step_runs_end_to_end_within_a_128k_window(tmp_path: Any) -> None:
    """`asynctg optimize --batch-size 1024` against a 128k-window simulator with ~300-token
    feedback: the step completes with the tree, no request reaches the server over the window,
    and the calls are 3B+1 plus the reduction's."""
    import subprocess
    import sys

    from support import SimProcess

    sim = SimProcess("--context-window", "128000", "--feedback-tokens", "300")
    try:
        cmd = [sys.executable, "-m", "asynctg", "optimize", "--base-url", sim.base_url]
        cmd += ["--model", "sim-1", "--batch-size", "1024", "--train-size", "1024"]
        cmd += ["--steps", "1", "--epochs", "1", "--no-test", "--json", "--quiet"]
        cmd += ["--max-concurrency", "128", "--context-window", "128000"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        row = json.loads(proc.stdout)["history"][-1]
        stats = sim.stats()
    finally:
        sim.close()
    report = row["aggregation"]
    assert report["strategy"] == "tree" and report["feedbacks_in"] == 1024
    assert stats["context_length_exceeded"] == 0
    assert stats["max_prompt_tokens"] <= 128_000
    forward_backward = stats["requests"] - report["calls"]
    assert forward_backward <= 3 * 1024  # identical generated questions are sent once
    assert report["calls"] == sum(report["groups"]) + 1 and report["levels"] == 2


async def test_a_failed_reduce_call_cancels_the_rest_of_its_level() -> None:
    """One reduce call fails for good while another is still running: the step raises that
    error only after the running call is cancelled (nothing left in flight behind it)."""
    transport, finished = one_slow_rest_fail(lambda text: True)
    engine = tg.get_engine(
        "m",
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        transport=transport,
        context_window=64_000,
        retry=tg.RetryPolicy(testing=True),
    )
    v = _param([_long(i) for i in range(50)])
    with pytest.raises(tg.BadRequestError):
        await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
    assert engine.scheduler.statistics()["in_flight"] == 0
    assert finished == [] and v.value == "Be brief."


# --- hardening: the tree always ends, and says what it cut --------------------------------------

CUT = "characters cut here to fit the context window"


class _Capped:
    """An in-memory provider that counts calls by kind and answers 400 past ``cap`` reduce calls,
    so an endless reduction fails fast instead of hanging (the per-test timeout backs it up)."""

    def __init__(self, reduce_reply: Callable[[str], str], cap: int, answer: str = "ok") -> None:
        self.reduce_reply = reduce_reply
        self.cap = cap
        self.answer = answer
        self.calls: dict[str, int] = {"reduce": 0, "optimizer": 0, "backward": 0, "other": 0}
        self.bodies: list[dict[str, Any]] = []
        self.transport = MockTransport(self.handler)

    def handler(self, request: HTTPRequest) -> HTTPResponse:
        body = _body(request)
        self.bodies.append(body)
        kind = _kind(body)
        if kind == "other" and body["messages"][0]["content"] == prompts.BACKWARD_SYSTEM_PROMPT:
            kind = "backward"
        self.calls[kind] += 1
        user = body["messages"][-1]["content"]
        if kind == "reduce":
            if self.calls["reduce"] > self.cap:
                return error(400, f"test cap of {self.cap} reduce calls exceeded")
            return HTTPResponse(200, {}, completion(self.reduce_reply(user)))
        if kind == "optimizer":
            return HTTPResponse(200, {}, completion("<IMPROVED_VARIABLE>new</IMPROVED_VARIABLE>"))
        if kind == "backward":
            (i,) = re.findall(r"Q(\d+)-", user)[:1] or ["0"]
            return HTTPResponse(200, {}, completion(f"MARK-{i} " + "the prompt lacks units. " * 35))
        return HTTPResponse(200, {}, completion(self.answer))

    def fits(self, engine: Any) -> bool:
        """No request sent was over the window (prompt plus its reply cap)."""
        window: int = engine.context_window
        return all(
            engine.request_tokens(engine.request(b["messages"])) + b.get("max_tokens", 0) <= window
            for b in self.bodies
        )


def _marks(text: str) -> str:
    marks = sorted(set(MARK.findall(text)), key=lambda m: int(m.split("-")[1]))
    return "merged: " + " ".join(marks)


def _bound(distinct: int) -> tuple[int, int]:
    """The tree's promise for n distinct pieces: at most 2n - 1 calls, 1 + ceil(log2 n) levels."""
    return 2 * distinct - 1, 1 + math.ceil(math.log2(distinct))


def _distinct(i: int, chars: int) -> str:
    head = f"MARK-{i} "
    filler = " ".join(f"reason{i}x{k}" for k in range(chars // 8))
    return (head + filler)[:chars]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("window", "chars"), [(32_000, 50_000), (8_000, 10_000)])
async def test_four_feedbacks_over_half_a_request_end_in_bounded_calls(
    window: int, chars: int
) -> None:
    """Four distinct feedbacks each past half a reduce request (32k window with 50,000-character
    feedbacks, 8k with 10,000) complete the step in at most 2n-1 reduce calls over at most
    1 + ceil(log2 n) levels, every request within the window (the old tree looped forever)."""
    provider = _Capped(_marks, cap=50)
    engine = _engine(provider.transport, window)
    v = _param([_distinct(i, chars) for i in range(4)])
    (report,) = await tg.TGD(engine=engine, parameters=[v], aggregation="auto").step()
    calls, levels = _bound(4)
    assert report.strategy == "tree" and report.distinct == 4
    assert provider.calls["reduce"] == report.calls - 1 <= calls and report.levels <= levels
    assert provider.fits(engine) and v.value == "new"
    (opt,) = [b for b in provider.bodies if _kind(b) == "optimizer"]
    assert set(MARK.findall(opt["messages"][1]["content"])) == {f"MARK-{i}" for i in range(4)}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("n", [4, 50])
async def test_a_reduce_model_that_never_shrinks_still_ends(n: int) -> None:
    """Reduce replies as long as their whole input are cut to the reply cap (with a notice), so
    the tree still ends within 2n-1 calls and 1 + ceil(log2 n) levels and no request overflows
    the window (the old tree recursed without bound)."""
    provider = _Capped(lambda user: user, cap=4 * n)
    engine = _engine(provider.transport, 8_000)
    v = _param([_distinct(i, 3_000) for i in range(n)])
    (report,) = await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
    calls, levels = _bound(n)
    assert provider.calls["reduce"] <= calls and report.levels <= levels
    assert report.cut >= 1 and provider.fits(engine) and v.value == "new"
    (opt,) = [b for b in provider.bodies if _kind(b) == "optimizer"]
    assert CUT in opt["messages"][1]["content"]  # the optimizer is told text was cut


async def test_reduce_requests_carry_a_reply_cap() -> None:
    """Every reduce request sets max_tokens, and prompt plus cap stay within the planned share
    of the window."""
    provider = _Capped(_marks, cap=100)
    engine = _engine(provider.transport, 16_000)
    v = _param([_long(i) for i in range(40)])
    await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
    reduce = [b for b in provider.bodies if _kind(b) == "reduce"]
    assert reduce and all(isinstance(b.get("max_tokens"), int) for b in reduce)
    for b in reduce:
        prompt = engine.request_tokens(engine.request(b["messages"]))
        assert 0 < b["max_tokens"] and prompt + b["max_tokens"] <= 16_000 * 0.85


async def test_identical_feedback_on_different_inputs_is_merged_and_counted() -> None:
    """2,048 samples with different inputs and the same feedback are one piece counted 2,048
    times: one reduce call, not hundreds."""
    provider = _Capped(_marks, cap=20)
    engine = _engine(provider.transport, 128_000)
    v = tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")
    for i in range(2048):
        g = tg.Variable("MARK-1 Always give units.", requires_grad=False, role_description="f")
        v.gradients.append(g)
        v.gradients_context[g] = {
            "context": f"<LM_INPUT>question number {i}</LM_INPUT>",
            "response_desc": "response",
            "variable_desc": "system prompt",
        }
    (report,) = await tg.TGD(engine=engine, parameters=[v], aggregation="auto").step()
    assert report.feedbacks_in == 2048 and report.distinct == 1
    assert provider.calls["reduce"] == 1 and report.calls == 2
    (reduce,) = [b for b in provider.bodies if _kind(b) == "reduce"]
    assert "(from 2048 samples) " in reduce["messages"][1]["content"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("n", "chars"), [(1, 40_000), (3, 12_000)])
async def test_pieces_that_cannot_share_or_fit_a_request_are_split_or_cut(
    n: int, chars: int
) -> None:
    """In an 8k window, one feedback too big for any reduce request is cut with a visible notice
    (the reducer is told), and three that fit only one at a time are reduced apart and merged:
    the step completes instead of raising ContextBudgetError with advice to use the tree."""
    provider = _Capped(_marks, cap=20)
    engine = _engine(provider.transport, 8_000)
    v = _param([_distinct(i, chars) for i in range(n)])
    (report,) = await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
    calls, _ = _bound(max(n, 2))
    assert provider.calls["reduce"] <= calls and provider.fits(engine) and v.value == "new"
    texts = [b["messages"][1]["content"] for b in provider.bodies if _kind(b) == "reduce"]
    assert (report.cut == 1 and CUT in texts[0]) if n == 1 else report.cut == 0


# --- the batch step end to end, and one oversize sample in backward ----------------------------


def _exact(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> str:
    return "1" if str(prediction.value).strip() == str(ground_truth_answer.value) else "0"


async def _batch(engine: Any, questions: list[str]) -> tg.Variable:
    prompt = tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")
    await _batch_of(engine, prompt, questions)
    return prompt


async def _batch_of(engine: Any, prompt: tg.Variable, questions: list[str]) -> None:
    model = tg.BlackboxLLM(engine, prompt)
    check = tg.autograd.StringBasedFunction(_exact, function_purpose="exact match")
    losses = []
    for q in questions:
        x = tg.Variable(q, requires_grad=False, role_description="query to the language model")
        y = tg.Variable("42", requires_grad=False, role_description="correct answer")
        response = await model(x)
        losses.append(await check(inputs=dict(prediction=response, ground_truth_answer=y)))
    await tg.sum(losses).backward(engine)


def _question(i: int, chars: int) -> str:
    return (f"Q{i}- " + " ".join(f"item{i}x{k}" for k in range(chars // 8)))[:chars]


@pytest.mark.timeout(20)
async def test_batch_of_four_8000_character_questions_steps_end_to_end() -> None:
    """B=4 with 8,000-character questions in an 8k window: forward, backward and an auto TGD
    step complete on the in-memory provider with a bounded number of reduce calls, no request
    over the window (the old tree hung the event loop here)."""
    provider = _Capped(_marks, cap=50, answer="The answer is " + "probably " * 100)
    engine = _engine(provider.transport, 8_000)
    prompt = await _batch(engine, [_question(i, 8_000) for i in range(4)])
    assert len(prompt.gradients) == 4
    (report,) = await tg.TGD(engine=engine, parameters=[prompt]).step()
    calls, levels = _bound(4)
    assert report.strategy == "tree" and provider.calls["reduce"] <= calls
    assert report.levels <= levels and provider.fits(engine) and prompt.value == "new"
    assert provider.calls["optimizer"] == 1


@pytest.mark.timeout(20)
async def test_one_oversize_sample_is_cut_not_fatal_in_backward() -> None:
    """One sample whose feedback request cannot fit the window has its conversation cut with a
    notice; the backward completes with every sample's feedback (the others' paid calls are
    not wasted) and the step runs."""
    provider = _Capped(_marks, cap=50, answer="The answer is 41.")
    engine = _engine(provider.transport, 8_000)
    questions = [_question(0, 30_000)] + [_question(i, 200) for i in range(1, 4)]
    prompt = await _batch(engine, questions)
    assert len(prompt.gradients) == 4 and provider.calls["backward"] == 8
    backward = [
        b for b in provider.bodies if b["messages"][0]["content"] == prompts.BACKWARD_SYSTEM_PROMPT
    ]
    cut = [b for b in backward if CUT in b["messages"][1]["content"]]
    assert len(cut) == 1 and "Q0-" in cut[0]["messages"][1]["content"]
    assert provider.fits(engine)
    await tg.TGD(engine=engine, parameters=[prompt]).step()
    assert prompt.value == "new"


class _Oversize(tg.autograd.StringBasedFunction):
    """A user's function whose backward rule builds a request the window cannot hold."""

    def backward(self, output: tg.Variable, feedback: str, engine: Any, **saved: Any) -> Any:
        from asynctg.graph import GradientPlan

        plans = super().backward(output, feedback, engine, **saved)
        big = engine.request([{"role": "user", "content": "x" * 80_000}])
        return [GradientPlan(p.target, request=big, context=p.context) for p in plans]


async def test_a_budget_error_in_backward_names_the_variable_and_the_sample() -> None:
    """A ContextBudgetError raised while sending a feedback request says which variable the
    feedback was for and which sample it came from."""
    provider = _Capped(_marks, cap=5, answer="The answer is 41.")
    engine = _engine(provider.transport, 8_000)
    prompt = tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")
    response = await tg.BlackboxLLM(engine, prompt)(
        tg.Variable("Q7- how many legs?", requires_grad=False, role_description="query")
    )
    y = tg.Variable("42", requires_grad=False, role_description="correct answer")
    loss = await _Oversize(_exact, function_purpose="exact match")(
        inputs=dict(prediction=response, ground_truth_answer=y)
    )
    with pytest.raises(tg.ContextBudgetError) as caught:
        await loss.backward(engine)
    err = caught.value
    assert err.variable == "response from the language model" and err.window == 8_000
    assert err.sample is not None and "correct answer '42'" in err.sample
    assert "response from the language model" in str(err) and "'42'" in str(err)
    assert provider.calls["backward"] == 0 and prompt.gradients == []


async def test_a_feedback_request_that_cutting_cannot_fit_names_variable_and_sample() -> None:
    """A window too small for even the feedback instructions: ContextBudgetError names the
    variable and the sample, and nothing is sent for it."""
    provider = _Capped(_marks, cap=5, answer="41")
    engine = _engine(provider.transport, 400)
    prompt = tg.Variable("Be brief.", requires_grad=True, role_description="system prompt")
    response = await tg.BlackboxLLM(engine, prompt)(
        tg.Variable("Q3- how many legs?", requires_grad=False, role_description="query")
    )
    y = tg.Variable("42", requires_grad=False, role_description="correct answer")
    check = tg.autograd.StringBasedFunction(_exact, function_purpose="exact match")
    loss = await check(inputs=dict(prediction=response, ground_truth_answer=y))
    with pytest.raises(tg.ContextBudgetError) as caught:
        await loss.backward(engine)
    err = caught.value
    assert err.variable == "response from the language model" and err.window == 400
    assert err.sample is not None and "correct answer '42'" in err.sample
    assert provider.calls["backward"] == 0


async def test_a_huge_role_description_is_never_cut_and_is_named() -> None:
    """The instructions and the variable's role are never cut: a role description the window
    cannot hold raises ContextBudgetError naming the variable and the sample, unsent."""
    provider = _Capped(_marks, cap=5, answer="The answer is 41.")
    engine = _engine(provider.transport, 2_000)
    role = "system prompt " + "that must stay as written " * 400
    prompt = tg.Variable("Be brief.", requires_grad=True, role_description=role)
    with pytest.raises(tg.ContextBudgetError) as caught:
        await _batch_of(engine, prompt, ["Q3- how many legs?"])
    err = caught.value
    assert err.variable == role and err.sample is not None and "'Q3- how many legs?'" in err.sample
    assert provider.calls["backward"] == 1 and prompt.gradients == []


def test_cut_to_fit_keeps_tags_marks_cuts_and_bounds_its_work() -> None:
    """cut_to_fit cuts the longest tagged span's middle (tags kept, notice added) and, on text
    with 20,000 tag pairs, still returns within the limit."""
    text = prompts.conversation_text("sys", "Q" * 8_000, "A" * 300)
    cut = prompts.cut_to_fit(text, 3_000)
    assert len(cut) <= 3_000 and cut.count(CUT) == 1
    assert cut.count("<LM_INPUT>") == cut.count("</LM_INPUT>") == 1 and "A" * 300 in cut
    many = "<FEEDBACK>" + "y" * 300 + "</FEEDBACK>"
    flood = prompts.cut_to_fit(many * 20_000, 10_000)
    assert len(flood) <= 10_000 and CUT in flood
    assert prompts.cut_to_fit("short", 100) == "short"
