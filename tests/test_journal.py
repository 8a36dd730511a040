"""The call journal (the response cache file) and checkpoints: damaged records cost only
themselves, several processes append safely, a resumed run's usage equals an uninterrupted
run's, state saves stay off the event loop, and damaged or missing checkpoints are refused
with a message that says what to do."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import engine_with

import asynctg as tg
from asynctg import apps, tasks
from asynctg.cli import main
from asynctg.engine import ResponseCache, RetryPolicy
from asynctg.engine.client import ChatEngine
from asynctg.engine.types import ChatResult, Usage
from asynctg.errors import ConfigError
from asynctg.runs.checkpoint import FORMAT, Checkpoint, fingerprint
from asynctg.sim import SimConfig, SimServer
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

# --- the journal file --------------------------------------------------------------------------


def _result(i: int) -> ChatResult:
    return ChatResult(texts=(f"answer {i} " + "x" * 40,), usage=Usage(10 + i, 1 + i))


def _fill(path: Path, n: int) -> list[int]:
    """Write ``n`` records; the byte offset where each one starts."""
    cache = ResponseCache(path)
    starts = []
    for i in range(n):
        starts.append(path.stat().st_size)
        cache.put(f"k{i}", _result(i))
    cache.close()
    return starts


def _flip(path: Path, offset: int, value: bytes | None = None) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(value if value is not None else bytes([old[0] ^ 0x5A]))


@pytest.mark.parametrize(
    "where", [0, 2, 5, 9, 30], ids=["magic", "magic2", "length", "crc", "body"]
)
def test_a_flipped_byte_mid_file_costs_only_its_record(
    tmp_path: Path, where: int, caplog: pytest.LogCaptureFixture
) -> None:
    """One damaged byte in record 25 of 50 loses that record only: 49 load, the file keeps its
    size, and the skip is logged and counted."""
    path = tmp_path / "journal.bin"
    starts = _fill(path, 50)
    size = path.stat().st_size
    _flip(path, starts[25] + where)
    with caplog.at_level(logging.WARNING, logger="asynctg.cache"):
        cache = ResponseCache(path)
    assert len(cache) == 49
    assert "k25" not in cache
    assert cache.get("k49") == _result(49)
    assert cache.skipped == 1
    assert any("skipped" in r.getMessage() for r in caplog.records if r.name == "asynctg.cache")
    cache.close()
    assert path.stat().st_size == size


@pytest.mark.parametrize("length", [0xFFFFFFF0, 3, 0])
def test_a_bad_length_prefix_keeps_the_records_after_it(tmp_path: Path, length: int) -> None:
    """A record whose length field is wrong (too long, too short) is skipped and every later
    record still loads; nothing is truncated."""
    path = tmp_path / "journal.bin"
    starts = _fill(path, 50)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(starts[10] + 4)  # the record's length field follows its 4-byte marker
        f.write(struct.pack("<I", length))
    cache = ResponseCache(path)
    assert len(cache) == 49 and "k10" not in cache
    assert all(f"k{i}" in cache for i in range(11, 50))
    assert cache.skipped == 1
    cache.close()
    assert path.stat().st_size == size


def test_a_damaged_last_record_is_skipped_not_truncated(tmp_path: Path) -> None:
    """A whole last record that fails its checksum is skipped but kept (only a record cut off
    by a crash is truncated), and records appended after it load on the next open."""
    path = tmp_path / "journal.bin"
    starts = _fill(path, 5)
    size = path.stat().st_size
    _flip(path, starts[4] + 20)
    cache = ResponseCache(path)
    assert len(cache) == 4 and cache.skipped == 1
    assert path.stat().st_size == size
    cache.put("after", _result(9))
    cache.close()
    again = ResponseCache(path)
    assert len(again) == 5 and "after" in again
    again.close()


def test_a_record_cut_off_after_damage_is_still_truncated(tmp_path: Path) -> None:
    """Damage in the middle does not stop a torn last record (a crash mid-write) from being
    truncated away, nor the records between them from loading."""
    path = tmp_path / "journal.bin"
    starts = _fill(path, 6)
    _flip(path, starts[2] + 20)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 7)
    cache = ResponseCache(path)
    assert [k for k in (f"k{i}" for i in range(6)) if k in cache] == ["k0", "k1", "k3", "k4"]
    assert cache.skipped == 1
    cache.close()
    assert path.stat().st_size == starts[5]


def test_short_writes_are_continued_until_the_record_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``os.write`` may write less than asked: the rest of the record is written too."""
    path = tmp_path / "journal.bin"
    cache = ResponseCache(path)
    real_write = os.write

    def short_write(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data)[:7])

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", short_write)
        for i in range(5):
            cache.put(f"k{i}", _result(i))
    cache.close()
    again = ResponseCache(path)
    assert [again.get(f"k{i}") for i in range(5)] == [_result(i) for i in range(5)]
    assert again.skipped == 0
    again.close()


