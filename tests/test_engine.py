"""The chat engine on the in-memory transport: requests, retries, errors, cache, single-flight."""

from __future__ import annotations

import asyncio
import email.utils
import time
from pathlib import Path

import pytest
from support import BASE_URL, engine_with, error, ok, scripted, sent_bodies

import asynctg as tg
from asynctg.engine import FakeClock, ResponseCache, RetryPolicy
from asynctg.engine.retry import retry_after_seconds
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)
FAKE_PNG_URL = "data:image/png;base64,aGVsbG8="  # "hello", labelled as a PNG


async def test_generate_sends_openai_request_and_returns_text() -> None:
    """generate() posts model, system+user messages and temperature 0; returns the text."""
    transport = scripted([ok("the answer")])
    engine = engine_with(transport)
    text = await engine.generate("What is 2+2?", system_prompt="Be brief.")
    assert text == "the answer"
    (req,) = transport.requests
    assert req.url == BASE_URL + "/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    (body,) = sent_bodies(transport)
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "temperature": 0.0,
    }
    stats = engine.stats()
    assert stats["calls"] == 1
    assert stats["requests"] == 1
    assert stats["prompt_tokens"] == 10
    assert stats["completion_tokens"] == 2


async def test_chat_passes_every_sampling_parameter_and_extras() -> None:
    """chat() sends temperature, max_tokens, seed, stop, n, response_format and extra keys."""
    transport = scripted([ok()])
    engine = engine_with(transport)
    result = await engine.chat(
        [{"role": "user", "content": "hi"}],
        temperature=0.7,
        max_tokens=5,
        seed=3,
        stop=["\n"],
        n=1,
        response_format={"type": "json_object"},
        logprobs=False,
    )
    assert result.text == "hello"
    assert result.request_id == "req-1"
    (body,) = sent_bodies(transport)
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == 5
    assert body["seed"] == 3
    assert body["stop"] == ["\n"]
    assert body["response_format"] == {"type": "json_object"}
    assert body["logprobs"] is False


async def test_image_parts_are_sent_as_data_urls() -> None:
    """Image bytes in a content list become an image_url part with a base64 data URL."""
    transport = scripted([ok()])
    engine = engine_with(transport)
    await engine.generate(["Describe this.", PNG])
    (body,) = sent_bodies(transport)
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "Describe this."}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    "fault",
    [
        error(500),
        error(502),
        error(503),
        error(504),
        error(408),
        error(409),
        HTTPResponse(500, {}, b"Internal Server Error"),
        HTTPResponse(200, {}, b"not json at all"),
        HTTPResponse(200, {}, b'{"choices": [{"message": {"content": "cut'),
        HTTPResponse(200, {}, b'{"choices": []}'),
        HTTPResponse(200, {}, b'{"choices": [{"message": {"role": "assistant"}}]}'),
        tg.APIConnectionError,
        tg.APITimeoutError,
    ],
    ids=[
        "500",
        "502",
        "503",
        "504",
        "408",
        "409",
        "plain-500",
        "non-json",
        "truncated",
        "empty-choices",
        "no-content",
        "connection",
        "timeout",
    ],
)
async def test_retryable_fault_is_recovered(fault: object) -> None:
    """Each retryable fault, twice in a row, is retried and the call still succeeds."""
    transport = scripted([fault, fault, ok("recovered")])  # type: ignore[list-item]
    engine = engine_with(transport)
    assert await engine.generate("x") == "recovered"
    stats = engine.stats()
    assert stats["retries"] == 2
    assert stats["faults"] == 2
    assert stats["requests"] == 3


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (error(400, "bad"), tg.BadRequestError),
        (error(401, "Incorrect API key"), tg.AuthenticationError),
        (error(403, "no"), tg.PermissionDeniedError),
        (error(404, "model not found"), tg.BadRequestError),
        (error(422, "unprocessable"), tg.BadRequestError),
        (error(429, "quota", code="insufficient_quota"), tg.InsufficientQuotaError),
        (error(400, "too long", code="context_length_exceeded"), tg.ContextLengthError),
        (
            HTTPResponse(
                400, {}, b'{"error": {"message": "the request exceeds the available context size"}}'
            ),
            tg.ContextLengthError,
        ),
    ],
)
async def test_non_retryable_error_is_raised_typed_and_at_once(
    response: HTTPResponse, kind: type[Exception]
) -> None:
    """A 4xx other than 408/409/429 (and a quota 429) is raised typed after one request."""
    transport = scripted([response])
    engine = engine_with(transport)
    with pytest.raises(kind) as info:
        await engine.generate("x")
    assert type(info.value) is kind
    assert len(transport.requests) == 1
    assert isinstance(info.value, tg.APIStatusError)
    assert info.value.status == response.status


