"""Service tiers (issue 27): flex and batch for evaluation calls, on the simulator.

Timing never sleeps on real time: flex backoff runs on a ``FakeClock`` the test drives, and
batches end on the simulator's fast-forwarded clock (``batch_completion_seconds=0`` ends a batch
at its first look; the kill test moves the sim's clock with ``advance``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asynctg as tg
from asynctg import apps, tasks
from asynctg.engine.batch import BatchLedger
from asynctg.engine.clock import FakeClock
from asynctg.engine.retry import RetryPolicy
from asynctg.engine.tiers import FLEX_FIRST_WAIT, FlexCapacity, FlexRetry, use_tier
from asynctg.engine.usage import nano_dollars
from asynctg.errors import ConfigError
from asynctg.runs.progress import format_counters, format_tiers
from asynctg.sim import SimServer

REPO = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ASYNCTG_"))}
ENV["PYTHONPATH"] = str(REPO)
#: tags only training requests carry (backward and optimizer prompts)
TRAINING_TAGS = ("<OBJECTIVE_FUNCTION>", "<LM_OUTPUT>", "<IMPROVED_VARIABLE>")


def _counting(test: int = 6) -> tasks.PromptTask:
    task = tasks.get_task("object_counting", train_size=6, val_size=4, test_size=test)
    assert isinstance(task, tasks.PromptTask)
    return task


def _config(tier: str, **options: Any) -> apps.PromptConfig:
    return apps.PromptConfig(
        batch_size=3, epochs=1, steps_per_epoch=2, validate=True, eval_tier=tier, **options
    )


def _text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in body.get("messages", []))


async def _optimize(sim: SimServer, tier: str, **engine_options: Any) -> apps.PromptResult:
    clock = FakeClock()
    engine = tg.get_engine(
        "gpt-4o-mini",
        base_url=sim.base_url,
        clock=clock,
        retry=RetryPolicy(testing=True),
        **engine_options,
    )
    async with engine:
        task = _counting()
        return await clock.drive(apps.optimize_prompt(task, engine, config=_config(tier)))


async def test_flex_eval_tier_sends_evaluations_as_flex_and_training_as_standard(
    make_sim: Callable[..., Any],
) -> None:
    """With eval_tier="flex", every evaluation call (validation and test scoring) carries
    service_tier "flex" and every training call (forward on the minibatch, backward,
    optimizer) carries none; the usage counts the flex calls at half price."""
    sim = await make_sim(record=True)
    result = await _optimize(sim, "flex")
    task = _counting()
    evaluated = {qa.question for qa in (*task.test, *task.val)}
    trained = {qa.question for qa in task.train}
    flex = standard = 0
    for body in sim.requests:
        text = _text(body)
        training = any(tag in text for tag in TRAINING_TAGS) or any(q in text for q in trained)
        if body.get("service_tier") == "flex":
            flex += 1
            assert not training and any(q in text for q in evaluated)
        else:
            standard += 1
            assert "service_tier" not in body and training
    assert flex and standard
    assert result.usage["flex_calls"] == flex
    assert result.usage["saved_usd"] > 0


async def test_flex_refusals_are_retried_and_the_run_ends_as_at_standard(
    make_sim: Callable[..., Any],
) -> None:
    """With 30% of flex calls refused (429 resource_unavailable) the run completes with the
    same prompts and accuracies as at standard, and its refused calls were retried at flex."""
    standard = await _optimize(await make_sim(), "standard")
    sim = await make_sim(flex_unavailable_rate=0.3)
    flex = await _optimize(sim, "flex")
    assert sim.stats()["flex_unavailable"] > 0
    assert flex.status == "completed"
    assert flex.final_prompt == standard.final_prompt
    keys = ("prompt", "train_accuracy", "validation_accuracy", "test_accuracy")
    assert [[r[k] for k in keys] for r in flex.history] == [
        [r[k] for k in keys] for r in standard.history
    ]
    assert flex.usage["flex_fallbacks"] == 0
    assert flex.usage["cost_usd"] < standard.usage["cost_usd"]


async def test_flex_past_its_deadline_is_sent_at_standard(make_sim: Callable[..., Any]) -> None:
    """A flex call refused until flex_deadline passes is sent at standard once (not an error,
    not a stall), and is priced at standard."""
    sim = await make_sim(flex_unavailable_rate=1.0)
    clock = FakeClock()
    engine = tg.get_engine("gpt-4o", base_url=sim.base_url, clock=clock, flex_deadline=60)
    async with engine:
        result = await clock.drive(engine.chat([{"role": "user", "content": "hi"}], tier="flex"))
        stats = engine.stats()
    assert result.service_tier == "default"
    assert stats["flex_fallbacks"] == 1 and stats["flex_calls"] == 0
    assert stats["saved_usd"] == 0
    assert 60 <= clock.now() < 61  # it waited out its deadline, on the fake clock


async def test_flex_cost_is_the_cached_aware_standard_cost_times_the_tier_factor(
    make_sim: Callable[..., Any],
) -> None:
    """Flex calls that read the prompt cache cost their cached-aware standard price (cached
    reads at the cached-input price) times the flex factor, equal to the provider's bill;
    saved_usd is the cached-aware standard cost minus that."""
    sim = await make_sim()
    shared = "Answer the question step by step, then give the final answer. " * 95
    engine = tg.get_engine("gpt-4o", base_url=sim.base_url, retry=RetryPolicy(testing=True))
    async with engine:
        with use_tier("flex"):
            for i in range(6):  # one after another: every call after the first reads the cache
                await engine.generate(f"question {i}", system_prompt=shared)
        stats = engine.stats()
    assert stats["flex_calls"] == 6 and stats["cached_tokens"] > 0
    standard = nano_dollars(
        engine.config.price,
        stats["prompt_tokens"],
        stats["completion_tokens"],
        stats["cached_tokens"],
        stats["cache_write_tokens"],
    )
    bill = sim.bill()["openai"]
    assert bill["by_tier"]["flex"] == bill["nano_dollars"]
    cost = engine.usage.cost_nano
    assert cost == pytest.approx(bill["nano_dollars"], abs=10)
    assert cost == pytest.approx(standard * 0.5, abs=10)
    assert round(stats["saved_usd"] * 1e9) == standard - cost


async def test_tier_is_checked() -> None:
    """An unknown tier is a ConfigError, wherever it is given."""
    with pytest.raises(ConfigError), use_tier("cheap"):
        pass
    with pytest.raises(ConfigError):
        apps.PromptConfig(eval_tier="cheap")
    with pytest.raises(ConfigError):
        tg.get_engine("gpt-4o", base_url="http://127.0.0.1:9/v1", tier="cheap")


async def test_batch_eval_of_500_questions_is_one_batch_per_evaluation(
    make_sim: Callable[..., Any],
) -> None:
    """With eval_tier="batch", each evaluation of a 500-question test split is one provider
    batch of its distinct requests, and the engine's cost equals the provider's bill."""
    # (gpt-4o: the sim's prices; the sim's prompt cache is on, so cached reads are billed)
    sim = await make_sim(batch_completion_seconds=0)
    clock = FakeClock()
    engine = tg.get_engine("gpt-4o", base_url=sim.base_url, clock=clock)
    config = apps.PromptConfig(batch_size=3, epochs=1, steps_per_epoch=2, eval_tier="batch")
    async with engine:
        task = _counting(test=500)
        result = await clock.drive(apps.optimize_prompt(task, engine, config=config))
    distinct = len({qa.question for qa in task.test})  # a twin question is asked once
    evaluations = len(result.history)  # before training, and after each step
    batches = sim.stats()["batches"]["openai"]
    assert batches["created"] == evaluations == 3
    assert batches["requests"] == distinct * evaluations
    assert result.usage["batch_calls"] == distinct * evaluations
    bill = sim.stats()["bill"]["total_nano_dollars"]
    assert round(result.usage["cost_usd"] * 1e9) == pytest.approx(bill, abs=10)


async def test_a_small_batch_fan_out_goes_at_standard(make_sim: Callable[..., Any]) -> None:
    """A batch-tier fan-out smaller than batch_min is sent as ordinary calls: no batch."""
    sim = await make_sim(batch_completion_seconds=0)
    engine = tg.get_engine("gpt-4o", base_url=sim.base_url, batch_min=8)
    async with engine:
        with use_tier("batch"):
            calls = (engine.chat([{"role": "user", "content": f"q{i}"}]) for i in range(7))
            await asyncio.gather(*calls)
        assert engine.stats()["batch_calls"] == 0
    assert sim.stats()["batches"]["openai"]["created"] == 0


async def test_failed_batch_items_are_retried_as_ordinary_calls(
    make_sim: Callable[..., Any],
) -> None:
    """Items a batch failed are sent again as ordinary calls; every call gets an answer."""
    sim = await make_sim(batch_completion_seconds=0, batch_failure_rate=0.25)
    engine = tg.get_engine("gpt-4o", base_url=sim.base_url, batch_min=8)
    async with engine:
        with use_tier("batch"):
            calls = (engine.chat([{"role": "user", "content": f"q{i}"}]) for i in range(40))
            results = await asyncio.gather(*calls)
        stats = engine.stats()
    failed = sim.stats()["batches"]["openai"]["failed_requests"]
    assert failed > 0 and len(results) == 40
    assert stats["batch_calls"] == 40 - failed
    assert sim.stats()["requests"] == failed  # the ordinary calls: one per failed item


async def test_a_dollar_cap_reserves_the_whole_batch_before_submitting(
    make_sim: Callable[..., Any],
) -> None:
    """A batch whose worst case at batch prices does not fit the dollar cap is never
    submitted (BudgetExceededError), and nothing is spent."""
    sim = await make_sim(batch_completion_seconds=0)
    engine = tg.get_engine("gpt-4o", base_url=sim.base_url, max_cost=0.01, max_tokens=1000)
    async with engine:
        with use_tier("batch"), pytest.raises(tg.BudgetExceededError):
            calls = (engine.chat([{"role": "user", "content": f"q{i}"}]) for i in range(40))
            await asyncio.gather(*calls)
    assert sim.stats()["batches"]["openai"]["created"] == 0


def _cli(base_url: str, folder: Path, *extra: str) -> Any:
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asynctg",
        "optimize",
        "--task",
        "object_counting",
        "--batch-size",
        "3",
        "--steps",
        "1",
        "--epochs",
        "1",
        "--test-size",
        "500",
        "--model",
        "gpt-4o-mini",
        "--eval-tier",
        "batch",
        "--base-url",
        base_url,
        "--checkpoint",
        str(folder),
        "--quiet",
        "--json",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
        cwd=str(REPO),
    )


async def test_kill_9_after_batch_submission_then_resume_attaches_to_it(
    make_sim: Callable[..., Any], tmp_path: Path
) -> None:
    """A run killed with SIGKILL after its evaluation batch was submitted re-attaches to that
    batch on --resume: no second batch for the same requests, no request served twice."""
    sim = await make_sim(batch_completion_seconds=3600)
    folder = tmp_path / "run"
    proc = await _cli(sim.base_url, folder)
    ledger_path = folder / "batches.jsonl"
    for _ in range(2000):  # poll the ledger until the first batch is recorded as submitted
        await asyncio.sleep(0.01)
        assert proc.returncode is None, "the run ended before its batch was submitted"
        if ledger_path.exists() and any(
            e.batch_id for e in BatchLedger(ledger_path).entries.values()
        ):
            break
    else:
        pytest.fail("the run never submitted a batch")
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # row 0's batch, and step 1's too if it was decided in time (two rows may be pending)
    assert 1 <= sim.stats()["batches"]["openai"]["created"] <= 2
    sim.update(batch_completion_seconds=0)  # the next batches end at their first look
    sim.advance(3600)  # and the killed run's batch has ended meanwhile

    resumed = await _cli(sim.base_url, folder, "--resume")
    out, err = await asyncio.wait_for(resumed.communicate(), 50)
    assert resumed.returncode == 0, err.decode()
    result = json.loads(out)
    result = result.get("result", result)
    batches = sim.stats()["batches"]["openai"]
    evaluations = len(result["history"])
    assert evaluations == 2
    assert batches["created"] == evaluations  # the killed run's batches were not sent again
    distinct = len({qa.question for qa in _counting(test=500).test})
    assert batches["requests"] == distinct * evaluations  # nothing served (or paid) twice
    ledger = BatchLedger(ledger_path)
    assert all(e.ended for e in ledger.entries.values())


def test_progress_and_summary_say_which_tier_did_the_evaluations_and_what_it_saved(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --eval-tier flex, every progress line and the summary name the flex calls and what
    they saved against standard; the summary also gives the cost at standard."""
    from asynctg.cli import main

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ASYNCTG_MODEL"):
        monkeypatch.delenv(name, raising=False)
    args = ["optimize", "--sim", "--sim-latency", "0", "--model", "gpt-4o-mini"]
    args += ["--steps", "1", "--epochs", "1", "--batch-size", "2", "--test-size", "4"]
    assert main([*args, "--eval-tier", "flex"]) == 0
    out, err = capsys.readouterr()
    summary = [line for line in out.splitlines() if line.strip().startswith("tiers")]
    assert len(summary) == 1
    assert re.search(
        r"eval: flex [1-9]\d* calls, saved \$0\.\d{4} \(\$0\.\d{4} instead of \$0\.\d{4} at "
        r"standard\)",
        summary[0],
    )
    steps = [line for line in err.splitlines() if line.startswith("[") and "step 1" in line]
    assert steps and all(re.search(r"eval: flex [1-9]\d* calls, saved \$", s) for s in steps)
    # at standard there is nothing to say
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "eval:" not in out and "eval:" not in err


