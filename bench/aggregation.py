"""Aggregation: one step's time, calls and optimizer-prompt size past the context wall.

    python -m bench aggregation [--quick] [--batch-sizes 8,32,128,512,1024,2048,4096]
                                [--strategies concat,tree,auto] [--latency 50ms]
                                [--context-window 128000] [--feedback-tokens 300]
                                [--max-concurrency 256]

Each (B, strategy) runs asynctg's native step (``bench/native_step.py``) in a fresh process
against one simulator with a context window, a fixed latency and feedback replies of realistic
length. "concat" past the window is refused before sending (``ContextBudgetError``); its prompt
size is still measured and plotted. The simulator reports the largest prompt it received, so
"no request over the window" is measured at the server. The bound is
``(4 + tree levels) x latency`` (the critical path) plus the time the budget forces, ``calls x
latency / max_concurrency``; on this 2-core machine the client's and the simulator's CPU
(``step_cpu_s`` is the client's) binds before either at large B.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from bench.common import save_plot, sim_reset, sim_stats, simulator, table, write_result
from bench.step import run_native

SIZES = "8,32,128,512,1024,2048,4096"
QUICK_SIZES = "8,32,128,512,1024"


def run(
    sizes: list[int],
    strategies: list[str],
    latency: str,
    window: int,
    feedback: int,
    concurrency: int,
) -> dict[str, Any]:
    from asynctg.sim import parse_latency

    lat = float(parse_latency(latency).mean())
    rows = []
    sim_args = ["--latency", latency, "--context-window", str(window)]
    sim_args += ["--feedback-tokens", str(feedback)]
    with simulator(*sim_args) as url:
        for batch in sizes:
            for strategy in strategies:
                sim_reset(url)
                extra = ["--aggregation", strategy, "--context-window", str(window)]
                out = run_native(url, batch, "string", concurrency, *extra)
                stats = sim_stats(url)
                report = out["aggregation"]
                levels = report.get("levels", 0)
                fits = "error" not in report
                depth_s = (4 + levels) * lat
                work_s = math.ceil(stats["requests"] / concurrency) * lat
                bound = depth_s + work_s  # the critical path, plus what the budget forces
                rows.append(
                    {
                        "B": batch,
                        "strategy": strategy,
                        "ran": report.get("strategy", strategy) if fits else "refused",
                        "calls": stats["requests"],
                        "reduce_calls": max(0, report.get("calls", 1) - 1) if fits else 0,
                        "levels": levels,
                        "step_s": round(out["step_s"], 3),
                        "depth_bound_s": round(depth_s, 3),
                        "work_bound_s": round(work_s, 3),
                        "bound_s": round(bound, 3),
                        "x_bound": round(out["step_s"] / bound, 2),
                        "step_cpu_s": round(out["step_cpu_s"], 3),
                        "optimizer_prompt_tokens": report.get("prompt_tokens"),
                        "max_prompt_at_sim": stats["max_prompt_tokens"],
                        "over_window_at_sim": stats["context_length_exceeded"],
                    }
                )
                print(
                    f"  B={batch} {strategy}: {rows[-1]['ran']}, {stats['requests']} calls, "
                    f"{out['step_s']:.2f}s, prompt {report.get('prompt_tokens')} tokens",
                    flush=True,
                )
    return {
        "rows": rows,
        "latency_s": lat,
        "context_window": window,
        "feedback_tokens": feedback,
        "max_concurrency": concurrency,
    }


COLUMNS = [
    "B",
    "strategy",
    "ran",
    "calls",
    "reduce_calls",
    "levels",
    "step_s",
    "depth_bound_s",
    "work_bound_s",
    "bound_s",
    "x_bound",
    "step_cpu_s",
    "optimizer_prompt_tokens",
    "max_prompt_at_sim",
    "over_window_at_sim",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench aggregation")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--batch-sizes", default=None, help=f"comma list (default {SIZES})")
    parser.add_argument("--strategies", default="concat,tree,auto")
    parser.add_argument("--latency", default="50ms")
    parser.add_argument("--context-window", type=int, default=128_000)
    parser.add_argument("--feedback-tokens", type=int, default=300)
    parser.add_argument("--max-concurrency", type=int, default=256)
    args = parser.parse_args(argv)
    sizes = args.batch_sizes or (QUICK_SIZES if args.quick else SIZES)
    results = run(
        [int(b) for b in sizes.split(",")],
        args.strategies.split(","),
        args.latency,
        args.context_window,
        args.feedback_tokens,
        args.max_concurrency,
    )
    print(table(results["rows"], COLUMNS))
    write_result("aggregation", vars(args), results)
    save_plot("aggregation")
    return results