async def test_401_message_says_where_the_key_comes_from() -> None:
    """An authentication error names api_key= and OPENAI_API_KEY."""
    engine = tg.get_engine("m", base_url=BASE_URL, transport=scripted([error(401)]), api_key="")
    with pytest.raises(tg.AuthenticationError, match="OPENAI_API_KEY"):
        await engine.generate("x")


async def test_context_window_message_from_llama_cpp_maps_to_context_error() -> None:
    """llama.cpp's 400 for an over-long prompt becomes ContextLengthError."""
    body = (
        b'{"error": {"message": "Requested tokens (5000) exceed context window of 4096",'
        b' "type": "invalid_request_error"}}'
    )
    engine = engine_with(scripted([HTTPResponse(400, {}, body)]))
    with pytest.raises(tg.ContextLengthError, match="Shorten the inputs"):
        await engine.generate("x")


async def test_faults_past_max_attempts_raise_the_last_error() -> None:
    """After max_attempts tries of 5xx, ServerError is raised; no more requests are sent."""
    transport = scripted([], then=error(503, "overloaded"))
    engine = engine_with(transport, retry=RetryPolicy(max_attempts=3, testing=True))
    with pytest.raises(tg.ServerError, match="overloaded") as info:
        await engine.generate("x")
    assert info.value.status == 503
    assert len(transport.requests) == 3
    assert engine.stats()["failures"] == 1


async def test_backoff_is_exponential_capped_and_jittered() -> None:
    """Backoff doubles from initial_delay up to max_delay, minus at most `jitter` of it."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=4.0, jitter=0.25)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        for _ in range(20):
            assert full * 0.75 <= policy.backoff(attempt) <= full


async def test_fault_backoff_waits_on_the_clock() -> None:
    """A 5xx without retry-after is retried after the policy's backoff, measured on the clock."""
    clock = FakeClock()
    transport = scripted([error(500), ok()])
    engine = engine_with(transport, clock=clock, retry=RetryPolicy(initial_delay=2.0, jitter=0))
    await clock.drive(engine.generate("x"))
    assert clock.now() == pytest.approx(2.0)


async def test_retry_after_ms_is_honoured_before_retry_after() -> None:
    """A 429 with retry-after-ms: 250 and retry-after: 1 is retried after 0.25 s."""
    clock = FakeClock()
    transport = scripted([error(429, retry_after_ms="250", retry_after="1"), ok()])
    engine = engine_with(transport, clock=clock)
    await clock.drive(engine.generate("x"))
    assert clock.now() == pytest.approx(0.25)
    assert engine.stats()["rate_limited"] == 1


def test_retry_after_parsing_accepts_seconds_and_http_dates() -> None:
    """retry-after may be seconds or an HTTP date; garbage is ignored."""
    assert retry_after_seconds({"retry-after": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "12.5"}) == pytest.approx(0.0125)
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after_seconds({"retry-after": date}) or 0) <= 30
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_a_429_cools_down_the_whole_engine() -> None:
    """While one request waits out a 429's retry-after, other requests wait too."""
    clock = FakeClock()
    sent_at: list[float] = []
    first = True

    def handler(request: HTTPRequest) -> HTTPResponse:
        nonlocal first
        sent_at.append(clock.now())
        if first:
            first = False
            return error(429, retry_after="5")
        return ok()

    engine = engine_with(MockTransport(handler), clock=clock)

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(engine.generate("a"))
            await clock.sleep(1.0)
            group.create_task(engine.generate("b"))

    await clock.drive(main())
    assert sent_at == pytest.approx([0.0, 5.0, 5.0])


async def test_rate_limit_retries_are_bounded_by_total_time() -> None:
    """A 429 asking for a wait past max_total_seconds fails at once as RateLimitError."""
    clock = FakeClock()
    transport = scripted([error(429, retry_after="120")])
    engine = engine_with(transport, clock=clock, retry=RetryPolicy(max_total_seconds=60))
    with pytest.raises(tg.RateLimitError):
        await clock.drive(engine.generate("x"))
    assert clock.now() == 0