def test_format_tiers_names_each_tier_its_calls_the_fallbacks_and_the_saving() -> None:
    """format_tiers: None when nothing went at a discounted tier; otherwise each tier's calls,
    the flex calls sent at standard past their deadline, the saving and the standard cost."""
    assert format_tiers({"flex_calls": 0, "batch_calls": 0, "saved_usd": 0.0}) is None
    usage = {"flex_calls": 120, "flex_fallbacks": 2, "saved_usd": 0.41, "cost_usd": 0.5}
    assert format_tiers(usage) == (
        "eval: flex 120 calls, 2 flex at standard past the deadline, saved $0.4100"
    )
    batch = {"batch_calls": 3000, "saved_usd": 0.25, "cost_usd": 0.75}
    assert format_tiers(batch, against=True) == (
        "eval: batch 3000 calls, saved $0.2500 ($0.7500 instead of $1.0000 at standard)"
    )
    assert "eval: batch 3000 calls" in format_counters(batch)


async def test_flex_calls_have_their_own_in_flight_allowance() -> None:
    """Flex calls do not queue behind the standard in-flight cap: with max_concurrency=2 and
    flex_concurrency=3, two standard and three flex calls are in flight at once, a sixth
    (flex) call waits for a flex slot, and the rpm budget counts every call."""
    from support import engine_with, ok

    from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

    release = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        await release.wait()
        return ok()

    transport = MockTransport(handler)
    engine = engine_with(transport, max_concurrency=2, flex_concurrency=3, rpm=6000)
    async with engine, asyncio.TaskGroup() as group:
        for i in range(2):
            group.create_task(engine.chat([{"role": "user", "content": f"s{i}"}]))
        for i in range(4):
            group.create_task(engine.chat([{"role": "user", "content": f"f{i}"}], tier="flex"))
        for _ in range(50):  # let every call reach its budget (no clock moves)
            await asyncio.sleep(0)
        sent = [json.loads(r.body) for r in transport.requests]
        assert len(sent) == 5
        assert sum(1 for body in sent if body.get("service_tier") == "flex") == 3
        assert engine.scheduler.statistics()["in_flight"] == 2
        assert engine.flex_scheduler.statistics()["in_flight"] == 3
        assert engine.flex_scheduler.statistics()["queued"] == 1
        assert engine.scheduler.statistics()["admitted"] == 5  # the rate budget saw all five
        release.set()
    assert len(transport.requests) == 6
    assert engine.flex_scheduler.statistics()["in_flight"] == 0


