"""examples/service.py against the simulator: per-request usage, disconnects, deadlines, caps."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

import asynctg as tg
from asynctg.sim import SimConfig, SimServer
from asynctg.sim.tokens import prompt_tokens

ROOT = Path(__file__).resolve().parents[1]
_TAG = re.compile(r"\[(r-[\w-]+)\]")


def _example() -> ModuleType:
    """examples/service.py, imported as a module."""
    name = "asynctg_example_service"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _tag(req: Mapping[str, Any]) -> str | None:
    """The ``[r-...]`` a test put in a request's initial prompt: which request's job sent it."""
    match = _TAG.search(json.dumps(req["messages"]))
    return match.group(1) if match else None


class _Sim:
    """A simulator that records requests and signals when it sees a request's tag."""

    def __init__(self, latency: str) -> None:
        self.seen: dict[str, asyncio.Event] = {}
        #: (job, outcome) of each finished request of the service
        self.finished: asyncio.Queue[tuple[tg.Job, str]] = asyncio.Queue()
        self.server = SimServer(
            SimConfig(latency=latency, record=True, responder=self._respond), shutdown_timeout=0.2
        )

    def _respond(self, req: Mapping[str, Any]) -> None:
        tag = _tag(req)
        if tag is not None:
            self.seen.setdefault(tag, asyncio.Event()).set()
        return None  # the simulator's own answer

    def event(self, tag: str) -> asyncio.Event:
        return self.seen.setdefault(tag, asyncio.Event())

    def sent(self) -> Counter[str | None]:
        return Counter(_tag(req) for req in self.server.requests)


@asynccontextmanager
async def _service(latency: str, **settings: Any) -> AsyncIterator[tuple[Any, _Sim, str]]:
    """The example app on a free loopback port against an in-process simulator; yields the
    module, the simulator and the service's URL."""
    svc = _example()
    sim = _Sim(latency)
    async with sim.server:
        app = svc.make_app(
            sim.server.base_url,
            settings=svc.Settings(**settings),
            on_finished=lambda job, outcome: sim.finished.put_nowait((job, outcome)),
        )
        runner = await svc.serve(app, "127.0.0.1", 0)
        try:
            yield svc, sim, f"http://127.0.0.1:{runner.addresses[0][1]}/optimize"
        finally:
            await runner.cleanup()


def _body(tag: str, **extra: Any) -> dict[str, Any]:
    """A request whose every call carries ``[tag]`` (its prompt and its questions do)."""
    return {
        "prompt": f"[{tag}] Answer the question. End with 'Answer: N'.",
        "questions": [
            [f"[{tag}] I have two drums and a flute. How many instruments?", "3"],
            [f"[{tag}] I have a piano and four violins. How many instruments?", "5"],
        ],
        **extra,
    }


