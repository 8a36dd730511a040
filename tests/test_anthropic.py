"""The native Anthropic Messages engine: wire format, streams, errors, limits, caching, graph."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pickle
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from support import request_kind

import asynctg as tg
from asynctg.engine.cache import ResponseCache
from asynctg.engine.providers import CallSite
from asynctg.engine.providers.anthropic import (
    ANTHROPIC,
    EventParser,
    build_body,
    min_cacheable_tokens,
    read_error,
)
from asynctg.engine.types import image_part
from asynctg.sim import SimConfig, SimServer
from asynctg.transport import HTTPResponse

MODEL = "claude-sonnet-4-5"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
FAST = tg.RetryPolicy(testing=True)


def message(text: str = "4", **usage: int) -> dict[str, Any]:
    """A Messages API answer."""
    use = {"input_tokens": 10, "output_tokens": 2, **usage}
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": use,
    }


def error(status: int, kind: str, text: str, **headers: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": text}}
    return web.json_response(body, status=status, headers=headers)


class Loopback:
    """A server of the test's own: records each request (path, headers, body bytes) and
    answers with the next scripted reply (the last one repeats)."""

    def __init__(self, *replies: Callable[[], web.StreamResponse]) -> None:
        self.replies = list(replies)
        self.seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, dict(request.headers), await request.read()))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        response = reply()
        if isinstance(response, _Stream):
            return await response.send(request)
        return response


class _Stream(web.StreamResponse):
    """An event-stream reply of canned bytes."""

    def __init__(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        super().__init__(
            status=200, headers={"content-type": "text/event-stream", **(headers or {})}
        )
        self.canned = body

    async def send(self, request: web.Request) -> web.StreamResponse:
        await self.prepare(request)
        await self.write(self.canned)
        await self.write_eof()
        return self


@contextlib.asynccontextmanager
async def serving(loop: Loopback) -> AsyncIterator[str]:
    """``loop`` on a free loopback port; yields its root URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", loop.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def engine_at(root: str, **options: Any) -> tg.ChatEngine:
    options.setdefault("retry", FAST)
    return tg.get_engine(MODEL, provider="anthropic", base_url=root, api_key="sk-ant-1", **options)


def ok(text: str = "4", headers: dict[str, str] | None = None) -> Callable[[], web.Response]:
    return lambda: web.json_response(message(text), headers=headers)


# --- the wire format, byte for byte --------------------------------------------------------------


async def test_a_plain_call_sends_the_messages_wire_format() -> None:
    """POST /v1/messages with x-api-key, anthropic-version, max_tokens 4096 and temperature 0,
    byte for byte; the answer's text and usage come back."""
    loop = Loopback(ok("4"))
    async with serving(loop) as root, engine_at(root) as engine:
        result = await engine.chat([{"role": "user", "content": "What is 2+2?"}])
    (path, headers, body) = loop.seen[0]
    assert path == "/v1/messages"
    assert headers["x-api-key"] == "sk-ant-1"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers
    assert body == (
        b'{"model":"claude-sonnet-4-5","max_tokens":4096,'
        b'"messages":[{"role":"user","content":"What is 2+2?"}],"temperature":0.0}'
    )
    assert result.text == "4"
    assert result.finish_reasons == ("stop",)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (10, 2)


async def test_the_system_prompt_is_a_top_level_field() -> None:
    """A system message becomes the top-level ``system`` blocks, before the messages."""
    loop = Loopback(ok())
    async with serving(loop) as root, engine_at(root) as engine:
        await engine.generate("Hi", system_prompt="Be brief.")
    assert loop.seen[0][2] == (
        b'{"model":"claude-sonnet-4-5","max_tokens":4096,'
        b'"system":[{"type":"text","text":"Be brief."}],'
        b'"messages":[{"role":"user","content":"Hi"}],"temperature":0.0}'
    )


