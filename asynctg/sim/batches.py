"""The simulator's batch APIs: OpenAI's files and batches, Anthropic's Message Batches.

Routes (same authentication as the model routes of each API)::

    POST /v1/files                       multipart upload (purpose=batch, file=JSONL)
    GET  /v1/files/{id}                  the file object
    GET  /v1/files/{id}/content          its bytes
    POST /v1/batches                     {input_file_id, endpoint, completion_window, metadata}
    GET  /v1/batches                     list, newest first (?limit=, ?after=)
    GET  /v1/batches/{id}                retrieve (polling moves the batch along)
    POST /v1/batches/{id}/cancel         cancelling, then cancelled at the next look
    POST /v1/messages/batches            {requests: [{custom_id, params}]}
    GET  /v1/messages/batches            list, newest first (?limit=, ?after_id=)
    GET  /v1/messages/batches/{id}       retrieve
    GET  /v1/messages/batches/{id}/results   JSONL results once ended
    POST /v1/messages/batches/{id}/cancel    canceling, then ended at the next look

Time is the simulator's clock (``SimServer.advance`` / ``POST /sim/advance`` move it), and a
batch moves only when looked at, so a test polls after fast-forwarding and never sleeps.

OpenAI: a new batch is ``validating``; the next look finds it ``failed`` (input lines that are
not ``{"custom_id", "method": "POST", "url": endpoint, "body"}`` with unique custom ids; the
reasons in ``errors.data``) or ``in_progress``. Once ``batch_completion_seconds`` have passed
since creation it is ``completed`` (``finalizing`` is never observed): every line is served
(billed at the batch discount, no rate budget used), a ``batch_failure_rate`` share of lines
fails with ``{"code": "server_error"}`` and lines whose body the chat endpoint refuses get their
400 response; successes go to ``output_file_id``, the rest to ``error_file_id`` (each null when
empty). With ``batch_expire`` the batch instead expires at the end of its 24 h window with the
first half of its lines served and the rest in the error file as ``batch_expired``.
A cancelled batch serves nothing. The settings are read when the batch is created.

Anthropic: ``processing_status`` is ``in_progress`` until ``batch_completion_seconds``, then
``ended`` with each request ``succeeded`` or ``errored`` (the failure share, or invalid
``params``); ``batch_expire`` ends it after 24 h with the second half ``expired``; a cancel makes
it ``canceling``, then ``ended`` with every request ``canceled``. Results, at ``results_url``,
are JSONL lines ``{"custom_id", "result": {"type", "message" | "error"}}`` in request order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import BodyPartReader, web

if TYPE_CHECKING:
    from asynctg.sim.server import SimServer

__all__ = ["BatchStore"]

WINDOW_SECONDS = 24 * 3600
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILES = 10_000
MAX_BATCHES = 10_000
MAX_OPENAI_LINES = 50_000
MAX_ANTHROPIC_REQUESTS = 100_000
MAX_REPORTED_ERRORS = 100
#: lines served between yields to the event loop, so a large batch never blocks it for long
_YIELD_EVERY = 256
_ENDPOINTS = ("/v1/chat/completions",)

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


def _rfc3339(unix: float | None) -> str | None:
    if unix is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


@dataclass(slots=True)
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(slots=True)
class _Batch:
    """Either API's batch; ``api`` says which view to render."""

    api: str
    id: str
    created: float  # the sim's monotonic clock
    created_at: float  # unix time
    deadline: float
    expire: bool
    failure_rate: float
    requests: list[tuple[str, Any]]
    status: str
    input_file_id: str = ""
    endpoint: str = ""
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    served: int = 0
    failed: int = 0
    expired: int = 0
    canceled: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: bytes | None = None


