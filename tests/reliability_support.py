"""What the reliability tests (``tests/test_reliability_*.py``) share: a small prompt-optimization
run written with the native API, request classifiers and the check for leftover client tasks.

Timing logic runs on ``FakeClock``; real-time waits in those tests only choose *where* a
cancellation lands, and no assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

import asynctg as tg
from asynctg import prompts, runtime
from asynctg.engine import RetryPolicy
from asynctg.engine.client import ChatEngine
from asynctg.transport import HTTPRequest

TAGS = prompts.DEFAULT_NEW_VARIABLE_TAGS
#: Retries that never run out at a 30% fault rate (0.3**20) and wait only a millisecond or so.
FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.005, max_attempts=20)
_HERE = str(Path(__file__).resolve())
_CLIENT_CODE = (
    f"{Path(tg.__file__).parent}/engine",
    f"{Path(tg.__file__).parent}/graph",
    f"{Path(tg.__file__).parent}/optim",
    f"{Path(tg.__file__).parent}/transport",
    f"{Path(tg.__file__).parent}/loss",
    _HERE,
)


@pytest.fixture(autouse=True)
def _no_backward_engine() -> Iterator[None]:
    runtime._global_backward_engine = None
    runtime._backward_engine.set(None)
    yield
    runtime._global_backward_engine = None


# --- a small prompt-optimization run, written with the native API ----------------------------


def _ends_with_answer(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> str:
    return str(int(str(prediction.value).strip().endswith(str(ground_truth_answer.value))))


@dataclass
class Trainer:
    """Two trainable prompts, one model, a loss, TGD; ``step(batch)`` is one paper step.

    The model's input is ``tg.sum([instruction, question])``, so feedback reaches the system
    prompt through one backward call per sample and the instruction through another (then a
    sum, no call): the optimizer step rewrites two parameters at once, which makes "all or
    none" observable.
    """

    engine: ChatEngine
    loss: str = "string"  # or "judge"
    system_prompt: tg.Variable = field(init=False)
    instruction: tg.Variable = field(init=False)
    optimizer: tg.TextualGradientDescent = field(init=False)

    def __post_init__(self) -> None:
        self.system_prompt = tg.Variable(
            "Answer the question.",
            requires_grad=True,
            role_description="system prompt to the language model",
        )
        self.instruction = tg.Variable(
            "End with 'Answer: N'.",
            requires_grad=True,
            role_description="instruction placed before each question",
        )
        self.model = tg.BlackboxLLM(self.engine, self.system_prompt)
        self.check = tg.autograd.StringBasedFunction(
            _ends_with_answer, function_purpose="checks that the answer ends with the truth"
        )
        self.judge = tg.TextLoss("Evaluate the answer; be critical.", engine=self.engine)
        self.optimizer = tg.TGD(
            engine=self.engine, parameters=[self.system_prompt, self.instruction]
        )

    @property
    def params(self) -> list[tg.Variable]:
        return [self.system_prompt, self.instruction]

    def calls_per_step(self, batch: int) -> int:
        """Forward B (+B judge), backward 3B, optimizer 2 (one per parameter)."""
        return batch * (5 if self.loss == "judge" else 4) + 2

    async def forward(self, question: str, answer: str) -> tg.Variable:
        x = tg.Variable(question, requires_grad=False, role_description="question to answer")
        y = tg.Variable(answer, requires_grad=False, role_description="correct answer")
        response = await self.model(tg.sum([self.instruction, x]))
        if self.loss == "judge":
            return await self.judge(response)
        return await self.check(inputs={"prediction": response, "ground_truth_answer": y})

    async def losses(self, batch: list[tuple[str, str]]) -> tg.Variable:
        return tg.sum(await asyncio.gather(*(self.forward(q, a) for q, a in batch)))

    async def step(self, batch: list[tuple[str, str]]) -> None:
        self.optimizer.zero_grad()
        total = await self.losses(batch)
        await total.backward(self.engine)
        await self.optimizer.step()

    def values(self) -> tuple[str, str]:
        return (str(self.system_prompt.value), str(self.instruction.value))

    def gradient_counts(self) -> tuple[int, int]:
        return (len(self.system_prompt.gradients), len(self.instruction.gradients))


def _batch(step: int, size: int) -> list[tuple[str, str]]:
    """Distinct questions, so no two calls of a step are identical (nothing is coalesced)."""
    return [(f"Step {step}, item {i}: what is {i} + {step}?", str(i + step)) for i in range(size)]


def _user_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body["messages"]:
        if message["role"] != "user":
            continue
        content = message["content"]
        parts.append(content if isinstance(content, str) else str(content))
    return "\n".join(parts)


def _is_optimizer_call(body: dict[str, Any]) -> bool:
    return TAGS[0] in body["messages"][0]["content"]


def _client_tasks() -> list[asyncio.Task[Any]]:
    """Unfinished tasks running asynctg client code or this file's (not the simulator's)."""
    current = asyncio.current_task()
    out = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if filename.startswith(_CLIENT_CODE):
            out.append(task)
    return out


def _sim_responder(request: Mapping[str, Any]) -> str:
    """Answers unique to each request, so no two calls of a step are identical (each sample's
    gradient can be told apart, and nothing is coalesced); the optimizer extends the variable."""
    body = dict(request)
    text = _user_text(body)
    digest = hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()[:12]
    if _is_optimizer_call(body):
        value = text.split("<VARIABLE>", 1)[1].split("</VARIABLE>", 1)[0].strip()
        return f"{TAGS[0]}{value} Be precise ({digest}).{TAGS[1]}"
    if "<OBJECTIVE_FUNCTION>" in text:
        return f"Feedback {digest}: state the final answer explicitly."
    return f"Reasoning {digest}. Answer: 3"


def _scripted_reply(request: HTTPRequest) -> str:
    """A well-behaved model for the in-memory runs: tags for the optimizer, text otherwise."""
    body = msgspec.json.decode(request.body)
    if _is_optimizer_call(body):
        role = _user_text(body).split("<ROLE>")[1].split("</ROLE>")[0]
        return f"{TAGS[0]}improved {role} {len(request.body)}{TAGS[1]}"
    if "<OBJECTIVE_FUNCTION>" in _user_text(body):
        return f"feedback {len(request.body)}: be more specific."
    return "Reasoning. Answer: 3"
