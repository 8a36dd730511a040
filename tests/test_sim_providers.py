"""The simulator's provider features (Anthropic Messages, prompt caching, the bill, flex, batch
APIs), tested over real loopback HTTP with a plain aiohttp client and a fast-forwarded clock."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from asynctg.sim import SimServer
from asynctg.sim.billing import Prices

MakeSim = Callable[..., Awaitable[SimServer]]

AHEADERS = {"anthropic-version": "2023-06-01"}
OPTIMIZER_PROMPT = (
    "Here is the role of the variable: <ROLE>system prompt</ROLE>.\n"
    "<VARIABLE> Be concise. </VARIABLE>\n<FEEDBACK>Ask for steps.</FEEDBACK>\n"
    "Send the improved variable between <IMPROVED_VARIABLE> and </IMPROVED_VARIABLE> tags."
)
#: about 1,500 tokens: above both providers' minimum cacheable length
LONG = "The quick brown fox jumps over the lazy dog. " * 135


async def message(
    http: aiohttp.ClientSession,
    sim: SimServer,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, bytes]:
    """POST /v1/messages; returns (status, headers, raw body)."""
    payload = (
        body
        if body is not None
        else {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hello"}],
        }
    )
    h = AHEADERS if headers is None else headers
    async with http.post(f"{sim.url}/v1/messages", json=payload, headers=h) as r:
        return r.status, r.headers, await r.read()


async def chat(
    http: aiohttp.ClientSession, sim: SimServer, **body: Any
) -> tuple[int, Any, dict[str, Any]]:
    """POST /v1/chat/completions; returns (status, headers, decoded body)."""
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], **body}
    async with http.post(f"{sim.base_url}/chat/completions", json=payload) as r:
        return r.status, r.headers, json.loads(await r.read())


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an Anthropic event stream."""
    out = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk.strip():
            continue
        name, data = chunk.split("\n", 1)
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


# --------------------------------------------------------------------------- Anthropic Messages


async def test_messages_response_shape(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A Messages reply has Anthropic's fields, text content and all four usage counters."""
    sim = await make_sim()
    status, headers, raw = await message(http, sim)
    body = json.loads(raw)
    assert status == 200 and headers["request-id"].startswith("req_")
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "claude-sonnet-4-5" and body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    assert body["content"][0]["type"] == "text" and body["content"][0]["text"]
    assert set(body["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    assert body["usage"]["input_tokens"] == 4 + 2  # framing + "Hello"


async def test_messages_follow_format_rules(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """An optimizer request sent to /v1/messages gets <IMPROVED_VARIABLE> tags back."""
    sim = await make_sim()
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 500,
        "system": [{"type": "text", "text": "You improve prompts."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": OPTIMIZER_PROMPT}]}],
    }
    status, _, raw = await message(http, sim, body)
    text = json.loads(raw)["content"][0]["text"]
    assert status == 200 and text.startswith("<IMPROVED_VARIABLE>")
    assert text.endswith("</IMPROVED_VARIABLE>")


async def test_messages_stop_sequence_and_max_tokens(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """stop_sequences cut the answer (stop_reason stop_sequence); max_tokens caps it."""
    sim = await make_sim()
    base = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}]}
    _, _, raw = await message(http, sim, {**base, "max_tokens": 100, "stop_sequences": ["answer"]})
    body = json.loads(raw)
    assert body["stop_reason"] == "stop_sequence" and body["stop_sequence"] == "answer"
    assert "answer" not in body["content"][0]["text"]
    _, _, raw = await message(http, sim, {**base, "max_tokens": 2})
    body = json.loads(raw)
    assert body["stop_reason"] == "max_tokens" and body["usage"]["output_tokens"] == 2


async def test_messages_images_are_counted(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """An image block with a base64 source is accepted and counted as image tokens."""
    sim = await make_sim()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [image, {"type": "text", "text": "What?"}]}],
    }
    status, _, raw = await message(http, sim, body)
    assert status == 200 and json.loads(raw)["usage"]["input_tokens"] == 4 + 85 + 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
    ],
)
async def test_messages_invalid_bodies(
    make_sim: MakeSim, http: aiohttp.ClientSession, body: dict[str, Any], needle: str
) -> None:
    """Invalid Messages bodies answer 400 invalid_request_error in Anthropic's error shape."""
    sim = await make_sim()
    status, _, raw = await message(http, sim, body)
    error = json.loads(raw)
    assert status == 400 and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error" and needle in error["error"]["message"]


