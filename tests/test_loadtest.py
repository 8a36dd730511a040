"""Streaming in the engine and `asynctg bench`: streamed answers equal plain ones with the
server's usage, retries only before the first delta, a broken stream typed; the statistics on
known samples; each workload and a sweep end to end on the simulator; percentiles against the
simulator's configured latency; 429s and dropped connections reported, not crashing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import asynctg as tg
from asynctg.cli import main
from asynctg.engine.types import Usage
from asynctg.errors import ConfigError, StreamInterruptedError
from asynctg.loadtest import (
    Lengths,
    RecordingTransport,
    Sample,
    distribution,
    knee,
    percentile,
    run_calls,
    run_steps,
    summarize,
)
from asynctg.loadtest.workloads import _arrivals, load_prompts
from asynctg.sim import SimConfig, SimServer


def _engine(sim: SimServer, **options: Any) -> Any:
    return tg.get_engine(
        "sim-1",
        base_url=sim.base_url,
        api_key="k",
        retry=tg.RetryPolicy(testing=True),
        transport=RecordingTransport(),
        **options,
    )


# --- engine.stream -----------------------------------------------------------------------------


async def test_a_stream_is_the_plain_answer_with_the_servers_usage() -> None:
    async with SimServer(SimConfig(latency="5ms", tokens_per_second=1000)) as sim:
        async with _engine(sim) as engine:
            deltas = []
            async with engine.stream("Tell me about the sea", max_tokens=64) as stream:
                async for delta in stream:
                    deltas.append(delta)
            plain = await engine.generate("Tell me about the sea", max_tokens=64)
        stats = sim.stats()
    assert "".join(deltas) == stream.text == plain
    assert len(deltas) > 3 and stream.attempts == 1 and not stream.usage_estimated
    assert stream.usage is not None
    assert stream.usage.prompt_tokens + 0 == stats["prompt_tokens"] // 2  # the plain call too
    assert stream.usage.completion_tokens == stats["completion_tokens"] // 2
    assert stream.ttft is not None and stream.ttft >= 0.005  # the simulator's latency, at least
    assert len(stream.inter_token_latencies) == len(deltas) - 1
    assert all(gap >= 0 for gap in stream.inter_token_latencies)
    assert stats["streams"] == 1


async def test_failures_after_the_first_delta_are_typed_not_retried() -> None:
    async with SimServer(SimConfig(fault_rate=1.0, faults=("drop",))) as sim:
        async with _engine(sim) as engine:
            with pytest.raises(StreamInterruptedError, match="after"):
                await engine.stream("a long enough question to stream " * 3).collect()
            assert engine.usage.retries == 0  # part of the answer was read: never re-sent
        sim.update(faults=("500",))
        async with _engine(sim) as engine:
            with pytest.raises(tg.ServerError):
                await engine.stream("x").collect()
            assert engine.usage.retries > 0  # nothing was read yet: retried, then raised


def _sse(*pieces: str, usage: tuple[int, int] | None = (7, 3)) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        events.append(
            {"choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}
        )
    lines = [f"data: {json.dumps(e)}\n\n".encode() for e in events]
    return b"".join(lines) + b"data: [DONE]\n\n"


async def test_a_stream_retried_before_its_first_byte_succeeds() -> None:
    """A 503, then a good stream: one retry, one answer; a server without usage in its
    stream gets the completion counted per chunk and the flag set."""
    from asynctg.transport import HTTPResponse, MockTransport

    answers = iter(
        [
            HTTPResponse(503, {}, b'{"error": {"message": "busy"}}'),
            HTTPResponse(200, {"content-type": "text/event-stream"}, _sse("Hel", "lo", "!")),
            HTTPResponse(200, {}, _sse("a", "b", usage=None)),
        ]
    )
    transport = MockTransport(lambda request: next(answers))
    engine = tg.get_engine(
        "m",
        base_url="http://x/v1",
        api_key="k",
        transport=transport,
        retry=tg.RetryPolicy(testing=True),
    )
    stream = engine.stream("hi")
    assert await stream.collect() == stream.result
    assert stream.text == "Hello!" and stream.attempts == 2 and engine.usage.retries == 1
    assert stream.usage == Usage(prompt_tokens=7, completion_tokens=3)
    body = json.loads(transport.requests[0].body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    bare = engine.stream("hi again")
    await bare.collect()
    assert bare.usage is not None and bare.usage.completion_tokens == 2 and bare.usage_estimated


# --- statistics --------------------------------------------------------------------------------


def test_statistics_on_known_samples() -> None:
    assert percentile([], 0.5) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0
    assert distribution(values) == {
        "mean": 50.5,
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "max": 100.0,
    }
    samples = [
        Sample(
            start=0.0, end=1.0, ttft=0.1, itl=[0.01, 0.02], prompt_tokens=10, completion_tokens=3
        ),
        Sample(start=0.5, end=2.0, ttft=0.3, itl=[0.03], prompt_tokens=20, completion_tokens=2),
        Sample(start=1.0, end=1.5, ok=False, error="RateLimitError", status=429),
    ]
    out = summarize(samples, wall=2.0, client_cpu=0.5)
    assert out["requests"] == 3 and out["ok"] == 2 and out["failed"] == 1
    assert out["errors"] == {"RateLimitError": 1} and out["error_statuses"] == {"429": 1}
    assert out["requests_per_s"] == 1.0
    assert out["input_tokens_per_s"] == 15.0 and out["output_tokens_per_s"] == 2.5
    assert out["latency_s"]["p50"] == 1.0 and out["latency_s"]["max"] == 1.5
    assert out["ttft_s"]["p99"] == 0.3 and out["itl_s"]["p50"] == 0.02
    assert out["client_busy"] == 0.25 and out["client_limited"] is False
    rows = [
        {"level": 1, "failed": 0, "latency_s": {"p99": 0.5}},
        {"level": 8, "failed": 0, "latency_s": {"p99": 1.9}},
        {"level": 64, "failed": 0, "latency_s": {"p99": 2.5}},
    ]
    assert knee(rows, 2.0) == 8 and knee(rows, 0.1) is None and knee(rows, 9.0) == 64
    assert Lengths.parse("uniform:10,20").draw(random.Random(0)) in range(10, 21)
    with pytest.raises(ConfigError):
        Lengths.parse("gamma:1,2")
    arrivals = _arrivals(1000, 50.0, random.Random(1))
    assert len(arrivals) == 1000 and arrivals == sorted(arrivals)
    assert 15 < arrivals[-1] < 25  # 1000 arrivals at 50/s: about 20 s of schedule


def test_prompts_from_a_dataset_file(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "a"}\n{"question": "b"}\n{"messages": [{"role": "user", "content": "c"}]}\n'
    )
    assert load_prompts(path) == ["a", "b", "c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"other": 1}\n')
    with pytest.raises(ConfigError, match="prompt"):
        load_prompts(bad)


# --- workloads on the simulator ----------------------------------------------------------------


async def test_calls_percentiles_sit_on_the_simulators_latency() -> None:
    """Every streamed call waits the simulator's latency before its first token, and its
    chunks come 1/tokens_per_second apart: each reported quantile is at least the configured
    one (a request can only be slower than the server made it, never faster)."""
    latency, tps = 0.03, 400.0
    async with SimServer(SimConfig(latency=f"{latency}s", tokens_per_second=tps)) as sim:
        async with _engine(sim) as engine:
            row = await run_calls(
                engine,
                requests=40,
                concurrency=8,
                prompt_tokens=Lengths.parse("64"),
                reply_tokens=Lengths.parse("32"),
            )
        stats = sim.stats()
    assert row["requests"] == row["ok"] == 40 and row["http_requests"] == 40
    assert row["ttft_s"]["p50"] >= latency and row["ttft_s"]["p99"] >= latency
    assert row["itl_s"]["p50"] >= 1 / tps * 0.99
    assert row["latency_s"]["p50"] >= latency + 31 / tps * 0.99  # TTFT + 31 more chunks
    assert row["prompt_tokens"] == stats["prompt_tokens"]
    assert row["completion_tokens"] == stats["completion_tokens"]
    assert stats["streams"] == 40 and not row["usage_estimated"]


async def test_429s_and_dropped_connections_are_reported_not_raised() -> None:
    async with SimServer(SimConfig(rpm=120, fault_rate=0.2, faults=("drop",), seed=3)) as sim:
        async with _engine(sim) as engine:
            row = await run_calls(engine, requests=12, concurrency=12, stream=False)
    assert row["requests"] == 12
    assert row["http_429"] > 0 and row["http_by_status"].get("429", 0) == row["http_429"]
    assert row["timeline"]["rate_limited_at"]  # when they came
    # the engine retried every 429 and every dropped connection: all 12 calls answered
    assert row["ok"] == 12 and row["http_by_status"]["APIConnectionError"] >= 1
    assert (
        row["retries"]
        == row["http_requests"] - 12
        == row["http_429"]
        + sum(n for k, n in row["http_by_status"].items() if k == "APIConnectionError")
    )


async def test_a_step_workload_is_the_dependency_shaped_burst() -> None:
    batch, steps = 4, 2
    async with SimServer(SimConfig(latency="20ms")) as sim:
        async with _engine(sim) as engine:
            out = await run_steps(engine, batch_size=batch, steps=steps, rpm=6000)
    assert out["calls"] == steps * (3 * batch + 1)
    assert out["calls_by_kind"] == {
        "backward": 2 * batch * steps,
        "forward": batch * steps,
        "optimizer": steps,
    }
    assert len(out["step_s"]) == steps
    assert out["critical_path_bound_s"] is not None
    assert min(out["step_s"]) >= out["critical_path_bound_s"] * 0.5
    assert out["budget_floor_s"] == pytest.approx(60 * (3 * batch + 1) / 6000)
    assert out["rpm_used"] > 0  # requests per minute / the budget given


def test_bench_command_sweeps_and_reports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "report"
    code = main(
        [
            "bench",
            "--sim",
            "--sim-latency",
            "5ms",
            "--concurrency",
            "1,4",
            "--requests",
            "12",
            "--prompt-tokens",
            "uniform:16,64",
            "--reply-tokens",
            "16",
            "--slo-p99",
            "30s",
            "--json",
            "--quiet",
            "--report",
            str(report),
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["knee"] == 4 and [r["level"] for r in out["levels"]] == [1, 4]
    for row in out["levels"]:
        assert row["ok"] == 12 and row["ttft_s"]["p50"] is not None
        assert "samples" not in row
    page = (report / "report.html").read_text()
    assert page.count("<svg") >= 3 and "knee" in page
    assert json.loads((report / "report.json").read_text())["knee"] == 4
    code = main(
        [
            "bench",
            "--sim",
            "--workload",
            "step",
            "--batch-size",
            "3",
            "--steps",
            "1",
            "--sim-latency",
            "2ms",
            "--rpm",
            "6000",
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "critical-path bound" in text and "budget floor" in text
    assert main(["bench", "--sim", "--rate", "1", "--concurrency", "2"]) == 2
    assert "--rate" in capsys.readouterr().err


async def test_without_retries_429s_are_failures_by_kind() -> None:
    async with SimServer(SimConfig(rpm=60)) as sim:
        engine = tg.get_engine(
            "sim-1",
            base_url=sim.base_url,
            api_key="k",
            retry=tg.RetryPolicy(max_attempts=1, max_rate_limit_attempts=1),
            transport=RecordingTransport(),
        )
        async with engine:
            row = await run_calls(engine, requests=10, concurrency=10, stream=True)
    assert row["failed"] > 0 and row["errors"] == {"RateLimitError": row["failed"]}
    assert row["error_statuses"] == {"429": row["failed"]} and row["http_429"] == row["failed"]
    assert row["ok"] + row["failed"] == 10


async def test_an_optimize_workload_is_steps_and_test_evaluations() -> None:
    batch, steps, test = 3, 2, 5
    async with SimServer(SimConfig(latency="2ms")) as sim:
        async with _engine(sim) as engine:
            out = await run_steps(engine, batch_size=batch, steps=steps, test_size=test)
    assert out["workload"] == "optimize"
    # each step's 3B+1 calls, and the test split answered before the first step and after each
    assert out["calls"] == steps * (3 * batch + 1) + (steps + 1) * test
    assert len(out["test_accuracy"]) == steps + 1 and len(out["step_s"]) == steps


async def test_a_recorded_stream_replays_without_a_provider(tmp_path: Path) -> None:
    journal = tmp_path / "journal.bin"
    async with SimServer(SimConfig(latency="1ms")) as sim:
        async with _engine(sim, cache=journal, cache_mode="record") as engine:
            recorded = await engine.stream("Once upon a time", max_tokens=32).collect()
    replayer = tg.get_engine(
        "sim-1",
        base_url="http://replay.invalid/v1",
        api_key="k",
        cache=journal,
        cache_mode="replay",
    )
    async with replayer:
        stream = replayer.stream("Once upon a time", max_tokens=32)
        assert [d async for d in stream] == [recorded.text]
        with pytest.raises(tg.ReplayMissError):
            await replayer.stream("another story", max_tokens=32).collect()
