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

Two batch APIs, each a ``BatchWire`` (the provider's wire format only; the waves, ledger, cap,
polling and journal above are written once): OpenAI's Batch API (``OpenAIBatches``, steps 4-5
as described) and Anthropic's Message Batches (``AnthropicBatches``: ``POST
/v1/messages/batches`` with ``requests: [{custom_id, params}]``, ``params`` the Messages body
the adapter builds; polled until ``processing_status`` is "ended"; results read from
``results_url``; errored, canceled and expired items go again as ordinary calls). A Message
Batch has no metadata, so the tag cannot find it: on Anthropic, a crash between the create
call's answer and the ledger's write of the id (one disk write) leaves a batch a resumed run
submits again. Batch-tier calls to a provider without a wire go as ordinary calls.

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
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import msgspec

from asynctg.engine.budget import Budgets, Estimate, Permit, Spent
from asynctg.engine.jobs import current_job
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

__all__ = [
    "LEDGER_FILE",
    "MAX_BATCH_REQUESTS",
    "WIRES",
    "AnthropicBatches",
    "BatchLedger",
    "BatchRunner",
    "BatchWire",
    "OpenAIBatches",
]

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
        if self.engine.provider.name not in WIRES:
            return None  # a provider without a batch API here: an ordinary call
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
                if entry.api != self.engine.provider.name:
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
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(self._one(entry, ks, requests)) for entry, ks in plans
                    ]
            except ExceptionGroup as failed:
                # the calls see a batch's own typed error (BatchTimeoutError, BatchError...),
                # not the group: the first batch's, the others' in its context
                raise failed.exceptions[0] from failed
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
        wire = WIRES[self.engine.provider.name]
        batch_id = entry.batch_id if entry is not None else None
        tag = entry.tag if entry is not None else uuid.uuid4().hex
        if entry is not None and batch_id is None:
            # recorded, maybe submitted before a crash: find it by its tag before paying again
            batch_id = await wire.find(self, tag)
            if batch_id is not None and ledger is not None:
                await ledger.arecord("submitted", tag, batch_id=batch_id)
            elif ledger is not None:
                await ledger.arecord("ended", tag)  # never submitted: a new batch replaces it
                entry, tag = None, uuid.uuid4().hex
        if batch_id is None:
            if ledger is not None:
                await ledger.arecord("pending", tag, api=wire.api, keys=keys)
            batch_id = await wire.submit(self, tag, keys, requests)
            self.submitted += 1
            if ledger is not None:
                await ledger.arecord("submitted", tag, batch_id=batch_id)
        else:
            self.attached += 1
        batch = await self._wait(wire, batch_id)
        answers = await wire.results(self, batch_id, batch)
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

    async def api(self, method: str, url: str, body: bytes = b"", **headers: str) -> Any:
        """One call to the batch API at ``url``: its JSON answer, or ``BatchError``."""
        response = await self.fetch(method, url, body, **headers)
        try:
            return json.loads(response.body)
        except ValueError as exc:
            raise BatchError(f"{method} {url}: the answer is not JSON") from exc

    async def fetch(self, method: str, url: str, body: bytes = b"", **headers: str) -> HTTPResponse:
        """One call to the batch API at ``url`` with the engine's headers (and ``headers``):
        its 200 answer, or ``BatchError``."""
        engine = self.engine
        sent = engine._headers.__class__({**engine._headers, **headers})
        http = HTTPRequest(method, url, headers=sent, body=body, timeout=engine.timeout)
        return await self._send(http)

    def parse(self, body: bytes, request_id: str | None) -> ChatResult | None:
        """One answered batch item (the provider's ordinary answer body) as a ``ChatResult``;
        None when it is not one (the call goes again as an ordinary one)."""
        headers = {"x-request-id": request_id} if request_id else {}
        try:
            return self.engine.provider.parse(HTTPResponse(200, headers, body))
        except ResponseParseError:
            return None

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

    async def _wait(self, wire: BatchWire, batch_id: str) -> dict[str, Any]:
        """Poll until the batch ends; ``BatchTimeoutError`` past ``batch_deadline``."""
        engine = self.engine
        clock = engine.clock
        until = clock.now() + engine.config.batch_deadline
        wait = POLL_FIRST_WAIT
        while True:
            batch = await self.api("GET", wire.batch_url(engine, batch_id))
            if not isinstance(batch, dict):
                raise BatchError(
                    f"batch {batch_id}: the answer is not an object", batch_id=batch_id
                )
            status = wire.status(batch)
            if wire.ended(status):
                return batch
            if clock.now() + wait > until:
                raise BatchTimeoutError(
                    f"{engine.model}: batch {batch_id} is still {status!r} after "
                    f"{engine.config.batch_deadline:g} s (batch_deadline); it is left running "
                    "and a resumed run re-attaches to it",
                    batch_id=batch_id,
                )
            await clock.sleep(wait)
            wait = min(POLL_MAX_WAIT, wait * 2)


