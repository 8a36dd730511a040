"""Client CPU per call against a zero-latency simulator, side by side in one run.

    python -m bench overhead [--calls 2000] [--concurrency 64] [--rounds 3]

Clients: asynctg's engine, openai-python's ``AsyncOpenAI``, and a bare aiohttp POST-and-decode
loop (the floor for an asyncio client). The simulator runs in its own process, so the CPU time
measured here (``time.process_time`` of this process) is the client's alone. Each round runs
every client once, in rotating order; the table reports the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from bench.common import simulator, table, write_result

Client = Callable[[str, int, int], Awaitable[None]]


def _messages(i: int) -> list[dict[str, str]]:
    # Distinct prompts: identical ones would be answered once by asynctg's single-flight.
    return [{"role": "user", "content": f"Overhead probe {i}: reply with one word."}]


async def _bounded(calls: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with sem:
            await one(i)

    async with asyncio.TaskGroup() as group:
        for i in range(calls):
            group.create_task(guarded(i))


async def run_asynctg(base_url: str, calls: int, concurrency: int) -> None:
    import asynctg as tg

    async with tg.get_engine(
        "sim-1", base_url=base_url, api_key="sk-bench", max_concurrency=concurrency
    ) as engine:

        async def one(i: int) -> None:
            await engine.chat(_messages(i))

        # The engine's own scheduler caps concurrency: no semaphore on top.
        async with asyncio.TaskGroup() as group:
            for i in range(calls):
                group.create_task(one(i))


async def run_openai(base_url: str, calls: int, concurrency: int) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=base_url, api_key="sk-bench") as client:

        async def one(i: int) -> None:
            await client.chat.completions.create(
                model="sim-1",
                messages=_messages(i),
                temperature=0,  # type: ignore[arg-type]
            )

        await _bounded(calls, concurrency, one)


async def run_aiohttp(base_url: str, calls: int, concurrency: int) -> None:
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


CLIENTS: dict[str, Client] = {
    "asynctg": run_asynctg,
    "openai AsyncOpenAI": run_openai,
    "bare aiohttp": run_aiohttp,
}


def _measure(
    loop_name: str, client: Client, url: str, calls: int, conc: int
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of ``client`` on a fresh loop."""
    factory = None
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    gc.collect()
    with asyncio.Runner(loop_factory=factory) as runner:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        runner.run(client(url, calls, conc))
        return time.process_time() - cpu0, time.perf_counter() - wall0


def run(calls: int, concurrency: int, rounds: int, loops: list[str]) -> dict[str, Any]:
    rows = []
    with simulator("--latency", "0", "--no-rate-limit-headers") as url:
        for loop_name in loops:
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
            names = list(CLIENTS)
            for name in names:  # warm-up: imports, connection pools, JIT-free but cache-warm
                _measure(loop_name, CLIENTS[name], url, min(200, calls), concurrency)
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    sample = _measure(loop_name, CLIENTS[name], url, calls, concurrency)
                    samples[name].append(sample)
            base = {}
            for name in names:
                cpu = statistics.median(s[0] for s in samples[name]) / calls
                wall = statistics.median(s[1] for s in samples[name])
                base[name] = cpu
                rows.append(
                    {
                        "loop": loop_name,
                        "client": name,
                        "cpu_us_per_call": round(cpu * 1e6, 1),
                        "calls_per_s": round(calls / wall, 0),
                    }
                )
            for row in rows:
                if row["loop"] == loop_name:
                    cpu = row["cpu_us_per_call"] / 1e6
                    row["x_openai"] = round(cpu / base["openai AsyncOpenAI"], 3)
                    row["x_aiohttp"] = round(cpu / base["bare aiohttp"], 3)
    return {"rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench overhead")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma list: asyncio,uvloop")
    args = parser.parse_args(argv)
    loops = [x for x in args.loops.split(",") if x]
    out = run(args.calls, args.concurrency, args.rounds, loops)
    print(
        f"Client overhead: {args.calls} calls, {args.concurrency} in flight, zero-latency "
        f"simulator in another process; median of {args.rounds} rounds"
    )
    print(
        table(
            out["rows"],
            ["loop", "client", "cpu_us_per_call", "calls_per_s", "x_openai", "x_aiohttp"],
        )
    )
    path = write_result("overhead", vars(args), out)
    print(f"wrote {path}")
    return out
