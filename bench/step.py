"""Step latency: the paper's prompt-optimization step, asynctg against TextGrad 0.1.8.

    python -m bench step [--batch-sizes 32] [--latency 100ms] [--loss string|judge]
                         [--textgrad-max-batch 64]

One step = B forward calls, the backward pass (2B calls with the string loss, 3B with an LLM
judge as the loss) and one optimizer call: 3B+1 or 4B+1 calls. Its critical path is 4 calls
deep with the string loss (forward, two backward levels, optimizer) and 5 with the judge, so at
a fixed latency L the bound is depth x L. TextGrad makes the calls one after another; asynctg
runs each as soon as its inputs are ready.

TextGrad runs exactly as published from PyPI, in a subprocess pointed at the same simulator
(OPENAI_BASE_URL), with fresh log and cache folders. Batch sizes above --textgrad-max-batch are
not run with TextGrad (nothing is extrapolated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import sim_reset, sim_stats, simulator, table, write_result
from bench.questions import SYSTEM_PROMPT, parse_integer_answer, questions

ROOT = Path(__file__).resolve().parents[1]


async def native_step(base_url: str, batch: int, loss: str) -> dict[str, Any]:
    """One step with asynctg's native API; the engine is told no budget (none binds here)."""
    import asynctg as tg

    async with tg.get_engine("gpt-4o", base_url=base_url, api_key="sk-bench") as engine:
        tg.set_backward_engine(engine, override=True)
        role = "system prompt to the language model"
        system_prompt = tg.Variable(SYSTEM_PROMPT, requires_grad=True, role_description=role)
        model = tg.BlackboxLLM(engine, system_prompt)
        optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])

        def exact(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> int:
            return int(
                parse_integer_answer(str(prediction.value))
                == parse_integer_answer(str(ground_truth_answer.value))
            )

        string_loss = tg.autograd.StringBasedFunction(exact, function_purpose="checks the answer")
        judge = tg.TextLoss(
            "Evaluate whether the reasoning and final answer are correct; be critical and concise.",
            engine=engine,
        )

        async def sample(q: str, a: str) -> tg.Variable:
            x = tg.Variable(q, requires_grad=False, role_description="query to the language model")
            y = tg.Variable(a, requires_grad=False, role_description="correct answer for the query")
            response = await model(x)
            if loss == "string":
                return await string_loss(inputs=dict(prediction=response, ground_truth_answer=y))
            return await judge(response)

        t0 = time.perf_counter()
        losses = await asyncio.gather(*(sample(q, a) for q, a in questions(batch)))
        total = tg.sum(list(losses))
        t1 = time.perf_counter()
        await total.backward()
        t2 = time.perf_counter()
        await optimizer.step()
        t3 = time.perf_counter()
        return {
            "forward_s": t1 - t0,
            "backward_s": t2 - t1,
            "optimizer_s": t3 - t2,
            "step_s": t3 - t0,
            "calls": engine.stats()["requests"],
        }


def textgrad_step(base_url: str, batch: int, loss: str) -> dict[str, Any] | None:
    """One step with TextGrad 0.1.8 in a subprocess; None if textgrad is not installed."""
    check = "import importlib.util as u; print(u.find_spec('textgrad') is not None)"
    probe = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != "True":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "sk-bench",
            "TEXTGRAD_LOG_DIR": str(Path(tmp) / "logs"),
            "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "textgrad_step.py"),
                *("--batch-size", str(batch), "--loss", loss),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=3600,
        )
    if out.returncode != 0:
        raise RuntimeError(f"textgrad step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(batch_sizes: list[int], latency: str, loss: str, tg_max: int) -> dict[str, Any]:
    from asynctg.sim import parse_latency

    lat = float(parse_latency(latency).mean())
    depth = 4 if loss == "string" else 5
    bound = depth * lat
    rows = []
    with simulator("--latency", latency) as url:
        for b in batch_sizes:
            import asynctg as tg

            sim_reset(url)
            native = tg.run(native_step(url, b, loss))
            native_requests = sim_stats(url)["requests"]
            textgrad = None
            tg_requests = None
            if b <= tg_max:
                sim_reset(url)
                textgrad = textgrad_step(url, b, loss)
                tg_requests = sim_stats(url)["requests"] if textgrad else None
            row: dict[str, Any] = {
                "loss": loss,
                "B": b,
                "calls": native_requests,
                "bound_s": round(bound, 3),
                "asynctg_s": round(native["step_s"], 3),
                "x_bound": round(native["step_s"] / bound, 2),
                "textgrad_s": round(textgrad["step_s"], 2) if textgrad else None,
                "textgrad_calls": tg_requests,
                "speedup": round(textgrad["step_s"] / native["step_s"], 1) if textgrad else None,
                "native": native,
                "textgrad": textgrad,
            }
            rows.append(row)
    return {"rows": rows, "latency_s": lat, "depth": depth}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench step")
    parser.add_argument("--batch-sizes", default="32", help="comma list, e.g. 1,4,16,64,256")
    parser.add_argument("--latency", default="100ms")
    parser.add_argument("--loss", choices=["string", "judge"], default="string")
    parser.add_argument("--textgrad-max-batch", type=int, default=64)
    parser.add_argument("--name", default=None, help="result file name (default step_<loss>)")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    out = run(sizes, args.latency, args.loss, args.textgrad_max_batch)
    print(
        f"Step latency: the prompt-optimization step ({args.loss} loss), simulated latency "
        f"{args.latency}, bound = {out['depth']} x latency"
    )
    cols = ["B", "calls", "bound_s", "asynctg_s", "x_bound"]
    cols += ["textgrad_s", "textgrad_calls", "speedup"]
    print(table(out["rows"], cols))
    path = write_result(args.name or f"step_{args.loss}", vars(args), out)
    print(f"wrote {path}")
    return out
