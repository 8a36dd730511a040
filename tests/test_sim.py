"""The simulated provider, tested over real loopback HTTP with a plain aiohttp client."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from random import Random
from typing import Any

import aiohttp
import pytest

from asynctg.sim import (
    LatencyModel,
    RateLimiter,
    SimConfig,
    SimServer,
    TokenBucket,
    add_arguments,
    format_duration,
    parse_latency,
    run_from_args,
)
from asynctg.sim.answers import (
    PROMPT_TIPS,
    count_objects,
    counting_accuracy,
    default_answer,
)
from asynctg.sim.buckets import EARLY_TOLERANCE
from asynctg.sim.tokens import prompt_tokens

MakeSim = Callable[..., Awaitable[SimServer]]
Reply = tuple[int, "aiohttp.typedefs.LooseHeaders", bytes]

USER = [{"role": "user", "content": "Write a haiku about the sea."}]
COUNTING_QUESTION = (
    "I have a flute, a piano, two cats, a trombone, four stoves, a violin, an accordion, "
    "three goats, a clarinet, a drum, two lamps, and a trumpet. "
    "How many musical instruments do I have?"
)
COUNTING_FORMAT = (
    "You will answer a reasoning question. Think step by step. The last line of your response "
    "should be of the following format: 'Answer: $VALUE' where VALUE is a numerical value."
)
OPTIMIZER_PROMPT = (
    "Here is the role of the variable you will improve: <ROLE>system prompt</ROLE>.\n"
    "The variable is the text within the following span: <VARIABLE> Be concise. </VARIABLE>\n"
    "Here is the feedback we got: <FEEDBACK>Ask for step by step reasoning.</FEEDBACK>\n"
    "Send the improved variable in the following format:\n\n"
    "<IMPROVED_VARIABLE>{the improved variable}</IMPROVED_VARIABLE>\n\n"
    "Send ONLY the improved variable between the <IMPROVED_VARIABLE> tags, and nothing else."
)


def _user(text: str, system: str | None = None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    return messages


async def post(
    http: aiohttp.ClientSession,
    sim: SimServer,
    messages: Any = USER,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[int, Any, bytes]:
    """POST a chat completion; return (status, headers, raw body)."""
    payload = {"model": "gpt-test", "messages": messages, **params}
    async with http.post(f"{sim.base_url}/chat/completions", json=payload, headers=headers) as r:
        return r.status, r.headers, await r.read()


# --------------------------------------------------------------------------- completions


async def test_completion_has_openai_shape(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A normal request gets an OpenAI chat.completion with n choices, usage and a request id."""
    sim = await make_sim()
    status, headers, raw = await post(http, sim, n=3)
    assert status == 200
    assert headers["x-request-id"]
    body = json.loads(raw)
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-test"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for choice in body["choices"]:
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"]
        assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    expected_prompt = 4 + math.ceil(len(USER[0]["content"]) / 4)
    assert usage["prompt_tokens"] == prompt_tokens(USER) == expected_prompt
    completion = sum(math.ceil(len(c["message"]["content"]) / 4) for c in body["choices"])
    assert usage["completion_tokens"] == completion
    assert usage["total_tokens"] == usage["prompt_tokens"] + completion


