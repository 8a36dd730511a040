"""One prompt-optimization step with asynctg's native API, as a measured child process.

    python -m bench.native_step --base-url URL --batch-size 32 [--loss string|judge]
                                [--max-concurrency 64]

The same step as ``bench/compat_script.py`` (same questions, system prompt, role descriptions
and loss) written against ``import asynctg as tg``: B forward calls gathered at once, then
``backward()`` and one optimizer step. Prints one JSON line: phase timings, the engine's
request count, CPU time of the step, the resident set size before it and the process's peak
resident set size; each batch size runs in a fresh process, so runs never share memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.common import current_rss_kib, peak_rss_kib
from bench.compat_script import (
    JUDGE_INSTRUCTION,
    LOSS_PURPOSE,
    STARTING_SYSTEM_PROMPT,
    SYSTEM_PROMPT_ROLE,
    string_based_equality_fn,
)
from bench.questions import questions


async def step(
    base_url: str,
    batch: int,
    loss: str,
    max_concurrency: int,
    aggregation: str = "auto",
    context_window: int | None = None,
) -> dict[str, Any]:
    """Run one step; return its timings and counters (and the optimizer's aggregation)."""
    import asynctg as tg

    options = {} if context_window is None else {"context_window": context_window}
    async with tg.get_engine(
        "gpt-4o",
        base_url=base_url,
        api_key="sk-bench",
        max_concurrency=max_concurrency,
        **options,
    ) as engine:
        tg.set_backward_engine(engine, override=True)
        system_prompt = tg.Variable(
            STARTING_SYSTEM_PROMPT, requires_grad=True, role_description=SYSTEM_PROMPT_ROLE
        )
        model = tg.BlackboxLLM(engine, system_prompt)
        optimizer = tg.TextualGradientDescent(
            engine=engine,
            parameters=[system_prompt],
            aggregation=aggregation,  # type: ignore[arg-type]
        )
        check = tg.autograd.StringBasedFunction(
            string_based_equality_fn, function_purpose=LOSS_PURPOSE
        )
        judge = tg.TextLoss(JUDGE_INSTRUCTION, engine=engine)

        async def sample(q: str, a: str) -> tg.Variable:
            x = tg.Variable(q, requires_grad=False, role_description="query to the language model")
            y = tg.Variable(
                a, requires_grad=False, role_description="the correct answer to the query"
            )
            response = await model(x)
            if loss == "judge":
                return await judge(response)
            return await check(inputs=dict(prediction=response, ground_truth_answer=y))

        items = questions(batch)
        rss_before = current_rss_kib()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        losses = await asyncio.gather(*(sample(q, a) for q, a in items))
        total = tg.sum(list(losses))
        t1 = time.perf_counter()
        await total.backward()
        t2 = time.perf_counter()
        report: dict[str, Any] = {}
        try:
            (done,) = await optimizer.step()
            report = done.to_json()
        except tg.ContextBudgetError as exc:  # concat past the window: measured, not sent
            report = {
                "strategy": aggregation,
                "error": "context_budget",
                "prompt_tokens": exc.tokens,
            }
        t3 = time.perf_counter()
        cpu = time.process_time() - cpu0
        requests = engine.stats()["requests"]
    return {
        "aggregation": report,
        "forward_s": t1 - t0,
        "backward_s": t2 - t1,
        "optimizer_s": t3 - t2,
        "step_s": t3 - t0,
        "requests": requests,
        "step_cpu_s": cpu,
        "rss_before_kib": rss_before,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.native_step")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--loss", choices=["string", "judge"], default="string")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--aggregation", choices=["auto", "concat", "tree"], default="auto")
    parser.add_argument("--context-window", type=int, default=None)
    args = parser.parse_args(argv)
    import asynctg as tg

    out = tg.run(
        step(
            args.base_url,
            args.batch_size,
            args.loss,
            args.max_concurrency,
            args.aggregation,
            args.context_window,
        )
    )
    print(json.dumps({**out, "peak_rss_kib": peak_rss_kib()}), flush=True)


if __name__ == "__main__":
    main()