class BatchStore:
    """The files and batches of one simulator, and their routes."""

    def __init__(self, host: SimServer) -> None:
        self._host = host
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._seq = 0
        self._counts: dict[str, dict[str, int]] = {}
        self.reset_counts()

    def reset_counts(self) -> None:
        """Zero the statistics (files and batches stay)."""
        self._counts = {
            api: {"created": 0, "ended": 0, "requests": 0, "failed_requests": 0}
            for api in ("openai", "anthropic")
        }

    def stats(self) -> dict[str, Any]:
        """Batches created and ended, requests served and failed, per API."""
        return {api: dict(c) for api, c in self._counts.items()}

    def add_routes(self, app: web.Application) -> None:
        """Register the batch routes on ``app``."""
        r = app.router
        r.add_post("/v1/files", self._upload)
        r.add_get("/v1/files/{id}", self._file)
        r.add_get("/v1/files/{id}/content", self._file_content)
        r.add_post("/v1/batches", self._create_openai)
        r.add_get("/v1/batches", self._list_openai)
        r.add_get("/v1/batches/{id}", self._retrieve_openai)
        r.add_post("/v1/batches/{id}/cancel", self._cancel_openai)
        r.add_post("/v1/messages/batches", self._create_anthropic)
        r.add_get("/v1/messages/batches", self._list_anthropic)
        r.add_get("/v1/messages/batches/{id}", self._retrieve_anthropic)
        r.add_get("/v1/messages/batches/{id}/results", self._results_anthropic)
        r.add_post("/v1/messages/batches/{id}/cancel", self._cancel_anthropic)

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:016x}"

    # ----------------------------------------------------------------- files

    def _add_file(self, filename: str, purpose: str, data: bytes) -> _File:
        item = _File(self._id("file-sim"), filename, purpose, data, int(self._host.wall()))
        self._files[item.id] = item
        return item

    async def _upload(self, request: web.Request) -> web.Response:
        host = self._host
        if (refusal := host.openai_refusal(request)) is not None:
            return refusal
        if len(self._files) >= MAX_FILES:
            return host.openai_error(400, f"The simulator holds at most {MAX_FILES} files.")
        if not request.content_type.startswith("multipart/"):
            return host.openai_error(400, "Uploads must be multipart/form-data.")
        purpose: str | None = None
        data: bytes | None = None
        filename = "upload.jsonl"
        reader = await request.multipart()
        for _ in range(16):  # purpose, file and a few stray fields at most
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.read(decode=False)).decode("utf-8", "replace")
            elif part.name == "file":
                filename = part.filename or filename
                chunks: list[bytes] = []
                size = 0
                while chunk := await part.read_chunk(1 << 16):
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        return host.openai_error(
                            400, f"Files are limited to {MAX_FILE_BYTES} bytes."
                        )
                    chunks.append(chunk)
                data = b"".join(chunks)
        if data is None:
            return host.openai_error(400, "Missing required parameter: 'file'.")
        if purpose != "batch":
            return host.openai_error(400, "Invalid 'purpose': the simulator accepts 'batch'.")
        return host.json_response(self._add_file(filename, purpose, data).view())

    def _get_file(self, request: web.Request) -> _File | web.Response:
        host = self._host
        if (refusal := host.openai_refusal(request)) is not None:
            return refusal
        item = self._files.get(request.match_info["id"])
        if item is None:
            return host.openai_error(404, f"No such File object: {request.match_info['id']}")
        return item

    async def _file(self, request: web.Request) -> web.Response:
        item = self._get_file(request)
        return item if isinstance(item, web.Response) else self._host.json_response(item.view())

    async def _file_content(self, request: web.Request) -> web.Response:
        item = self._get_file(request)
        if isinstance(item, web.Response):
            return item
        return web.Response(body=item.data, content_type="application/octet-stream")

    # ----------------------------------------------------------------- OpenAI batches

    def _new_batch(self, api: str, prefix: str, requests: list[tuple[str, Any]]) -> _Batch:
        host = self._host
        cfg = host.config
        now = host.now()
        batch = _Batch(
            api=api,
            id=self._id(prefix),
            created=now,
            created_at=host.wall(),
            deadline=now + (WINDOW_SECONDS if cfg.batch_expire else cfg.batch_completion_seconds),
            expire=cfg.batch_expire,
            failure_rate=cfg.batch_failure_rate,
            requests=requests,
            status="validating" if api == "openai" else "in_progress",
        )
        self._batches[batch.id] = batch
        self._counts[api]["created"] += 1
        return batch

    @staticmethod
    def _openai_lines(
        data: bytes, endpoint: str
    ) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
        lines = data.splitlines()
        if len(lines) > MAX_OPENAI_LINES:
            message = f"A batch holds at most {MAX_OPENAI_LINES} requests; found {len(lines)}."
            return [], [{"code": "too_many_requests", "message": message, "line": None}]
        requests: list[tuple[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                line = _decode(raw)
            except msgspec.DecodeError:
                line = None
            problem = None
            if not isinstance(line, dict):
                problem = "invalid_json_line", "This line is not a JSON object."
            elif not isinstance(line.get("custom_id"), str) or not line["custom_id"]:
                problem = "missing_custom_id", "Each line needs a string 'custom_id'."
            elif line["custom_id"] in seen:
                problem = "duplicate_custom_id", "The custom_id of this line is not unique."
            elif line.get("method") != "POST":
                problem = "invalid_method", "The method of each line must be 'POST'."
            elif line.get("url") != endpoint:
                problem = "mismatched_url", f"The url of each line must be {endpoint!r}."
            elif not isinstance(line.get("body"), dict):
                problem = "missing_body", "Each line needs a JSON object 'body'."
            if problem is not None:
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append({"code": problem[0], "message": problem[1], "line": number})
                continue
            assert isinstance(line, dict)  # checked above; narrows the type for mypy
            seen.add(line["custom_id"])
            requests.append((line["custom_id"], line["body"]))
        if not requests and not errors:
            errors.append({"code": "empty_file", "message": "The input file has no requests."})
        return requests, errors

    async def _create_openai(self, request: web.Request) -> web.Response:
        host = self._host
        if (refusal := host.openai_refusal(request)) is not None:
            return refusal
        try:
            body = _decode(await request.read())
        except msgspec.DecodeError:
            return host.openai_error(400, "The body must be JSON.")
        if not isinstance(body, dict):
            return host.openai_error(400, "The body must be a JSON object.")
        file_id = body.get("input_file_id")
        item = self._files.get(file_id) if isinstance(file_id, str) else None
        if item is None:
            return host.openai_error(400, f"Invalid 'input_file_id': {file_id!r} does not exist.")
        if item.purpose != "batch":
            return host.openai_error(400, "The input file must be uploaded with purpose 'batch'.")
        endpoint = body.get("endpoint")
        if endpoint not in _ENDPOINTS:
            return host.openai_error(
                400, f"Invalid 'endpoint': supported: {', '.join(_ENDPOINTS)}."
            )
        if body.get("completion_window") != "24h":
            return host.openai_error(400, "Invalid 'completion_window': only '24h' is supported.")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and len(metadata) <= 16
            and all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items()
            )
        ):
            return host.openai_error(
                400, "Invalid 'metadata': at most 16 string pairs (keys 64, values 512 chars)."
            )
        if len(self._batches) >= MAX_BATCHES:
            return host.openai_error(400, f"The simulator holds at most {MAX_BATCHES} batches.")
        requests, errors = self._openai_lines(item.data, str(endpoint))
        batch = self._new_batch("openai", "batch_sim", requests)
        batch.input_file_id = item.id
        batch.endpoint = str(endpoint)
        batch.metadata = metadata
        batch.errors = errors
        return host.json_response(self._openai_view(batch))

    def _openai_view(self, b: _Batch) -> dict[str, Any]:
        stamp = {name: int(t) for name, t in b.times.items()}
        total = len(b.requests)
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.created_at),
            "in_progress_at": stamp.get("in_progress_at"),
            "expires_at": int(b.created_at + WINDOW_SECONDS),
            "finalizing_at": stamp.get("finalizing_at"),
            "completed_at": stamp.get("completed_at"),
            "failed_at": stamp.get("failed_at"),
            "expired_at": stamp.get("expired_at"),
            "cancelling_at": stamp.get("cancelling_at"),
            "cancelled_at": stamp.get("cancelled_at"),
            "request_counts": {
                "total": total if b.status != "failed" else 0,
                "completed": b.served,
                "failed": b.failed + b.expired,
            },
            "metadata": b.metadata,
        }

    async def _refresh_openai(self, b: _Batch) -> None:
        host = self._host
        wall = host.wall()
        if b.status == "validating":
            if b.errors:
                b.status = "failed"
                b.times["failed_at"] = wall
                self._counts["openai"]["ended"] += 1
                return
            b.status = "in_progress"
            b.times["in_progress_at"] = wall
        if b.status == "cancelling":
            b.status = "cancelled"
            b.times["cancelled_at"] = wall
            self._counts["openai"]["ended"] += 1
            return
        if b.status != "in_progress" or host.now() < b.deadline:
            return
        out: list[bytes] = []
        err: list[bytes] = []
        done = len(b.requests) // 2 if b.expire else len(b.requests)
        rng = random.Random(f"asynctg-sim:{host.config.seed}:batch:{b.id}")
        for i, (custom_id, body) in enumerate(b.requests):
            if i and i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            line: dict[str, Any] = {"id": self._id("batch_req_sim"), "custom_id": custom_id}
            if i >= done:
                b.expired += 1
                error = {"code": "batch_expired", "message": "The batch expired before this ran."}
                err.append(_encode({**line, "response": None, "error": error}))
                continue
            if b.failure_rate and rng.random() < b.failure_rate:
                b.failed += 1
                error = {"code": "server_error", "message": "The simulated server failed."}
                err.append(_encode({**line, "response": None, "error": error}))
                continue
            status, payload = host.batch_chat(body)
            response = {"status_code": status, "request_id": self._id("req_sim"), "body": payload}
            if status == 200:
                b.served += 1
                out.append(_encode({**line, "response": response, "error": None}))
            else:
                b.failed += 1
                err.append(_encode({**line, "response": response, "error": None}))
        counts = self._counts["openai"]
        counts["requests"] += b.served
        counts["failed_requests"] += b.failed + b.expired
        counts["ended"] += 1
        if out:
            name = f"{b.id}_output.jsonl"
            b.output_file_id = self._add_file(name, "batch_output", b"\n".join(out) + b"\n").id
        if err:
            name = f"{b.id}_error.jsonl"
            b.error_file_id = self._add_file(name, "batch_output", b"\n".join(err) + b"\n").id
        wall = host.wall()
        if b.expire:
            b.status = "expired"
            b.times["expired_at"] = wall
        else:
            b.status = "completed"
            b.times["finalizing_at"] = wall
            b.times["completed_at"] = wall

    def _find(self, request: web.Request, api: str) -> _Batch | None:
        batch = self._batches.get(request.match_info["id"])
        return batch if batch is not None and batch.api == api else None

    async def _retrieve_openai(self, request: web.Request) -> web.Response:
        host = self._host
        if (refusal := host.openai_refusal(request)) is not None:
            return refusal
        batch = self._find(request, "openai")
        if batch is None:
            return host.openai_error(404, f"No batch found with id '{request.match_info['id']}'.")
        await self._refresh_openai(batch)
        return host.json_response(self._openai_view(batch))

    async def _cancel_openai(self, request: web.Request) -> web.Response:
        host = self._host
        if (refusal := host.openai_refusal(request)) is not None:
            return refusal
        batch = self._find(request, "openai")
        if batch is None:
            return host.openai_error(404, f"No batch found with id '{request.match_info['id']}'.")
        await self._refresh_openai(batch)
        if batch.status not in ("validating", "in_progress"):
            return host.openai_error(
                409, f"Cannot cancel a batch with status '{batch.status}'.", "invalid_state"
            )
        batch.status = "cancelling"
        batch.times["cancelling_at"] = host.wall()
        return host.json_response(self._openai_view(batch))

    async def _list(
        self,
        request: web.Request,
        api: str,
        after_key: str,
        refresh: Callable[[_Batch], Any],
        view: Callable[[_Batch], dict[str, Any]],
    ) -> dict[str, Any] | str:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return "limit must be an integer from 1 to 100"
        if not 1 <= limit <= 100:
            return "limit must be an integer from 1 to 100"
        newest_first = [b for b in reversed(self._batches.values()) if b.api == api]
        after = request.query.get(after_key)
        if after is not None:
            ids = [b.id for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        for b in page:
            await refresh(b)
        return {
            "data": [view(b) for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(newest_first) > limit,
        }

    async def _list_openai(self, request: web.Request) -> web.Response:
        host = self._host
        if (refusal := host.openai_refusal(request)) is not None:
            return refusal
        out = await self._list(request, "openai", "after", self._refresh_openai, self._openai_view)
        if isinstance(out, str):
            return host.openai_error(400, out)
        return host.json_response({"object": "list", **out})

    # ----------------------------------------------------------------- Anthropic batches

    async def _create_anthropic(self, request: web.Request) -> web.Response:
        host = self._host
        if (refusal := host.anthropic_refusal(request)) is not None:
            return refusal
        try:
            body = _decode(await request.read())
        except msgspec.DecodeError:
            return host.anthropic_error(400, "invalid_request_error", "The body must be JSON.")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return host.anthropic_error(400, "invalid_request_error", "requests: Field required")
        if len(requests) > MAX_ANTHROPIC_REQUESTS:
            return host.anthropic_error(
                400, "invalid_request_error", f"requests: at most {MAX_ANTHROPIC_REQUESTS}"
            )
        if len(self._batches) >= MAX_BATCHES:
            return host.anthropic_error(400, "invalid_request_error", "too many batches")
        items: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for i, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 64:
                message = f"requests.{i}.custom_id: a string of 1 to 64 characters is required"
                return host.anthropic_error(400, "invalid_request_error", message)
            if custom_id in seen:
                message = f"requests.{i}.custom_id: {custom_id!r} is not unique in this batch"
                return host.anthropic_error(400, "invalid_request_error", message)
            assert isinstance(item, dict)  # custom_id came from it
            if not isinstance(item.get("params"), dict):
                message = f"requests.{i}.params: Field required"
                return host.anthropic_error(400, "invalid_request_error", message)
            seen.add(custom_id)
            items.append((custom_id, item["params"]))
        batch = self._new_batch("anthropic", "msgbatch_sim", items)
        return host.json_response(self._anthropic_view(batch, request))

    def _anthropic_view(self, b: _Batch, request: web.Request) -> dict[str, Any]:
        pending = len(b.requests) if b.status != "ended" else 0
        results_url = None
        if b.status == "ended":
            results_url = f"{request.url.origin()}/v1/messages/batches/{b.id}/results"
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": b.status,
            "request_counts": {
                "processing": pending,
                "succeeded": b.served,
                "errored": b.failed,
                "canceled": b.canceled,
                "expired": b.expired,
            },
            "ended_at": _rfc3339(b.times.get("ended_at")),
            "created_at": _rfc3339(b.created_at),
            "expires_at": _rfc3339(b.created_at + WINDOW_SECONDS),
            "archived_at": None,
            "cancel_initiated_at": _rfc3339(b.times.get("cancel_initiated_at")),
            "results_url": results_url,
        }

    async def _refresh_anthropic(self, b: _Batch) -> None:
        host = self._host
        lines: list[bytes] = []
        if b.status == "canceling":
            for custom_id, _ in b.requests:
                lines.append(_encode({"custom_id": custom_id, "result": {"type": "canceled"}}))
            b.canceled = len(b.requests)
        elif b.status == "in_progress" and host.now() >= b.deadline:
            done = len(b.requests) // 2 if b.expire else len(b.requests)
            rng = random.Random(f"asynctg-sim:{host.config.seed}:batch:{b.id}")
            for i, (custom_id, params) in enumerate(b.requests):
                if i and i % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                result: dict[str, Any]
                if i >= done:
                    b.expired += 1
                    result = {"type": "expired"}
                elif b.failure_rate and rng.random() < b.failure_rate:
                    b.failed += 1
                    error = {"type": "error", "error": {"type": "api_error", "message": "failed"}}
                    result = {"type": "errored", "error": error}
                else:
                    ok, payload = host.batch_message(params)
                    if ok:
                        b.served += 1
                        result = {"type": "succeeded", "message": payload}
                    else:
                        b.failed += 1
                        result = {"type": "errored", "error": payload}
                lines.append(_encode({"custom_id": custom_id, "result": result}))
        else:
            return
        counts = self._counts["anthropic"]
        counts["requests"] += b.served
        counts["failed_requests"] += b.failed + b.expired
        counts["ended"] += 1
        b.results = b"\n".join(lines) + b"\n"
        b.status = "ended"
        b.times["ended_at"] = host.wall()

    async def _anthropic_batch(self, request: web.Request) -> _Batch | web.Response:
        host = self._host
        if (refusal := host.anthropic_refusal(request)) is not None:
            return refusal
        batch = self._find(request, "anthropic")
        if batch is None:
            message = f"message batch {request.match_info['id']!r} not found"
            return host.anthropic_error(404, "not_found_error", message)
        await self._refresh_anthropic(batch)
        return batch

    async def _retrieve_anthropic(self, request: web.Request) -> web.Response:
        batch = await self._anthropic_batch(request)
        if isinstance(batch, web.Response):
            return batch
        return self._host.json_response(self._anthropic_view(batch, request))

    async def _results_anthropic(self, request: web.Request) -> web.Response:
        batch = await self._anthropic_batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.results is None:
            message = f"message batch {batch.id} has not ended yet; its results are not ready"
            return self._host.anthropic_error(400, "invalid_request_error", message)
        return web.Response(body=batch.results, content_type="application/x-jsonl")

    async def _cancel_anthropic(self, request: web.Request) -> web.Response:
        batch = await self._anthropic_batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status == "in_progress":
            batch.status = "canceling"
            batch.times["cancel_initiated_at"] = self._host.wall()
        return self._host.json_response(self._anthropic_view(batch, request))

    async def _list_anthropic(self, request: web.Request) -> web.Response:
        host = self._host
        if (refusal := host.anthropic_refusal(request)) is not None:
            return refusal

        def view(b: _Batch) -> dict[str, Any]:
            return self._anthropic_view(b, request)

        out = await self._list(request, "anthropic", "after_id", self._refresh_anthropic, view)
        if isinstance(out, str):
            return host.anthropic_error(400, "invalid_request_error", out)
        return host.json_response(out)
