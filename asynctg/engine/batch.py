"""The batch tier: a fan-out's calls as one provider batch, at half price, durably.

A call at the batch tier (``asynctg.engine.tiers``) does not go out alone: it joins the *wave*
of batch-tier calls the same fan-out makes at the same moment (an evaluation starts every
example's call in one loop turn). The first call of a wave leads it: it lets the loop run until
no new call has joined for ``QUIET_ROUNDS`` turns (no clock involved: the fan-out's tasks reach
the engine without waiting on anything), then

1. a wave smaller than the engine's ``batch_min`` is sent as ordinary calls at standard;
2. otherwise the dollar cap reserves the whole wave's worst case at batch prices;
3. the ledger (``BatchLedger``, a checkpoint's ``batches.jsonl``) records the batch's tag and
   its requests' keys, flushed to disk, *before* anything is submitted;
4. the requests are uploaded as JSONL (``POST /files``, purpose ``batch``, each line's
   ``custom_id`` the request's cache key) and the batch created (``POST /batches``,
   ``completion_window: "24h"``, ``metadata.asynctg_tag``: the tag); the ledger records its id;
5. it is polled (the first look at once, then a capped exponential backoff) until it ends, or
   ``BatchTimeoutError`` past the engine's ``batch_deadline``; the output and error files are
   downloaded (``GET /files/{id}/content``), every answer is written to the engine's cache
   (the run's journal) and the ledger records the batch as ended;
6. each call of the wave gets its answer; a failed or expired item is sent as an ordinary call.

Durability: a resumed run (``--resume``) replays answered calls from the journal, so they never
reach a batch again; a call the ledger lists in a batch not yet ended re-attaches to that batch
(polls it, reads its results) instead of joining a new one. A crash after submitting but before
the ledger learned the batch's id is covered by the tag: the batch is looked up by its
``metadata`` among the provider's recent batches before anything is submitted again. So one
request is never in two paid batches.

OpenAI's Batch API is implemented; Anthropic's Message Batches are not yet (the engine has no
Anthropic adapter here: batch-tier calls to another provider go as ordinary calls).

Bounds: a wave is split into batches of at most ``MAX_BATCH_REQUESTS`` (so an output file stays
under the transport's response cap); the ledger and every file read have size and line caps.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from asynctg.engine.budget import Budgets, Estimate, Permit, Spent
from asynctg.engine.jobs import current_job
from asynctg.engine.providers.openai import parse_completion
from asynctg.engine.tiers import saved_nano
from asynctg.engine.types import ChatRequest, ChatResult
from asynctg.errors import (
    APIError,
    BatchError,
    BatchTimeoutError,
    ConfigError,
    ResponseParseError,
)
from asynctg.transport import HTTPRequest, HTTPResponse

if TYPE_CHECKING:
    from asynctg.engine.client import ChatEngine

__all__ = ["LEDGER_FILE", "MAX_BATCH_REQUESTS", "BatchLedger", "BatchRunner"]

#: Loop turns with no new call after which a wave is complete.
QUIET_ROUNDS = 16
#: Loop turns a wave may keep growing (a bound; a fan-out joins in a few turns).
MAX_GATHER_ROUNDS = 10_000
#: Requests in one provider batch at most: OpenAI takes 50,000, but the output file of a batch
#: must fit the transport's response cap (32 MiB) at a few KiB an answer.
MAX_BATCH_REQUESTS = 5_000
#: Polling: the first look is immediate, then waits double from the first to the longest.
POLL_FIRST_WAIT = 2.0
POLL_MAX_WAIT = 60.0
#: Pages of the provider's batch list searched for a tag on resume (100 batches a page).
LOOKUP_PAGES = 10
#: The ledger's file name in a checkpoint folder, and its caps.
LEDGER_FILE = "batches.jsonl"
MAX_LEDGER_BYTES = 256 * 1024 * 1024
MAX_LEDGER_LINES = 100_000
#: Lines read from one output or error file at most.
MAX_RESULT_LINES = MAX_BATCH_REQUESTS * 2
#: The OpenAI endpoint every batch line calls.
CHAT_ENDPOINT = "/v1/chat/completions"
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class LedgerEntry:
    """One batch the ledger knows: its tag, its requests' keys, its id once created."""

    tag: str
    api: str
    keys: list[str]
    batch_id: str | None = None
    ended: bool = False


class _Line(msgspec.Struct):
    event: str
    tag: str
    api: str = "openai"
    keys: list[str] = []
    batch_id: str | None = None


