"""A fixed minibatch step whose optimizer request is pinned byte for byte.

``tests/data/golden_optimizer_request.json`` was written by the code as it stood before the
aggregation stage existed (``python tests/golden_step.py --write``); under the context budget
the "concat" and "auto" strategies must still send exactly that request.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

import asynctg as tg
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

GOLDEN = Path(__file__).parent / "data" / "golden_optimizer_request.json"


def _reply(text: str) -> HTTPResponse:
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }
    return HTTPResponse(200, {}, msgspec.json.encode(body))


def _handler(request: HTTPRequest) -> HTTPResponse:
    body = json.loads(request.body)
    text = json.dumps(body["messages"])
    if "<IMPROVED_VARIABLE>" in text:
        return _reply("<IMPROVED_VARIABLE>Count every item, then answer.</IMPROVED_VARIABLE>")
    if "<OBJECTIVE_FUNCTION>" in text:
        n = sum(map(ord, text)) % 97
        return _reply(f"Feedback {n}: state the count explicitly and check the units.")
    question = body["messages"][-1]["content"]
    return _reply(f"The answer to '{question[:30]}' is {len(question) % 7}.")


async def optimizer_request(context_window: int | None = None, **tgd: Any) -> dict[str, Any]:
    """Run one B=4 step on a scripted provider; return the optimizer request's body."""
    transport = MockTransport(_handler)
    options = {} if context_window is None else {"context_window": context_window}
    engine = tg.get_engine(
        "m", base_url="http://127.0.0.1:9/v1", api_key="k", transport=transport, **options
    )
    prompt = tg.Variable(
        "You answer counting questions.",
        requires_grad=True,
        role_description="system prompt to the language model",
    )
    model = tg.BlackboxLLM(engine, prompt)
    check = tg.autograd.StringBasedFunction(
        lambda prediction, ground_truth_answer: tg.Variable(
            str(int(str(ground_truth_answer.value) in str(prediction.value))),
            requires_grad=False,
            role_description="evaluation",
        ),
        function_purpose="checks whether the prediction contains the right number",
    )
    losses = []
    for i in range(4):
        x = tg.Variable(
            f"I have {i + 2} apples and {i} pears. How many fruits?",
            requires_grad=False,
            role_description="query to the language model",
        )
        y = tg.Variable(str(2 * i + 2), requires_grad=False, role_description="correct answer")
        response = await model(x)
        losses.append(await check(inputs=dict(prediction=response, ground_truth_answer=y)))
    await tg.sum(losses).backward(engine)
    optimizer = tg.TextualGradientDescent(engine=engine, parameters=[prompt], **tgd)
    await optimizer.step()
    await engine.aclose()
    sent = [json.loads(r.body) for r in transport.requests]
    (last,) = [b for b in sent if "<IMPROVED_VARIABLE>" in json.dumps(b["messages"])]
    return last


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps(asyncio.run(optimizer_request()), indent=1, sort_keys=True))