async def test_messages_headers_required(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """With a key: no x-api-key is 401 authentication_error; no anthropic-version is 400."""
    sim = await make_sim(api_key="k")
    status, _, raw = await message(http, sim)
    assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"
    status, _, raw = await message(http, sim, headers={"x-api-key": "k"})
    assert status == 400 and "anthropic-version" in json.loads(raw)["error"]["message"]
    status, _, _ = await message(http, sim, headers={"x-api-key": "k", **AHEADERS})
    assert status == 200
    open_sim = await make_sim()
    assert (await message(http, open_sim))[0] == 200  # no key on the sim: none needed


async def test_messages_prompt_too_long(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A prompt over the context window is a 400 whose message says 'prompt is too long'."""
    sim = await make_sim(context_window=50)
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "word " * 100}],
    }
    status, _, raw = await message(http, sim, body)
    assert status == 400 and "prompt is too long" in json.loads(raw)["error"]["message"]
    assert sim.stats()["anthropic"]["context_length_exceeded"] == 1


@pytest.mark.parametrize(
    ("kind", "status", "etype"), [("529", 529, "overloaded_error"), ("500", 500, "api_error")]
)
async def test_messages_server_faults(
    make_sim: MakeSim, http: aiohttp.ClientSession, kind: str, status: int, etype: str
) -> None:
    """Injected 529 and 500 faults answer overloaded_error and api_error in Anthropic's shape."""
    sim = await make_sim(fault_rate=1.0, faults=(kind,))
    got, _, raw = await message(http, sim)
    assert got == status and json.loads(raw) == {
        "type": "error",
        "error": {"type": etype, "message": json.loads(raw)["error"]["message"]},
    }
    assert sim.stats()["anthropic"]["faults"] == {kind: 1}


async def test_messages_stream_event_sequence(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """A stream sends message_start, content_block_start, ping, text deltas, content_block_stop,
    message_delta (stop reason, output tokens) and message_stop; the deltas spell the answer."""
    sim = await make_sim()
    base = {"model": "claude-sonnet-4-5", "max_tokens": 100}
    base["messages"] = [{"role": "user", "content": "Tell me"}]
    _, _, plain = await message(http, sim, base)
    status, headers, raw = await message(http, sim, {**base, "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    deltas = names.count("content_block_delta")
    assert deltas >= 1
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    expected = json.loads(plain)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == expected["content"][0]["text"]
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] == expected["usage"]["output_tokens"]


async def test_messages_stream_error_event(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A 529 fault during a stream ends it with an error event of type overloaded_error."""
    sim = await make_sim(fault_rate=1.0, faults=("529",))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True}
    body["messages"] = [{"role": "user", "content": "Tell me something long"}]
    status, _, raw = await message(http, sim, body)
    events = sse_events(raw)
    assert status == 200 and events[0][0] == "message_start"
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert "message_stop" not in [name for name, _ in events]


async def test_messages_rate_limit_headers_and_429(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """Separate request/input/output budgets: headers on every answer; max_tokens is charged
    against the output budget up front, so a large max_tokens is refused with
    rate_limit_error and a retry-after, and the unused part is given back after an answer."""
    sim = await make_sim(anthropic_rpm=600, anthropic_itpm=60_000, anthropic_otpm=6_000)
    status, headers, _ = await message(http, sim)
    assert status == 200
    for name in ("requests", "input-tokens", "output-tokens"):
        for field in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{name}-{field}" in headers
    assert headers["anthropic-ratelimit-output-tokens-limit"] == "6000"
    assert headers["anthropic-ratelimit-input-tokens-reset"].endswith("Z")
    # the output bucket holds one second's worth (100 tokens), all reserved by max_tokens=100;
    # what the answer did not use was given back
    assert int(headers["anthropic-ratelimit-output-tokens-remaining"]) > 0
    big = {"model": "claude-sonnet-4-5", "max_tokens": 101}
    big["messages"] = [{"role": "user", "content": "Hello"}]
    sim.advance(5.0)  # refill
    assert (await message(http, sim, big))[0] == 200  # oversized: passes once on a full bucket
    status, headers, raw = await message(http, sim, big)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"
    assert "output tokens" in json.loads(raw)["error"]["message"]
    sim.advance(5.0)
    assert (await message(http, sim, big))[0] == 200
    assert sim.stats()["anthropic"]["rate_limited"] == 1


# --------------------------------------------------------------------------- prompt caching


def _cached_body(question: str, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 20,
        "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": question}],
    }


async def test_anthropic_cache_write_then_read(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """Two requests sharing a cache_control prefix: the first writes it
    (cache_creation_input_tokens), the second reads it (cache_read_input_tokens); input_tokens
    excludes both; after the TTL on the sim's clock it is written again."""
    sim = await make_sim(prompt_cache_ttl=300)
    prefix = (len(LONG) + 3) // 4
    first = json.loads((await message(http, sim, _cached_body("one?")))[2])["usage"]
    assert first["cache_creation_input_tokens"] == prefix and first["cache_read_input_tokens"] == 0
    assert first["input_tokens"] == 4 + 1
    second = json.loads((await message(http, sim, _cached_body("two?")))[2])["usage"]
    assert second["cache_read_input_tokens"] == prefix
    assert second["cache_creation_input_tokens"] == 0 and second["input_tokens"] == 4 + 1
    sim.advance(301)
    third = json.loads((await message(http, sim, _cached_body("three")))[2])["usage"]
    assert third["cache_read_input_tokens"] == 0 and third["cache_creation_input_tokens"] == prefix
    assert sim.stats()["prompt_cache"]["anthropic"]["hits"] == 1


async def test_anthropic_cache_needs_breakpoint_and_minimum(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """No cache_control, or a prefix under the model's minimum (2,048 for Haiku), caches
    nothing; more than four breakpoints is a 400."""
    sim = await make_sim()
    plain = _cached_body("q")
    plain["system"] = LONG
    for _ in range(2):
        use = json.loads((await message(http, sim, plain))[2])["usage"]
        assert use["cache_read_input_tokens"] == use["cache_creation_input_tokens"] == 0
    for _ in range(2):
        use = json.loads((await message(http, sim, _cached_body("q", "claude-haiku-4-5")))[2])
        assert use["usage"]["cache_creation_input_tokens"] == 0
        assert use["usage"]["cache_read_input_tokens"] == 0
    block = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    body = {**_cached_body("q"), "system": [block] * 5}
    status, _, raw = await message(http, sim, body)
    assert status == 400 and "maximum of 4" in json.loads(raw)["error"]["message"]


async def test_openai_cache_cached_tokens(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """OpenAI's automatic cache: a repeated long prefix reports cached_tokens in 128-token
    steps from 1,024 on; short prompts and the first request report 0; prompt_cache=False
    turns it off."""
    sim = await make_sim()
    msgs = [{"role": "system", "content": LONG}, {"role": "user", "content": "first"}]
    _, _, one = await chat(http, sim, messages=msgs)
    assert one["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    msgs[1]["content"] = "second question"
    _, _, two = await chat(http, sim, messages=msgs)
    cached = two["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 1024 and cached % 128 == 0 and cached <= two["usage"]["prompt_tokens"]
    _, _, short = await chat(http, sim)
    assert short["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    sim.update(prompt_cache=False)
    _, _, off = await chat(http, sim, messages=msgs)
    assert off["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


async def test_openai_prompt_cache_key_routes(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """With several cache machines, requests sharing a prompt_cache_key hit more often than
    the same requests without one (which spread over machines)."""
    sim = await make_sim(prompt_cache_shards=4)
    msgs = [{"role": "system", "content": LONG}, {"role": "user", "content": "q"}]

    async def hits(**extra: Any) -> int:
        count = 0
        for i in range(8):
            msgs[1]["content"] = f"question {i}"
            _, _, body = await chat(http, sim, messages=msgs, **extra)
            count += body["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        return count

    without = await hits()
    sim.advance(10_000)  # forget everything
    keyed = await hits(prompt_cache_key="tenant-a")
    assert keyed == 7 and without < keyed


# --------------------------------------------------------------------------- the bill


async def test_bill_matches_prices(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """The bill charges each API at its prices: cached input at the cached price, cache writes
    at the write price, in integer nano-dollars, on /sim/bill and /sim/stats."""
    oa = Prices(input=2.5, output=10, cached_input=1.25, cache_write=2.5)
    an = Prices(input=3, output=15, cached_input=0.3, cache_write=3.75)
    sim = await make_sim(openai_prices=oa, anthropic_prices=an)
    msgs = [{"role": "system", "content": LONG}, {"role": "user", "content": "q"}]
    expected_openai = 0
    for _ in range(2):
        _, _, body = await chat(http, sim, messages=msgs)
        u = body["usage"]
        cached = u["prompt_tokens_details"]["cached_tokens"]
        expected_openai += round(
            ((u["prompt_tokens"] - cached) * 2.5 + cached * 1.25 + u["completion_tokens"] * 10)
            * 1000
        )
    expected_anthropic = 0
    for q in ("a", "b"):
        u = json.loads((await message(http, sim, _cached_body(q)))[2])["usage"]
        expected_anthropic += round(
            (
                u["input_tokens"] * 3
                + u["cache_read_input_tokens"] * 0.3
                + u["cache_creation_input_tokens"] * 3.75
                + u["output_tokens"] * 15
            )
            * 1000
        )
    async with http.get(f"{sim.url}/sim/bill") as r:
        bill = await r.json()
    assert bill["openai"]["nano_dollars"] == expected_openai
    assert bill["anthropic"]["nano_dollars"] == expected_anthropic
    assert bill["openai"]["cached_input_tokens"] > 0 and bill["anthropic"]["requests"] == 2
    assert bill["total_nano_dollars"] == expected_openai + expected_anthropic
    assert sim.stats()["bill"]["openai"]["by_tier"]["standard"] == expected_openai


# --------------------------------------------------------------------------- flex


async def test_flex_all_unavailable(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """At a 100% unavailable share every flex request is a 429 resource_unavailable, nothing is
    billed, and standard requests are unaffected."""
    sim = await make_sim(flex_unavailable_rate=1.0)
    for _ in range(5):
        status, _, body = await chat(http, sim, service_tier="flex")
        assert status == 429 and body["error"]["code"] == "resource_unavailable"
    status, _, body = await chat(http, sim)
    assert status == 200 and body["service_tier"] == "default"
    assert sim.stats()["flex_unavailable"] == 5
    assert sim.bill()["openai"]["by_tier"]["flex"] == 0


async def test_flex_served_and_priced(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """At a 0% unavailable share every flex request is served, says service_tier "flex", and is
    billed at the flex factor of the standard price."""
    sim = await make_sim(flex_unavailable_rate=0.0)
    expected = 0
    for _ in range(5):
        status, _, body = await chat(http, sim, service_tier="flex")
        assert status == 200 and body["service_tier"] == "flex"
        u = body["usage"]
        full = (u["prompt_tokens"] * 2.5 + u["completion_tokens"] * 10) * 1000
        expected += round(full / 2)
    bill = sim.bill()["openai"]["by_tier"]
    assert bill["flex"] == expected and bill["standard"] == 0
    assert sim.stats()["flex_unavailable"] == 0
    status, _, _ = await chat(http, sim, service_tier="bogus")
    assert status == 400


# --------------------------------------------------------------------------- OpenAI batches


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _batch_lines(n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"Q{i}"}]},
        }
        for i in range(n)
    ]


async def _upload(http: aiohttp.ClientSession, sim: SimServer, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", data, filename="in.jsonl", content_type="application/jsonl")
    async with http.post(f"{sim.base_url}/files", data=form) as r:
        assert r.status == 200
        body = await r.json()
    assert body["object"] == "file" and body["purpose"] == "batch"
    assert body["bytes"] == len(data)
    return str(body["id"])


async def _create(http: aiohttp.ClientSession, sim: SimServer, file_id: str) -> dict[str, Any]:
    payload = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"run": "t1"},
    }
    async with http.post(f"{sim.base_url}/batches", json=payload) as r:
        assert r.status == 200
        return dict(await r.json())


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, await r.text()
        if r.content_type == "application/json":
            return await r.json()
        return await r.read()


async def test_openai_batch_lifecycle(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Upload, create (validating), poll (in_progress), fast-forward, poll (completed with an
    output file of every line), billed at the batch discount without touching the rpm budget."""
    sim = await make_sim(batch_completion_seconds=600, rpm=1)
    file_id = await _upload(http, sim, _jsonl(_batch_lines(4)))
    created = await _create(http, sim, file_id)
    assert created["status"] == "validating" and created["metadata"] == {"run": "t1"}
    url = f"{sim.base_url}/batches/{created['id']}"
    polled = await _get(http, url)
    assert polled["status"] == "in_progress" and polled["request_counts"]["completed"] == 0
    sim.advance(599)
    assert (await _get(http, url))["status"] == "in_progress"
    async with http.post(f"{sim.url}/sim/advance", json={"seconds": 1}) as r:
        assert r.status == 200
    done = await _get(http, url)
    assert done["status"] == "completed" and done["error_file_id"] is None
    assert done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    raw = await _get(http, f"{sim.base_url}/files/{done['output_file_id']}/content")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(4)]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in lines)
    usage = [line["response"]["body"]["usage"] for line in lines]
    bill = sim.bill()["openai"]
    full = sum(
        round((u["prompt_tokens"] * 2.5 + u["completion_tokens"] * 10) * 1000) for u in usage
    )
    assert bill["by_tier"]["batch"] == pytest.approx(full / 2, abs=4)
    assert bill["by_tier"]["standard"] == 0
    assert (await chat(http, sim))[0] == 200  # the one-request budget was not used by the batch
    listing = await _get(http, f"{sim.base_url}/batches?limit=10")
    assert [b["id"] for b in listing["data"]] == [created["id"]]


async def test_openai_batch_partial_failure(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """With a failure share, failed lines land in the error file with an error object, the rest
    in the output file, and request_counts add up."""
    sim = await make_sim(batch_completion_seconds=1, batch_failure_rate=0.5, seed=3)
    lines = _batch_lines(20)
    lines[0]["body"] = {"model": "gpt-4o"}  # no messages: the endpoint answers 400
    created = await _create(http, sim, await _upload(http, sim, _jsonl(lines)))
    sim.advance(1)
    done = await _get(http, f"{sim.base_url}/batches/{created['id']}")
    counts = done["request_counts"]
    assert done["status"] == "completed" and counts["total"] == 20
    assert counts["completed"] + counts["failed"] == 20 and 0 < counts["completed"] < 20
    out = await _get(http, f"{sim.base_url}/files/{done['output_file_id']}/content")
    err = await _get(http, f"{sim.base_url}/files/{done['error_file_id']}/content")
    errors = [json.loads(line) for line in err.splitlines()]
    assert len(out.splitlines()) == counts["completed"] and len(errors) == counts["failed"]
    assert any(
        e["error"] == {"code": "server_error", "message": e["error"]["message"]}
        for e in errors
        if e["error"]
    )
    if errors[0]["custom_id"] == "req-0" and errors[0]["response"] is not None:
        assert errors[0]["response"]["status_code"] == 400


async def test_openai_batch_expiry(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """With batch_expire the batch is still in progress at the completion delay, and expires at
    the end of its 24 h window with unfinished lines in the error file as batch_expired."""
    sim = await make_sim(batch_completion_seconds=1, batch_expire=True)
    created = await _create(http, sim, await _upload(http, sim, _jsonl(_batch_lines(4))))
    url = f"{sim.base_url}/batches/{created['id']}"
    sim.advance(3600)
    assert (await _get(http, url))["status"] == "in_progress"
    sim.advance(24 * 3600)
    done = await _get(http, url)
    assert done["status"] == "expired" and done["expired_at"] is not None
    assert done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    err = await _get(http, f"{sim.base_url}/files/{done['error_file_id']}/content")
    codes = [json.loads(line)["error"]["code"] for line in err.splitlines()]
    assert codes == ["batch_expired", "batch_expired"]


async def test_openai_batch_cancel_and_invalid(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """Cancel moves a batch to cancelling, then cancelled; invalid lines make a batch fail with
    the reasons in errors.data; a wrong completion_window is a 400."""
    sim = await make_sim(batch_completion_seconds=100)
    created = await _create(http, sim, await _upload(http, sim, _jsonl(_batch_lines(2))))
    async with http.post(f"{sim.base_url}/batches/{created['id']}/cancel") as r:
        assert r.status == 200 and (await r.json())["status"] == "cancelling"
    done = await _get(http, f"{sim.base_url}/batches/{created['id']}")
    assert done["status"] == "cancelled" and done["output_file_id"] is None
    bad = _batch_lines(2)
    bad[1]["url"] = "/v1/embeddings"
    created = await _create(http, sim, await _upload(http, sim, _jsonl(bad)))
    failed = await _get(http, f"{sim.base_url}/batches/{created['id']}")
    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["line"] == 2
    payload = {"input_file_id": created["input_file_id"], "endpoint": "/v1/chat/completions"}
    async with http.post(
        f"{sim.base_url}/batches", json={**payload, "completion_window": "1h"}
    ) as r:
        assert r.status == 400


# --------------------------------------------------------------------------- Anthropic batches


def _anthropic_requests(n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "claude-sonnet-4-5",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": f"Question {i}"}],
            },
        }
        for i in range(n)
    ]


async def _acreate(
    http: aiohttp.ClientSession, sim: SimServer, requests: list[dict[str, Any]]
) -> dict[str, Any]:
    url = f"{sim.url}/v1/messages/batches"
    async with http.post(url, json={"requests": requests}, headers=AHEADERS) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def _aget(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=AHEADERS) as r:
        assert r.status == 200, await r.text()
        return await r.json() if r.content_type == "application/json" else await r.read()


async def test_anthropic_batch_lifecycle(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Create (in_progress, all processing), fast-forward, retrieve (ended, counts), results
    JSONL in request order with succeeded messages and errored invalid params; billed at the
    batch discount."""
    sim = await make_sim(batch_completion_seconds=60, anthropic_rpm=1)
    requests = _anthropic_requests(3)
    del requests[2]["params"]["max_tokens"]
    created = await _acreate(http, sim, requests)
    assert created["type"] == "message_batch" and created["processing_status"] == "in_progress"
    assert created["request_counts"]["processing"] == 3 and created["results_url"] is None
    url = f"{sim.url}/v1/messages/batches/{created['id']}"
    async with http.get(f"{url}/results", headers=AHEADERS) as r:
        assert r.status == 400  # not ended yet
    sim.advance(60)
    done = await _aget(http, url)
    assert done["processing_status"] == "ended" and done["ended_at"]
    assert done["request_counts"] == {
        "processing": 0,
        "succeeded": 2,
        "errored": 1,
        "canceled": 0,
        "expired": 0,
    }
    raw = await _aget(http, done["results_url"])
    results = [json.loads(line) for line in raw.splitlines()]
    assert [r["custom_id"] for r in results] == ["r0", "r1", "r2"]
    assert [r["result"]["type"] for r in results] == ["succeeded", "succeeded", "errored"]
    assert results[0]["result"]["message"]["type"] == "message"
    assert results[2]["result"]["error"]["error"]["type"] == "invalid_request_error"
    bill = sim.bill()["anthropic"]
    assert bill["requests"] == 2 and bill["by_tier"]["batch"] == bill["nano_dollars"] > 0
    assert (await message(http, sim))[0] == 200  # the one-request budget is untouched
    listing = await _aget(http, f"{sim.url}/v1/messages/batches")
    assert [b["id"] for b in listing["data"]] == [created["id"]]


async def test_anthropic_batch_cancel_and_expiry(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """Cancel: canceling, then ended with every request canceled. Expiry: ended after 24 h with
    the unfinished half expired."""
    sim = await make_sim(batch_completion_seconds=60)
    created = await _acreate(http, sim, _anthropic_requests(2))
    url = f"{sim.url}/v1/messages/batches/{created['id']}"
    async with http.post(f"{url}/cancel", headers=AHEADERS) as r:
        body = await r.json()
        assert body["processing_status"] == "canceling" and body["cancel_initiated_at"]
    done = await _aget(http, url)
    assert done["processing_status"] == "ended" and done["request_counts"]["canceled"] == 2
    sim.update(batch_expire=True)
    created = await _acreate(http, sim, _anthropic_requests(4))
    url = f"{sim.url}/v1/messages/batches/{created['id']}"
    sim.advance(3600)
    assert (await _aget(http, url))["processing_status"] == "in_progress"
    sim.advance(24 * 3600)
    done = await _aget(http, url)
    assert done["request_counts"]["expired"] == 2 and done["request_counts"]["succeeded"] == 2
    raw = await _aget(http, done["results_url"])
    assert [json.loads(x)["result"]["type"] for x in raw.splitlines()][2:] == ["expired"] * 2


# --------------------------------------------------------------------------- admin


async def test_admin_routes_keep_key_and_json(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """/sim/bill and /sim/advance need the key when one is set, and advance needs a JSON body."""
    sim = await make_sim(api_key="k")
    async with http.get(f"{sim.url}/sim/bill") as r:
        assert r.status == 401
    auth = {"Authorization": "Bearer k"}
    async with http.post(f"{sim.url}/sim/advance", data=b'{"seconds": 5}', headers=auth) as r:
        assert r.status == 415
    async with http.post(f"{sim.url}/sim/advance", json={"seconds": 5}, headers=auth) as r:
        assert r.status == 200 and (await r.json())["advanced"] == 5
    async with http.post(f"{sim.url}/sim/advance", json={"seconds": -1}, headers=auth) as r:
        assert r.status == 400


def test_cli_options_reach_the_config() -> None:
    """The new `asynctg sim` options land in SimConfig."""
    import argparse

    from asynctg.sim import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = "--anthropic-otpm 8000 --no-prompt-cache --flex-unavailable-rate 0.25"
    argv += " --batch-completion-seconds 5 --batch-failure-rate 0.1"
    args = parser.parse_args(argv.split())
    cfg = config_from_args(args)
    assert (cfg.anthropic_otpm, cfg.prompt_cache, cfg.flex_unavailable_rate) == (8000, False, 0.25)
    assert (cfg.batch_completion_seconds, cfg.batch_failure_rate) == (5.0, 0.1)
