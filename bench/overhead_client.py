"""One client under test, as a measured child process of ``python -m bench overhead``.

    python -m bench.overhead_client --client asynctg --loop uvloop --base-url URL \\
                                    --calls 2000 --concurrency 64 --warmup 200

Clients: ``asynctg`` (its engine), ``openai`` (openai-python's ``AsyncOpenAI``), ``aiohttp``
(a bare POST-and-decode loop: the floor for an asyncio client) and ``textgrad`` (TextGrad
0.1.8's engine, ``textgrad.get_engine("gpt-4o")``, called from a thread pool of
``--concurrency`` workers, as TextGrad's scripts parallelise; it has no async path, so
``--loop`` does not apply to it). Every call has a distinct prompt: asynctg answers identical
requests in flight once, and TextGrad serves repeated prompts from its disk cache.

A warm-up (imports, first connections) runs first; then a fresh client makes ``--calls``
calls, ``--concurrency`` in flight, and this process's CPU time (all threads) and wall time for
that run are printed as one JSON line, with the process's peak resident set size.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from bench.common import current_rss_kib, peak_rss_kib

AsyncClient = Callable[[str, range, int], Coroutine[Any, Any, None]]


def prompt(i: int) -> str:
    """Call ``i``'s prompt: short, and distinct from every other call's."""
    return f"Overhead probe {i}: reply with one word."


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt(i)}]


async def _bounded(calls: range, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with sem:
            await one(i)

    async with asyncio.TaskGroup() as group:
        for i in calls:
            group.create_task(guarded(i))


async def run_asynctg(base_url: str, calls: range, concurrency: int) -> None:
    """asynctg's engine; its own scheduler caps concurrency (no semaphore on top)."""
    import asynctg as tg

    async with tg.get_engine(
        "sim-1", base_url=base_url, api_key="sk-bench", max_concurrency=concurrency
    ) as engine:
        async with asyncio.TaskGroup() as group:
            for i in calls:
                group.create_task(engine.chat(_messages(i)))


async def run_openai(base_url: str, calls: range, concurrency: int) -> None:
    """openai-python's ``AsyncOpenAI``, ``concurrency`` calls in flight."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=base_url, api_key="sk-bench") as client:

        async def one(i: int) -> None:
            await client.chat.completions.create(
                model="sim-1",
                messages=_messages(i),  # type: ignore[arg-type]
                temperature=0,
            )

        await _bounded(calls, concurrency, one)


async def run_aiohttp(base_url: str, calls: range, concurrency: int) -> None:
    """The floor: aiohttp POSTs of msgspec-encoded bodies, replies decoded with msgspec."""
    import aiohttp

    url = base_url + "/chat/completions"
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    encode = msgspec.json.encode
    decode = msgspec.json.decode
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> None:
            body = encode({"model": "sim-1", "messages": _messages(i), "temperature": 0})
            async with session.post(url, data=body, headers=headers) as resp:
                data = decode(await resp.read())
                data["choices"][0]["message"]["content"]

        await _bounded(calls, concurrency, one)


ASYNC_CLIENTS: dict[str, AsyncClient] = {
    "asynctg": run_asynctg,
    "openai": run_openai,
    "aiohttp": run_aiohttp,
}


def run_textgrad(calls: range, concurrency: int) -> None:
    """TextGrad 0.1.8's engine (OPENAI_BASE_URL points it at the simulator), from threads."""
    from concurrent.futures import ThreadPoolExecutor

    import textgrad  # type: ignore[import-untyped]

    engine = textgrad.get_engine("gpt-4o")
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in pool.map(lambda i: engine(prompt(i)), calls):
            pass


def _run_async(loop: str, client: AsyncClient, url: str, calls: range, conc: int) -> None:
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(client(url, calls, conc))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then time one run of ``args.calls`` calls with a fresh client."""
    warm = range(args.warmup)
    measured = range(args.warmup, args.warmup + args.calls)

    def once(calls: range) -> None:
        if args.client == "textgrad":
            run_textgrad(calls, args.concurrency)
        else:
            client = ASYNC_CLIENTS[args.client]
            _run_async(args.loop, client, args.base_url, calls, args.concurrency)

    once(warm)
    gc.collect()
    rss_before = current_rss_kib()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    once(measured)
    return {
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - wall0,
        "rss_before_kib": rss_before,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead_client")
    parser.add_argument("--client", choices=[*ASYNC_CLIENTS, "textgrad"], required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    print(json.dumps({**measure(args), "peak_rss_kib": peak_rss_kib()}), flush=True)


if __name__ == "__main__":
    main()