# --- each provider's batch wire format ------------------------------------------------------


class BatchWire(Protocol):
    """What one provider's batch API looks like on the wire; ``BatchRunner`` does the rest
    (waves, the ledger, the dollar cap, polling, the journal) once for every provider."""

    #: the provider's name, as the ledger records it
    api: str

    async def submit(
        self, runner: BatchRunner, tag: str, keys: list[str], requests: Mapping[str, ChatRequest]
    ) -> str:
        """Create a batch of ``requests[k]`` for ``keys`` (each item's id its key); its id."""
        ...

    async def find(self, runner: BatchRunner, tag: str) -> str | None:
        """The id of a batch submitted with ``tag`` (before a crash), or None."""
        ...

    def batch_url(self, engine: ChatEngine, batch_id: str) -> str:
        """Where the batch is polled."""
        ...

    def status(self, batch: Mapping[str, Any]) -> str:
        """The batch's state, as the provider names it."""
        ...

    def ended(self, status: str) -> bool:
        """Whether a batch in ``status`` will change no more."""
        ...

    async def results(
        self, runner: BatchRunner, batch_id: str, batch: Mapping[str, Any]
    ) -> dict[str, ChatResult]:
        """The answered items of an ended batch, by key (failed ones left out)."""
        ...


class _OutputLine(msgspec.Struct):
    custom_id: str = ""
    response: _ResponseBody | None = None