def _record_bytes(tmp_path: Path, key: str, result: ChatResult) -> bytes:
    """The bytes ``put`` appends for one record, whatever the format."""
    scratch = tmp_path / "scratch.bin"
    cache = ResponseCache(scratch)
    before = scratch.stat().st_size
    cache.put(key, result)
    cache.close()
    return scratch.read_bytes()[before:]


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: no lock")
def test_an_open_waits_for_an_append_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening while another writer is half-way through a record (holding the lock, as every
    append does) waits for it, instead of truncating the record as if a crash had cut it."""
    import fcntl

    path = tmp_path / "journal.bin"
    _fill(path, 1)
    record = _record_bytes(tmp_path, "late", _result(7))
    real_flock = fcntl.flock
    reached = threading.Event()  # the opener is about to take the lock, or has opened

    def flock(fd: int, op: int) -> None:
        if op == fcntl.LOCK_EX:
            reached.set()
        real_flock(fd, op)

    opened: list[ResponseCache] = []

    def open_cache() -> None:
        try:
            opened.append(ResponseCache(path))
        finally:
            reached.set()

    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        real_flock(fd, fcntl.LOCK_EX)
        os.write(fd, record[:9])
        monkeypatch.setattr(fcntl, "flock", flock)
        opener = threading.Thread(target=open_cache)
        opener.start()
        assert reached.wait(timeout=30)
        os.write(fd, record[9:])
        real_flock(fd, fcntl.LOCK_UN)
        opener.join(timeout=30)
    finally:
        os.close(fd)
    monkeypatch.undo()
    (cache,) = opened
    assert "late" in cache and cache.skipped == 0
    cache.close()
    again = ResponseCache(path)
    assert again.get("late") == _result(7) and len(again) == 2
    again.close()


def test_threads_appending_in_short_writes_never_interleave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers on one file (separate opens, as two processes have), each record split over
    many short writes: every record comes back whole."""
    path = tmp_path / "journal.bin"
    caches = [ResponseCache(path), ResponseCache(path)]
    real_write = os.write

    def short_write(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data)[:16])

    def append(n: int) -> None:
        for i in range(150):
            caches[n].put(f"{n}-{i}", _result(i))

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", short_write)
        writers = [threading.Thread(target=append, args=(n,)) for n in (0, 1)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=30)
    for cache in caches:
        cache.close()
    again = ResponseCache(path)
    assert len(again) == 300 and again.skipped == 0
    again.close()


def test_a_version_1_file_is_read_and_upgraded(tmp_path: Path) -> None:
    """A cache written by the previous format (length-prefixed, no checksum) loads whole and
    is rewritten in the current format, so new records append safely."""
    path = tmp_path / "old.bin"
    encode = msgspec.msgpack.Encoder().encode
    records = b"".join(
        struct.pack("<I", len(p)) + p
        for p in (encode([f"k{i}", msgspec.to_builtins(_result(i))]) for i in range(3))
    )
    path.write_bytes(b"asynctg-cache-v1\n" + records)
    cache = ResponseCache(path)
    assert [cache.get(f"k{i}") for i in range(3)] == [_result(i) for i in range(3)]
    cache.put("k3", _result(3))
    cache.close()
    assert path.read_bytes().startswith(b"asynctg-cache-v2\n")
    again = ResponseCache(path)
    assert len(again) == 4 and again.skipped == 0
    again.close()
    assert not list(tmp_path.glob("*.v1"))  # read whole: no backup needed


_WRITER = """
import sys
from asynctg.engine.cache import ResponseCache
from asynctg.engine.types import ChatResult, Usage

path, tag = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
cache = None
for i in range(1000):
    if i % 50 == 0:  # reopen now and then, as new engines on one cache do
        if cache is not None:
            cache.close()
        cache = ResponseCache(path)
    cache.put(f"{tag}-{i}", ChatResult(texts=(tag * 3000,), usage=Usage(i, 1)))
cache.close()
"""


