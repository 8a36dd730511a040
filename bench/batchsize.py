"""Accuracy against batch size, per aggregation strategy: prompt optimization end to end.

    python -m bench batchsize [--base-url URL --model M [--optimizer-model M2]]
                              [--sizes 3,32,256,1024] [--strategies concat,tree,auto]
                              [--steps 3] [--task object_counting] [--data FILE]
                              [--test-size 100] [--context-window N] [--max-cost DOLLARS]

For each B and strategy, one ``asynctg optimize`` run (a fresh process, ``--json``) with
``--steps`` steps of B examples, the test split evaluated before and after every step. The table
has test accuracy per step, calls, tokens and cost per (B, strategy); a strategy that cannot
fit the window at some B is reported as refused. With ``--base-url`` (and ``OPENAI_API_KEY`` if
the endpoint needs one) this measures real quality; without it, the runs go to the built-in
simulator, which checks mechanics only: its "accuracy" rises with the prompt's length and says
nothing about a strategy's quality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from bench.common import ROOT, simulator, table, write_result

SIZES = "3,32,256,1024"


def _run(
    args: argparse.Namespace, url: str, model: str, batch: int, strategy: str
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "asynctg", "optimize", "--task", args.task, "--json", "--quiet"]
    cmd += ["--base-url", url, "--model", model, "--aggregation", strategy]
    cmd += ["--batch-size", str(batch), "--steps", str(args.steps), "--epochs", "1"]
    cmd += ["--train-size", str(batch * args.steps), "--test-size", str(args.test_size)]
    cmd += ["--max-concurrency", str(args.max_concurrency)]
    if args.data:
        cmd += ["--data", args.data]
    if args.optimizer_model:
        cmd += ["--optimizer-model", args.optimizer_model]
    if args.context_window:
        cmd += ["--context-window", str(args.context_window)]
    if args.max_cost is not None:
        cmd += ["--max-cost", str(args.max_cost)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"B": batch, "strategy": strategy, "status": f"refused: {reason[:120]}"}
    data = json.loads(proc.stdout)
    history = data["history"]
    usage = data["usage"]
    return {
        "B": batch,
        "strategy": strategy,
        "status": data["status"],
        "test_accuracy": [row.get("test_accuracy") for row in history],
        "ran": [(row.get("aggregation") or {}).get("strategy") for row in history[1:]],
        "calls": usage.get("provider_calls"),
        "tokens": usage.get("total_tokens"),
        "cost_usd": usage.get("cost_usd"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench batchsize")
    parser.add_argument("--quick", action="store_true", help="sizes 3,32,256 and 2 steps")
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint")
    parser.add_argument("--model", default=None)
    parser.add_argument("--optimizer-model", default=None)
    parser.add_argument("--sizes", default=None, help=f"comma list (default {SIZES})")
    parser.add_argument("--strategies", default="concat,tree,auto")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (3)")
    parser.add_argument("--task", default="object_counting")
    parser.add_argument("--data", default=None)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--context-window", type=int, default=None)
    parser.add_argument("--max-cost", type=float, default=None, help="per run, in dollars")
    parser.add_argument("--max-concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    sizes = [int(b) for b in (args.sizes or ("3,32,256" if args.quick else SIZES)).split(",")]
    args.steps = args.steps or (2 if args.quick else 3)
    rows = []
    on_sim = args.base_url is None

    def sweep(url: str, model: str) -> None:
        for batch in sizes:
            for strategy in args.strategies.split(","):
                row = _run(args, url, model, batch, strategy)
                rows.append(row)
                print(f"  B={batch} {strategy}: {row.get('test_accuracy', row['status'])}")

    if on_sim:
        print("built-in simulator: this checks mechanics only; its accuracy is not quality")
        args.context_window = args.context_window or 128_000
        with simulator("--latency", "20ms", "--context-window", str(args.context_window)) as url:
            sweep(url, "sim-1")
    else:
        sweep(args.base_url, args.model or os.environ.get("ASYNCTG_MODEL", "gpt-4o-mini"))
    shown = [
        {
            **r,
            "test_accuracy": " -> ".join(
                f"{a:.2f}" for a in r.get("test_accuracy") or [] if a is not None
            )
            or "-",
        }
        for r in rows
    ]
    print(table(shown, ["B", "strategy", "status", "test_accuracy", "calls", "tokens", "cost_usd"]))
    settings = {k: v for k, v in vars(args).items() if k != "max_cost"}
    results = {"rows": rows, "simulator": on_sim}
    write_result("batchsize", settings, results)
    return 0