class OpenAIBatches:
    """OpenAI's Batch API: a JSONL file upload, ``POST /batches`` with the tag in
    ``metadata``, output and error files read back."""

    api = "openai"

    async def submit(
        self, runner: BatchRunner, tag: str, keys: list[str], requests: Mapping[str, ChatRequest]
    ) -> str:
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
        base = runner.engine.base_url
        uploaded = await runner.api(
            "POST",
            base + "/files",
            form,
            **{"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        created = await runner.api(
            "POST",
            base + "/batches",
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

    async def find(self, runner: BatchRunner, tag: str) -> str | None:
        """The id of the batch whose metadata carries ``tag``, among the recent ones."""
        after: str | None = None
        for _ in range(LOOKUP_PAGES):
            query = "/batches?limit=100" + (f"&after={after}" if after else "")
            page = await runner.api("GET", runner.engine.base_url + query)
            for batch in page.get("data") or ():
                if (batch.get("metadata") or {}).get("asynctg_tag") == tag:
                    found = batch.get("id")
                    return found if isinstance(found, str) else None
            after = page.get("last_id")
            if not page.get("has_more") or not isinstance(after, str):
                return None
        return None

    def batch_url(self, engine: ChatEngine, batch_id: str) -> str:
        return f"{engine.base_url}/batches/{batch_id}"

    def status(self, batch: Mapping[str, Any]) -> str:
        return str(batch.get("status"))

    def ended(self, status: str) -> bool:
        return status in _TERMINAL

    async def results(
        self, runner: BatchRunner, batch_id: str, batch: Mapping[str, Any]
    ) -> dict[str, ChatResult]:
        answers: dict[str, ChatResult] = {}
        for name in ("output_file_id", "error_file_id"):
            file_id = batch.get(name)
            if isinstance(file_id, str) and file_id:
                answers.update(await self._file(runner, batch_id, file_id))
        return answers

    async def _file(
        self, runner: BatchRunner, batch_id: str, file_id: str
    ) -> dict[str, ChatResult]:
        """The answered lines of an output (or error) file, by custom id."""
        url = f"{runner.engine.base_url}/files/{file_id}/content"
        body = (await runner.fetch("GET", url)).body
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
            result = runner.parse(bytes(response.body), response.request_id)
            if result is not None:
                out[line.custom_id] = result
        return out


class _ItemResult(msgspec.Struct):
    type: str = ""
    message: msgspec.Raw = msgspec.Raw(b"null")  # (Raw does not go in a union with None)


class _ResultLine(msgspec.Struct):
    custom_id: str = ""
    result: _ItemResult | None = None


class AnthropicBatches:
    """Anthropic's Message Batches: ``POST /v1/messages/batches`` with ``requests: [{custom_id,
    params}]`` (``params``: the Messages body the adapter builds), polled until
    ``processing_status`` is "ended", results read from ``results_url`` (JSONL of
    ``{custom_id, result: {type: succeeded|errored|canceled|expired, message|error}}``).

    A Message Batch has no metadata to carry a tag, so ``find`` cannot look one up: the ledger
    records the batch's id as soon as the create call answers, and a crash in the moment
    between that answer and the ledger's write leaves a batch a resumed run does not know (it
    submits the calls again, and both batches are paid). The window is one disk write long."""

    api = "anthropic"

    def _batches(self, engine: ChatEngine) -> str:
        return engine.provider.url(engine.base_url) + "/batches"

    async def submit(
        self, runner: BatchRunner, tag: str, keys: list[str], requests: Mapping[str, ChatRequest]
    ) -> str:
        provider = runner.engine.provider
        items = b",".join(
            b'{"custom_id":"%s","params":%s}'
            % (key.encode(), provider.body(requests[key], stream=False))
            for key in keys
        )
        created = await runner.api(
            "POST", self._batches(runner.engine), b'{"requests":[' + items + b"]}"
        )
        batch_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(batch_id, str):
            raise BatchError("the provider created a batch without an id")
        return batch_id

    async def find(self, runner: BatchRunner, tag: str) -> str | None:
        return None  # no metadata to find a batch by (see the class)

    def batch_url(self, engine: ChatEngine, batch_id: str) -> str:
        return f"{self._batches(engine)}/{batch_id}"

    def status(self, batch: Mapping[str, Any]) -> str:
        return str(batch.get("processing_status"))

    def ended(self, status: str) -> bool:
        return status == "ended"

    async def results(
        self, runner: BatchRunner, batch_id: str, batch: Mapping[str, Any]
    ) -> dict[str, ChatResult]:
        engine = runner.engine
        url = f"{self.batch_url(engine, batch_id)}/results"
        given = batch.get("results_url")
        # the results_url the provider names, when it is on the API's own origin: the request
        # carries the API key, which goes nowhere else
        if isinstance(given, str) and _origin(given) == _origin(engine.base_url):
            url = given
        body = (await runner.fetch("GET", url)).body
        out: dict[str, ChatResult] = {}
        for number, raw in enumerate(body.splitlines()):
            if number >= MAX_RESULT_LINES:
                raise BatchError(
                    f"batch {batch_id}: more result lines than requests", batch_id=batch_id
                )
            try:
                line = msgspec.json.decode(raw, type=_ResultLine)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # an unreadable line: its call is sent again as an ordinary one
            item = line.result
            if item is None or item.type != "succeeded":
                continue  # errored, canceled or expired: sent again as an ordinary call
            if not line.custom_id:
                continue
            result = runner.parse(bytes(item.message), None)
            if result is not None:
                out[line.custom_id] = result
        return out


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


#: The batch APIs by provider name; a provider not here sends batch-tier calls as ordinary ones.
WIRES: Mapping[str, BatchWire] = {"openai": OpenAIBatches(), "anthropic": AnthropicBatches()}
