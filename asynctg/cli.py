"""The ``asynctg`` command line: ``asynctg demo``, ``asynctg sim``.

Exit codes: 0 success, 1 a run that failed, 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from asynctg._version import __version__
from asynctg.errors import AsyncTGError, ConfigError

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asynctg",
        description="TextGrad as an async, high-throughput runtime.",
    )
    parser.add_argument("--version", action="version", version=f"asynctg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="run a fan-out of chat calls against the built-in simulator (no API key needed)",
        description=(
            "Fan out chat calls through one engine and report throughput, latency and 429s. "
            "With no --base-url, starts the simulator in this process."
        ),
    )
    demo.add_argument("--calls", type=_positive_int, default=300, help="calls to make (300)")
    demo.add_argument(
        "--rpm", type=_positive_float, default=1200, help="provider budget, requests/min (1200)"
    )
    demo.add_argument(
        "--no-limit",
        action="store_true",
        help="do not tell the engine the budget: it learns it from headers and 429s",
    )
    demo.add_argument(
        "--latency", default="lognormal:80ms,0.4", help="simulated latency (lognormal:80ms,0.4)"
    )
    demo.add_argument("--fault-rate", type=float, default=0.02, help="simulated faults (0.02)")
    demo.add_argument("--max-concurrency", type=_positive_int, default=64)
    demo.add_argument("--base-url", help="a real OpenAI-compatible endpoint instead of the sim")
    demo.add_argument("--model", default=None, help="model name (sim-1 on the simulator)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--quiet", action="store_true", help="no progress display")

    sim = sub.add_parser(
        "sim",
        help="serve the OpenAI-compatible simulator in the foreground",
        description="Serve the OpenAI-compatible simulated provider until interrupted.",
    )
    from asynctg import sim as sim_module

    sim_module.add_arguments(sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asynctg`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "sim":
            from asynctg import sim as sim_module

            return sim_module.run_from_args(args)
        if args.command == "demo":
            from asynctg.runtime import run

            return run(_demo(args))
    except ConfigError as exc:
        print(f"asynctg: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"asynctg: error: {exc}", file=sys.stderr)
        return 2
    except AsyncTGError as exc:
        print(f"asynctg: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("asynctg: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


class _Progress:
    """A live status line on a terminal; one line per interval otherwise; nothing if quiet."""

    def __init__(self, total: int, *, quiet: bool, stream: Any = None) -> None:
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()

    def show(self, stats: dict[str, Any], *, final: bool = False) -> None:
        if self.quiet:
            return
        sched = stats["scheduler"]
        elapsed = time.perf_counter() - self.started
        line = (
            f"{stats['calls']:>6}/{self.total} calls  {sched['in_flight']:>3} in flight  "
            f"{sched['queued']:>5} queued  {stats['rate_limited']:>4} x 429  "
            f"{stats['retries']:>4} retries  {stats['total_tokens']:>8} tokens  {elapsed:6.1f} s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    async def run(self, engine: Any, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.show(engine.stats())


async def _demo(args: argparse.Namespace) -> int:
    from asynctg.engine import get_engine
    from asynctg.sim import SimConfig, SimServer

    if not 0 <= args.fault_rate <= 1:
        raise ConfigError(f"--fault-rate must be within [0, 1], got {args.fault_rate}")
    on_sim = args.base_url is None
    if on_sim:
        config = SimConfig(
            latency=args.latency,
            rpm=int(args.rpm),
            fault_rate=args.fault_rate,
            # The demo shows recovery from quick faults; a 30 s "slow" one would only stall it.
            faults=("500", "503", "drop", "malformed", "truncated"),
            seed=args.seed,
        )
        async with SimServer(config) as server:
            summary = await _fan_out(args, server.base_url, args.model or "sim-1", get_engine)
            summary["simulator"] = {
                k: v for k, v in server.stats().items() if k not in ("timeline",)
            }
    else:
        model = args.model or os.environ.get("ASYNCTG_MODEL")
        if not model:
            raise ConfigError("--model is required with --base-url")
        summary = await _fan_out(args, args.base_url, model, get_engine)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary, on_sim)
    return 0 if summary["failed"] == 0 else 1


async def _fan_out(
    args: argparse.Namespace, base_url: str, model: str, get_engine: Any
) -> dict[str, Any]:
    rpm = None if args.no_limit else args.rpm
    latencies: list[float] = []
    failures: list[str] = []
    topics = ["primes", "rivers", "tides", "owls", "bridges", "comets", "glaciers", "violins"]
    async with get_engine(
        model, base_url=base_url, rpm=rpm, max_concurrency=args.max_concurrency
    ) as engine:
        progress = _Progress(args.calls, quiet=args.quiet)

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                await engine.generate(
                    f"Question {i}: in one sentence, what is remarkable about "
                    f"{topics[i % len(topics)]}?",
                    system_prompt="You are a concise assistant.",
                    max_tokens=64,
                )
            except AsyncTGError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            else:
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            ticker = group.create_task(progress.run(engine, 0.25 if progress.tty else 2.0))
            async with asyncio.TaskGroup() as calls:
                for i in range(args.calls):
                    calls.create_task(one(i))
            ticker.cancel()
        wall = time.perf_counter() - started
        progress.show(engine.stats(), final=True)
        stats = engine.stats()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    on_sim = args.base_url is None
    # The fastest any client can go: a second's burst, then the budget's rate.
    floor = max(0.0, (args.calls - args.rpm / 60) / (args.rpm / 60)) if on_sim else None
    return {
        "calls": args.calls,
        "succeeded": len(latencies),
        "failed": len(failures),
        "failures": failures[:5],
        "wall_seconds": round(wall, 3),
        "calls_per_second": round(len(latencies) / wall, 2) if wall else 0.0,
        "latency_p50_ms": round(pct(0.50) * 1000, 1),
        "latency_p99_ms": round(pct(0.99) * 1000, 1),
        "rpm_budget": args.rpm if on_sim else None,
        "budget_floor_seconds": round(floor, 3) if floor is not None else None,
        "told_the_limit": not args.no_limit,
        "engine": stats,
    }


def _print_summary(summary: dict[str, Any], on_sim: bool) -> None:
    eng = summary["engine"]
    where = "the built-in simulator" if on_sim else "the endpoint"
    lines = [
        f"asynctg demo: {summary['calls']} chat calls against {where}",
        f"  succeeded        {summary['succeeded']}   failed {summary['failed']}",
        f"  wall time        {summary['wall_seconds']:.2f} s"
        + (
            f"   (budget floor {summary['budget_floor_seconds']:.2f} s at "
            f"{summary['rpm_budget']:g} rpm)"
            if summary["budget_floor_seconds"] is not None
            else ""
        ),
        f"  throughput       {summary['calls_per_second']:.1f} calls/s",
        f"  call latency     p50 {summary['latency_p50_ms']:.0f} ms   "
        f"p99 {summary['latency_p99_ms']:.0f} ms   (queueing for the budget included)",
        f"  429s answered    {eng['rate_limited']}   other faults retried {eng['faults']}   "
        f"retries {eng['retries']}",
        f"  tokens           {eng['prompt_tokens']} prompt + {eng['completion_tokens']} completion",
        f"  limit            {'told' if summary['told_the_limit'] else 'learned'}"
        f"   peak in flight {eng['scheduler']['max_in_flight']}",
    ]
    for failure in summary["failures"]:
        lines.append(f"  failure: {failure}")
    print("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
