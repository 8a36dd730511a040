"""Issue 21, "engine and files": the engine's and its files' defences against a hostile or
odd endpoint, a shared cache, a planted link, and nonsense prices."""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from support import completion, engine_with, ok

import asynctg as tg
from asynctg.cli import main
from asynctg.engine import ResponseCache, RetryPolicy
from asynctg.engine.streaming import SSEParser
from asynctg.engine.types import Usage
from asynctg.errors import ConfigError, RedirectError, StreamEventTooLargeError
from asynctg.runs.checkpoint import Checkpoint, atomic_write_text, probe_writable
from asynctg.transport import MockTransport

BASE_URL = "http://127.0.0.1:9/v1"
_PORT_A, _PORT_B = "http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"
_CHECKPOINT_FILES = ("config.json", "state.json", "journal.bin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.mark.parametrize(
    "price", [(math.nan, 1.0), (1.0, math.inf), (-1.0, 1.0), (1.0, 2.0, 3.0), ("a", 1)]
)
def test_a_non_finite_or_negative_price_is_a_config_error(price: tuple[float, ...]) -> None:
    """get_engine(price=...) refuses NaN, infinite, negative and malformed prices."""
    with pytest.raises(ConfigError, match="price"):
        tg.get_engine("m", base_url=BASE_URL, api_key="k", price=price)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["nan,nan", "1,inf"])