async def test_flex_concurrency_is_checked() -> None:
    """flex_concurrency must be an integer >= 1 (None: as many as max_concurrency)."""
    with pytest.raises(ConfigError):
        tg.get_engine("gpt-4o", base_url="http://127.0.0.1:9/v1", flex_concurrency=0)
    engine = tg.get_engine("gpt-4o", base_url="http://127.0.0.1:9/v1", max_concurrency=7)
    assert engine.flex_scheduler.max_concurrency == 7


async def test_a_batch_answers_as_the_same_requests_sent_one_by_one(
    make_sim: Callable[..., Any],
) -> None:
    """Requests carrying a prompt_cache_key get the same answers in a batch as sent
    synchronously: the key routes the request, it does not change the answer."""
    sim = await make_sim(batch_completion_seconds=0)
    engine = tg.get_engine("gpt-4o", base_url=sim.base_url, batch_min=8)
    messages = [[{"role": "user", "content": f"what is {i} + {i}?"}] for i in range(8)]
    async with engine:
        one = [await engine.chat(m, prompt_cache_key="run-1", temperature=0.7) for m in messages]
        with use_tier("batch"):
            calls = (engine.chat(m, prompt_cache_key="run-1", temperature=0.7) for m in messages)
            batched = await asyncio.gather(*calls)
        assert engine.stats()["batch_calls"] == 8
    assert [r.text for r in batched] == [r.text for r in one]