class BatchLedger:
    """An append-only record of a run's provider batches (``batches.jsonl``; see the module).

    Each event is one JSON line, written with one ``write`` and flushed to disk (``fsync``)
    before ``record`` returns: "pending" (tag, keys) before a batch is submitted, "submitted"
    (tag, batch id) once it exists, "ended" (tag) once its answers are journaled. A damaged
    last line (a crash mid-write) is ignored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries: dict[str, LedgerEntry] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        size = self.path.stat().st_size
        if size > MAX_LEDGER_BYTES:
            raise ConfigError(f"{self.path} is larger than {MAX_LEDGER_BYTES} bytes; damaged?")
        with self.path.open("rb") as f:
            for number, raw in enumerate(f):
                if number >= MAX_LEDGER_LINES:
                    raise ConfigError(f"{self.path} has more than {MAX_LEDGER_LINES} lines")
                try:
                    line = msgspec.json.decode(raw, type=_Line)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # a line cut short by a crash: its event did not happen
                self._apply(line)

    def _apply(self, line: _Line) -> None:
        if line.event == "pending":
            self.entries[line.tag] = LedgerEntry(line.tag, line.api, list(line.keys))
            return
        entry = self.entries.get(line.tag)
        if entry is None:
            return
        if line.event == "submitted":
            entry.batch_id = line.batch_id
        elif line.event == "ended":
            entry.ended = True

    def open_batches(self) -> list[LedgerEntry]:
        """Batches recorded and not ended, oldest first."""
        return [e for e in self.entries.values() if not e.ended]

    def record(self, event: str, tag: str, **fields: Any) -> None:
        """Append one event, on disk before this returns (blocking: call it off the loop)."""
        line = _Line(event, tag, **fields)
        data = msgspec.json.encode(line) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._apply(line)

    async def arecord(self, event: str, tag: str, **fields: Any) -> None:
        """``record`` in a worker thread, so the loop never waits for the disk."""
        await asyncio.to_thread(self.record, event, tag, **fields)


@dataclass
class _Wave:
    """Calls that arrived together: key -> (request, the future of its answer or None)."""

    items: dict[str, tuple[ChatRequest, asyncio.Future[ChatResult | None]]] = field(
        default_factory=dict
    )


class _ResponseBody(msgspec.Struct):
    status_code: int = 0
    request_id: str | None = None
    body: msgspec.Raw = msgspec.Raw(b"null")


class _OutputLine(msgspec.Struct):
    custom_id: str = ""
    response: _ResponseBody | None = None


class BatchRunner:
    """An engine's batch-tier calls (see the module). ``ledger``: where batches are recorded
    (a checkpoint sets it; None: nothing survives the process). ``submitted`` and ``attached``
    count batches created and batches re-attached to."""

    def __init__(self, engine: ChatEngine) -> None:
        self.engine = engine
        self.ledger: BatchLedger | None = None
        self.submitted = 0
        self.attached = 0
        self._wave: _Wave | None = None
        self._journaled: set[str] = set()

    # --- the calls' side -------------------------------------------------------------------

    async def answer(self, key: str, request: ChatRequest) -> ChatResult | None:
        """The answer to ``request`` from its wave's batch, counted in the caller's usage;
        None: send it as an ordinary call (a small wave, a failed or expired item)."""
        if self.engine.provider.name != "openai":
            return None  # (Anthropic's Message Batches: not yet; see the module)
        wave, lead = self._wave, False
        if wave is None:
            wave, lead = _Wave(), True
            self._wave = wave
        if key in wave.items:
            return None  # a twin in the same wave (a sampled call): it goes on its own
        future: asyncio.Future[ChatResult | None] = asyncio.get_running_loop().create_future()
        wave.items[key] = (request, future)
        if lead:
            await self._lead(wave)
        result = await future
        if result is not None:
            engine = self.engine
            job = current_job(engine)
            if job is not None:
                job.start_call()
            usage = engine._charged()
            usage.requests += 1
            engine._account(result, usage, "batch")
        return result

    def journaled(self, key: str) -> bool:
        """Whether the answer for ``key`` is in the cache already (written by its batch)."""
        if key in self._journaled:
            self._journaled.discard(key)
            return True
        return False

    async def _lead(self, wave: _Wave) -> None:
        """Gather the wave, then answer every call in it (on any failure: every call fails)."""
        answers: dict[str, ChatResult] | None
        try:
            seen, quiet = 0, 0
            for _ in range(MAX_GATHER_ROUNDS):
                await asyncio.sleep(0)
                quiet = quiet + 1 if len(wave.items) == seen else 0
                seen = len(wave.items)
                if quiet >= QUIET_ROUNDS:
                    break
            if self._wave is wave:
                self._wave = None
            answers = await self._run(wave)
        except Exception as exc:
            # every call of the wave fails alike (the leader's too, through its own future)
            if self._wave is wave:
                self._wave = None
            answers = None
            for _, future in wave.items.values():
                if not future.done():
                    future.set_exception(exc)
        except BaseException:
            if self._wave is wave:
                self._wave = None
            for _, future in wave.items.values():
                if not future.done():
                    future.set_result(None)  # the others go on as ordinary calls
            raise
        if answers is None:
            return
        for key, (_, future) in wave.items.items():
            if not future.done():
                future.set_result(answers.get(key))

    async def _run(self, wave: _Wave) -> dict[str, ChatResult]:
        engine = self.engine
        if len(wave.items) < engine.config.batch_min:
            return {}
        requests = {key: request for key, (request, _) in wave.items.items()}
        answers: dict[str, ChatResult] = {}
        ledger = self.ledger
        plans: list[tuple[LedgerEntry | None, list[str]]] = []
        left = dict(requests)
        if ledger is not None:
            for entry in ledger.open_batches():
                if entry.api != "openai":
                    continue
                mine = [k for k in entry.keys if k in left]
                if mine:
                    plans.append((entry, mine))
                    for k in mine:
                        del left[k]
        keys = list(left)
        for start in range(0, len(keys), MAX_BATCH_REQUESTS):
            plans.append((None, keys[start : start + MAX_BATCH_REQUESTS]))
        permit = await self._reserve(requests[k] for k in requests)
        spent = 0
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._one(entry, ks, requests)) for entry, ks in plans]
            for task in tasks:
                got, nano = task.result()
                answers.update(got)
                spent += nano
        finally:
            if permit is not None:
                await permit.settle(Spent(None, None, spent))
        return answers

    async def _reserve(self, requests: Iterable[ChatRequest]) -> Permit | None:
        """The dollar caps (the job's and the engine's) reserve the wave's worst case at batch
        prices; None: no cap to reserve from."""
        engine = self.engine
        job = current_job(engine)
        budgets = (*(job.budgets if job is not None else ()), *engine._outer)
        if not budgets:
            return None
        worst = 0
        for request in requests:
            nano = engine._worst_case_nano(request)
            worst += nano - saved_nano(nano, engine.model, "batch")
        clock = engine.clock
        estimate = Estimate(0, None, worst, clock.now() + engine.retry.max_total_seconds)
        return await Budgets(budgets).reserve(estimate)

    # --- one provider batch -----------------------------------------------------------------

    async def _one(
        self, entry: LedgerEntry | None, keys: list[str], requests: Mapping[str, ChatRequest]
    ) -> tuple[dict[str, ChatResult], int]:
        """Submit (or re-attach to) one batch, wait for it, and read its answers: (the answers
        by key, their price at batch rates in nano-dollars)."""
        ledger = self.ledger
        batch_id = entry.batch_id if entry is not None else None
        tag = entry.tag if entry is not None else uuid.uuid4().hex
        if entry is not None and batch_id is None:
            # recorded, maybe submitted before a crash: find it by its tag before paying again
            batch_id = await self._find(tag)
            if batch_id is not None and ledger is not None:
                await ledger.arecord("submitted", tag, batch_id=batch_id)
            elif ledger is not None:
                await ledger.arecord("ended", tag)  # never submitted: a new batch replaces it
                entry, tag = None, uuid.uuid4().hex
        if batch_id is None:
            if ledger is not None:
                await ledger.arecord("pending", tag, api="openai", keys=keys)
            batch_id = await self._submit(tag, keys, requests)
            self.submitted += 1
            if ledger is not None:
                await ledger.arecord("submitted", tag, batch_id=batch_id)
        else:
            self.attached += 1
        batch = await self._wait(batch_id)
        answers: dict[str, ChatResult] = {}
        for name in ("output_file_id", "error_file_id"):
            file_id = batch.get(name)
            if isinstance(file_id, str) and file_id:
                answers.update(await self._results(batch_id, file_id))
        engine = self.engine
        cache = engine.cache
        nano = 0
        for key, result in answers.items():
            if cache is not None:
                cache.put(key, result)
                if key in requests:
                    self._journaled.add(key)
            if key in requests:
                full = engine._nano(result.usage)  # at standard, cached tokens as such
                nano += full - saved_nano(full, engine.model, "batch")
        if ledger is not None:
            await ledger.arecord("ended", tag)
        return {k: v for k, v in answers.items() if k in requests}, nano

    async def _api(self, method: str, path: str, body: bytes = b"", **headers: str) -> Any:
        """One call to the batch API: its JSON answer, or ``BatchError``."""
        engine = self.engine
        sent = engine._headers.__class__({**engine._headers, **headers})
        http = HTTPRequest(
            method, engine.base_url + path, headers=sent, body=body, timeout=engine.timeout
        )
        response = await self._send(http)
        try:
            return json.loads(response.body)
        except ValueError as exc:
            raise BatchError(f"{method} {path}: the answer is not JSON") from exc

    async def _send(self, http: HTTPRequest) -> HTTPResponse:
        """``http`` with the engine's retry policy for connection failures and 5xx/429."""
        engine = self.engine
        for attempt in range(engine.retry.max_attempts):
            try:
                response = await engine.transport.send(http)
            except APIError as exc:
                error: Exception = exc
            else:
                if response.status == 200:
                    return response
                report = engine.provider.error(response, engine._site)
                if response.status < 500 and response.status != 429:
                    raise BatchError(f"{http.method} {http.url}: {report.error}") from report.error
                error = report.error
            if attempt + 1 < engine.retry.max_attempts:
                await engine.clock.sleep(min(POLL_MAX_WAIT, 2.0**attempt))
        raise BatchError(f"{http.method} {http.url} failed: {error}") from error

    async def _submit(self, tag: str, keys: list[str], requests: Mapping[str, ChatRequest]) -> str:
        lines = b"".join(
            b'{"custom_id":"%s","method":"POST","url":"%s","body":%s}\n'
            % (key.encode(), CHAT_ENDPOINT.encode(), requests[key].body())
            for key in keys
        )
        boundary = uuid.uuid4().hex
        form = (
            (
                f'--{boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
                f'--{boundary}\r\ncontent-disposition: form-data; name="file"; '
                'filename="asynctg-batch.jsonl"\r\ncontent-type: application/jsonl\r\n\r\n'
            ).encode()
            + lines
            + f"\r\n--{boundary}--\r\n".encode()
        )
        uploaded = await self._api(
            "POST", "/files", form, **{"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        created = await self._api(
            "POST",
            "/batches",
            json.dumps(
                {
                    "input_file_id": uploaded.get("id"),
                    "endpoint": CHAT_ENDPOINT,
                    "completion_window": "24h",
                    "metadata": {"asynctg_tag": tag},
                }
            ).encode(),
        )
        batch_id = created.get("id")
        if not isinstance(batch_id, str):
            raise BatchError("the provider created a batch without an id")
        return batch_id

    async def _find(self, tag: str) -> str | None:
        """The id of the batch whose metadata carries ``tag``, among the recent ones."""
        after: str | None = None
        for _ in range(LOOKUP_PAGES):
            query = "/batches?limit=100" + (f"&after={after}" if after else "")
            page = await self._api("GET", query)
            for batch in page.get("data") or ():
                if (batch.get("metadata") or {}).get("asynctg_tag") == tag:
                    found = batch.get("id")
                    return found if isinstance(found, str) else None
            after = page.get("last_id")
            if not page.get("has_more") or not isinstance(after, str):
                return None
        return None

    async def _wait(self, batch_id: str) -> dict[str, Any]:
        """Poll until the batch ends; ``BatchTimeoutError`` past ``batch_deadline``."""
        engine = self.engine
        clock = engine.clock
        until = clock.now() + engine.config.batch_deadline
        wait = POLL_FIRST_WAIT
        while True:
            batch = await self._api("GET", f"/batches/{batch_id}")
            status = batch.get("status")
            if status in _TERMINAL:
                return dict(batch)
            if clock.now() + wait > until:
                raise BatchTimeoutError(
                    f"{engine.model}: batch {batch_id} is still {status!r} after "
                    f"{engine.config.batch_deadline:g} s (batch_deadline); it is left running "
                    "and a resumed run re-attaches to it",
                    batch_id=batch_id,
                )
            await clock.sleep(wait)
            wait = min(POLL_MAX_WAIT, wait * 2)

    async def _results(self, batch_id: str, file_id: str) -> dict[str, ChatResult]:
        """The answered lines of an output (or error) file, by custom id."""
        http = HTTPRequest(
            "GET",
            f"{self.engine.base_url}/files/{file_id}/content",
            headers=self.engine._headers,
            timeout=self.engine.timeout,
        )
        body = (await self._send(http)).body
        out: dict[str, ChatResult] = {}
        for number, raw in enumerate(body.splitlines()):
            if number >= MAX_RESULT_LINES:
                raise BatchError(
                    f"batch {batch_id}: more result lines than requests", batch_id=batch_id
                )
            try:
                line = msgspec.json.decode(raw, type=_OutputLine)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # an unreadable line: its call is sent again as an ordinary one
            response = line.response
            if response is None or response.status_code != 200 or not line.custom_id:
                continue
            headers = {"x-request-id": response.request_id} if response.request_id else {}
            try:
                out[line.custom_id] = parse_completion(
                    HTTPResponse(200, headers, bytes(response.body))
                )
            except ResponseParseError:
                continue
        return out
