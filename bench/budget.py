"""Budget utilisation: a long fan-out against simulated rpm and tpm limits, told and not told.

    python -m bench budget [--quick] [--calls 5000] [--rpm 6000] [--tpm 300000]
                           [--latency 100ms] [--scenarios rpm,tpm]

Every call is started at once (a TaskGroup of ``--calls`` tasks) against a simulator that
enforces one limit: ``rpm`` (requests per minute) or ``tpm`` (tokens per minute, prompt plus
completion). Prompts vary in length and no ``max_tokens`` is sent, so the engine has to
estimate each request's tokens before sending and correct itself from the reported usage. The
engine is either told the limit (``rpm=`` / ``tpm=``) or not told it (it learns it from the
``x-ratelimit-*`` headers and 429s).

Like real providers, the simulator enforces a per-minute limit per second (its buckets hold a
second's worth), so the best possible wall time (the floor) is: one second's burst, then the
limit's rate, plus one latency for the last answer. Reported per run: utilisation = floor /
wall (achieved rate over the run as a fraction of the best the limit allows), the steady-state
rate (the simulator's per-second admissions, burst and last second left out) as a fraction of
the limit, requests answered 429, and per-request (HTTP round trip) and per-call (start to
answer, queueing for the budget included) latency percentiles. The per-second timeline is kept
for the plot.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from asynctg.loadtest.stats import percentile  # asynctg bench's own statistics
from bench.common import (
    save_plot,
    sim_reset,
    sim_stats,
    simulator,
    table,
    write_result,
)

_FILLER = "Count the instruments in the band and think about each one carefully. "


def prompt(i: int) -> str:
    """Call ``i``'s prompt: distinct (no two coalesce), 1 to 8 filler sentences long."""
    return f"Fan-out call {i}. " + _FILLER * (1 + i % 8) + "Answer in one short sentence."


class TimedTransport:
    """asynctg's aiohttp transport, timing every HTTP round trip (status, seconds)."""

    def __init__(self) -> None:
        from asynctg.transport import AiohttpTransport

        self.inner = AiohttpTransport()
        self.samples: list[tuple[int, float]] = []

    async def send(self, request: Any) -> Any:
        started = time.perf_counter()
        response = await self.inner.send(request)
        self.samples.append((response.status, time.perf_counter() - started))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def fan_out(
    base_url: str, calls: int, rpm: int | None, tpm: int | None, concurrency: int
) -> dict[str, Any]:
    """Start ``calls`` calls at once through one engine; time each call and each request."""
    import asynctg as tg

    transport = TimedTransport()
    call_seconds: list[float] = []
    async with tg.get_engine(
        "sim-1",
        base_url=base_url,
        api_key="sk-bench",
        rpm=rpm,
        tpm=tpm,
        max_concurrency=concurrency,
        transport=transport,
    ) as engine:

        async def one(i: int) -> None:
            t = time.perf_counter()
            await engine.generate(prompt(i))
            call_seconds.append(time.perf_counter() - t)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for i in range(calls):
                group.create_task(one(i))
        wall = time.perf_counter() - started
        stats = engine.stats()
    ok_seconds = [s for status, s in transport.samples if status == 200]
    return {
        "wall_s": wall,
        "engine": stats,
        "request_p50_ms": _ms(percentile(ok_seconds, 0.5)),
        "request_p99_ms": _ms(percentile(ok_seconds, 0.99)),
        "call_p50_s": _round(percentile(call_seconds, 0.5)),
        "call_p99_s": _round(percentile(call_seconds, 0.99)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def steady_fraction(timeline: list[list[int]], column: int, per_second: float) -> float | None:
    """Mean of a timeline column in the steady state, as a fraction of ``per_second``.

    The first two seconds (the burst, and the second it spills into) and the last (partial)
    one are left out.
    """
    inner = [row[column] for row in timeline[2:-1]]
    if not inner:
        return None
    return round(sum(inner) / len(inner) / per_second, 3)


def _measure(
    url: str, scenario: str, limit: int, told: bool, args: argparse.Namespace
) -> dict[str, Any]:
    import asynctg as tg
    from asynctg.sim import parse_latency

    sim_reset(url)
    given = limit if told else None
    rpm, tpm = (given, None) if scenario == "rpm" else (None, given)
    out = tg.run(fan_out(url, args.calls, rpm, tpm, args.max_concurrency))
    stats = sim_stats(url)
    per_second = limit / 60
    # requests: 1 each; tokens: what the simulator charged for the answered requests
    work = args.calls if scenario == "rpm" else stats["total_tokens"]
    floor = max(0.0, (work - per_second) / per_second) + parse_latency(args.latency).mean()
    column = 1 if scenario == "rpm" else 2
    return {
        "scenario": scenario,
        "mode": "told" if told else "learned",
        "limit": limit,
        "calls": args.calls,
        "ok": stats["ok"],
        "wall_s": round(out["wall_s"], 2),
        "floor_s": round(floor, 2),
        "utilisation": round(floor / out["wall_s"], 3),
        "steady_rate": steady_fraction(stats["timeline"], column, per_second),
        "answered_429": stats["rate_limited"],
        "pct_429": round(100 * stats["rate_limited"] / max(1, stats["requests"]), 2),
        "request_p50_ms": out["request_p50_ms"],
        "request_p99_ms": out["request_p99_ms"],
        "call_p50_s": out["call_p50_s"],
        "call_p99_s": out["call_p99_s"],
        "tokens": stats["total_tokens"],
        "engine": out["engine"],
        "timeline": stats["timeline"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Each scenario told, then not told; a fresh simulator (full budget) for every run."""
    rows = []
    for scenario in [s for s in args.scenarios.split(",") if s]:
        limit = args.rpm if scenario == "rpm" else args.tpm
        for told in (True, False):
            with simulator(f"--{scenario}", str(limit), "--latency", args.latency) as url:
                row = _measure(url, scenario, limit, told, args)
            print(
                f"  {scenario} {row['mode']}: {row['wall_s']}s, utilisation "
                f"{row['utilisation']}, {row['answered_429']} x 429",
                flush=True,
            )
            rows.append(row)
    return {"rows": rows}


COLUMNS = [
    "scenario",
    "mode",
    "limit",
    "calls",
    "ok",
    "wall_s",
    "floor_s",
    "utilisation",
    "steady_rate",
    "answered_429",
    "pct_429",
    "request_p50_ms",
    "request_p99_ms",
    "call_p50_s",
    "call_p99_s",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench budget")
    parser.add_argument("--quick", action="store_true", help="2000 calls instead of 5000")
    parser.add_argument("--calls", type=int, default=None, help="calls per run (default 5000)")
    parser.add_argument("--rpm", type=int, default=6000, help="the rpm scenario's limit")
    parser.add_argument("--tpm", type=int, default=600_000, help="the tpm scenario's limit")
    parser.add_argument("--latency", default="100ms")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--scenarios", default="rpm,tpm", help="comma list: rpm,tpm")
    args = parser.parse_args(argv)
    if args.calls is None:
        args.calls = 2000 if args.quick else 5000
    out = run(args)
    print(
        f"Budget: {args.calls} calls started at once, latency {args.latency}; simulator limited "
        f"to {args.rpm} rpm or {args.tpm} tpm; utilisation = floor / wall"
    )
    print(table(out["rows"], COLUMNS))
    print(f"wrote {write_result('budget', vars(args), out)}")
    save_plot("budget")
    return out
