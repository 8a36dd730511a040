"""asynctg against llama-cpp-python's OpenAI-compatible server with a real (tiny) model.

Real tokens and usage fields, real error shapes, a single decoding slot, no rate-limit headers,
and a 135M-parameter model that often ignores format instructions: every run here must still
end cleanly, with a typed error where the model's output cannot be used.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llamafix import N_CTX, LlamaServer

import asynctg as tg
from asynctg.engine import RetryPolicy
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse

pytestmark = pytest.mark.timeout(600)  # CPU inference on 2 cores: seconds per call

SHORT = {"max_tokens": 48}


def _engine(server: LlamaServer, **options: object) -> tg.ChatEngine:
    options.setdefault("retry", RetryPolicy(initial_delay=0.05, max_delay=0.5, max_attempts=3))
    options.setdefault("max_tokens", 64)
    return tg.get_engine(server.model, base_url=server.base_url, api_key="sk-none", **options)  # type: ignore[arg-type]


async def test_plain_call_returns_text_and_real_usage(llama_server: LlamaServer) -> None:
    async with _engine(llama_server) as engine:
        text = await engine.generate("Name a colour.", "Answer in one word.", **SHORT)
        assert isinstance(text, str) and text.strip()
        stats = engine.stats()
        assert stats["requests"] == 1 and stats["failures"] == 0
        assert stats["prompt_tokens"] > 5 and stats["completion_tokens"] > 0


async def test_concurrency_beyond_its_single_slot(llama_server: LlamaServer) -> None:
    """Eight calls at once on a server that decodes one at a time: all answered, none lost."""
    async with _engine(llama_server) as engine:
        prompts = [f"Say the number {i}." for i in range(8)]
        texts = await asyncio.gather(*(engine.generate(p, **SHORT) for p in prompts))
        assert len(texts) == 8 and all(t.strip() for t in texts)
        stats = engine.stats()
        assert stats["calls"] == 8 and stats["failures"] == 0


async def test_over_long_prompt_is_a_context_length_error(llama_server: LlamaServer) -> None:
    """A prompt past n_ctx gets llama.cpp's 400, which maps to ContextLengthError, at once."""
    too_long = "word " * (N_CTX * 2)
    async with _engine(llama_server) as engine:
        with pytest.raises(tg.ContextLengthError) as caught:
            await engine.generate(too_long, **SHORT)
        assert caught.value.status == 400
        assert engine.stats()["requests"] == 1  # a 400 is never retried


class _Corrupting(AiohttpTransport):
    """The real transport, but every body it sends is cut short: a malformed request."""

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        broken = HTTPRequest(
            request.method,
            request.url,
            # The server may drop a connection after such a request: do not reuse it.
            headers={**request.headers, "connection": "close"},
            body=request.body[: len(request.body) // 2],
            timeout=request.timeout,
        )
        return await super().send(broken)


async def test_malformed_request_gets_a_plain_text_500_read_as_server_error(
    llama_server: LlamaServer,
) -> None:
    """llama.cpp answers a body that is not JSON with a plain-text 500 (no OpenAI error object):
    asynctg retries it as a server fault, then raises ServerError carrying the text."""
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=2)
    async with _engine(llama_server, transport=_Corrupting(), retry=policy) as engine:
        with pytest.raises(tg.ServerError) as caught:
            await engine.generate("Name a colour.", **SHORT)
    error = caught.value
    assert error.status == 500
    assert error.body is not None and "Internal Server Error" in error.body
    with pytest.raises(json.JSONDecodeError):
        json.loads(error.body)  # plain text, as the server sent it
    stats = engine.stats()
    assert stats["requests"] == 2 and stats["retries"] == 1 and stats["failures"] == 1


async def test_invalid_field_gets_a_json_500_read_as_server_error(
    llama_server: LlamaServer,
) -> None:
    """A field of the wrong type is a validation error that llama.cpp reports as a 500 with an
    OpenAI-style JSON error: typed ServerError, with the server's message in it."""
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=1)
    async with _engine(llama_server, retry=policy) as engine:
        with pytest.raises(tg.ServerError, match="valid integer"):
            await engine.chat([{"role": "user", "content": "hi"}], top_k="many")