async def test_the_flex_allowance_follows_the_latency_ratio_and_is_capped() -> None:
    """Without flex_concurrency, flex calls may have max_concurrency times the measured ratio
    of flex to standard median latency in flight: 3x slower answers get 3x the slots, the
    allowance is capped at 4x and never below 1x; flex_concurrency=N fixes it instead."""
    from support import engine_with, ok

    from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

    clock = FakeClock()
    latency = {"standard": 0.1, "flex": 0.3}

    async def handler(request: HTTPRequest) -> HTTPResponse:
        flex = json.loads(request.body).get("service_tier") == "flex"
        await clock.sleep(latency["flex" if flex else "standard"])
        return ok()

    async def calls(engine: tg.ChatEngine, tier: str, n: int) -> None:
        for i in range(n):  # one after another: distinct requests, nothing cached
            await engine.chat([{"role": "user", "content": f"{tier} {i} {clock.now()}"}], tier=tier)

    engine = engine_with(MockTransport(handler), clock=clock, max_concurrency=10)
    fixed = engine_with(MockTransport(handler), clock=clock, max_concurrency=10, flex_concurrency=5)
    async with engine, fixed:
        await clock.drive(calls(engine, "flex", 8))
        assert engine.flex_scheduler.max_concurrency == 10  # no standard latency known yet
        await clock.drive(calls(engine, "standard", 4))
        assert engine.flex_scheduler.max_concurrency == 30  # 0.3 s / 0.1 s
        latency["flex"] = 2.0  # a provider queueing flex calls: 20x, capped at 4x
        await clock.drive(calls(engine, "flex", 32))
        assert engine.flex_scheduler.max_concurrency == 40
        latency["flex"] = 0.05  # faster than standard: never fewer than max_concurrency
        await clock.drive(calls(engine, "flex", 32))
        assert engine.flex_scheduler.max_concurrency == 10
        await clock.drive(calls(fixed, "standard", 4))
        latency["flex"] = 0.3
        await clock.drive(calls(fixed, "flex", 8))
        assert fixed.flex_scheduler.max_concurrency == 5  # an explicit allowance stays


