"""Budget utilisation: a fan-out against a simulated rpm limit, told the limit and not told.

    python -m bench budget [--calls 150] [--rpm 600] [--latency 100ms]

The floor is what the budget allows at best: a second's burst (rpm/60 requests), then rpm/60
requests a second, plus one latency for the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import sim_reset, sim_stats, simulator, table, write_result


async def _fan_out(
    base_url: str, calls: int, rpm: float | None, concurrency: int
) -> dict[str, Any]:
    import asynctg as tg

    async with tg.get_engine(
        "sim-1", base_url=base_url, api_key="sk-bench", rpm=rpm, max_concurrency=concurrency
    ) as engine:
        started = time.perf_counter()

        async def one(i: int) -> None:
            await engine.generate(f"Fan-out call {i}: say something short.", max_tokens=16)

        async with asyncio.TaskGroup() as group:
            for i in range(calls):
                group.create_task(one(i))
        wall = time.perf_counter() - started
        return {"wall_seconds": wall, "engine": engine.stats()}


def _parse_latency_seconds(spec: str) -> float:
    from asynctg.sim import parse_latency

    return float(parse_latency(spec).mean())


def run(calls: int, rpm: int, latency: str, concurrency: int) -> dict[str, Any]:
    import asynctg as tg

    rate = rpm / 60
    lat = _parse_latency_seconds(latency)
    floor = max(0.0, (calls - rate) / rate) + lat
    rows = []
    with simulator("--rpm", str(rpm), "--latency", latency) as url:
        for label, told in (("told rpm", rpm), ("learned", None)):
            sim_reset(url)
            out = tg.run(_fan_out(url, calls, told, concurrency))
            stats = sim_stats(url)
            wall = out["wall_seconds"]
            rows.append(
                {
                    "mode": label,
                    "calls": calls,
                    "ok": stats["ok"],
                    "wall_s": round(wall, 2),
                    "floor_s": round(floor, 2),
                    "x_floor": round(wall / floor, 3) if floor else None,
                    "answered_429": stats["rate_limited"],
                    "engine_retries": out["engine"]["retries"],
                    "timeline": stats.get("timeline"),
                }
            )
    return {"rows": rows, "floor_seconds": floor}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench budget")
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--latency", default="100ms")
    parser.add_argument("--max-concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    settings = vars(args)
    out = run(args.calls, args.rpm, args.latency, args.max_concurrency)
    cols = ["mode", "calls", "ok", "wall_s", "floor_s", "x_floor", "answered_429"]
    print(
        f"Budget: {args.calls} calls fanned out at once, simulator at {args.rpm} rpm, "
        f"latency {args.latency}"
    )
    print(table(out["rows"], cols))
    path = write_result("budget", settings, out)
    print(f"wrote {path}")
    return out