async def test_budget_is_respected_over_a_fan_out() -> None:
    """50 calls at rpm=600 are sent no faster than 10 a second after the first second's 10."""
    clock = FakeClock()
    sent_at: list[float] = []

    def handler(request: HTTPRequest) -> HTTPResponse:
        sent_at.append(clock.now())
        return ok()

    engine = engine_with(MockTransport(handler), clock=clock, rpm=600)

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for i in range(50):
                group.create_task(engine.generate(f"q{i}"))

    await clock.drive(main())
    assert len(sent_at) == 50
    for i, t in enumerate(sent_at):
        assert t == pytest.approx(max(0, (i - 9) / 10), abs=1e-6)


async def test_single_flight_sends_identical_concurrent_requests_once() -> None:
    """Ten identical concurrent calls at temperature 0 make one request and share its answer."""
    gate = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        await gate.wait()
        return ok("shared")

    transport = MockTransport(handler)
    engine = engine_with(transport)

    async def main() -> list[str]:
        tasks = [asyncio.create_task(engine.generate("same")) for _ in range(10)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    assert await main() == ["shared"] * 10
    assert len(transport.requests) == 1
    assert engine.stats()["coalesced"] == 9
    assert engine.stats()["calls"] == 10


async def test_sampled_requests_are_not_shared() -> None:
    """At temperature > 0 identical calls are distinct samples: each is sent."""
    transport = scripted([], then=ok())
    engine = engine_with(transport, temperature=0.8)
    await asyncio.gather(*(engine.generate("same") for _ in range(3)))
    assert len(transport.requests) == 3


async def test_single_flight_survives_the_leader_being_cancelled() -> None:
    """If the caller that sent the shared request is cancelled, a waiter sends it again."""
    release = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        await release.wait()
        return ok("late")

    transport = MockTransport(handler)
    engine = engine_with(transport)
    leader = asyncio.create_task(engine.generate("q"))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(engine.generate("q"))
    await asyncio.sleep(0.01)
    leader.cancel()
    await asyncio.sleep(0.01)
    release.set()
    assert await follower == "late"
    assert leader.cancelled()
    assert len(transport.requests) == 2
    assert engine.scheduler.in_flight == 0


async def test_cache_survives_a_restart(tmp_path: Path) -> None:
    """A response cached by one engine is served by a new engine from the same file, unsent."""
    path = tmp_path / "cache.bin"
    first = scripted([ok("remembered")])
    async with engine_with(first, cache=path) as engine:
        assert await engine.generate("q") == "remembered"
    second = scripted([])
    async with engine_with(second, cache=path) as engine:
        result = await engine.chat([{"role": "user", "content": "q"}])
        assert result.text == "remembered"
        assert result.cached
        assert engine.stats()["cache_hits"] == 1
    assert second.requests == []


async def test_cache_key_covers_every_sampling_parameter(tmp_path: Path) -> None:
    """Changing max_tokens or the model misses the cache; the API key does not matter."""
    path = tmp_path / "cache.bin"
    transport = scripted([], then=ok())
    async with engine_with(transport, cache=path) as engine:
        await engine.generate("q")
        await engine.generate("q", max_tokens=5)
        await engine.generate("q")
    assert len(transport.requests) == 2
    other = scripted([])
    other_key = tg.get_engine(
        "m", base_url=BASE_URL, api_key="sk-other", transport=other, cache=path
    )
    await other_key.generate("q")
    assert other.requests == []
    await other_key.aclose()


def test_cache_drops_a_record_cut_off_by_a_crash(tmp_path: Path) -> None:
    """A partial last record (a crash mid-write) is ignored and truncated on open."""
    from asynctg.engine.types import ChatResult, Usage

    path = tmp_path / "cache.bin"
    cache = ResponseCache(path)
    cache.put("a", ChatResult(texts=("A",), usage=Usage(1, 1)))
    cache.put("b", ChatResult(texts=("B",), usage=Usage(1, 1)))
    cache.close()
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 3)
    reopened = ResponseCache(path)
    assert reopened.get("a") is not None
    assert reopened.get("b") is None
    reopened.put("c", ChatResult(texts=("C",), usage=Usage(1, 1)))
    reopened.close()
    again = ResponseCache(path)
    assert sorted(k for k in ("a", "b", "c") if k in again) == ["a", "c"]
    again.close()


