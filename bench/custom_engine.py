"""Custom engines: one B=8 prompt-optimization step with an engine of 0.2 s per call.

    python -m bench custom_engine [--batch 8] [--seconds 0.2]

Three runs, each in a fresh process: TextGrad 0.1.8 with a TextGrad-style engine (a class
deriving from ``EngineLM`` whose blocking ``generate`` sleeps 0.2 s); the same script and the
same engine class under ``asynctg.compat``; and the native API with an engine whose ``async
generate`` sleeps 0.2 s. The script is TextGrad's pattern: B forward calls one at a time in a
loop, an LLM-judge loss per sample, ``tg.sum``, ``backward``, one optimizer step. The critical
path is 5 calls deep (forward, judge, two feedback levels, optimizer): 1.0 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench.common import ROOT, run_child, table, write_result

SCRIPT = r"""
import json, sys, time, asyncio
MODULE, B, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def reply(prompt):
    if "<IMPROVED_VARIABLE>" in str(prompt):
        return "<IMPROVED_VARIABLE>Count each item, then add.</IMPROVED_VARIABLE>"
    return "The answer is 4."

if MODULE == "native":
    import asynctg as tg

    class AsyncSleepy:
        model = "sleepy"
        async def generate(self, prompt, system_prompt=None, **kwargs):
            await asyncio.sleep(SECONDS)
            return reply(prompt)

    async def main():
        engine = tg.engine.as_engine(AsyncSleepy(), max_concurrency=64)
        system = tg.Variable("Answer.", requires_grad=True, role_description="system prompt")
        model = tg.BlackboxLLM(engine, system)
        judge = tg.TextLoss("Judge the answer.", engine=engine)
        async def sample(i):
            x = tg.Variable(f"question {i}", requires_grad=False, role_description="query")
            return await judge(await model(x))
        t0 = time.perf_counter()
        losses = await asyncio.gather(*(sample(i) for i in range(B)))
        await tg.sum(list(losses)).backward(engine)
        await tg.TGD(engine=engine, parameters=[system]).step()
        return time.perf_counter() - t0, system.value
    seconds, value = tg.run(main())
else:
    if MODULE == "textgrad":
        import textgrad as tg
        from textgrad.engine.base import EngineLM
    else:
        import asynctg.compat as tg
        from asynctg.compat.engine.base import EngineLM

    class Sleepy(EngineLM):
        model_string = "sleepy"
        def generate(self, prompt, system_prompt=None, **kwargs):
            time.sleep(SECONDS)
            return reply(prompt)
        def __call__(self, prompt, **kwargs):
            return self.generate(prompt, **kwargs)

    engine = Sleepy()
    tg.set_backward_engine(engine, override=True)
    system = tg.Variable("Answer.", requires_grad=True, role_description="system prompt")
    model = tg.BlackboxLLM(engine, system)
    judge = tg.TextLoss("Judge the answer.", engine=engine)
    optimizer = tg.TGD(parameters=[system])
    t0 = time.perf_counter()
    losses = []
    for i in range(B):
        x = tg.Variable(f"question {i}", requires_grad=False, role_description="query")
        losses.append(judge(model(x)))
    tg.sum(losses).backward()
    optimizer.step()
    seconds, value = time.perf_counter() - t0, system.value
print(json.dumps({"seconds": seconds, "value": str(value)}))
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench custom_engine")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TEXTGRAD_LOG_DIR": "/tmp/bench-custom-engine-logs",
    }
    bound = 5 * args.seconds
    rows = []
    for module in ("textgrad", "asynctg.compat", "native"):
        child = run_child(
            [sys.executable, "-c", SCRIPT, module, str(args.batch), str(args.seconds)], env=env
        )
        if child.returncode != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            rows.append({"run": module, "step_s": None})
            continue
        out = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "run": module,
                "step_s": round(out["seconds"], 2),
                "x_bound": round(out["seconds"] / bound, 2),
                "new_prompt": out["value"][:40],
            }
        )
    print(table(rows, ["run", "step_s", "x_bound", "new_prompt"]))
    print(f"bound: 5 calls deep x {args.seconds} s = {bound:.1f} s; B={args.batch}")
    results = {"rows": rows, "bound_s": bound, "batch": args.batch, "seconds": args.seconds}
    write_result("custom_engine", vars(args), results)
    return results
