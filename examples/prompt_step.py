"""One step of prompt optimization on the built-in simulator (no API key needed).

python examples/prompt_step.py            # simulator in-process
OPENAI_BASE_URL=... python examples/prompt_step.py --model gpt-4o-mini   # a real endpoint
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

import asynctg as tg
from asynctg.sim import SimConfig, SimServer

QUESTIONS = [
    ("I have a flute, a piano, and two violins. How many musical instruments do I have?", "4"),
    ("I have three trumpets and a drum. How many musical instruments do I have?", "4"),
    ("I have a cello, two clarinets, and a trombone. How many musical instruments do I have?", "4"),
    ("I have two accordions and five flutes. How many musical instruments do I have?", "7"),
]


def exact_match(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> int:
    """1 if the last number in the prediction is the ground truth, else 0."""
    numbers = [t for t in str(prediction.value).split() if t.strip(".").isdigit()]
    return int(bool(numbers) and numbers[-1].strip(".") == ground_truth_answer.value)


async def step(base_url: str | None, model_name: str) -> None:
    async with tg.get_engine(model_name, base_url=base_url) as engine:
        tg.set_backward_engine(engine, override=True)
        system_prompt = tg.Variable(
            "Answer the question. End with 'Answer: N'.",
            requires_grad=True,
            role_description="system prompt to a model that answers counting questions",
        )
        model = tg.BlackboxLLM(engine, system_prompt)
        check = tg.autograd.StringBasedFunction(exact_match, function_purpose="checks the answer")
        optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])

        async def loss_for(question: str, answer: str) -> tg.Variable:
            x = tg.Variable(question, requires_grad=False, role_description="query to the model")
            y = tg.Variable(answer, requires_grad=False, role_description="correct answer")
            response = await model(x)  # every sample runs concurrently
            return await check(inputs=dict(prediction=response, ground_truth_answer=y))

        losses = await asyncio.gather(*(loss_for(q, a) for q, a in QUESTIONS))
        total = tg.sum(list(losses))
        await total.backward()  # 2B feedback calls, two levels deep, all concurrent
        await optimizer.step()  # one optimizer call; the prompt changes or nothing does
        optimizer.zero_grad()
        print("new system prompt:", system_prompt.value)
        print("calls:", engine.stats()["calls"])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sim-1")
    args = parser.parse_args()
    base_url = os.environ.get("OPENAI_BASE_URL")
    async with contextlib.AsyncExitStack() as stack:
        if base_url is None:
            sim = await stack.enter_async_context(SimServer(SimConfig(latency="50ms")))
            base_url = sim.base_url
        await step(base_url, args.model)


if __name__ == "__main__":
    tg.run(main())