async def test_a_prompt_optimization_step_ends_cleanly(llama_server: LlamaServer) -> None:
    """The paper's step (B=2, string loss): feedback for both samples, then a new prompt, or,
    when the tiny model will not answer inside the tags, OptimizerParseError and no change."""
    async with _engine(llama_server, max_tokens=96) as engine:
        prompt_text = "Answer the question. End with 'Answer: N'."
        system_prompt = tg.Variable(
            prompt_text, requires_grad=True, role_description="system prompt to the model"
        )
        model = tg.BlackboxLLM(engine, system_prompt)

        def exact(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> int:
            return int(str(ground_truth_answer.value) in str(prediction.value))

        check = tg.autograd.StringBasedFunction(exact, function_purpose="checks the answer")
        optimizer = tg.TGD(engine=engine, parameters=[system_prompt])
        batch = [("I have two apples and a pear. How many fruits?", "3"), ("2 + 2?", "4")]

        async def loss(q: str, a: str) -> tg.Variable:
            x = tg.Variable(q, requires_grad=False, role_description="question")
            y = tg.Variable(a, requires_grad=False, role_description="correct answer")
            return await check(inputs=dict(prediction=await model(x), ground_truth_answer=y))

        losses = await asyncio.gather(*(loss(q, a) for q, a in batch))
        await tg.sum(list(losses)).backward(engine)
        assert len(system_prompt.gradients) == 2
        try:
            await optimizer.step()
        except tg.OptimizerParseError as exc:
            assert system_prompt.value == prompt_text  # nothing half-applied
            assert exc.reply is not None
        else:
            assert system_prompt.value.strip()
        assert engine.stats()["failures"] == 0


def test_cli_optimize_runs_one_step_and_ends_cleanly(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    """`asynctg optimize` for one step against the real server, in a subprocess as a user runs
    it: exit 0 whatever the tiny model writes, a report, and a history with one step."""
    report = tmp_path / "report"
    command = [
        sys.executable,
        "-m",
        "asynctg",
        "optimize",
        "--task",
        "object_counting",
        "--base-url",
        llama_server.base_url,
        "--model",
        llama_server.model,
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--epochs",
        "1",
        "--test-size",
        "2",
        "--max-tokens",
        "96",
        "--json",
        "--quiet",
        "--report",
        str(report),
    ]
    env = {**os.environ, "OPENAI_API_KEY": "sk-none"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=540, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert len(result["history"]) == 2  # before training, and the one step
    assert result["usage"]["provider_calls"] >= 2 + 3 * 2  # test answers + the step's calls
    assert (report / "report.html").is_file() and (report / "report.json").is_file()


async def test_a_stream_from_llama_cpp(llama_server: LlamaServer) -> None:
    """Streamed from a real server: deltas as they are decoded, TTFT and inter-token latency
    measured, the text and the completion tokens equal to the same request unstreamed. This
    server sends no usage in streams, so the completion is counted per chunk (one token each)
    and the prompt estimated; the result says so."""
    request = {"max_tokens": 24, "seed": 7}
    messages = [{"role": "user", "content": "Count from one to five."}]
    async with _engine(llama_server) as engine:
        # llama-cpp-python reuses the previous prompt's KV cache, and greedy decoding after a
        # partial reuse can differ from a fresh evaluation: every compared request follows the
        # same prompt (a warm-up first), so both are decoded from the same state.
        await engine.chat(messages, **request)
        async with engine.stream("Count from one to five.", **request) as stream:
            deltas = [delta async for delta in stream]
        plain = await engine.chat(messages, **request)  # sent again: this engine has no cache
    assert "".join(deltas) == stream.text == plain.text
    assert len(deltas) >= 2 and stream.ttft is not None and stream.ttft > 0
    assert len(stream.inter_token_latencies) >= 1
    assert stream.usage is not None
    assert stream.usage.completion_tokens == plain.usage.completion_tokens
    assert stream.usage_estimated or stream.usage.prompt_tokens == plain.usage.prompt_tokens


def test_bench_command_against_llama_cpp(llama_server: LlamaServer, tmp_path: Path) -> None:
    """`asynctg bench` end to end on the real server: a two-level sweep, streamed, with a
    report; TTFT and inter-token latency come from its real token timing; what the server
    does to concurrent streams is reported by kind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run(
        [
            sys.executable, "-m", "asynctg", "bench", "--base-url", llama_server.base_url,
            "--model", llama_server.model, "--api-key-env", "NO_KEY_HERE",
            "--concurrency", "1,2", "--requests", "4", "--prompt-tokens", "16",
            "--reply-tokens", "12", "--slo-p99", "120s", "--json", "--quiet",
            "--report", str(tmp_path / "report"),
        ],
        capture_output=True, text=True, env=env, timeout=540,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    one, two = data["levels"]
    assert (one["level"], two["level"]) == (1, 2)
    assert one["ok"] == 4 and one["failed"] == 0
    # llama-cpp-python interrupts a running stream when another request arrives (its
    # interrupt_requests default): cut before the first token the engine retries it, after
    # it the report counts it as a StreamInterruptedError. Reported, never a crash:
    assert two["ok"] + two["failed"] == 4
    assert set(two["errors"]) <= {"StreamInterruptedError"}
    assert data["knee"] == (2 if two["failed"] == 0 else 1)
    for row in (one, two):
        assert row["ttft_s"]["p50"] > 0 and row["itl_s"]["p50"] is not None
        assert row["output_tokens_per_s"] > 0
    assert (tmp_path / "report" / "report.html").exists()
