"""``asynctg demo``: a short prompt-optimization run on the built-in simulator (or a real
endpoint), summarised with throughput, latency and 429s."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from typing import Any

from asynctg.cli.common import endpoint_options, engines, live, one_line, positive_int
from asynctg.errors import ConfigError

__all__ = ["add_parser", "run_demo"]


def add_parser(sub: Any) -> None:
    """Add ``demo`` to the subcommands ``sub``."""
    demo = sub.add_parser(
        "demo",
        help="a short prompt-optimization run on the built-in simulator (no API key needed)",
        description=(
            "Optimize the system prompt of generated object-counting questions for a few steps "
            "(batch 16), then print a summary with throughput, latency and 429s. With no "
            "--base-url, the simulator runs in this process; with --base-url and --model the "
            "same job runs against a real endpoint."
        ),
    )
    endpoint_options(demo, demo=True)
    demo.add_argument("--steps", type=positive_int, default=3, help="optimizer steps (3)")
    demo.add_argument("--batch-size", type=positive_int, default=16, help="minibatch size (16)")
    demo.add_argument(
        "--test-size", type=positive_int, default=48, help="test questions per evaluation (48)"
    )
    demo.add_argument(
        "--latency", default="lognormal:80ms,0.4", help="simulated latency (lognormal:80ms,0.4)"
    )
    demo.add_argument(
        "--sim-rpm", type=positive_int, default=3000, help="simulated budget, requests/min"
    )
    demo.add_argument("--fault-rate", type=float, default=0.02, help="simulated faults (0.02)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--estimate",
        action="store_true",
        help="print the calls, tokens and dollars the demo will spend, and exit",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display")


async def run_demo(args: argparse.Namespace) -> int:
    from asynctg.apps import Meter, Progress, PromptConfig, optimize_prompt
    from asynctg.sim import SimConfig, SimServer
    from asynctg.tasks import PromptTask, get_task

    if not 0 <= args.fault_rate <= 1:
        raise ConfigError(f"--fault-rate must be within [0, 1], got {args.fault_rate}")
    on_sim = args.base_url is None
    if not on_sim and not (args.model or os.environ.get("ASYNCTG_MODEL")):
        raise ConfigError("--model is required with --base-url")
    task = get_task(
        "object_counting",
        data_seed=args.seed,
        train_size=args.steps * args.batch_size,
        val_size=0,
        test_size=args.test_size,
    )
    assert isinstance(task, PromptTask)
    config = PromptConfig(
        batch_size=args.batch_size, epochs=1, steps_per_epoch=args.steps, seed=args.seed
    )
    if args.estimate:
        from asynctg.engine import get_engine
        from asynctg.runs.estimate import dry_run

        name = args.model or ("sim-1" if on_sim else os.environ.get("ASYNCTG_MODEL") or "")

        async def run_demo(engines: dict[str, Any]) -> Any:
            return await optimize_prompt(task, engines[name], config=config)

        estimate = await dry_run(
            lambda model, url: get_engine(model, base_url=url, api_key="estimate"),
            [name],
            run_demo,
            prices={name: args.price} if args.price else None,
            max_tokens=args.max_tokens,
        )
        print(json.dumps(estimate.to_json()) if args.json else estimate.line())
        return 0
    async with contextlib.AsyncExitStack() as stack:
        server = None
        if on_sim:
            sim_config = SimConfig(
                latency=args.latency,
                rpm=args.sim_rpm,
                fault_rate=args.fault_rate,
                # quick faults show the retries; a 30 s "slow" one would only stall the demo
                faults=("500", "503", "drop", "malformed", "truncated"),
                seed=args.seed,
            )
            server = await stack.enter_async_context(SimServer(sim_config))
            base_url: str | None = server.base_url
            model = args.model or "sim-1"
            args.rpm = args.rpm or args.sim_rpm
        else:
            base_url = args.base_url
            model = args.model or os.environ.get("ASYNCTG_MODEL") or ""
        engine, _, transports = engines(args, base_url, model, model)
        stack.push_async_callback(engine.aclose)
        # the bench is a job of its engine: its counts are its own run's, whatever else runs
        job = await stack.enter_async_context(engine.job("bench"))
        progress = Progress(Meter([job]).session, quiet=args.quiet)
        started = time.perf_counter()
        async with live(progress):
            result = await optimize_prompt(task, job, config=config, on_event=progress)
        wall = time.perf_counter() - started
        stats = job.stats()
        engine_stats = engine.stats()
        sim_stats = {k: v for k, v in server.stats().items() if k != "timeline"} if server else None
    from asynctg.loadtest.stats import percentile

    latencies = [x for t in transports for x in t.latencies]

    def pct(p: float) -> float:
        return percentile(latencies, p) or 0.0

    history = result.history
    summary = {
        "task": "object_counting (generated)",
        "endpoint": "built-in simulator" if on_sim else base_url,
        "model": model,
        "steps": len(history) - 1,
        "batch_size": args.batch_size,
        "test_size": args.test_size,
        "test_accuracy": [row["test_accuracy"] for row in history],
        "initial_prompt": result.initial_prompt,
        "final_prompt": result.final_prompt,
        "calls": stats["calls"],
        "requests": stats["requests"],
        "wall_seconds": round(wall, 3),
        "calls_per_second": round(stats["calls"] / wall, 2) if wall else 0.0,
        "latency_p50_ms": round(pct(0.50) * 1000, 1),
        "latency_p99_ms": round(pct(0.99) * 1000, 1),
        "rate_limited": stats["rate_limited"],
        "retries": stats["retries"],
        "faults": stats["faults"],
        "prompt_tokens": stats["prompt_tokens"],
        "completion_tokens": stats["completion_tokens"],
        "cost_usd": stats["cost_usd"],
        "engine": engine_stats,
        "simulator": sim_stats,
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_demo(summary)
    return 0


def _print_demo(s: dict[str, Any]) -> None:
    acc = s["test_accuracy"]
    steps = " -> ".join(f"{a:.2f}" for a in acc if a is not None)
    cost = s["cost_usd"]
    lines = [
        f"asynctg demo: prompt optimization on {s['task']} against {s['endpoint']}",
        f"  steps            {s['steps']} of {s['batch_size']} questions "
        f"(each: {s['batch_size']} answers, {2 * s['batch_size']} feedback calls, 1 rewrite), "
        f"test set {s['test_size']}",
        f"  test accuracy    {steps}",
        f"  final prompt     {one_line(s['final_prompt'], 240)}",
        f"  wall time        {s['wall_seconds']:.2f} s for {s['calls']} calls",
        f"  throughput       {s['calls_per_second']:.1f} calls/s",
        f"  request latency  p50 {s['latency_p50_ms']:.0f} ms   p99 {s['latency_p99_ms']:.0f} ms",
        f"  429s answered    {s['rate_limited']}   other faults retried {s['faults']}   "
        f"retries {s['retries']}",
        f"  tokens           {s['prompt_tokens']} prompt + {s['completion_tokens']} completion"
        + (f"   ${cost:.4f}" if cost is not None else ""),
    ]
    print("\n".join(lines))
