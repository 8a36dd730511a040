"""Prompt optimization as in the TextGrad paper, from Python, with a checkpoint and a report.

python examples/prompt_optimization.py                 # the built-in simulator, in-process
OPENAI_BASE_URL=... python examples/prompt_optimization.py --model gpt-4o-mini

Run it twice with the same --out folder: the second run resumes (here: finds the run done) and
answers every call from the checkpoint's journal.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import asynctg as tg
from asynctg import apps, tasks
from asynctg.sim import SimConfig, SimServer


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sim-1")
    parser.add_argument("--out", default="runs/prompt-optimization")
    args = parser.parse_args()
    base_url = os.environ.get("OPENAI_BASE_URL")
    async with contextlib.AsyncExitStack() as stack:
        if base_url is None:
            sim = await stack.enter_async_context(SimServer(SimConfig(latency="20ms")))
            base_url = sim.base_url
        engine = await stack.enter_async_context(tg.get_engine(args.model, base_url=base_url))
        task = tasks.get_task("object_counting", train_size=12, val_size=8, test_size=16)
        assert isinstance(task, tasks.PromptTask)
        config = apps.PromptConfig(batch_size=4, epochs=1, steps_per_epoch=3, validate=True)
        fingerprint = {"task": task.name, "data": task.source, "model": args.model}
        folder = f"{args.out}/checkpoint"
        checkpoint = apps.Checkpoint(folder, fingerprint, resume=apps.Checkpoint.exists(folder))
        checkpoint.open()
        stack.callback(checkpoint.close)
        result = await apps.optimize_prompt(
            task,
            engine,
            config=config,
            checkpoint=checkpoint,
            on_event=apps.Progress(apps.Meter([engine]).session),
        )
        _, page = apps.write_report(
            f"{args.out}/report", "optimize", result.to_json(), {"task": task.name}
        )
        print("test accuracy per step:", [row["test_accuracy"] for row in result.history])
        print("final prompt:", result.final_prompt)
        print("provider calls:", result.usage["provider_calls"], "| report:", page)


if __name__ == "__main__":
    tg.run(main())
