"""The concurrent executor agrees with a sequential reference on random graphs.

Random DAGs of leaf variables (some trainable, some frozen) combined by LLM calls (with and
without a system prompt), formatted LLM calls, Python functions and sums are built against a
deterministic in-memory "LLM" (each answer is a hash of the request body, so answers do not
depend on completion order). The executor must produce the same gradients, in the same order,
with the same contexts and the same number of LLM calls as ``reference_backward``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from reference_backward import reference_backward, topological_order
from support import engine_with, ok

import asynctg as tg
from asynctg.engine.client import ChatEngine
from asynctg.graph import compute_gradients, post_order
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

KINDS = ("llm", "llm_system", "formatted", "function", "sum")


@dataclass(frozen=True)
class Op:
    kind: str
    args: tuple[int, ...]


@dataclass(frozen=True)
class Program:
    leaves: tuple[bool, ...]  # requires_grad of each leaf
    ops: tuple[Op, ...]
    root_is_sum_of_sinks: bool


@st.composite
def programs(draw: st.DrawFn) -> Program:
    leaves = tuple(draw(st.lists(st.booleans(), min_size=1, max_size=4)))
    ops = []
    for k in range(draw(st.integers(1, 7))):
        available = len(leaves) + k
        index = st.integers(0, available - 1)
        kind = draw(st.sampled_from(KINDS))
        if kind == "llm":
            args = (draw(index),)
        elif kind == "llm_system":
            args = (draw(index), draw(index))  # (system prompt, input)
        else:
            args = tuple(draw(st.lists(index, min_size=1, max_size=3)))
        ops.append(Op(kind, args))
    return Program(leaves, tuple(ops), draw(st.booleans()))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


class HashLLM:
    """Answers each request with a hash of its body, after a random number of loop turns."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.transport = MockTransport(self.handle)

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        for _ in range(self.rng.randrange(6)):  # scramble completion order, no real time
            await asyncio.sleep(0)
        return ok(f"reply {_digest(request.body)}")

    @property
    def calls(self) -> int:
        return len(self.transport.requests)


async def build(program: Program, engine: ChatEngine) -> tg.Variable:
    """Run the program's forward pass (making its LLM calls) and return the root."""
    nodes = [
        tg.Variable(f"leaf {i}", requires_grad=grad, role_description=f"leaf {i}")
        for i, grad in enumerate(program.leaves)
    ]
    used: set[int] = set()
    for k, op in enumerate(program.ops):
        args = [nodes[i] for i in op.args]
        used.update(op.args)
        role = f"output of op {k}"
        if op.kind == "llm":
            out = await tg.autograd.LLMCall(engine)(args[0], role)
        elif op.kind == "llm_system":
            out = await tg.autograd.LLMCall(engine, args[0])(args[1], role)
        elif op.kind == "formatted":
            fields = [f"f{i}" for i in range(len(args))]
            template = f"op {k}: " + " | ".join("{" + f + "}" for f in fields)
            call = tg.autograd.FormattedLLMCall(engine, template, fields)
            out = await call(
                inputs=dict(zip(fields, args, strict=True)), response_role_description=role
            )
        elif op.kind == "function":

            def combine(**kwargs: tg.Variable) -> str:
                joined = "|".join(f"{k}={v.value}" for k, v in kwargs.items())
                return f"fn {_digest(joined.encode())}"

            fn = tg.autograd.StringBasedFunction(combine, function_purpose=f"combines (op {k})")
            out = await fn(
                inputs={f"arg_{i}": a for i, a in enumerate(args)}, response_role_description=role
            )
        else:
            out = tg.sum(args)
        nodes.append(out)
    n_leaves = len(program.leaves)
    sinks = [v for i, v in enumerate(nodes) if i >= n_leaves and i not in used]
    if program.root_is_sum_of_sinks and len(sinks) > 1:
        return tg.sum(sinks)
    return nodes[-1]


def _snapshot(variables: list[tg.Variable]) -> list[list[tuple[str, Any]]]:
    return [[(g.value, v.gradients_context.get(g)) for g in v.gradients] for v in variables]


async def check(program: Program, seed: int) -> None:
    llm = HashLLM(seed)
    engine = engine_with(llm.transport, temperature=None)  # no coalescing: count every call
    async with engine:
        root = await build(program, engine)
        graph = post_order(root)
        assert graph == topological_order(root)

        before = llm.calls
        computed = await compute_gradients(root, engine)
        executor_calls = llm.calls - before
        assert all(v.gradients == [] for v in graph)  # compute_gradients writes nothing

        before = llm.calls
        reference = await reference_backward(root, engine)
        assert llm.calls - before == reference.calls == executor_calls

        assert set(computed) == set(reference.gradients)
        for v, expected in reference.gradients.items():
            assert [g.value for g in computed[v]] == [g.value for g in expected], v

        before = llm.calls
        await root.backward(engine)
        assert llm.calls - before == reference.calls
        for v in graph:
            expected = reference.gradients.get(v, [])
            assert [(g.value, v.gradients_context.get(g)) for g in v.gradients] == [
                (g.value, g.context) for g in expected
            ], v


@settings(max_examples=40, deadline=None)
@given(program=programs(), seed=st.integers(0, 2**16))
def test_executor_matches_sequential_reference(program: Program, seed: int) -> None:
    """On random DAGs the executor's gradients, order, contexts and call count match the oracle."""
    asyncio.run(check(program, seed))


def test_reference_agrees_on_a_hand_built_diamond() -> None:
    """A diamond with a shared trainable input, frozen leaves and a sum on top agrees too."""
    program = Program(
        leaves=(True, False, True),
        ops=(
            Op("llm_system", (0, 1)),  # 3: prompt 0 applied to frozen 1
            Op("llm", (0,)),  # 4: another use of 0
            Op("formatted", (3, 4, 2)),  # 5: joins both with trainable 2
            Op("function", (5, 1)),  # 6
            Op("sum", (6, 3, 3)),  # 7: 3 twice
        ),
        root_is_sum_of_sinks=False,
    )
    asyncio.run(check(program, seed=0))


def test_frozen_leaves_stop_feedback_as_in_the_oracle() -> None:
    """With only frozen leaves, feedback stops at them in the executor as in the oracle."""
    program = Program(
        leaves=(False, False),
        ops=(Op("llm", (0,)), Op("function", (2, 1)), Op("sum", (0, 1))),
        root_is_sum_of_sinks=True,
    )
    asyncio.run(check(program, seed=1))