async def test_a_grown_flex_allowance_admits_queued_flex_calls_at_once() -> None:
    """When the allowance grows, flex calls queued for a slot are sent without waiting for a
    call in flight to end."""
    from support import engine_with, ok

    from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

    release = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        await release.wait()
        return ok()

    transport = MockTransport(handler)
    engine = engine_with(transport, max_concurrency=2)
    async with engine, asyncio.TaskGroup() as group:
        for i in range(5):
            group.create_task(engine.chat([{"role": "user", "content": f"f{i}"}], tier="flex"))
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(transport.requests) == 2
        engine.flex_scheduler.resize(4)
        assert engine.flex_scheduler.statistics()["in_flight"] == 4
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(transport.requests) == 4
        release.set()
    assert len(transport.requests) == 5


async def test_a_flex_refusal_is_retried_soon_and_holds_no_standard_call() -> None:
    """A 429 resource_unavailable on a flex call is retried after a short jittered wait
    (20-100 ms, not seconds) and sets no cool-down: a standard call made right after it is
    sent at once."""
    from support import engine_with, error, ok

    from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

    clock = FakeClock()
    sent: list[tuple[str, float]] = []
    first = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        flex = json.loads(request.body).get("service_tier") == "flex"
        sent.append(("flex" if flex else "standard", clock.now()))
        first.set()
        if flex and len([s for s in sent if s[0] == "flex"]) == 1:
            return error(429, "no flex capacity", code="resource_unavailable", retry_after="20")
        return ok()

    engine = engine_with(MockTransport(handler), clock=clock)

    async def both() -> None:
        flex = asyncio.create_task(engine.chat([{"role": "user", "content": "f"}], tier="flex"))
        await first.wait()
        await engine.chat([{"role": "user", "content": "s"}])
        await flex

    async with engine:
        await clock.drive(both())
        stats = engine.scheduler.statistics()
    assert [tier for tier, _ in sent] == ["flex", "standard", "flex"]
    assert sent[1][1] == 0  # the standard call did not wait
    # the refused flex call: a short wait, not retry-after
    assert FLEX_FIRST_WAIT / 5 <= sent[2][1] <= FLEX_FIRST_WAIT
    assert stats["cool_downs"] == 0
    assert engine.stats()["flex_calls"] == 1 and engine.stats()["flex_fallbacks"] == 0


