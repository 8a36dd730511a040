"""The aggregation stage: many feedbacks -> what the optimizer sees, within the context budget."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from golden_step import GOLDEN, optimizer_request
from support import completion, error, one_slow_rest_fail

import asynctg as tg
from asynctg import prompts, runtime
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
    the aggregation stage existed (pinned in tests/data/golden_optimizer_request.json)."""
    got = await optimizer_request(aggregation=strategy, context_window=window)
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


async def test_what_cannot_fit_raises_before_anything_is_sent() -> None:
    """A feedback too large for any reduce call, and a concat prompt past the window, raise
    ContextBudgetError naming the variable; no request is sent."""
    transport = _provider()
    engine = _engine(transport, 2_000)
    v = _param([_long(0, 4000), "MARK-1 short"])
    with pytest.raises(tg.ContextBudgetError, match="system prompt") as caught:
        await tg.TGD(engine=engine, parameters=[v], aggregation="tree").step()
    assert caught.value.variable == "system prompt" and caught.value.window == 2_000
    with pytest.raises(tg.ContextBudgetError, match="feedback blocks"):
        await tg.TGD(engine=engine, parameters=[v], aggregation="concat").step()
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

    from asynctg.apps.run import count_bounded

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
