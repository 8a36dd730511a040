"""Molecule optimization with real docking (RDKit + meeko + AutoDock Vina), LLM calls running
while other molecules dock. Needs: pip install 'asynctg[molecule]'.

python examples/molecule_optimization.py                  # the simulator in-process
OPENAI_BASE_URL=... python examples/molecule_optimization.py --model gpt-4o --exhaustiveness 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

import asynctg as tg
from asynctg.science import docking
from asynctg.science.design import DesignConfig, make_pool
from asynctg.science.molecule import optimize_molecules
from asynctg.sim import SimConfig, SimServer


async def main(model: str, exhaustiveness: int, iterations: int) -> None:
    setup = docking.DockingSetup.default(exhaustiveness=exhaustiveness)
    async with contextlib.AsyncExitStack() as stack:
        base_url = os.environ.get("OPENAI_BASE_URL")
        if base_url is None:  # no endpoint configured: the built-in simulator
            sim = await stack.enter_async_context(SimServer(SimConfig(latency="50ms")))
            base_url, model = sim.base_url, "sim-1"
        engine = await stack.enter_async_context(tg.get_engine(model, base_url=base_url))
        pool = await stack.enter_async_context(make_pool(docking.init_worker, (setup,)))
        result = await optimize_molecules(
            ["Oc1ccccc1", "CC(=O)Nc1ccccc1"],
            engine,
            pool=pool,
            setup=setup,
            config=DesignConfig(iterations=iterations),
        )
    for design in result.candidates:
        for row in design["trajectory"]:
            vina = "not docked" if row["vina"] is None else f"Vina {row['vina']:.2f}"
            print(
                f"design {design['index'] + 1} iteration {row['iteration']}: {row['smiles']} {vina}"
            )
    stats = result.evaluations
    print(f"dockings: {stats['evaluations']} ({stats['cpu_seconds']:.1f} s CPU in the workers)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.environ.get("ASYNCTG_MODEL", "gpt-4o-mini"))
    parser.add_argument("--exhaustiveness", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.model, args.exhaustiveness, args.iterations))