async def test_an_image_is_sent_as_a_base64_image_block() -> None:
    """An image part (OpenAI's data URL) becomes an ``image`` block with a base64 source."""
    loop = Loopback(ok())
    async with serving(loop) as root, engine_at(root) as engine:
        await engine.generate([image_part(PNG), "What is this?"])
    data = base64.b64encode(PNG).decode()
    assert loop.seen[0][2] == (
        b'{"model":"claude-sonnet-4-5","max_tokens":4096,"messages":[{"role":"user","content":['
        b'{"type":"image","source":{"type":"base64","media_type":"image/png","data":"'
        + data.encode()
        + b'"}},{"type":"text","text":"What is this?"}]}],"temperature":0.0}'
    )


async def test_parameters_map_onto_anthropic_names() -> None:
    """stop -> stop_sequences, the engine's and then the request's max_tokens win over 4096,
    seed is dropped (Anthropic has none), extras pass through."""
    loop = Loopback(ok())
    async with serving(loop) as root, engine_at(root, max_tokens=300, seed=7) as engine:
        await engine.chat([{"role": "user", "content": "a"}], stop=["X", "Y"], top_k=5)
        await engine.chat([{"role": "user", "content": "b"}], max_tokens=20, stop="Z")
    first, second = (json.loads(body) for _, _, body in loop.seen)
    assert first == {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "a"}],
        "temperature": 0.0,
        "stop_sequences": ["X", "Y"],
        "top_k": 5,
    }
    assert second["max_tokens"] == 20 and second["stop_sequences"] == ["Z"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n": 2}, "one completion per request"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"temperature": 1.5}, r"\[0, 1\]"),
    ],
)
async def test_what_anthropic_cannot_do_is_refused_before_sending(
    params: dict[str, Any], match: str
) -> None:
    """n > 1, response_format and a temperature above 1 are a ConfigError; nothing is sent."""
    loop = Loopback(ok())
    async with serving(loop) as root, engine_at(root) as engine:
        with pytest.raises(tg.ConfigError, match=match):
            await engine.chat([{"role": "user", "content": "a"}], **params)
    assert loop.seen == []


def test_a_system_message_after_a_turn_is_refused() -> None:
    """Anthropic has no place for system text mid-conversation: a ConfigError, not a reorder."""
    engine = tg.get_engine(MODEL, provider="anthropic", api_key="k")
    request = engine.request(
        [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]
    )
    with pytest.raises(tg.ConfigError, match="before the first turn"):
        ANTHROPIC.body(request, stream=False)


def test_base_url_with_or_without_v1_reaches_v1_messages() -> None:
    """A root URL and one ending in /v1 (the simulator's) both reach /v1/messages."""
    assert ANTHROPIC.url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert ANTHROPIC.url("http://127.0.0.1:8/v1") == "http://127.0.0.1:8/v1/messages"
    assert tg.get_engine(MODEL, provider="anthropic").base_url == "https://api.anthropic.com"


def test_the_key_never_shows_or_pickles() -> None:
    """x-api-key is hidden from the engine's repr of its headers and dropped when pickled."""
    engine = tg.get_engine(MODEL, provider="anthropic", api_key="sk-ant-secret")
    assert "sk-ant-secret" not in repr(vars(engine))
    assert "sk-ant-secret" not in repr(engine._headers)
    assert b"sk-ant-secret" not in pickle.dumps(engine._headers)


# --- streaming -----------------------------------------------------------------------------------


def event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


START = event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            **message(""),
            "content": [],
            "usage": {
                "input_tokens": 5,
                "cache_read_input_tokens": 1024,
                "cache_creation_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    },
)
PING = event("ping", {"type": "ping"})


def delta(text: str) -> bytes:
    piece = {"type": "text_delta", "text": text}
    payload = {"type": "content_block_delta", "index": 0, "delta": piece}
    return event("content_block_delta", payload)


END = (
    event("content_block_stop", {"type": "content_block_stop", "index": 0})
    + event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
    )
    + event("message_stop", {"type": "message_stop"})
)
OVERLOADED = event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


