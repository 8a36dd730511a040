"""A process of the shared-budget tests: N calls through an engine on a shared Redis budget.

    python tests/shared_worker.py URL REDIS_URL N [--rpm R] [--max-cost USD] [--ttl S] [--tag T]

Prints one JSON line: calls that succeeded, failed (by error type), the engine's stats and the
wall-clock start and end of its calls. Not a test module (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import asynctg as tg


async def main(args: argparse.Namespace) -> None:
    options = {}
    if args.max_cost is not None:
        options = {"max_cost": args.max_cost, "price": (1.0, 2.0), "max_tokens": 64}
    engine = tg.get_engine(
        "sim-1",
        base_url=args.url,
        api_key="sk-test",
        rpm=args.rpm,
        redis_url=None if args.redis == "none" else args.redis,
        redis_namespace=args.namespace,
        reservation_ttl=args.ttl,
        max_concurrency=64,
        **options,
    )
    errors: Counter[str] = Counter()
    ok = 0
    start = time.time()
    print("started", flush=True)

    async def one(i: int) -> None:
        nonlocal ok
        try:
            await engine.generate(f"{args.tag} question {i}: what is {i} + {i}?")
            ok += 1
        except tg.AsyncTGError as exc:
            errors[type(exc).__name__] += 1

    await asyncio.gather(*(one(i) for i in range(args.n)))
    end = time.time()
    stats = engine.stats()
    redis_errors = engine.redis_budget.redis_errors if engine.redis_budget is not None else 0
    await engine.aclose()
    print(
        json.dumps(
            {
                "ok": ok,
                "errors": dict(errors),
                "start": start,
                "end": end,
                "stats": stats,
                "redis_errors": redis_errors,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("redis")
    parser.add_argument("n", type=int)
    parser.add_argument("--rpm", type=float, default=None)
    parser.add_argument("--max-cost", type=float, default=None)
    parser.add_argument("--ttl", type=float, default=None)
    parser.add_argument("--tag", default="w")
    parser.add_argument("--namespace", default="asynctg-test")
    asyncio.run(main(parser.parse_args(sys.argv[1:])))
