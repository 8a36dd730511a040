"""``python -m bench tiers``: one prompt-optimization run at each evaluation tier.

The same optimize run (object counting, minibatches of 3, validation and test scoring after
every step) against the simulator in this process, with ``eval_tier`` standard, flex and
batch: its wall time, its cost, the provider's bill, and which tier did which calls. The
simulator's flex answers are ``flex_latency_factor`` (3x) slower and ``--flex-refusals`` of them
are refused (retried after 50-250 ms); the flex allowance adapts to the measured latency ratio
unless fixed (the row with ``flex_concurrency=64``); its batches end at their first look (a
real batch takes minutes to hours: the batch row measures the engine's overhead, not a
provider's queue).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import asynctg as tg
from asynctg import apps, tasks
from asynctg.sim import SimConfig, SimServer

RESULTS = Path(__file__).parent / "results" / "tiers.json"


async def _run(
    tier: str, args: argparse.Namespace, flex_slots: int | None = None
) -> dict[str, Any]:
    config = SimConfig(
        latency=args.latency,
        flex_unavailable_rate=args.flex_refusals,
        batch_completion_seconds=0.0,
        prompt_cache=False,  # cached-input prices are not this benchmark's subject
        seed=1,
    )
    async with SimServer(config) as sim:
        task = tasks.get_task(
            "object_counting", train_size=30, val_size=args.val, test_size=args.test
        )
        assert isinstance(task, tasks.PromptTask)
        loop = apps.PromptConfig(
            batch_size=3, epochs=1, steps_per_epoch=args.steps, validate=True, eval_tier=tier
        )
        # the response cache on, as a checkpointed run has it (its journal): a rejected step's
        # test scoring asks what the step before asked, answered from it (or shared, if still
        # in flight) at every tier, so every tier pays for the same calls
        folder = tempfile.mkdtemp(prefix="asynctg-bench-tiers-")
        engine = tg.get_engine(
            "gpt-4o",
            base_url=sim.base_url,
            flex_deadline=120,
            flex_concurrency=flex_slots,
            cache=Path(folder) / "cache.bin",
        )
        async with engine:
            started = time.perf_counter()
            result = await apps.optimize_prompt(task, engine, config=loop)
            seconds = time.perf_counter() - started
        bill = sim.stats()["bill"]
        shutil.rmtree(folder, ignore_errors=True)
    usage = result.usage
    return {
        "tier": tier if flex_slots is None else f"{tier} (flex_concurrency={flex_slots})",
        "seconds": round(seconds, 3),
        "cost_usd": usage["cost_usd"],
        "saved_usd": usage["saved_usd"],
        "bill_usd": bill["total_nano_dollars"] / 1e9,
        "calls": usage["provider_calls"],
        "flex_calls": usage["flex_calls"],
        "batch_calls": usage["batch_calls"],
        "final_test_accuracy": result.history[-1]["test_accuracy"],
        "final_prompt": result.final_prompt,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench tiers", description=__doc__)
    p.add_argument("--quick", action="store_true", help="2 steps, 100 test questions")
    p.add_argument("--latency", default="100ms", help="the simulator's latency (100ms)")
    p.add_argument("--flex-refusals", type=float, default=0.1, help="share of flex 429s (0.1)")
    args = p.parse_args(argv)
    args.steps, args.val, args.test = (2, 50, 100) if args.quick else (4, 100, 500)
    rows = [asyncio.run(_run(tier, args)) for tier in ("standard", "flex", "batch")]
    # the default flex allowance adapts to the latency ratio (Little's law); for comparison,
    # the allowance fixed at max_concurrency (64), as before it adapted
    rows.insert(2, asyncio.run(_run("flex", args, 64)))
    base = rows[0]
    print("| eval tier | wall time | vs standard | cost | vs standard | flex / batch calls |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tier']} | {r['seconds']:.2f} s | {r['seconds'] / base['seconds']:.2f}x "
            f"| ${r['cost_usd']:.4f} (bill ${r['bill_usd']:.4f}) "
            f"| {1 - r['cost_usd'] / base['cost_usd']:.0%} cheaper "
            f"| {r['flex_calls']} / {r['batch_calls']} of {r['calls']} |"
        )
    same = all(r["final_prompt"] == base["final_prompt"] for r in rows)
    print(f"same final prompt at every tier: {same}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    return 0