async def test_a_stream_is_read_from_anthropic_events() -> None:
    """Text deltas in order, ping and block events skipped, usage from message_start and
    message_delta (cache reads inside prompt_tokens), the stop reason in OpenAI's words; the
    request says stream: true."""
    cut = START + event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    body = cut + PING + delta("Hel") + delta("lo") + PING + END
    loop = Loopback(lambda: _Stream(body.replace(b"\n", b"\r\n")))
    async with serving(loop) as root, engine_at(root) as engine:
        async with engine.stream("Hi") as stream:
            parts = [d async for d in stream]
        result = await stream.collect()
    assert json.loads(loop.seen[0][2])["stream"] is True
    assert "".join(parts) == "Hello"
    assert result.text == "Hello"
    assert result.usage.prompt_tokens == 5 + 1024
    assert (result.usage.cached_tokens, result.usage.completion_tokens) == (1024, 7)
    assert result.finish_reasons == ("length",)


def test_the_event_parser_reads_events_cut_anywhere() -> None:
    """Fed one byte at a time the parser gives the same deltas and result as whole."""
    body = START + PING + delta("ab") + delta("c") + END
    parser = EventParser()
    got = [d for i in range(len(body)) for d in parser.feed(body[i : i + 1])]
    request = tg.get_engine(MODEL, provider="anthropic").request([_user("x")])
    result, estimated = parser.result(request, None)
    assert got == ["ab", "c"] and parser.done and not estimated
    assert result.text == "abc"


async def test_an_error_event_before_any_text_is_retried() -> None:
    """An overloaded_error event before the first delta is a ServerError, retried."""
    first = START + PING + OVERLOADED
    second = START + delta("ok") + END
    loop = Loopback(lambda: _Stream(first), lambda: _Stream(second))
    async with serving(loop) as root, engine_at(root) as engine:
        async with engine.stream("Hi") as stream:
            text = "".join([d async for d in stream])
    assert text == "ok" and len(loop.seen) == 2


async def test_an_error_event_after_text_interrupts_the_stream() -> None:
    """An error event after a delta is StreamInterruptedError (part was read: not retried)."""
    loop = Loopback(lambda: _Stream(START + delta("par") + OVERLOADED))
    async with serving(loop) as root, engine_at(root) as engine:
        with pytest.raises(tg.StreamInterruptedError, match="Overloaded"):
            async with engine.stream("Hi") as stream:
                async for _ in stream:
                    pass
    assert len(loop.seen) == 1


# --- errors --------------------------------------------------------------------------------------


async def test_a_prompt_too_long_is_a_context_length_error_and_teaches_the_window() -> None:
    """400 invalid_request_error "prompt is too long" is ContextLengthError, not retried; the
    window it names is learned."""
    loop = Loopback(
        lambda: error(
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens + 4096 max_tokens > 200000 maximum",
        )
    )
    async with serving(loop) as root, engine_at(root) as engine:
        with pytest.raises(tg.ContextLengthError, match="context window"):
            await engine.generate("x")
        assert engine.context_window == 200000
    assert len(loop.seen) == 1


async def test_a_bad_key_is_an_authentication_error_naming_the_variable() -> None:
    """401 authentication_error is AuthenticationError (not retried) naming ANTHROPIC_API_KEY."""
    loop = Loopback(lambda: error(401, "authentication_error", "invalid x-api-key"))
    async with serving(loop) as root, engine_at(root) as engine:
        with pytest.raises(tg.AuthenticationError, match="ANTHROPIC_API_KEY"):
            await engine.generate("x")
    assert len(loop.seen) == 1


@pytest.mark.parametrize(
    ("status", "kind", "headers"),
    [
        (429, "rate_limit_error", {"retry-after": "0"}),
        (529, "overloaded_error", {}),
        (500, "api_error", {}),
    ],
)
async def test_rate_limits_overload_and_api_errors_are_retried(
    status: int, kind: str, headers: dict[str, str]
) -> None:
    """429 (with retry-after), 529 overloaded_error and 500 api_error are retried: the second
    try's answer is returned and the engine counts the retry."""
    loop = Loopback(lambda: error(status, kind, "try again", **headers), ok("fine"))
    async with serving(loop) as root, engine_at(root) as engine:
        assert await engine.generate("x") == "fine"
        stats = engine.stats()
    assert len(loop.seen) == 2
    assert stats["retries"] == 1
    assert stats["rate_limited"] == (1 if status == 429 else 0)


