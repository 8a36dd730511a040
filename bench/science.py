"""Do LLM calls hide under CPU-heavy evaluations? The science loops' wall time against
(total evaluation CPU / workers) + the LLM critical path.

    python -m bench science [--molecules 8] [--starts 4] [--iterations 3] [--latency 300ms]
                            [--workers 2] [--only molecule|radiotherapy]

Each loop runs against a simulator (fixed latency per call) with the real evaluators in a
``ProcessPool``: molecules docked by Vina at exhaustiveness 1, plans optimised by pyRadPlan on
the TG-119 phantom. The workers are started and initialised (receptor maps, dose matrix) before
the clock starts, so the numbers are the loop's. Per design, each iteration is 4 LLM calls in a
chain (loss, two backward, optimizer) after its evaluation; the LLM critical path is one
design's chain: iterations x 4 x latency. A sequential run (the reference library's way)
would take the sum of every evaluation and every call.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import anyio

from bench.common import table, write_result

#: Distinct small starting fragments (phenol, acetanilide, naphthalene, ...).
FRAGMENTS = (
    "Oc1ccccc1",
    "CC(=O)Nc1ccccc1",
    "c1ccc2ccccc2c1",
    "OC(=O)c1ccncc1",
    "Nc1ccccc1",
    "c1ccc2[nH]ccc2c1",
    "OC(=O)c1ccccc1",
    "Cc1ccccc1O",
    "c1ccncc1",
    "O=C1CCCN1",
    "c1ccoc1",
    "CC(=O)c1ccccc1",
)


def _seconds(text: str) -> float:
    """A fixed latency spec ("300ms", "0.3") in seconds."""
    from random import Random

    from asynctg.sim.config import parse_latency

    model = parse_latency(text)
    draws = {model.draw(Random(seed)) for seed in range(3)}
    if len(draws) != 1:
        raise SystemExit("--latency must be fixed (e.g. 300ms) for the critical path to be known")
    return draws.pop()


async def _one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    import asynctg as tg
    from asynctg.science.design import DesignConfig, make_pool
    from asynctg.sim import SimConfig, SimServer

    if kind == "molecule":
        from asynctg.science import docking
        from asynctg.science.molecule import optimize_molecules as optimize

        setup: Any = docking.DockingSetup.default(exhaustiveness=1)
        starts = list(FRAGMENTS[: args.molecules])
        init, warm_fn, warm_arg = docking.init_worker, docking.evaluate, "CCO"
    else:
        import tempfile

        from asynctg.science import dosimetry
        from asynctg.science.radiotherapy import optimize_plans as optimize
        from asynctg.science.radiotherapy import starting_sets

        setup = dosimetry.PlanSetup(cache_dir=tempfile.mkdtemp(prefix="bench-dose-"))
        starts = starting_sets(args.starts, setup)
        init, warm_fn = dosimetry.init_worker, dosimetry.evaluate
        warm_arg = json.dumps(dosimetry.default_objectives(setup))
    latency = _seconds(args.latency)
    config = DesignConfig(iterations=args.iterations)
    async with SimServer(SimConfig(latency=args.latency)) as sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k", max_concurrency=256)
        async with engine, make_pool(init, (setup,), workers=args.workers) as pool:
            # start and initialise every worker before the clock (maps, dose matrix)
            async with anyio.create_task_group() as group:
                for _ in range(args.workers):
                    group.start_soon(_warm, pool, warm_fn, warm_arg, setup)
            warm_cpu = pool.cpu_seconds
            warm_evals = pool.evaluations
            started = time.perf_counter()
            result = await optimize(starts, engine, pool=pool, setup=setup, config=config)
            wall = time.perf_counter() - started
        stats = result.evaluations
    cpu = stats["cpu_seconds"] - warm_cpu
    evaluations = stats["evaluations"] - warm_evals
    calls = result.usage["provider_calls"]
    critical = args.iterations * 4 * latency
    bound = cpu / args.workers + critical
    return {
        "loop": kind,
        "designs": len(starts),
        "iterations": args.iterations,
        "workers": args.workers,
        "evaluations": evaluations,
        "evaluation_cpu_s": round(cpu, 2),
        "llm_calls": calls,
        "llm_critical_path_s": round(critical, 2),
        "bound_s": round(bound, 2),
        "wall_s": round(wall, 2),
        "wall_vs_bound": round(wall / bound, 3),
        "sequential_s": round(cpu + calls * latency, 2),
        "failed": result.failed,
    }


async def _warm(pool: Any, fn: Any, arg: Any, setup: Any) -> None:
    await pool.run(fn, arg, setup, cache=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench science")
    parser.add_argument("--quick", action="store_true", help="the default sizes (8 and 4)")
    parser.add_argument("--molecules", type=int, default=8)
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--latency", default="300ms", help="simulated latency per LLM call")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=("molecule", "radiotherapy"))
    args = parser.parse_args(argv)
    kinds = [args.only] if args.only else ["molecule", "radiotherapy"]
    rows = [anyio.run(_one, kind, args) for kind in kinds]
    print(
        table(
            rows,
            [
                "loop",
                "designs",
                "evaluations",
                "evaluation_cpu_s",
                "llm_calls",
                "llm_critical_path_s",
                "bound_s",
                "wall_s",
                "wall_vs_bound",
                "sequential_s",
            ],
        )
    )
    results = {"rows": rows}
    write_result("science", vars(args), results)
    return results