def test_a_refused_flex_call_backs_off_only_while_flex_capacity_is_scarce() -> None:
    """Refusals among answers (30% refused): every retry of a call waits 20-100 ms. Most flex
    attempts refused: each retry's step doubles, up to 30 s; the last wait ends at the
    deadline, then the call goes at standard (None)."""
    import random

    rng = random.Random(0)
    sporadic, shortage = FlexCapacity(), FlexCapacity()
    for i in range(64):
        sporadic.record(i % 10 < 3)
        shortage.record(i % 10 < 6)
    assert not sporadic.scarce() and shortage.scarce()
    retry = FlexRetry(0.0, 300.0)
    waits = [retry.next_wait(0.0, rng, sporadic.scarce()) for _ in range(8)]
    lo, hi = FLEX_FIRST_WAIT / 5, FLEX_FIRST_WAIT
    assert all(w is not None and lo <= w <= hi for w in waits)
    retry = FlexRetry(0.0, 300.0)
    steps = [FLEX_FIRST_WAIT * 2**k for k in range(10)]
    for step in steps:
        wait = retry.next_wait(0.0, rng, shortage.scarce())
        assert wait is not None and min(step, 30.0) / 5 <= wait <= min(step, 30.0)
    assert FlexRetry(0.0, 1.0).next_wait(0.9, rng) == pytest.approx(0.1, abs=0.1)
    assert FlexRetry(0.0, 1.0).next_wait(1.0, rng) is None


async def test_a_refused_flex_call_keeps_its_place_in_line() -> None:
    """One flex slot, four flex calls: the first is refused; while it waits, the second is
    sent; then the refused one goes again before the third and fourth, which asked after it
    (else an evaluation's unluckiest call waits behind every call made since)."""
    from support import engine_with, error, ok

    from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

    clock = FakeClock()
    sent: list[str] = []

    async def handler(request: HTTPRequest) -> HTTPResponse:
        name = json.loads(request.body)["messages"][-1]["content"]
        sent.append(name)
        if sent == ["c0"]:
            return error(429, "no flex capacity", code="resource_unavailable")
        await clock.sleep(1.0)  # each answer takes a second: the others queue meanwhile
        return ok()

    engine = engine_with(MockTransport(handler), clock=clock, flex_concurrency=1)

    async def calls() -> None:
        tasks = []
        for i in range(4):
            message = [{"role": "user", "content": f"c{i}"}]
            tasks.append(asyncio.create_task(engine.chat(message, tier="flex")))
            await asyncio.sleep(0)  # asked in this order
        await asyncio.gather(*tasks)

    async with engine:
        await clock.drive(calls())
    assert sent == ["c0", "c1", "c0", "c2", "c3"]