def test_two_processes_appending_at_once_lose_no_record(tmp_path: Path) -> None:
    """Two processes appending 1000 records each to one new file, reopening it as they go:
    reopening afterwards finds all 2000."""
    path = tmp_path / "shared.bin"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for proc in procs:  # both started before either writes: they race from the first byte
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        assert proc.wait(timeout=50) == 0
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdout.close()
        proc.stdin.close()
    cache = ResponseCache(path)
    assert len(cache) == 2000
    assert cache.skipped == 0
    cache.close()


# --- usage of a resumed run ----------------------------------------------------------------


def _provider() -> MockTransport:
    """Answers every question; the usage grows with the question, so each call is distinct."""

    def handler(request: HTTPRequest) -> HTTPResponse:
        body = msgspec.json.decode(request.body)
        n = int(body["messages"][-1]["content"].removeprefix("q"))
        usage = {"prompt_tokens": 100 + n, "completion_tokens": 10 * n}
        answer = {"choices": [{"message": {"content": f"a{n}"}}], "usage": usage}
        return HTTPResponse(200, {}, msgspec.json.encode(answer))

    return MockTransport(handler)


async def _session(
    folder: Path, questions: list[int], *, resume: bool, save_after: int | None = None
) -> dict[str, Any]:
    """One process's life: ask ``questions`` through a checkpoint, saving the meter's total
    after the first ``save_after`` of them; ends without a final save (as a kill -9)."""
    ckpt = Checkpoint(folder, {"run": 1}, resume=resume)
    ckpt.open()
    engine = engine_with(_provider(), price=(1.0, 2.0))
    ckpt.attach(engine)
    meter = apps.Meter([engine], (ckpt.state or {}).get("usage"))
    for i, n in enumerate(questions):
        if i == save_after:
            ckpt.save({"usage": meter.total()})
        await engine.generate(f"q{n}")
    if save_after == len(questions):
        ckpt.save({"usage": meter.total()})
    total = meter.total()
    await engine.aclose()
    ckpt.close()
    return total


_COUNTED = ("calls", "provider_calls", "prompt_tokens", "completion_tokens", "total_tokens")


def _counts(usage: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: usage[k] for k in _COUNTED}
    out["cost_usd"] = round(usage["cost_usd"], 9)
    return out


async def test_a_resumed_run_counts_what_the_killed_run_paid_after_its_last_save(
    tmp_path: Path,
) -> None:
    """Calls paid after the last save and replayed from the journal on resume count as paid
    (with their journaled tokens) once; a later replay of one of them is a free cache hit, as
    in a run never interrupted."""
    questions = [1, 2, 3, 4, 5, 4, 6]
    full = await _session(tmp_path / "full", questions, resume=False)
    assert full["provider_calls"] == 6 and full["cache_hits"] == 1
    folder = tmp_path / "killed"
    await _session(folder, questions[:5], resume=False, save_after=3)  # 4 and 5 unsaved
    resumed = await _session(folder, questions[3:], resume=True)
    assert _counts(resumed) == _counts(full)
    assert resumed["cache_hits"] == 1


async def test_usage_survives_two_kills_in_a_row(tmp_path: Path) -> None:
    """A call replayed after the resumed session's own save still counts once: the save
    carries the calls it had not counted yet into the next resume."""
    questions = [1, 2, 3, 4, 5, 6]
    full = await _session(tmp_path / "full", questions, resume=False)
    folder = tmp_path / "killed"
    await _session(folder, [1, 2, 3, 4], resume=False, save_after=1)  # 2, 3, 4 unsaved
    await _session(folder, [2, 3], resume=True, save_after=1)  # 2 counted and saved; 3 not
    resumed = await _session(folder, [3, 4, 5, 6], resume=True)
    assert _counts(resumed) == _counts(full)


async def test_a_run_killed_before_its_first_save_counts_every_journaled_call(
    tmp_path: Path,
) -> None:
    """With no saved state, every journaled call was paid by the killed run and is counted on
    its first replay."""
    full = await _session(tmp_path / "full", [1, 2, 3], resume=False)
    folder = tmp_path / "killed"
    await _session(folder, [1, 2], resume=False)
    resumed = await _session(folder, [1, 2, 3], resume=True)
    assert _counts(resumed) == _counts(full)