def test_error_reports_map_anthropic_errors_onto_the_tree() -> None:
    """Each Anthropic error type is its asynctg error with the wait it asks for: retry-after,
    else the earliest exhausted limit's RFC 3339 reset against the server's own date."""
    site = CallSite("u", MODEL, True)

    def report(status: int, kind: str, text: str, headers: dict[str, str]) -> Any:
        body = json.dumps({"type": "error", "error": {"type": kind, "message": text}}).encode()
        return read_error(HTTPResponse(status, headers, body), site)

    limited = report(429, "rate_limit_error", "slow down", {"retry-after": "7"})
    assert isinstance(limited.error, tg.RateLimitError) and limited.retry_after == 7
    by_reset = report(
        429,
        "rate_limit_error",
        "slow down",
        {
            "date": "Wed, 01 Jan 2025 00:00:00 GMT",
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": "2025-01-01T00:00:12Z",
            "anthropic-ratelimit-requests-remaining": "5",
            "anthropic-ratelimit-requests-reset": "2025-01-01T00:00:01Z",
        },
    )
    assert by_reset.retry_after == 12
    assert isinstance(report(529, "overloaded_error", "Overloaded", {}).error, tg.ServerError)
    assert isinstance(report(403, "permission_error", "no", {}).error, tg.PermissionDeniedError)
    credit = report(400, "invalid_request_error", "Your credit balance is too low to access", {})
    assert isinstance(credit.error, tg.InsufficientQuotaError)
    plain = report(400, "invalid_request_error", "messages: Field required", {})
    assert type(plain.error) is tg.BadRequestError


# --- rate-limit headers --------------------------------------------------------------------------

LIMITS = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "999",
    "anthropic-ratelimit-requests-reset": "2025-01-01T00:00:01Z",
    "anthropic-ratelimit-input-tokens-limit": "400000",
    "anthropic-ratelimit-input-tokens-remaining": "400000",
    "anthropic-ratelimit-input-tokens-reset": "2025-01-01T00:00:01Z",
    "anthropic-ratelimit-output-tokens-limit": "80000",
    "anthropic-ratelimit-output-tokens-remaining": "80000",
    "anthropic-ratelimit-output-tokens-reset": "2025-01-01T00:00:01Z",
    "anthropic-ratelimit-tokens-limit": "80000",
}


async def test_rate_limit_headers_are_learned_into_separate_input_and_output_buckets() -> None:
    """anthropic-ratelimit-{requests,input-tokens,output-tokens}-* set the request bucket and
    separate input and output token buckets (at 97%); the combined tokens limit is not used;
    the next request is charged (input estimate, max_tokens) against them."""
    loop = Loopback(ok(headers=LIMITS))
    async with serving(loop) as root, engine_at(root) as engine:
        await engine.generate("x")
        stats = engine.scheduler.statistics()
        assert stats["learned_rpm"] == 1000
        assert (stats["learned_input_tpm"], stats["learned_output_tpm"]) == (400000, 80000)
        assert stats["input_tpm_limit"] == pytest.approx(400000 * 0.97)
        assert stats["output_tpm_limit"] == pytest.approx(80000 * 0.97)
        assert stats["learned_tpm"] is None and stats["tpm_limit"] is None
        request = engine.request([{"role": "user", "content": "x"}])
        estimate = engine._estimate(request, 0, None, False)
        assert estimate.parts is not None and estimate.parts[1] == 4096
        output = engine.scheduler._split[1]  # type: ignore[index]
        assert output is not None
        level = output.level
        await engine.send(request)
        # charged 4096 up front, 2 once the answer said so: the bucket is 2 lower (+ refill)
        assert level - 2 - 1e-6 <= output.level <= level - 2 + output.rate * 5


def test_the_adapter_renames_only_the_limits_it_paces() -> None:
    """rate_limits() gives the scheduler requests/input/output limit and remaining headers."""
    assert dict(ANTHROPIC.rate_limits(LIMITS)) == {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "999",
        "x-ratelimit-limit-input-tokens": "400000",
        "x-ratelimit-remaining-input-tokens": "400000",
        "x-ratelimit-limit-output-tokens": "80000",
        "x-ratelimit-remaining-output-tokens": "80000",
    }