def test_cli_price_nan_is_refused_before_anything_runs(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--price nan,nan` (or inf) exits 2 with the engine's own message, instead
    of a run that reports `$nan` or crashes on its dollar cap."""
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", "--sim", "--price", text, "--max-cost", "1", "--steps", "1"])
    assert exit_info.value.code == 2
    assert "finite numbers >= 0" in capsys.readouterr().err


# --- files: private, and never through a planted link ------------------------------------------


def test_cache_journal_and_checkpoint_files_are_created_0600(tmp_path: Path) -> None:
    """A new response cache, and a checkpoint's config, state and journal, are readable and
    writable by their owner only, whatever the umask lets through."""
    old = os.umask(0o022)
    try:
        cache = ResponseCache(tmp_path / "cache.bin")
        cache.close()
        ckpt = Checkpoint(tmp_path / "run", {"task": "t"}, resume=False)
        ckpt.open()
        ckpt.save({"step": 1})
        ckpt.close()
    finally:
        os.umask(old)
    files = [tmp_path / "cache.bin", *(tmp_path / "run" / n for n in _CHECKPOINT_FILES)]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


def test_a_link_planted_at_the_old_temp_name_is_not_followed(tmp_path: Path) -> None:
    """A symlink planted where atomic_write_text used to put its temporary file (a name any
    local user could predict) neither has its target overwritten nor replaces the file."""
    folder, outside = tmp_path / "run", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("precious")
    (folder / f".state.json.{os.getpid()}.tmp").symlink_to(outside)
    atomic_write_text(folder / "state.json", "new state")
    assert outside.read_text() == "precious"
    assert not (folder / "state.json").is_symlink()
    assert (folder / "state.json").read_text() == "new state"


def test_a_link_planted_at_the_old_probe_name_is_not_followed(tmp_path: Path) -> None:
    """probe_writable does not truncate the target of a link planted at the probe name it
    used to use."""
    folder, outside = tmp_path / "reports", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("precious")
    (folder / f".asynctg-probe-{os.getpid()}").symlink_to(outside)
    probe_writable(folder, "report folder")
    assert outside.read_text() == "precious"
    assert sorted(p.name for p in folder.iterdir()) == [f".asynctg-probe-{os.getpid()}"]


# --- a hostile or odd endpoint -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    """``handler`` answering every POST on a free loopback port; yields the server's root URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status", [307, 302])
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_redirected_chat_post_is_not_followed(status: int, streamed: bool) -> None:
    """A 307/302 answer to a chat POST is a RedirectError, not retried, and the origin the
    Location names receives nothing (neither the prompt nor the key)."""
    elsewhere: list[bytes] = []
    asked: list[bytes] = []

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.json_response(msgspec.json.decode(completion("stolen")))

    async with _server(other) as other_root:

        async def redirecting(request: web.Request) -> web.Response:
            asked.append(await request.read())
            redirect = web.HTTPTemporaryRedirect if status == 307 else web.HTTPFound
            raise redirect(f"{other_root}/v1/chat/completions")

        async with (
            _server(redirecting) as root,
            tg.get_engine("m", base_url=f"{root}/v1", api_key="sk-secret") as engine,
        ):
            with pytest.raises(RedirectError, match=r"does not follow redirects") as info:
                if streamed:
                    await engine.stream("a secret prompt").collect()
                else:
                    await engine.generate("a secret prompt")
    assert info.value.status == status and other_root in str(info.value)
    assert elsewhere == [] and len(asked) == 1


async def test_a_plain_json_answer_to_a_stream_request_is_one_completion() -> None:
    """A server that answers a streaming request with one plain JSON completion (no event
    stream) gives one delta holding the whole answer, with the body's usage, in one request:
    the stream ends instead of retrying a "stream ended early" until the retries run out."""
    bodies: list[bytes] = []

    async def plain(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response(msgspec.json.decode(completion("whole answer", 7, 3)))

    async with (
        _server(plain) as root,
        tg.get_engine(
            "m", base_url=f"{root}/v1", api_key="k", retry=RetryPolicy(testing=True)
        ) as engine,
    ):
        async with engine.stream("hi") as stream:
            deltas = [delta async for delta in stream]
    assert deltas == ["whole answer"] and stream.text == "whole answer"
    assert stream.attempts == 1 and len(bodies) == 1 and b'"stream":true' in bodies[0]
    assert stream.usage == Usage(7, 3) and not stream.usage_estimated


def _sse_line(size: int) -> bytes:
    """One event whose single data line is a chunk carrying ``size`` bytes of content."""
    chunk = {"choices": [{"index": 0, "delta": {"content": "x" * size}}]}
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


@pytest.mark.parametrize("block", [1, 4096])
def test_sse_parsing_of_one_huge_line_is_linear(block: int) -> None:
    """A single long line fed in small blocks is searched once per byte, not re-scanned per
    block: the bytes the parser examines stay within three times the body, and doubling the
    line doubles the work (the old parser re-scanned its whole buffer on every block)."""

    def examined(size: int) -> tuple[int, int]:
        body = _sse_line(size)
        step = block if block > 1 else max(1, len(body) // 20_000)  # 20k feeds at most
        parser = SSEParser()
        deltas = [d for i in range(0, len(body), step) for d in parser.feed(body[i : i + step])]
        assert deltas == ["x" * size]
        return parser.examined, len(body)

    (small, small_len), (large, large_len) = examined(1 << 20), examined(2 << 20)
    assert small <= 3 * small_len and large <= 3 * large_len
    assert large <= 2.2 * small


def test_an_sse_event_past_its_cap_is_a_typed_error() -> None:
    """An event still unfinished past max_event_bytes raises StreamEventTooLargeError (never
    retried) instead of growing the buffer up to the whole response cap."""
    parser = SSEParser(max_event_bytes=1000)
    parser.feed(b"data: " + b"x" * 900)
    with pytest.raises(StreamEventTooLargeError, match="1000 bytes"):
        parser.feed(b"x" * 200)
    plain = SSEParser(max_event_bytes=1000)
    with pytest.raises(StreamEventTooLargeError):
        plain.feed(b'{"choices": "' + b"x" * 2000)


# --- the cache and the journal: whose answers ---------------------------------------------------


def _answering(text: str) -> MockTransport:
    return MockTransport(lambda request: ok(text))


async def test_a_cache_shared_by_two_endpoints_never_answers_for_the_other(
    tmp_path: Path,
) -> None:
    """An answer cached from endpoint A is served to A again but not to endpoint B (same
    model, same request, same cache file): B asks its own server."""
    path = tmp_path / "cache.bin"
    first, second, again = _answering("from A"), _answering("from B"), _answering("never")
    async with engine_with(first, cache=path, base_url=_PORT_A) as a:
        assert await a.generate("q") == "from A"
    async with engine_with(second, cache=path, base_url=_PORT_B) as b:
        assert await b.generate("q") == "from B"
    async with engine_with(again, cache=path, base_url="http://127.0.0.1:8001/v1/") as a:
        assert await a.generate("q") == "from A"  # (the same endpoint, spelt with a slash)
    assert [len(t.requests) for t in (first, second, again)] == [1, 1, 0]


async def test_journals_replay_whatever_address_the_server_had(tmp_path: Path) -> None:
    """A journal recorded against a server on one port replays with an engine on another
    (cache_mode="replay", as `--replay` does), and a checkpoint resumed against a simulator on
    a fresh port finds its journaled calls: journals are keyed by the request alone."""
    journal = tmp_path / "journal.bin"
    recorder = engine_with(
        _answering("recorded"), cache=journal, cache_mode="record", base_url=_PORT_A
    )
    async with recorder:
        assert await recorder.generate("q") == "recorded"
    replayer = engine_with(
        _answering("never"), cache=journal, cache_mode="replay", base_url=_PORT_B
    )
    async with replayer:
        assert await replayer.generate("q") == "recorded"

    sent = []
    for port, text in ((_PORT_A, "first session"), (_PORT_B, "second session")):
        ckpt = Checkpoint(tmp_path / "run", {"task": "t"}, resume=port == _PORT_B)
        ckpt.open()
        transport = _answering(text)
        async with engine_with(transport, base_url=port) as engine:
            ckpt.attach(engine)
            assert await engine.generate("q") == "first session"
        ckpt.close()
        sent.append(len(transport.requests))
    assert sent == [1, 0]