CLAUDE = "claude-sonnet-4-5"


def _claude(sim: SimServer, **options: Any) -> tg.ChatEngine:
    return tg.get_engine(
        CLAUDE, provider="anthropic", base_url=sim.base_url, api_key="k", **options
    )


async def test_anthropic_batch_eval_of_500_questions_is_one_message_batch_per_evaluation(
    make_sim: Callable[..., Any],
) -> None:
    """With the Anthropic provider and eval_tier="batch", each evaluation of a 500-question test
    split is one Message Batch of its distinct requests, priced at the batch discount: the
    engine's cost equals the provider's bill."""
    sim = await make_sim(batch_completion_seconds=0, record=True)
    clock = FakeClock()
    config = apps.PromptConfig(batch_size=3, epochs=1, steps_per_epoch=2, eval_tier="batch")
    async with _claude(sim, clock=clock) as engine:
        task = _counting(test=500)
        result = await clock.drive(apps.optimize_prompt(task, engine, config=config))
    distinct = len({qa.question for qa in task.test})
    evaluations = len(result.history)
    batches = sim.stats()["batches"]["anthropic"]
    assert batches["created"] == evaluations == 3
    assert batches["requests"] == distinct * evaluations
    assert sim.stats()["batches"]["openai"]["created"] == 0
    assert result.usage["batch_calls"] == distinct * evaluations
    assert result.usage["saved_usd"] > 0
    bill = sim.stats()["bill"]["total_nano_dollars"]
    assert round(result.usage["cost_usd"] * 1e9) == pytest.approx(bill, abs=10)


async def test_failed_anthropic_batch_items_are_retried_as_ordinary_calls(
    make_sim: Callable[..., Any],
) -> None:
    """Errored items of a Message Batch are sent again as ordinary Messages calls; every call
    gets an answer."""
    sim = await make_sim(batch_completion_seconds=0, batch_failure_rate=0.25)
    async with _claude(sim, batch_min=8) as engine:
        with use_tier("batch"):
            calls = (engine.chat([{"role": "user", "content": f"q{i}"}]) for i in range(40))
            results = await asyncio.gather(*calls)
        stats = engine.stats()
    failed = sim.stats()["batches"]["anthropic"]["failed_requests"]
    assert failed > 0 and len(results) == 40 and all(r.text for r in results)
    assert stats["batch_calls"] == 40 - failed
    # the ordinary calls: one Messages call per failed item
    assert sim.stats()["anthropic"]["requests"] == failed


async def test_a_dollar_cap_reserves_the_whole_anthropic_batch_before_submitting(
    make_sim: Callable[..., Any],
) -> None:
    """A Message Batch whose worst case at batch prices does not fit the dollar cap is never
    submitted (BudgetExceededError), and nothing is spent."""
    sim = await make_sim(batch_completion_seconds=0)
    async with _claude(sim, max_cost=0.01, max_tokens=1000) as engine:
        with use_tier("batch"), pytest.raises(tg.BudgetExceededError):
            calls = (engine.chat([{"role": "user", "content": f"q{i}"}]) for i in range(40))
            await asyncio.gather(*calls)
    assert sim.stats()["batches"]["anthropic"]["created"] == 0


