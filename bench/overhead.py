"""Client overhead: CPU per call, calls/s and peak memory against a zero-latency simulator.

    python -m bench overhead [--quick] [--calls 2000] [--concurrency 64] [--rounds 5]
                             [--loops asyncio,uvloop] [--clients asynctg,openai,aiohttp,textgrad]

Side by side, in one run, against one zero-latency simulator in its own process (so the CPU
measured is the client's alone): asynctg's engine, openai-python's ``AsyncOpenAI``, a bare
aiohttp POST-and-decode loop (the floor for an asyncio client), and TextGrad 0.1.8's engine
called from a thread pool (TextGrad's only way to run calls in parallel; no event loop, so it
is measured once, under ``threads``). The asyncio clients run on the standard loop and on
uvloop.

Every measurement is a fresh child process (``bench/overhead_client.py``): a warm-up, then a
fresh client makes ``--calls`` calls with ``--concurrency`` in flight. CPU is the child's
``process_time`` over that run (all threads); peak memory is the child's peak resident set
(``VmHWM``; imports included: it is what a process using that client holds). Rounds rotate
the order of the clients; tables report the median over rounds. The simulator's counter
proves that every call reached it over HTTP (none was answered from a cache).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    has_module,
    python_child,
    run_child,
    save_plot,
    sim_reset,
    sim_stats,
    simulator,
    table,
    textgrad_env,
    write_result,
)

LABELS = {
    "asynctg": "asynctg",
    "openai": "openai AsyncOpenAI",
    "aiohttp": "bare aiohttp",
    "textgrad": "TextGrad engine + threads",
}


def _sample(url: str, client: str, loop: str, args: argparse.Namespace) -> dict[str, Any]:
    sim_reset(url)
    cmd = python_child("-m", "bench.overhead_client", "--client", client, "--loop", loop)
    cmd += ["--base-url", url, "--calls", str(args.calls)]
    cmd += ["--concurrency", str(args.concurrency), "--warmup", str(args.warmup)]
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        child = run_child(cmd, env=textgrad_env(Path(tmp), url))
    out = child.json_line()
    answered = sim_stats(url)["ok"]
    if answered != args.warmup + args.calls:
        raise RuntimeError(
            f"{client}: the simulator answered {answered} calls, expected "
            f"{args.warmup + args.calls} (a cache or shortcut answered some)"
        )
    return out


def _plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(loop, clients) blocks; TextGrad's threads go in a block of their own."""
    clients = [c for c in args.clients.split(",") if c]
    if "textgrad" in clients and not has_module("textgrad"):
        print("  textgrad is not installed: its engine is left out")
        clients.remove("textgrad")
    asyncs = [c for c in clients if c != "textgrad"]
    blocks = [(loop, asyncs) for loop in args.loops.split(",") if loop]
    if "textgrad" in clients:
        blocks.append(("threads", ["textgrad"]))
    return blocks


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every client, every loop, ``args.rounds`` times in rotating order."""
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    blocks = _plan(args)
    with simulator("--latency", "0", "--no-rate-limit-headers") as url:
        for r in range(args.rounds):
            for loop, clients in blocks:
                shift = r % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    sample = _sample(url, client, "asyncio" if loop == "threads" else loop, args)
                    samples.setdefault((loop, client), []).append(sample)
                    us = sample["cpu_s"] / args.calls * 1e6
                    print(f"  round {r + 1} {loop:8} {client:9} {us:8.0f} µs/call", flush=True)
    rows = [_summary(loop, client, runs, args.calls) for (loop, client), runs in samples.items()]
    _ratios(rows)
    return {"rows": rows}


def _summary(loop: str, client: str, runs: list[dict[str, Any]], calls: int) -> dict[str, Any]:
    cpu = statistics.median(s["cpu_s"] for s in runs) / calls
    wall = statistics.median(s["wall_s"] for s in runs)
    return {
        "loop": loop,
        "client": LABELS[client],
        "key": client,
        "cpu_us_per_call": round(cpu * 1e6, 1),
        "calls_per_s": round(calls / wall),
        "peak_rss_mib": round(max(s["peak_rss_kib"] for s in runs) / 1024, 1),
        "samples": runs,
    }


def _ratios(rows: list[dict[str, Any]]) -> None:
    """x openai-python and x bare aiohttp, on the same loop (threads: against asyncio's)."""
    base = {(r["loop"], r["key"]): r["cpu_us_per_call"] for r in rows}
    for row in rows:
        loop = "asyncio" if row["loop"] == "threads" else row["loop"]
        for key, col in (("openai", "x_openai"), ("aiohttp", "x_aiohttp")):
            ref = base.get((loop, key))
            row[col] = round(row["cpu_us_per_call"] / ref, 3) if ref else None


COLUMNS = ["loop", "client", "cpu_us_per_call", "calls_per_s", "x_openai", "x_aiohttp"]
COLUMNS += ["peak_rss_mib"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench overhead")
    parser.add_argument("--quick", action="store_true", help="1000 calls, 3 rounds")
    parser.add_argument("--calls", type=int, default=None, help="default 2000 (quick: 1000)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls (threads) in flight")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (quick: 3)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma list: asyncio,uvloop")
    parser.add_argument("--clients", default="asynctg,openai,aiohttp,textgrad")
    args = parser.parse_args(argv)
    if args.calls is None:
        args.calls = 1000 if args.quick else 2000
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    out = run(args)
    print(
        f"Client overhead: {args.calls} calls, {args.concurrency} in flight, zero-latency "
        f"simulator in another process; median of {args.rounds} rounds, each run in a fresh "
        "process"
    )
    print(table(out["rows"], COLUMNS))
    print(f"wrote {write_result('overhead', vars(args), out)}")
    save_plot("overhead")
    return out