@pytest.fixture
async def sim() -> AsyncIterator[tuple[SimServer, dict[str, Any]]]:
    """A simulator whose responder cancels ``hook["task"]`` at request ``hook["cut"]``."""
    hook: dict[str, Any] = {"seen": 0, "cut": None, "task": None}

    def responder(request: Mapping[str, Any]) -> str | None:
        hook["seen"] += 1
        if hook["seen"] == hook["cut"]:
            hook["task"].cancel()  # as sudden as a kill -9 for the loop: no save follows
        return None

    server = SimServer(SimConfig(latency="0", responder=responder))
    await server.start()
    yield server, hook
    await server.aclose()


def _sim_engine(server: SimServer) -> ChatEngine:
    return tg.get_engine(
        "sim-1", base_url=server.base_url, retry=RetryPolicy(testing=True), price=(1.0, 2.0)
    )


async def _loop_run(
    kind: str, server: SimServer, folder: Path, resume: bool
) -> dict[str, Any] | None:
    """Run a loop through a checkpoint; its usage, or None if it was cancelled."""
    ckpt = Checkpoint(folder, {"kind": kind}, resume=resume)
    ckpt.open()
    try:
        async with _sim_engine(server) as engine:
            if kind == "prompt":
                task = tasks.get_task("object_counting", train_size=6, val_size=3, test_size=3)
                assert isinstance(task, tasks.PromptTask)
                config = apps.PromptConfig(batch_size=3, epochs=1, steps_per_epoch=2)
                result: Any = await apps.optimize_prompt(
                    task, engine, config=config, checkpoint=ckpt
                )
            else:
                task = tasks.get_task("arithmetic_choice", limit=6)
                assert isinstance(task, tasks.SolutionTask)
                result = await apps.optimize_solutions(
                    task, engine, config=apps.SolutionConfig(iterations=2), checkpoint=ckpt
                )
        usage: dict[str, Any] = result.usage
        return usage
    except asyncio.CancelledError:
        return None
    finally:
        ckpt.close()


@pytest.mark.parametrize("kind", ["prompt", "solution"])
async def test_a_loop_stopped_mid_step_and_resumed_pays_what_an_uninterrupted_one_does(
    sim: tuple[SimServer, dict[str, Any]], tmp_path: Path, kind: str
) -> None:
    """A prompt or solution loop cancelled half-way (no save after it) and resumed reports the
    same calls, tokens and cost as the same run never interrupted."""
    server, hook = sim

    async def run(folder: Path, resume: bool) -> dict[str, Any] | None:
        task = asyncio.ensure_future(_loop_run(kind, server, folder, resume))
        hook["task"] = task
        return await task

    full = await run(tmp_path / "full", resume=False)
    assert full is not None
    hook["seen"], hook["cut"] = 0, server.stats()["requests"] // 2
    assert await run(tmp_path / "part", resume=False) is None
    hook["cut"] = None
    resumed = await run(tmp_path / "part", resume=True)
    assert resumed is not None
    assert _counts(resumed) == _counts(full)


# --- saving the state --------------------------------------------------------------------------


def _record_fsync_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads ``os.fsync`` is called in from now on (it still syncs)."""
    threads: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return threads


async def test_asave_syncs_the_state_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asave`` writes and fsyncs the state file off the event loop's thread."""
    ckpt = Checkpoint(tmp_path / "ck", {"a": 1}, resume=False)
    ckpt.open()
    synced_in = _record_fsync_threads(monkeypatch)
    await ckpt.asave({"step": 1})
    monkeypatch.undo()
    ckpt.close()
    assert synced_in and threading.get_ident() not in synced_in
    assert Checkpoint(tmp_path / "ck", {"a": 1}, resume=True).state == {"step": 1}


async def test_concurrent_asaves_leave_the_newest_state(tmp_path: Path) -> None:
    """Many saves in flight at once never clash, and the last one asked for is what stays."""
    ckpt = Checkpoint(tmp_path / "ck", {"a": 1}, resume=False)
    ckpt.open()
    await asyncio.gather(*(ckpt.asave({"step": i}) for i in range(30)))
    assert ckpt.state == {"step": 29}
    ckpt.close()
    assert Checkpoint(tmp_path / "ck", {"a": 1}, resume=True).state == {"step": 29}
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")]