async def test_a_resumed_run_attaches_to_its_open_anthropic_batch(
    make_sim: Callable[..., Any], tmp_path: Path
) -> None:
    """A run whose Message Batch outlived it (batch_deadline passed) left its id in the ledger;
    a second engine on the same ledger re-attaches to that batch for the same calls instead of
    submitting them again, and journals its answers."""
    sim = await make_sim(batch_completion_seconds=3600)
    ledger = tmp_path / "batches.jsonl"
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(40)]

    async def wave(engine: tg.ChatEngine) -> list[Any]:
        with use_tier("batch"):
            return list(await asyncio.gather(*(engine.chat(m) for m in messages)))

    clock = FakeClock()
    first = _claude(sim, clock=clock, batch_min=8, batch_deadline=60)
    first.batches.ledger = BatchLedger(ledger)
    async with first:
        with pytest.raises(tg.BatchTimeoutError):
            await clock.drive(wave(first))
    (entry,) = BatchLedger(ledger).open_batches()
    assert entry.api == "anthropic" and entry.batch_id and len(entry.keys) == 40
    sim.advance(3600)  # the batch ends meanwhile

    second = _claude(sim, batch_min=8)
    second.batches.ledger = BatchLedger(ledger)
    async with second:
        results = await wave(second)
        stats = second.stats()
    assert len(results) == 40 and stats["batch_calls"] == 40
    assert second.batches.attached == 1 and second.batches.submitted == 0
    batches = sim.stats()["batches"]["anthropic"]
    assert batches["created"] == 1 and batches["requests"] == 40
    assert sim.stats()["anthropic"]["requests"] == 0  # nothing sent as an ordinary call
    assert not BatchLedger(ledger).open_batches()


async def test_an_anthropic_batch_never_recorded_as_created_is_submitted_again(
    make_sim: Callable[..., Any], tmp_path: Path
) -> None:
    """A ledger entry without a batch id (a crash before the create call answered) cannot be
    looked up on Anthropic (no metadata): its calls go in a new batch, and the old entry is
    closed."""
    sim = await make_sim(batch_completion_seconds=0)
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(10)]
    engine = _claude(sim, batch_min=8)
    keys = [engine._cache_key(engine.request(m)) for m in messages]
    ledger = BatchLedger(tmp_path / "batches.jsonl")
    ledger.record("pending", "old-tag", api="anthropic", keys=keys)
    engine.batches.ledger = ledger
    async with engine:
        with use_tier("batch"):
            await asyncio.gather(*(engine.chat(m) for m in messages))
        assert engine.stats()["batch_calls"] == 10
    assert engine.batches.submitted == 1 and engine.batches.attached == 0
    assert sim.stats()["batches"]["anthropic"]["created"] == 1
    assert not BatchLedger(tmp_path / "batches.jsonl").open_batches()


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_expired_batch_items_are_sent_as_ordinary_calls(
    api: str, make_sim: Callable[..., Any], tmp_path: Path
) -> None:
    """A batch that outlives its 24 h window expires with half its requests done: a run
    attached to it takes the done half from the batch and sends the expired half as ordinary
    calls, once each; every call gets an answer and the ledger closes the batch."""
    sim = await make_sim(batch_expire=True)
    ledger = tmp_path / "batches.jsonl"
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(40)]

    def engine(**options: Any) -> tg.ChatEngine:
        if api == "anthropic":
            made = _claude(sim, batch_min=8, **options)
        else:
            made = tg.get_engine("gpt-4o", base_url=sim.base_url, batch_min=8, **options)
        made.batches.ledger = BatchLedger(ledger)
        return made

    async def wave(engine: tg.ChatEngine) -> list[Any]:
        with use_tier("batch"):
            return list(await asyncio.gather(*(engine.chat(m) for m in messages)))

    clock = FakeClock()
    async with engine(clock=clock, batch_deadline=60) as first:
        with pytest.raises(tg.BatchTimeoutError):
            await clock.drive(wave(first))
    sim.advance(25 * 3600)  # past the 24 h window: the batch expires half done
    async with engine() as second:
        results = await wave(second)
        stats = second.stats()
    assert len(results) == 40 and all(r.text for r in results)
    assert second.batches.attached == 1 and second.batches.submitted == 0
    batches = sim.stats()["batches"][api]
    assert batches["created"] == 1 and batches["failed_requests"] == 20  # all expired
    stats_of_api = sim.stats()["anthropic"] if api == "anthropic" else sim.stats()
    ordinary = stats_of_api["requests"]
    assert stats["batch_calls"] == 20 and ordinary == 20
    assert not BatchLedger(ledger).open_batches()