async def test_given_split_budgets_are_not_replaced_by_headers() -> None:
    """input_tpm/output_tpm given to the engine stay as given whatever the server says."""
    engine = tg.get_engine(MODEL, provider="anthropic", input_tpm=1000, output_tpm=500)
    engine.scheduler.learn_limits(ANTHROPIC.rate_limits(LIMITS))
    stats = engine.scheduler.statistics()
    assert (stats["input_tpm_limit"], stats["output_tpm_limit"]) == (1000, 500)
    assert stats["learned_input_tpm"] is None


# --- prompt caching ------------------------------------------------------------------------------

LONG = "Follow these rules exactly. " * 200  # about 1,400 tokens


def body_of(engine: tg.ChatEngine, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return build_body(
        engine.request(messages), stream=False, prompt_cache=engine.config.prompt_cache
    )


def test_a_long_system_prompt_gets_a_cache_breakpoint() -> None:
    """A system prompt past the model's minimum is marked ephemeral; a short one, a Haiku
    model below its larger minimum, or prompt_cache=False is not."""
    engine = tg.get_engine(MODEL, provider="anthropic")
    turn = {"role": "user", "content": "q"}
    marked = body_of(engine, [{"role": "system", "content": LONG}, turn])
    assert marked["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert marked["messages"] == [turn]
    short = body_of(engine, [{"role": "system", "content": "Be brief."}, turn])
    assert "cache_control" not in short["system"][-1]
    haiku = tg.get_engine("claude-3-5-haiku-latest", provider="anthropic")
    assert (
        "cache_control"
        not in body_of(haiku, [{"role": "system", "content": LONG}, turn])["system"][-1]
    )
    off = tg.get_engine(MODEL, provider="anthropic", prompt_cache=False)
    assert (
        "cache_control"
        not in body_of(off, [{"role": "system", "content": LONG}, turn])["system"][-1]
    )
    assert (min_cacheable_tokens(MODEL), min_cacheable_tokens("claude-3-haiku")) == (1024, 2048)


def test_earlier_turns_are_marked_the_final_message_never() -> None:
    """The last block before the final message is marked when the prefix is long enough; the
    final message (which the engine cannot know is shared) is left alone; parts a caller
    marked count towards Anthropic's 4."""
    engine = tg.get_engine(MODEL, provider="anthropic")
    history = [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": LONG + " now answer"},
    ]
    body = body_of(engine, history)
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Understood.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["messages"][2]["content"] == LONG + " now answer"
    mark = {"cache_control": {"type": "ephemeral"}}
    parts = [{"type": "text", "text": str(i), **mark} for i in range(5)]
    with pytest.raises(tg.ConfigError, match="at most 4"):
        body_of(engine, [{"role": "user", "content": parts}])


async def test_the_simulator_reads_the_cached_system_prompt_back() -> None:
    """Two calls sharing a long system prompt: the first writes the cache, the second reads
    it; usage counts reads and writes inside prompt_tokens."""
    async with SimServer(SimConfig()) as sim:
        async with tg.get_engine(
            MODEL, provider="anthropic", base_url=sim.base_url, api_key="k"
        ) as engine:
            first = await engine.chat([{"role": "system", "content": LONG}, _user("one")])
            second = await engine.chat([{"role": "system", "content": LONG}, _user("two")])
    assert first.usage.cache_write_tokens > 1024 and first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == first.usage.cache_write_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# --- choosing the provider; keys -----------------------------------------------------------------


def test_claude_models_go_to_anthropic_unless_an_openai_server_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """claude-* with ANTHROPIC_API_KEY and no OpenAI base URL is Anthropic (its key, its
    URL, never OPENAI_API_KEY); with OPENAI_BASE_URL or base_url it stays OpenAI's format."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env")
    engine = tg.get_engine(MODEL)
    assert engine.provider.name == "anthropic"
    assert engine.base_url == "https://api.anthropic.com"
    assert engine._headers["x-api-key"] == "sk-ant-env"
    assert "sk-openai-env" not in engine._headers.values()
    assert engine._provider_name == "anthropic"
    assert tg.get_engine("gpt-4o").provider.name == "openai"
    gateway = tg.get_engine(MODEL, base_url="http://127.0.0.1:9/v1")
    assert gateway.provider.name == "openai"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert tg.get_engine(MODEL).provider.name == "openai"
    assert tg.get_engine(MODEL, provider="anthropic").base_url == "https://api.anthropic.com"


async def test_answers_are_not_shared_between_providers_of_one_address(tmp_path: Any) -> None:
    """An OpenAI and an Anthropic engine on one server and one cache file: the same request
    is sent to each API, never answered from the other's entry."""
    cache = ResponseCache(tmp_path / "cache.db")
    async with SimServer(SimConfig()) as sim:
        common = {"base_url": sim.base_url, "api_key": "k", "cache": cache, "max_tokens": 64}
        async with tg.get_engine(MODEL, provider="openai", **common) as openai:
            await openai.generate("same question")
        async with tg.get_engine(MODEL, provider="anthropic", **common) as claude:
            await claude.generate("same question")
            assert claude.stats()["cache_hits"] == 0
            await claude.generate("same question")
            assert claude.stats()["cache_hits"] == 1
        stats = sim.stats()
    assert stats["anthropic"]["requests"] == 1


# --- against the simulator -----------------------------------------------------------------------


async def test_generate_and_stream_against_the_simulator() -> None:
    """A call and a stream through the simulator's Messages API, with its usage."""
    async with SimServer(SimConfig()) as sim:
        async with tg.get_engine(
            MODEL, provider="anthropic", base_url=sim.base_url, api_key="k"
        ) as engine:
            text = await engine.generate("What is 2+2?", system_prompt="Be brief.")
            async with engine.stream("Tell me a story") as stream:
                streamed = "".join([d async for d in stream])
            result = await stream.collect()
            stats = engine.stats()
        counters = sim.stats()["anthropic"]
    assert text and streamed == result.text and result.usage.completion_tokens > 0
    assert counters["requests"] == 2 and counters["streams"] == 1
    assert stats["calls"] == 2 and stats["completion_tokens"] > 0


def _exact(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> str:
    return "1" if prediction.value.strip() == ground_truth_answer.value.strip() else "0"


async def _one_step(engine: tg.ChatEngine, batch: int) -> str:
    """One prompt-optimization step: B forward calls, string-match loss, backward, TGD."""
    exact = tg.autograd.StringBasedFunction(_exact, function_purpose="checks the answer exactly")
    prompt = tg.Variable(
        "You are a careful calculator.", requires_grad=True, role_description="system prompt"
    )
    model = tg.BlackboxLLM(engine, prompt)
    xs = [
        tg.Variable(f"question #{i}: what is {i} + {i}?", requires_grad=False, role_description="q")
        for i in range(batch)
    ]
    responses = await asyncio.gather(*(model(x) for x in xs))
    losses = await asyncio.gather(
        *(
            exact(
                inputs=dict(
                    prediction=r,
                    ground_truth_answer=tg.Variable(
                        str(2 * i), requires_grad=False, role_description="answer"
                    ),
                )
            )
            for i, r in enumerate(responses)
        )
    )
    await tg.sum(list(losses)).backward(engine)
    await tg.TGD(engine=engine, parameters=[prompt]).step()
    return prompt.value


async def test_a_b16_step_makes_the_same_calls_on_anthropic_as_on_openai() -> None:
    """One B=16 prompt-optimization step through the graph: forward 16, backward 32,
    optimizer 1 on the Anthropic engine, the same counts by kind as on the OpenAI engine."""
    counts: dict[str, Counter[str]] = {}
    for name in ("openai", "anthropic"):
        async with SimServer(SimConfig(record=True)) as sim:
            async with tg.get_engine(
                MODEL, provider=name, base_url=sim.base_url, api_key="k"
            ) as engine:
                before = "You are a careful calculator."
                after = await _one_step(engine, 16)
                assert after != before
            counts[name] = Counter(request_kind(r) for r in sim.requests)
            served = sim.stats()["anthropic"]["requests"]
            assert served == (49 if name == "anthropic" else 0)
    expected = {"forward": 16, "backward": 32, "optimizer": 1}
    assert counts["anthropic"] == counts["openai"] == expected