def test_cache_refuses_a_foreign_file(tmp_path: Path) -> None:
    """Pointing the cache at a file that is not one is a ConfigError, and the file is kept."""
    path = tmp_path / "notes.txt"
    path.write_text("my notes")
    with pytest.raises(tg.ConfigError, match="not an asynctg response cache"):
        ResponseCache(path)
    assert path.read_text() == "my notes"


async def test_priority_orders_queued_calls() -> None:
    """With one slot, queued calls are sent highest priority first."""
    order: list[str] = []
    gate = asyncio.Event()

    async def handler(request: HTTPRequest) -> HTTPResponse:
        text = request.body.decode()
        order.append(text.split('"content":"')[1].split('"')[0])
        await gate.wait()
        return ok()

    engine = engine_with(MockTransport(handler), max_concurrency=1)
    first = asyncio.create_task(engine.generate("first"))
    await asyncio.sleep(0.01)
    others = [
        asyncio.create_task(engine.generate(name, priority=p))
        for name, p in [("low", 0), ("high", 10), ("mid", 5)]
    ]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, *others)
    assert order == ["first", "high", "mid", "low"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "model must be a non-empty string"),
        ({"rpm": -5}, "rpm must be a positive number"),
        ({"tpm": 0}, "tpm must be a positive number"),
        ({"base_url": "localhost:8000"}, "base_url must be an http"),
        ({"base_url": "ftp://x/v1"}, "base_url must be an http"),
        ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
    ],
)
def test_bad_engine_settings_fail_with_clear_config_error(
    kwargs: dict[str, object], message: str
) -> None:
    """Bad settings raise ConfigError (a ValueError) naming the setting, before any I/O."""
    args: dict[str, object] = {"model": "m", "base_url": BASE_URL, **kwargs}
    model = args.pop("model")
    with pytest.raises(tg.ConfigError, match=message) as info:
        tg.get_engine(model, **args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_missing_base_url_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no base URL and no key anywhere, the error names OPENAI_BASE_URL and base_url=."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(tg.ConfigError, match="OPENAI_BASE_URL"):
        tg.get_engine("gpt-4o")


def test_base_url_and_key_default_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_BASE_URL and OPENAI_API_KEY are used when not passed."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    engine = tg.get_engine("gpt-4o")
    assert engine.base_url == "http://127.0.0.1:1234/v1"
    assert engine._headers["authorization"] == "Bearer sk-env"
    assert engine.stats()["cost_usd"] == 0.0  # gpt-4o has a price entry


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("hello", "messages must be a list"),
        ([], "messages is empty"),
        (["hello"], r"messages\[0\] must be a dict"),
        ([{"content": "x"}], r"messages\[0\].role must be one of"),
        ([{"role": "user"}], r"messages\[0\] has no 'content'"),
        ([{"role": "user", "content": 5}], "content must be a string or a list"),
        ([{"role": "user", "content": [b"not an image"]}], "not PNG, JPEG, GIF or WebP"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": FAKE_PNG_URL}}],
                }
            ],
            "does not hold a PNG",
        ),
        ([{"role": "user", "content": [{"type": "audio"}]}], "unknown content part type"),
    ],
)
async def test_bad_messages_fail_before_sending(messages: object, message: str) -> None:
    """Malformed messages and non-image images raise ConfigError; nothing is sent."""
    transport = scripted([])
    engine = engine_with(transport)
    with pytest.raises(tg.ConfigError, match=message):
        await engine.chat(messages)
    assert transport.requests == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": 3}, "temperature must be"),
        ({"max_tokens": 0}, "max_tokens must be"),
        ({"n": 0}, "n must be"),
        ({"stop": 5}, "stop must be"),
    ],
)
async def test_bad_sampling_parameters_fail_before_sending(
    params: dict[str, object], message: str
) -> None:
    """Out-of-range sampling parameters raise ConfigError before anything is sent."""
    transport = scripted([])
    engine = engine_with(transport)
    with pytest.raises(tg.ConfigError, match=message):
        await engine.chat([{"role": "user", "content": "x"}], **params)
    assert transport.requests == []


def test_errors_form_one_tree_and_pickle() -> None:
    """Every error derives from AsyncTGError; status errors keep their fields through pickle."""
    import pickle

    err = tg.RateLimitError("slow down", status=429, request_id="r", body="b", code="c")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, tg.RateLimitError)
    assert (back.status, back.request_id, back.body, back.code) == (429, "r", "b", "c")
    for name in tg.errors.__all__:
        assert issubclass(getattr(tg.errors, name), tg.AsyncTGError)
