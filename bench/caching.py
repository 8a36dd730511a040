"""What prompt caching saves on a prompt-optimization run, measured on the simulator.

    python -m bench caching [--steps 5] [--batch-size 3] [--shards 4]

One run = the paper's prompt optimization of BBH object counting (generated questions): an
evaluation of the validation and test splits, then ``--steps`` steps of batch ``--batch-size``
(B answers, 2B feedback calls, one rewrite, then validation and test again). The same run,
with the same seed, is made three ways against a fresh in-process simulator each time, whose
OpenAI API has ``--shards`` prompt-cache machines (a request without ``prompt_cache_key`` lands
on any of them, as at a provider that spreads traffic; one with a key always on the same one):

- ``no cache``: the simulator's prompt cache off (what the run cost before providers cached);
- ``prompt_cache=False``: the provider's cache on, asynctg sends no hint: OpenAI caches
  automatically (without a ``prompt_cache_key``, requests land on any cache machine);
  Anthropic caches nothing without ``cache_control`` breakpoints;
- ``prompt_cache=True``: asynctg's default: one OpenAI ``prompt_cache_key`` per run and
  variable; Anthropic breakpoints on stable prefixes long enough to cache.

Each row gives the engine's own cost (priced with ``tg.Price``: cached reads at the cached-input
price), the simulator's provider-side bill (``GET /sim/bill``), their difference, and the share
of prompt tokens the cache answered. The prompts are sent as the paper orders them (nothing is
reordered for the cache): a forward call is the system prompt, then the question; a feedback call
starts with the fixed backward instructions, then the sample's conversation; the rewrite starts
with the fixed optimizer instructions. Only prompts of 1,024 tokens or more are cached at all
(OpenAI's minimum), which the short forward prompts of this task never reach.

The Anthropic rows use the native adapter (``provider="anthropic"``). The simulator makes a
cache entry readable at once; Anthropic makes it readable only once the response that wrote it
has started, so calls sent at the same instant each pay the write there: read the Anthropic
rows as the best case.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Any

from bench.common import table, write_result

#: The simulator's OpenAI prices and the engine's (the same numbers: gpt-4o's).
OPENAI = {"input": 2.5, "output": 10.0, "cached_input": 1.25, "cache_write": 2.5}
#: Claude Sonnet's (cache reads 0.1x, 5-minute writes 1.25x the input price).
ANTHROPIC = {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}
#: the task's own short system prompt, and one with worked examples (see ``few_shot_prompt``)
PROMPTS = ("paper", "few-shot")
VARIANTS = (
    ("no cache", False, False),
    ("prompt_cache=False", True, False),
    ("prompt_cache=True", True, True),
)


def _has_anthropic() -> bool:
    from asynctg.engine.providers import provider
    from asynctg.errors import ConfigError

    try:
        provider("anthropic")
    except ConfigError:
        return False
    return True


def few_shot_prompt(task: Any, examples: int) -> str:
    """The task's system prompt followed by worked examples (generated apart from the run's
    questions): a longer prompt, as prompt optimization often starts from, past the
    1,024-token minimum a provider caches."""
    from asynctg import tasks

    pool = tasks.get_task(
        "object_counting", data_seed=1, train_size=examples, val_size=1, test_size=1
    )
    shots = [
        f"Example {i + 1}.\nQuestion: {qa.question}\nAnswer: {qa.answer}"
        for i, qa in enumerate(pool.train)  # type: ignore[union-attr]
    ]
    return task.system_prompt + "\n\nWorked examples:\n\n" + "\n\n".join(shots)


async def one_run(
    api: str, prompt: str, sim_cache: bool, engine_cache: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """One optimize run on a fresh simulator; the engine's usage and the provider's bill."""
    import asynctg as tg
    from asynctg import apps, tasks
    from asynctg.sim import SimConfig, SimServer
    from asynctg.sim.billing import Prices

    prices = OPENAI if api == "openai" else ANTHROPIC
    config = SimConfig(
        latency="0",
        seed=args.seed,
        prompt_cache=sim_cache,
        prompt_cache_shards=args.shards,
        **{f"{api}_prices": Prices(**prices)},  # type: ignore[arg-type]
    )
    task = tasks.get_task(
        "object_counting", train_size=args.train, val_size=args.val, test_size=args.test
    )
    assert isinstance(task, tasks.PromptTask)
    if prompt == "few-shot":
        task = dataclasses.replace(task, system_prompt=few_shot_prompt(task, args.examples))
    options: dict[str, Any] = {}
    model = "sim-1"
    if api == "anthropic":
        options = {"provider": "anthropic", "max_tokens": 1024}
        model = "claude-sonnet-4-5"
    price = tg.Price(
        prices["input"], prices["output"], prices["cached_input"], prices["cache_write"]
    )
    async with SimServer(config) as sim:
        engine = tg.get_engine(
            model,
            base_url=sim.base_url,
            api_key="sk-bench",
            price=price,
            prompt_cache=engine_cache,
            max_concurrency=16,
            **options,
        )
        async with engine:
            run = apps.PromptConfig(
                batch_size=args.batch_size,
                epochs=1,
                steps_per_epoch=args.steps,
                validate=True,
                seed=args.seed,
            )
            result = await apps.optimize_prompt(task, engine, config=run)
            stats = engine.stats()
        bill = sim.bill()[api]
    cost = engine.usage.cost_nano or 0
    return {
        "status": result.status,
        "calls": stats["calls"],
        "prompt_tokens": stats["prompt_tokens"],
        "cached_tokens": stats["cached_tokens"],
        "cache_write_tokens": stats["cache_write_tokens"],
        "cached_share": round(stats["cached_tokens"] / max(1, stats["prompt_tokens"]), 4),
        "cost_usd": round(cost / 1e9, 6),
        "bill_usd": round(bill["nano_dollars"] / 1e9, 6),
        "cost_vs_bill_pct": round(100 * (cost - bill["nano_dollars"]) / bill["nano_dollars"], 3),
        "final_test_accuracy": result.history[-1].get("test_accuracy"),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench caching", description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--train", type=int, default=15)
    parser.add_argument("--val", type=int, default=10)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--examples", type=int, default=40, help="worked examples in the few-shot prompt"
    )
    parser.add_argument("--quick", action="store_true", help="2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 2
    apis = ["openai", *(["anthropic"] if _has_anthropic() else [])]
    rows: list[dict[str, Any]] = []
    for api in apis:
        for prompt in PROMPTS:
            for name, sim_cache, engine_cache in VARIANTS:
                row = asyncio.run(one_run(api, prompt, sim_cache, engine_cache, args))
                rows.append({"api": api, "prompt": prompt, "variant": name, **row})
            base = rows[-len(VARIANTS)]["bill_usd"]
            for row in rows[-len(VARIANTS) :]:
                row["saved_pct"] = round(100 * (1 - row["bill_usd"] / base), 2) if base else None
    columns = [
        "api",
        "prompt",
        "variant",
        "calls",
        "prompt_tokens",
        "cached_share",
        "cost_usd",
        "bill_usd",
        "cost_vs_bill_pct",
        "saved_pct",
    ]
    print(table(rows, columns))
    if "anthropic" not in apis:
        print("anthropic: not run (needs provider='anthropic', the native adapter)")
    settings = {k: v for k, v in vars(args).items()}
    settings["anthropic"] = "run" if "anthropic" in apis else "not run: no adapter"
    path = write_result("caching", settings, rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
