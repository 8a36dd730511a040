"""Jobs on one shared engine, as a service runs them: fairness and the cost of a job.

    python -m bench services [--quick] [--small-jobs 50] [--small-calls 4] [--big-calls 1000]
                             [--slots 16] [--latency 100ms] [--rounds N] [--cpu-calls N]

One engine (``max_concurrency`` = ``--slots``) against the simulator in its own process, every
call over loopback HTTP:

- **small jobs**: ``--small-jobs`` jobs started together, each sending ``--small-calls`` calls
  at once (default 50 jobs x 4 calls); a job's latency is from entering it to leaving it.
  Measured alone, then with the big job running (started when the big job has been backlogged
  for one slot turnover, i.e. once ``--slots`` of its calls have finished).
- **big job**: ``--big-calls`` calls sent at once (default 1,000). Its time is compared with
  its fair-share bound: on a work-conserving engine the big job, which is the last to finish,
  ends when all the work is done, so the bound is ``ceil((big + small calls) / slots)`` slot
  turnovers of ``--latency`` each (1,200 calls / 16 slots x 100 ms = 7.5 s by default).
- **CPU per call**: ``--cpu-calls`` calls with 64 in flight against a zero-latency simulator,
  made on the engine directly and through a job; ``process_time`` of this process (the
  simulator runs in another) per call, the minimum over ``--rounds`` alternating rounds.

Targets (issue 22): small-job median with the big job running within 1.3x of alone; the big
job within 1.1x of its fair-share bound; a job-wrapped call within 5% of a plain one's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from typing import Any

import asynctg as tg
from asynctg.sim.config import parse_duration
from bench.common import simulator, table, write_result

TARGETS = {"small_ratio": 1.3, "big_ratio": 1.1, "cpu_ratio": 1.05}


async def _small_job(engine: tg.ChatEngine, index: int, calls: int, run: str) -> float:
    started = time.perf_counter()
    async with engine.job(f"small-{index}") as job:
        # Distinct prompts: identical ones in flight together would be sent once (coalesced).
        await asyncio.gather(*(job.generate(f"{run} small {index} call {i}") for i in range(calls)))
    return time.perf_counter() - started


async def _smalls(engine: tg.ChatEngine, args: argparse.Namespace, run: str) -> list[float]:
    return list(
        await asyncio.gather(
            *(_small_job(engine, i, args.small_calls, run) for i in range(args.small_jobs))
        )
    )


async def _fairness(url: str, args: argparse.Namespace, round_: int) -> dict[str, Any]:
    """Small jobs alone, then small jobs beside the big job, then the big job alone."""
    async with tg.get_engine("sim-1", base_url=url, api_key="k", max_concurrency=args.slots) as e:
        alone = await _smalls(e, args, f"r{round_} alone")

        done = 0
        backlogged = asyncio.Event()

        async def big_call(job: tg.Job, i: int) -> None:
            nonlocal done
            await job.generate(f"r{round_} big call {i}")
            done += 1
            if done == args.slots:  # one slot turnover: the big job is backlogged and flowing
                backlogged.set()

        async def big() -> float:
            started = time.perf_counter()
            async with e.job("big") as job:
                await asyncio.gather(*(big_call(job, i) for i in range(args.big_calls)))
            return time.perf_counter() - started

        big_task = asyncio.create_task(big())
        await backlogged.wait()
        beside = await _smalls(e, args, f"r{round_} beside")
        big_time = await big_task

        started = time.perf_counter()
        async with e.job("big-alone") as job:
            await asyncio.gather(
                *(job.generate(f"r{round_} big alone {i}") for i in range(args.big_calls))
            )
        big_alone = time.perf_counter() - started
    latency = parse_duration(args.latency)
    total = args.big_calls + args.small_jobs * args.small_calls
    bound = math.ceil(total / args.slots) * latency
    return {
        "small_median_alone_s": round(statistics.median(alone), 3),
        "small_median_beside_s": round(statistics.median(beside), 3),
        "small_ratio": round(statistics.median(beside) / statistics.median(alone), 3),
        "big_s": round(big_time, 3),
        "big_alone_s": round(big_alone, 3),
        "big_bound_s": round(bound, 3),
        "big_ratio": round(big_time / bound, 3),
    }


async def _cpu_per_call(url: str, calls: int, wrapped: bool, tag: str) -> float:
    async with tg.get_engine("sim-1", base_url=url, api_key="k", max_concurrency=64) as engine:
        await asyncio.gather(*(engine.generate(f"{tag} warm {i}") for i in range(100)))
        started = time.process_time()
        if wrapped:
            async with engine.job("cpu") as job:
                await asyncio.gather(*(job.generate(f"{tag} {i}") for i in range(calls)))
        else:
            await asyncio.gather(*(engine.generate(f"{tag} {i}") for i in range(calls)))
        return (time.process_time() - started) / calls


def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with simulator("--latency", args.latency) as url:
        for r in range(args.fair_rounds):
            rounds.append(tg.run(_fairness(url, args, r)))
    plain: list[float] = []
    job: list[float] = []
    with simulator("--latency", "0") as url:
        for r in range(args.rounds):
            # Alternate which goes first: a drifting machine load then hits both alike.
            for wrapped in (r % 2 == 0, r % 2 == 1):
                per_call = tg.run(_cpu_per_call(url, args.cpu_calls, wrapped, f"cpu {r}"))
                (job if wrapped else plain).append(per_call)
    fair = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    return {
        "fairness_rounds": rounds,
        "fairness": fair,
        "cpu_plain_us": round(min(plain) * 1e6, 1),
        "cpu_job_us": round(min(job) * 1e6, 1),
        "cpu_ratio": round(min(job) / min(plain), 3),
        "cpu_plain_all_us": [round(x * 1e6, 1) for x in plain],
        "cpu_job_all_us": [round(x * 1e6, 1) for x in job],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench services")
    parser.add_argument("--quick", action="store_true", help="1 fairness round, 3 CPU rounds")
    parser.add_argument("--small-jobs", type=int, default=50)
    parser.add_argument("--small-calls", type=int, default=4)
    parser.add_argument("--big-calls", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--latency", default="100ms")
    parser.add_argument("--fair-rounds", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--rounds", type=int, default=None, help="CPU rounds; default 6 (quick 4)")
    parser.add_argument("--cpu-calls", type=int, default=None, help="default 3000 (quick 1000)")
    args = parser.parse_args(argv)
    if args.fair_rounds is None:
        args.fair_rounds = 1 if args.quick else 3
    if args.rounds is None:
        args.rounds = 4 if args.quick else 6
    if args.cpu_calls is None:
        args.cpu_calls = 1000 if args.quick else 3000
    results = run(args)
    fair = results["fairness"]
    rows = [
        {
            "metric": "small-job median latency, beside the big job / alone",
            "value": f"{fair['small_median_beside_s']:.3f} s / "
            f"{fair['small_median_alone_s']:.3f} s",
            "ratio": fair["small_ratio"],
            "target": f"<= {TARGETS['small_ratio']}",
        },
        {
            "metric": "big job's time / its fair-share bound",
            "value": f"{fair['big_s']:.2f} s / {fair['big_bound_s']:.2f} s "
            f"(alone {fair['big_alone_s']:.2f} s)",
            "ratio": fair["big_ratio"],
            "target": f"<= {TARGETS['big_ratio']}",
        },
        {
            "metric": "CPU per call, job-wrapped / plain (min over rounds)",
            "value": f"{results['cpu_job_us']} us / {results['cpu_plain_us']} us",
            "ratio": results["cpu_ratio"],
            "target": f"<= {TARGETS['cpu_ratio']}",
        },
    ]
    print(table(rows, ["metric", "value", "ratio", "target"]))
    settings = dict(vars(args))
    print(f"wrote {write_result('services', settings, results)}")