async def test_default_model_and_chat_path(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Without a model the configured model_name is reported; /chat/completions also works."""
    sim = await make_sim(model_name="sim-x")
    async with http.post(f"{sim.url}/chat/completions", json={"messages": USER}) as r:
        assert r.status == 200
        assert (await r.json())["model"] == "sim-x"


async def test_max_tokens_truncates(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """max_tokens (or max_completion_tokens) cuts the answer and sets finish_reason=length."""
    sim = await make_sim()
    for param in ("max_tokens", "max_completion_tokens"):
        params: dict[str, Any] = {param: 3}
        status, _, raw = await post(http, sim, **params)
        body = json.loads(raw)
        assert status == 200
        assert body["choices"][0]["finish_reason"] == "length"
        assert len(body["choices"][0]["message"]["content"]) == 12
        assert body["usage"]["completion_tokens"] == 3


async def test_images_count_fixed_tokens(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Content parts are accepted; an image costs 85 prompt tokens."""
    sim = await make_sim()
    parts = [
        {"type": "text", "text": "abcdefgh"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    status, _, raw = await post(http, sim, [{"role": "user", "content": parts}])
    assert status == 200
    assert json.loads(raw)["usage"]["prompt_tokens"] == 4 + 2 + 85


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"[1, 2]", b'{"model": "m"}', b'{"messages": []}', b'{"messages": [1]}'],
)
async def test_bad_body_is_400(
    make_sim: MakeSim, http: aiohttp.ClientSession, payload: bytes
) -> None:
    """Malformed JSON or missing/invalid messages get a 400 in OpenAI's error shape."""
    sim = await make_sim()
    async with http.post(f"{sim.base_url}/chat/completions", data=payload) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None and error["code"] is None
    assert error["message"]
    assert sim.stats()["bad_request"] == 1


async def test_models_endpoint(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """GET /v1/models lists the configured model."""
    sim = await make_sim(model_name="sim-2")
    async with http.get(f"{sim.base_url}/models") as r:
        body = await r.json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == "sim-2" and body["data"][0]["object"] == "model"


async def test_same_request_same_answer(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Answers are deterministic in (seed, request): the same request twice gets the same text."""
    sim = await make_sim()
    messages = _user(OPTIMIZER_PROMPT)
    first = json.loads((await post(http, sim, messages))[2])["choices"][0]["message"]["content"]
    again = json.loads((await post(http, sim, messages))[2])["choices"][0]["message"]["content"]
    assert first == again


# --------------------------------------------------------------------------- answers


async def test_optimizer_request_gets_improved_variable(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """An optimizer request is answered with the variable's text plus one tip, inside tags."""
    sim = await make_sim()
    _, _, raw = await post(http, sim, _user(OPTIMIZER_PROMPT, system="You are an optimizer."))
    content = json.loads(raw)["choices"][0]["message"]["content"]
    assert content.startswith("<IMPROVED_VARIABLE>Be concise. ")
    assert content.endswith("</IMPROVED_VARIABLE>")
    inner = content.removeprefix("<IMPROVED_VARIABLE>").removesuffix("</IMPROVED_VARIABLE>")
    assert inner.removeprefix("Be concise. ") in PROMPT_TIPS


def test_repeated_optimization_keeps_changing_the_prompt() -> None:
    """Feeding the improved value back in appends a new tip each time, never a repeat."""
    value = "Be concise."
    for step in range(4):
        prompt = OPTIMIZER_PROMPT.replace("Be concise.", value)
        reply = default_answer({"messages": _user(prompt)}, Random(step))
        new_value = reply.removeprefix("<IMPROVED_VARIABLE>").removesuffix("</IMPROVED_VARIABLE>")
        assert new_value.startswith(value) and len(new_value) > len(value)
        value = new_value
    assert len({tip for tip in PROMPT_TIPS if tip in value}) == 4


def test_glossary_mentions_of_the_variable_tag_are_not_the_value() -> None:
    """A system prompt that mentions <VARIABLE> before the real block does not leak into it."""
    messages = [
        {
            "role": "system",
            "content": "Tags: - <VARIABLE>: the text. Answer in <IMPROVED_VARIABLE>.",
        },
        {
            "role": "user",
            "content": "Improve: <VARIABLE> Be brief. </VARIABLE> <IMPROVED_VARIABLE>",
        },
    ]
    reply = default_answer({"messages": messages}, Random(0))
    assert reply.startswith("<IMPROVED_VARIABLE>Be brief. ")
    assert "Tags" not in reply


def test_custom_new_value_tag() -> None:
    """An instruction naming another tag for the new value is answered with that tag."""
    prompt = (
        "Improve this prompt: <VARIABLE>Say hi.</VARIABLE> and send the new prompt "
        "between <NEW_PROMPT> and </NEW_PROMPT>."
    )
    reply = default_answer({"messages": _user(prompt)}, Random(0))
    assert reply.startswith("<NEW_PROMPT>Say hi. ") and reply.endswith("</NEW_PROMPT>")


async def test_judge_gets_accuracy_tags(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """An LLM-judge request ends with <ACCURACY> 0 or 1 </ACCURACY>."""
    sim = await make_sim()
    prompt = (
        "Is the answer correct? Question: 2+2. Answer: 4. Reply with your evaluation, then "
        "<ACCURACY> 1 </ACCURACY> if correct or <ACCURACY> 0 </ACCURACY> if not."
    )
    _, _, raw = await post(http, sim, _user(prompt))
    content = json.loads(raw)["choices"][0]["message"]["content"]
    assert content.endswith(("<ACCURACY> 1 </ACCURACY>", "<ACCURACY> 0 </ACCURACY>"))
    assert len(content) > len("<ACCURACY> 1 </ACCURACY>")


def test_backward_request_gets_plain_feedback() -> None:
    """A backward request (<OBJECTIVE_FUNCTION>) gets 2-3 sentences of feedback and no tags."""
    prompt = (
        "<LM_SYSTEM_PROMPT>Judge with <ACCURACY> tags.</LM_SYSTEM_PROMPT>"
        "<LM_INPUT>q</LM_INPUT><LM_OUTPUT>a</LM_OUTPUT><VARIABLE>a</VARIABLE>"
        "<OBJECTIVE_FUNCTION>be correct</OBJECTIVE_FUNCTION> Give feedback."
    )
    for seed in range(5):
        reply = default_answer({"messages": _user(prompt)}, Random(seed))
        assert "<" not in reply
        assert reply.count(".") in (2, 3)


def test_count_objects_counts_the_asked_category() -> None:
    """The counting rule reads number words and a/an, and keeps only the asked category."""
    count, items, asked = count_objects(COUNTING_QUESTION) or (0, [], "")
    assert asked == "musical instruments"
    assert count == 8  # flute, piano, trombone, violin, accordion, clarinet, drum, trumpet
    assert "four stoves" not in items
    animals = COUNTING_QUESTION.replace("musical instruments", "animals")
    assert (count_objects(animals) or (0,))[0] == 5
    everything = COUNTING_QUESTION.replace("musical instruments", "objects")
    assert (count_objects(everything) or (0,))[0] == 19
    assert count_objects("What is 2 + 2?") is None


def test_counting_accuracy_grows_with_system_prompt() -> None:
    """Long system prompts make right counts likely; short ones about half; misses are ±1."""
    long_prompt = COUNTING_FORMAT + " Count carefully." * 100
    assert counting_accuracy(long_prompt) == 0.95
    assert counting_accuracy("") == 0.5

    def accuracy(system: str) -> float:
        right = 0
        for seed in range(200):
            reply = default_answer({"messages": _user(COUNTING_QUESTION, system)}, Random(seed))
            value = int(reply.rsplit("Answer:", 1)[1])
            assert abs(value - 8) <= 1
            right += value == 8
        return right / 200

    assert accuracy(long_prompt) >= 0.9
    assert 0.35 <= accuracy(COUNTING_FORMAT) <= 0.75


async def test_object_counting_over_http(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Over HTTP, a long system prompt gets right 'Answer: N' counts nearly always."""
    sim = await make_sim()
    system = COUNTING_FORMAT + " Think about every item before adding it up." * 40
    right = 0
    for bananas in range(10):
        # bananas are fruit: listed, but never counted as musical instruments
        question = COUNTING_QUESTION.replace("a drum", "a drum" + ", a banana" * bananas)
        if bananas % 2:
            question = question.replace("a trumpet", "two trumpets")
        truth = 9 if bananas % 2 else 8
        _, _, raw = await post(http, sim, _user(question, system))
        content = json.loads(raw)["choices"][0]["message"]["content"]
        right += content.splitlines()[-1] == f"Answer: {truth}"
    assert right >= 8


def test_generic_answer_quotes_the_question() -> None:
    """Requests matching no rule get a short generic answer quoting the user's words."""
    reply = default_answer({"messages": USER}, Random(1))
    assert "Write a haiku about the sea." in reply


# --------------------------------------------------------------------------- buckets


class FakeClock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_bucket_refills_continuously() -> None:
    """A bucket starts full, refills at rate per second and never above capacity."""
    clock = FakeClock()
    bucket = TokenBucket(capacity=5, rate=2, now=clock)
    assert bucket.try_take(5) == 0.0
    assert bucket.try_take(1) == pytest.approx(0.5)
    clock.t += 0.25
    assert bucket.level == pytest.approx(0.5)
    assert bucket.wait_time(1) == pytest.approx(0.25)
    clock.t += 100
    assert bucket.level == 5
    assert bucket.remaining() == bucket.limit and bucket.reset_seconds() == 0


def test_bucket_admits_oversized_request_when_full() -> None:
    """A request bigger than the capacity passes from a full bucket, and its debt is repaid."""
    clock = FakeClock()
    bucket = TokenBucket(capacity=10, rate=10, now=clock)
    assert bucket.try_take(25) == 0.0
    assert bucket.level == -15
    assert bucket.remaining() == 0
    assert bucket.wait_time(1) == pytest.approx(1.6)
    assert bucket.wait_time(25) == pytest.approx(2.5)  # needs a full bucket again
    assert bucket.reset_seconds() == pytest.approx(2.5)


def test_bucket_admits_slightly_early_requests() -> None:
    """A request arriving within EARLY_TOLERANCE of fitting is admitted; earlier is refused."""
    clock = FakeClock()
    bucket = TokenBucket(capacity=1, rate=1, now=clock)
    assert bucket.try_take(1) == 0.0
    clock.t += 1 - EARLY_TOLERANCE / 2
    assert bucket.try_take(1) == 0.0
    clock.t += 1 - 2 * EARLY_TOLERANCE
    assert bucket.try_take(1) > EARLY_TOLERANCE
    strict = TokenBucket(capacity=1, rate=1, now=clock, tolerance=0)
    strict.take(1)
    clock.t += 0.999
    assert strict.try_take(1) == pytest.approx(0.001)


def test_per_minute_buckets_hold_one_second() -> None:
    """rpm/tpm buckets hold a second's worth (at least 1) and refill at limit/60 per second."""
    clock = FakeClock()
    fast = TokenBucket.per_minute(60_000, clock)
    assert (fast.capacity, fast.rate, fast.limit) == (1000, 1000, 60_000)
    slow = TokenBucket.per_minute(30, clock)
    assert (slow.capacity, slow.rate, slow.limit) == (1, 0.5, 30)
    assert slow.try_take(1) == 0.0
    assert slow.try_take(1) == pytest.approx(2.0)


def test_limiter_refusal_consumes_nothing() -> None:
    """A refused request charges neither bucket and names the budget that binds."""
    clock = FakeClock()
    limiter = RateLimiter.from_limits(rpm=60, tpm=6000, now=clock)  # 1 request, 100 tokens
    assert limiter.requests is not None and limiter.tokens is not None
    assert limiter.admit(10) == (None, 0.0)
    which, wait = limiter.admit(10)
    assert which == "requests" and wait == pytest.approx(1.0)
    assert limiter.tokens.level == pytest.approx(90)  # not charged by the refusal
    clock.t += 1.0
    assert limiter.admit(10) == (None, 0.0)

    limiter = RateLimiter.from_limits(rpm=600, tpm=60, now=clock)  # 10 requests, 1 token
    assert limiter.requests is not None and limiter.tokens is not None
    assert limiter.admit(1) == (None, 0.0)
    which, wait = limiter.admit(5)
    assert which == "tokens" and wait == pytest.approx(1.0)
    assert limiter.requests.level == pytest.approx(9)


def test_format_duration_like_openai() -> None:
    """Waits print as OpenAI's reset headers do: 6ms, 1.2s, 1m0s."""
    assert format_duration(0.006) == "6ms"
    assert format_duration(0.0061) == "7ms"
    assert format_duration(1.2) == "1.2s"
    assert format_duration(60) == "1m0s"
    assert format_duration(0) == "0s"


# --------------------------------------------------------------------------- rate limits


async def test_rpm_second_request_is_429(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """With rpm=60 (capacity 1) a second back-to-back request gets 429 with retry headers."""
    sim = await make_sim(rpm=60)
    status, headers, _ = await post(http, sim)
    assert status == 200
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    status, headers, raw = await post(http, sim)
    assert status == 429
    assert 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
    error = json.loads(raw)["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert "Please try again in" in error["message"]
    stats = sim.stats()
    assert (stats["ok"], stats["rate_limited"], stats["rate_limited_requests"]) == (1, 1, 1)


async def test_tpm_limit(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """The tokens bucket is charged prompt+completion; the next request is refused as tokens."""
    sim = await make_sim(tpm=600)  # 10 tokens per second, less than one request
    status, headers, raw = await post(http, sim)
    assert status == 200
    total = json.loads(raw)["usage"]["total_tokens"]
    assert total > 10
    assert headers["x-ratelimit-limit-tokens"] == "600"
    assert "x-ratelimit-limit-requests" not in headers
    status, headers, raw = await post(http, sim)
    assert status == 429
    assert json.loads(raw)["error"]["type"] == "tokens"
    # the debt of the first request (total - 10 tokens) plus a full bucket, at 10 tokens/s
    assert int(headers["retry-after-ms"]) == pytest.approx(total * 100, abs=30)


async def test_no_rate_limit_headers(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """rate_limit_headers=False drops x-ratelimit-* but a 429 still says when to retry."""
    sim = await make_sim(rpm=60, rate_limit_headers=False)
    _, headers, _ = await post(http, sim)
    assert not any(h.lower().startswith("x-ratelimit") for h in headers)
    status, headers, _ = await post(http, sim)
    assert status == 429 and "retry-after-ms" in headers
    assert not any(h.lower().startswith("x-ratelimit") for h in headers)


async def test_update_rebuilds_limits(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """sim.update changes settings live; invalid updates raise ValueError and change nothing."""
    sim = await make_sim()
    assert [(await post(http, sim))[0] for _ in range(3)] == [200, 200, 200]
    sim.update(rpm=60)
    assert [(await post(http, sim))[0] for _ in range(2)] == [200, 429]
    with pytest.raises(ValueError, match="fault_rate"):
        sim.update(fault_rate=2)
    with pytest.raises(ValueError, match="accepted"):
        sim.update(rmp=10)
    assert sim.config.rpm == 60 and sim.config.fault_rate == 0
    async with http.post(f"{sim.url}/sim/config", json={"rpm": None}) as r:
        assert r.status == 200
    assert sim.config.rpm is None
    async with http.post(f"{sim.url}/sim/config", json={"rpm": -1}) as r:
        assert r.status == 400


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["500", "502", "504"])
async def test_server_error_faults(
    make_sim: MakeSim, http: aiohttp.ClientSession, kind: str
) -> None:
    """5xx faults answer their status with a server_error body."""
    sim = await make_sim(fault_rate=1.0, faults=(kind,))
    status, _, raw = await post(http, sim)
    assert status == int(kind)
    assert json.loads(raw)["error"]["type"] == "server_error"
    assert sim.stats()["faults"] == {kind: 1}


async def test_503_fault_is_plain_text(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A 503 fault answers in plain text, like a proxy in front of the provider."""
    sim = await make_sim(fault_rate=1.0, faults=("503",))
    status, headers, _ = await post(http, sim)
    assert status == 503 and headers["Content-Type"].startswith("text/plain")


async def test_drop_fault_disconnects(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A dropped connection surfaces as a client disconnection error, not a hang."""
    sim = await make_sim(fault_rate=1.0, faults=("drop",))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await asyncio.wait_for(post(http, sim), 5)
    sim.update(fault_rate=0.0)
    assert (await post(http, sim))[0] == 200  # the server keeps serving
    assert sim.stats()["faults"] == {"drop": 1}


@pytest.mark.parametrize("kind", ["malformed", "truncated"])
async def test_unparseable_200_faults(
    make_sim: MakeSim, http: aiohttp.ClientSession, kind: str
) -> None:
    """Malformed and truncated faults are 200s whose body is not valid JSON."""
    sim = await make_sim(fault_rate=1.0, faults=(kind,))
    status, _, raw = await post(http, sim)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    if kind == "truncated":
        assert raw.startswith(b'{"id":"chatcmpl-')


async def test_shape_faults(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """empty_choices gives "choices": []; no_content gives a message without content."""
    sim = await make_sim(fault_rate=1.0, faults=("empty_choices",))
    status, _, raw = await post(http, sim)
    assert status == 200 and json.loads(raw)["choices"] == []
    sim.update(faults=("no_content",))
    status, _, raw = await post(http, sim)
    message = json.loads(raw)["choices"][0]["message"]
    assert status == 200 and message == {"role": "assistant"}


async def test_slow_fault(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A slow fault sleeps slow_seconds, then answers normally."""
    sim = await make_sim(fault_rate=1.0, faults=("slow",), slow_seconds=0.2)
    start = time.monotonic()
    status, _, raw = await post(http, sim)
    assert time.monotonic() - start >= 0.2
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"]
    stats = sim.stats()
    assert stats["faults"] == {"slow": 1} and stats["ok"] == 1


async def test_fault_draws_reproducible(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Same seed and request sequence give the same faults; another seed gives others."""
    faults = ("500", "502", "empty_choices")

    async def statuses(seed: int) -> list[tuple[int, int]]:
        sim = await make_sim(fault_rate=0.5, faults=faults, seed=seed)
        out = []
        for _ in range(30):
            status, _, raw = await post(http, sim)
            out.append((status, len(json.loads(raw).get("choices", [1]))))
        return out

    first, again, other = await statuses(7), await statuses(7), await statuses(8)
    assert first == again
    assert first != other
    assert len(set(first)) == 4  # ok, 500, 502 and empty choices all occurred


async def test_latency_is_slept(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A fixed latency delays every answer by about that much."""
    sim = await make_sim(latency="50ms")
    start = time.monotonic()
    await asyncio.gather(*(post(http, sim) for _ in range(5)))
    assert 0.05 <= time.monotonic() - start < 1.0


# --------------------------------------------------------------------------- account errors


async def test_quota_exhausted(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Once quota_tokens are served every request is 429 insufficient_quota, no retry-after."""
    sim = await make_sim(quota_tokens=10)
    assert (await post(http, sim))[0] == 200
    status, headers, raw = await post(http, sim)
    assert status == 429
    assert "retry-after" not in headers and "retry-after-ms" not in headers
    error = json.loads(raw)["error"]
    assert error["code"] == error["type"] == "insufficient_quota"
    assert "exceeded your current quota" in error["message"]
    assert sim.stats()["quota_exceeded"] == 1


async def test_context_window(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A prompt longer than context_window gets 400 context_length_exceeded."""
    sim = await make_sim(context_window=20)
    assert (await post(http, sim))[0] == 200
    status, _, raw = await post(http, sim, _user("word " * 100))
    error = json.loads(raw)["error"]
    assert status == 400
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"


async def test_api_key(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """With api_key set, a missing or wrong bearer token is 401 invalid_api_key."""
    sim = await make_sim(api_key="sk-sim")
    status, _, raw = await post(http, sim)
    assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    status, _, _ = await post(http, sim, headers={"Authorization": "Bearer nope"})
    assert status == 401
    status, _, _ = await post(http, sim, headers={"Authorization": "Bearer sk-sim"})
    assert status == 200
    assert sim.stats()["unauthorized"] == 2


# --------------------------------------------------------------------------- stats


async def test_stats_and_timeline(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """stats() counts each outcome; the timeline has ok requests, their tokens and 429s."""
    sim = await make_sim(rpm=120)  # capacity 2
    replies = [await post(http, sim) for _ in range(3)]
    assert [r[0] for r in replies] == [200, 200, 429]
    tokens = sum(json.loads(r[2])["usage"]["total_tokens"] for r in replies[:2])
    stats = sim.stats()
    assert stats["requests"] == 3 and stats["ok"] == 2 and stats["rate_limited"] == 1
    assert stats["prompt_tokens"] + stats["completion_tokens"] == tokens
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    assert stats["faults_total"] == 0 and stats["elapsed"] >= 0
    assert stats["timeline"] == [[0, 2, tokens, 1]]
    async with http.get(f"{sim.url}/sim/stats") as r:
        assert (await r.json())["ok"] == 2
    async with http.post(f"{sim.url}/sim/reset", json={}) as r:
        assert r.status == 200
    assert sim.stats()["requests"] == 0 and sim.stats()["timeline"] == []


async def test_max_in_flight(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Concurrent requests raise max_in_flight; in_flight returns to zero."""
    sim = await make_sim(latency="50ms")
    await asyncio.gather(*(post(http, sim) for _ in range(8)))
    stats = sim.stats()
    assert stats["max_in_flight"] == 8 and stats["in_flight"] == 0


async def test_record_requests(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """record=True keeps every decoded body, readable in order and over GET /sim/requests."""
    sim = await make_sim(record=True)
    await post(http, sim, _user("first"))
    await post(http, sim, _user("second"), temperature=0.5)
    assert [r["messages"][0]["content"] for r in sim.requests] == ["first", "second"]
    assert sim.requests[1]["temperature"] == 0.5
    async with http.get(f"{sim.url}/sim/requests") as r:
        assert await r.json() == sim.requests
    sim.reset_stats()
    assert sim.requests == []


async def test_responder_override(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A responder returning text overrides the answer; returning None falls back."""
    sim = await make_sim(responder=lambda req: "fixed" if "x" in str(req["messages"]) else None)
    _, _, raw = await post(http, sim, _user("x marks"))
    assert json.loads(raw)["choices"][0]["message"]["content"] == "fixed"
    _, _, raw = await post(http, sim, _user("hello"))
    assert json.loads(raw)["choices"][0]["message"]["content"] != "fixed"


async def test_close_leaves_no_tasks() -> None:
    """start/aclose inside a running loop leave no tasks behind and free the port."""
    before = asyncio.all_tasks()
    sim = SimServer()
    await sim.start()
    async with aiohttp.ClientSession() as session:
        status, _, _ = await post(session, sim)
        assert status == 200
    await sim.aclose()
    await sim.aclose()  # idempotent
    assert asyncio.all_tasks() == before


async def test_client_giving_up_cancels_the_handler(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """A client that disconnects mid-request frees the server: nothing keeps sleeping."""
    sim = await make_sim(latency="30s")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(post(http, sim), 0.1)
    for _ in range(100):
        if sim.stats()["in_flight"] == 0:
            break
        await asyncio.sleep(0.01)
    assert sim.stats()["in_flight"] == 0
    await sim.aclose()
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"rpm": -1}, "rpm"),
        ({"tpm": 0}, "tpm"),
        ({"fault_rate": 1.5}, r"\[0, 1\]"),
        ({"fault_rate": -0.1}, r"\[0, 1\]"),
        ({"faults": ("500", "teapot")}, "accepted kinds"),
        ({"latency": "soon"}, "accepted latency specs"),
        ({"latency": "100"}, "with a unit"),
        ({"latency": "uniform:50,150ms"}, "with a unit"),
        ({"latency": "uniform:2s,1s"}, "low <= high"),
        ({"latency": -1}, "accepted latency specs"),
        ({"quota_tokens": 0}, "quota_tokens"),
        ({"slow_seconds": -1}, "slow_seconds"),
        ({"tokens_per_second": 0}, "tokens_per_second"),
    ],
)
def test_bad_config_raises(settings: dict[str, Any], match: str) -> None:
    """Invalid settings raise ValueError saying what is accepted."""
    with pytest.raises(ValueError, match=match):
        SimConfig(**settings)


def test_parse_latency_specs() -> None:
    """Latency specs parse into models whose draws stay in range."""
    assert parse_latency("0") == LatencyModel("fixed", 0.0)
    assert parse_latency("0").is_zero
    assert parse_latency("100ms") == LatencyModel("fixed", 0.1)
    assert parse_latency("0.1s") == LatencyModel("fixed", 0.1)
    assert parse_latency("2s") == LatencyModel("fixed", 2.0)
    assert parse_latency(0.25) == LatencyModel("fixed", 0.25)
    assert parse_latency("uniform:50ms,150ms") == LatencyModel("uniform", 0.05, 0.15)
    assert parse_latency("lognormal:100ms,0.5") == LatencyModel("lognormal", 0.1, 0.5)
    assert parse_latency("exp:100ms") == LatencyModel("exp", 0.1)
    assert parse_latency("uniform:50ms,150ms").mean() == pytest.approx(0.1)
    assert parse_latency("lognormal:100ms,0.5").mean() == pytest.approx(0.1 * math.exp(0.125))
    rng = Random(0)
    assert all(0.05 <= parse_latency("uniform:50ms,150ms").draw(rng) <= 0.15 for _ in range(100))
    draws = sorted(parse_latency("lognormal:100ms,0.5").draw(rng) for _ in range(1001))
    assert draws[500] == pytest.approx(0.1, rel=0.15)
    cfg = SimConfig(latency="uniform:1ms,2ms", faults="500, drop")
    assert cfg.latency == cfg.latency_model == LatencyModel("uniform", 0.001, 0.002)
    assert cfg.faults == ("500", "drop")


# --------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_arguments() -> None:
    """add_arguments gives the documented defaults and parses every option."""
    args = _parse([])
    assert (args.host, args.port, args.latency, args.rpm) == ("127.0.0.1", 8000, "0", None)
    args = _parse(
        "--port 0 --latency 10ms --rpm 600 --tpm 9000 --fault-rate 0.1 --faults 500,drop "
        "--seed 3 --quota-tokens 99 --context-window 50 --api-key k --no-rate-limit-headers "
        "--record".split()
    )
    assert (args.rpm, args.tpm, args.fault_rate, args.faults) == (600, 9000, 0.1, "500,drop")
    assert args.no_rate_limit_headers and args.record and args.api_key == "k"


def test_cli_rejects_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    """run_from_args returns 2 and explains the problem when settings are invalid."""
    assert run_from_args(_parse(["--fault-rate", "3"])) == 2
    assert "fault_rate" in capsys.readouterr().err


async def test_cli_subprocess_serves_and_stops(http: aiohttp.ClientSession) -> None:
    """`python -m asynctg.sim --port 0` prints its URL, answers, and exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asynctg.sim",
        "--port",
        "0",
        "--rpm",
        "600",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("http://127.0.0.1:") and line.endswith("/v1")
        async with http.post(f"{line}/chat/completions", json={"messages": USER}) as r:
            assert r.status == 200
            assert r.headers["x-ratelimit-limit-requests"] == "600"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    assert b"Traceback" not in await proc.stderr.read()


async def test_admin_routes_need_the_key_and_json(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """With an api key set, every /sim/* route answers 401 without it, and a POST that is not
    application/json (a web page's text/plain form) is refused 415 and changes nothing."""
    sim = await make_sim(api_key="sk-admin", rpm=600)
    key = {"Authorization": "Bearer sk-admin"}
    for path in ("/sim/stats", "/sim/requests"):
        async with http.get(f"{sim.url}{path}") as r:
            assert r.status == 401
    async with http.post(f"{sim.url}/sim/config", json={"rpm": 1}) as r:
        assert r.status == 401
    async with http.post(f"{sim.url}/sim/reset", json={}) as r:
        assert r.status == 401
    plain = {**key, "Content-Type": "text/plain"}
    async with http.post(f"{sim.url}/sim/config", data=b'{"rpm": 1}', headers=plain) as r:
        assert r.status == 415
    async with http.post(f"{sim.url}/sim/reset", data=b"", headers=plain) as r:
        assert r.status == 415
    assert sim.config.rpm == 600 and sim.stats()["unauthorized"] == 4
    async with http.post(f"{sim.url}/sim/config", json={"rpm": 1}, headers=key) as r:
        assert r.status == 200
    async with http.get(f"{sim.url}/sim/stats", headers=key) as r:
        assert r.status == 200
    assert sim.config.rpm == 1


async def test_admin_posts_without_a_key_still_need_json(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """Without an api key the admin routes are open to JSON requests only: a text/plain reset
    (what a web page may send cross-origin without a preflight) is refused."""
    sim = await make_sim()
    await post(http, sim)
    async with http.post(
        f"{sim.url}/sim/reset", data=b"", headers={"Content-Type": "text/plain"}
    ) as r:
        assert r.status == 415
    assert sim.stats()["requests"] == 1


def test_a_bare_latency_number_is_refused_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`asynctg sim --latency 100` (ms or s?) exits 2 asking for a unit instead of serving
    answers 100 seconds late; every spec round-trips through its own spec() string."""
    from asynctg.cli import main

    assert main(["sim", "--latency", "100", "--port", "0"]) == 2
    assert "with a unit" in capsys.readouterr().err
    for spec in ("0", "100ms", "uniform:50ms,150ms", "lognormal:80ms,0.4", "exp:2s"):
        model = parse_latency(spec)
        assert parse_latency(model.spec()) == model