async def test_a_test_time_loop_saves_off_the_event_loop(
    sim: tuple[SimServer, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-item saves of a test-time loop (``ItemRun``) never fsync on the loop's thread."""
    server, _ = sim
    ckpt = Checkpoint(tmp_path / "ck", {"kind": "solution"}, resume=False)
    ckpt.open()
    synced_in = _record_fsync_threads(monkeypatch)
    task = tasks.get_task("arithmetic_choice", limit=3)
    assert isinstance(task, tasks.SolutionTask)
    async with _sim_engine(server) as engine:
        result = await apps.optimize_solutions(
            task, engine, config=apps.SolutionConfig(iterations=1), checkpoint=ckpt
        )
    monkeypatch.undo()
    ckpt.close()
    assert result.status == "completed"
    assert synced_in and threading.get_ident() not in synced_in


# --- damaged and missing checkpoints -----------------------------------------------------------


def _made(folder: Path, config: dict[str, Any]) -> None:
    ckpt = Checkpoint(folder, config, resume=False)
    ckpt.open()
    ckpt.save({"step": 1})
    ckpt.close()


_FP = fingerprint({"a": 1})


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        json.dumps({"format": FORMAT, "fingerprint": _FP}),
        json.dumps({"format": FORMAT, "fingerprint": _FP, "state": [1, 2]}),
        json.dumps({"format": FORMAT, "fingerprint": 7, "state": {}}),
        json.dumps({"format": FORMAT, "fingerprint": _FP, "state": {}, "journal": {"offset": -1}}),
        '{"format": "asynctg-checkpoint-1", "fingerp',
    ],
    ids=["list", "no-state", "state-list", "fingerprint-int", "negative-offset", "cut-off"],
)
def test_a_tampered_state_file_is_a_config_error_saying_what_to_do(
    tmp_path: Path, text: str
) -> None:
    """A state.json of the wrong shape is refused with a ConfigError that names the file and
    says to delete the folder and start without --resume (not a TypeError or KeyError)."""
    folder = tmp_path / "ck"
    _made(folder, {"a": 1})
    (folder / "state.json").write_text(text)
    with pytest.raises(ConfigError) as info:
        Checkpoint(folder, {"a": 1}, resume=True)
    message = str(info.value)
    assert str(folder / "state.json") in message
    assert f"delete the folder {folder}" in message and "without --resume" in message


def test_a_tampered_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A config.json whose ``config`` is not a mapping is refused with a ConfigError naming
    it, not an AttributeError while describing the difference."""
    folder = tmp_path / "ck"
    _made(folder, {"a": 1})
    config = folder / "config.json"
    config.write_text(json.dumps({"format": FORMAT, "fingerprint": "x", "config": [1]}))
    with pytest.raises(ConfigError, match=r"config\.json"):
        Checkpoint(folder, {"a": 1}, resume=True)


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty"])
def test_resume_of_a_folder_without_a_checkpoint_is_refused(tmp_path: Path, exists: bool) -> None:
    """``resume=True`` on a missing or empty folder (a mistyped path) is a ConfigError, and
    nothing is created."""
    folder = tmp_path / "typo"
    if exists:
        folder.mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint: check the path, or drop --resume"):
        Checkpoint(folder, {"a": 1}, resume=True)
    assert folder.exists() == exists
    assert not exists or not list(folder.iterdir())
    assert not Checkpoint.exists(folder)


def test_resume_of_a_run_killed_before_its_first_save_is_allowed(tmp_path: Path) -> None:
    """A folder with the run's configuration but no state yet is a checkpoint: it resumes."""
    folder = tmp_path / "ck"
    Checkpoint(folder, {"a": 1}, resume=False).open()
    assert Checkpoint.exists(folder)
    assert Checkpoint(folder, {"a": 1}, resume=True).state is None


def test_cli_resume_with_a_mistyped_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--resume --checkpoint TYPO` exits 2 with the message, instead of starting afresh."""
    folder = tmp_path / "typo"
    code = main(["optimize", "--sim", "--quiet", "--checkpoint", str(folder), "--resume"])
    assert code == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert not folder.exists()


def test_the_journal_mark_is_saved_with_the_state(tmp_path: Path) -> None:
    """Each save records where the journal stood, so a resume can tell which journaled calls
    the saved usage already counts."""
    folder = tmp_path / "ck"
    ckpt = Checkpoint(folder, {"a": 1}, resume=False)
    ckpt.open()
    ckpt.journal.put("k", _result(1))
    ckpt.save({"step": 1})
    ckpt.close()
    saved = json.loads((folder / "state.json").read_text())
    assert saved["journal"] == {"offset": (folder / "journal.bin").stat().st_size, "uncounted": []}