async def _post(
    client: aiohttp.ClientSession, url: str, tenant: str, body: Mapping[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with client.post(url, json=body, headers={"X-Tenant": tenant}) as reply:
        payload: dict[str, Any] = await reply.json()
        return reply.status, payload


async def test_each_requests_usage_is_what_the_simulator_served_for_it() -> None:
    """Six concurrent requests from three tenants (weights 4, 2, 1): each response's usage
    counts exactly the requests and prompt tokens the simulator served for that request."""
    weights = {"gold": 4.0, "silver": 2.0}
    async with _service("5ms", weights=weights) as (_, sim, url):
        async with aiohttp.ClientSession() as client:
            asks = [(f"r-{i}", ("gold", "silver", "bronze")[i % 3]) for i in range(6)]
            replies = await asyncio.gather(
                *(_post(client, url, tenant, _body(tag)) for tag, tenant in asks)
            )
        sent = sim.sent()
        assert None not in sent  # every request the simulator saw belongs to one job
        completion = 0
        for (tag, tenant), (status, payload) in zip(asks, replies, strict=True):
            assert status == 200, payload
            usage = payload["usage"]
            assert usage["weight"] == weights.get(tenant, 1.0)
            assert usage["job"].startswith(f"{tenant}/")
            assert usage["calls"] == usage["requests"] == sent[tag] == 7  # 3B+1, B=2
            assert usage["coalesced"] == usage["cache_hits"] == 0
            served = [r for r in sim.server.requests if _tag(r) == tag]
            assert usage["prompt_tokens"] == sum(prompt_tokens(r["messages"]) for r in served)
            assert usage["cost_usd"] > 0
            completion += usage["completion_tokens"]
        assert completion == sim.server.stats()["completion_tokens"]


async def test_a_client_that_disconnects_leaves_its_job_cancelled_and_sending_nothing() -> None:
    """A client disconnecting while its request's calls are in flight: the handler is
    cancelled (handler_cancellation), its job is closed with nothing under way, and the
    simulator receives no request of it after that, while other requests are still served."""
    async with _service("30s") as (_, sim, url):
        port = int(url.split(":")[2].split("/")[0])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(_body("r-gone")).encode()
        writer.write(
            b"POST /optimize HTTP/1.1\r\nHost: x\r\nX-Tenant: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        await sim.event("r-gone").wait()  # its first call reached the provider
        writer.close()  # the client goes away mid-request
        await writer.wait_closed()
        job, outcome = await sim.finished.get()
        assert outcome == "cancelled"
        assert job.state == "closed" and job.calls_under_way == 0
        stats = job.stats()
        assert stats["in_flight"] == 0 and stats["queued"] == 0
        before = sim.sent()["r-gone"]
        assert 1 <= before <= 2  # its forward calls only: nothing after them was sent
        # The engine goes on serving: a later request completes (at no latency), and by then
        # the closed job still has sent nothing more.
        sim.server.update(latency="0")
        async with aiohttp.ClientSession() as client:
            status, payload = await _post(client, url, "t2", _body("r-after"))
        assert status == 200 and payload["usage"]["requests"] == 7
        assert sim.sent()["r-gone"] == before


async def test_a_requests_deadline_is_a_clear_json_error() -> None:
    """A request whose calls outlast its deadline gets 504 with a typed JSON error naming
    the deadline and the job, and its usage so far."""
    async with _service("30s") as (_, sim, url):
        async with aiohttp.ClientSession() as client:
            status, payload = await _post(client, url, "t", _body("r-slow", deadline=0.2))
        assert status == 504
        error = payload["error"]
        assert error["type"] == "deadline_exceeded" and error["deadline"] == 0.2
        assert error["job"].startswith("t/") and "deadline" in error["message"]
        # Its two forward calls were sent, and stopped unanswered: no call completed.
        assert payload["usage"]["requests"] == sim.sent()["r-slow"] == 2
        assert payload["usage"]["calls"] == 0


async def test_a_requests_call_cap_is_a_clear_json_error() -> None:
    """A request capped at 3 calls (a step needs 7) gets 429 with a typed JSON error naming
    the limit and the job; exactly 3 requests reached the simulator for it."""
    async with _service("0", max_calls=50) as (_, sim, url):
        async with aiohttp.ClientSession() as client:
            status, payload = await _post(client, url, "t", _body("r-cap", max_calls=3))
            # A client cannot raise the server's cap: 10**6 is read as the server's 50.
            ok_status, ok = await _post(client, url, "t", _body("r-ok", max_calls=10**6))
        assert status == 429
        error = payload["error"]
        assert error["type"] == "budget_exceeded" and error["limit"] == "max_calls"
        assert error["job"].startswith("t/")
        assert payload["usage"]["requests"] == sim.sent()["r-cap"] == 3
        assert ok_status == 200 and ok["usage"]["requests"] == 7


async def test_a_bad_body_is_refused_before_any_call() -> None:
    """Malformed or oversized bodies get 400/413 JSON errors and no call is made."""
    async with _service("0") as (svc, sim, url):
        async with aiohttp.ClientSession() as client:
            bad = await _post(client, url, "t", {"questions": [["only one"]]})
            many = await _post(client, url, "t", {"questions": [["q", "a"]] * 100})
            huge = await _post(client, url, "t", {"prompt": "x" * (svc.MAX_BODY_BYTES + 1)})
        assert bad[0] == 400 and bad[1]["error"]["type"] == "bad_request"
        assert many[0] == 400
        assert huge[0] == 413
        assert sim.server.requests == []
