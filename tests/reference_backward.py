"""A sequential reference backward pass: the oracle the concurrent executor is checked against.

Written micrograd-style and kept deliberately simple: a topological order, then one reverse
pass, node by node. Each node's backward rule (``grad_fn.plans``) is called with the feedback
the node has received, and each plan is resolved on its own, one call at a time. A variable's
gradients are ordered by (the consumer's position in the topological order, the variable's
argument position in that consumer, the plan's position), which is the order asynctg promises.

It reuses asynctg's backward *rules* (what each operation asks) but none of its executor (how
and when the rules run), and does not support ``tg.aggregate`` (no reduce calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asynctg.engine.client import ChatEngine
from asynctg.graph.variable import Variable

__all__ = ["ReferenceGradient", "ReferenceResult", "reference_backward", "topological_order"]


@dataclass(frozen=True)
class ReferenceGradient:
    """One piece of feedback: its text and the context stored with it."""

    value: str
    context: Any


@dataclass
class ReferenceResult:
    """Gradients of every variable feedback reached (root included), and LLM calls made."""

    gradients: dict[Variable, list[ReferenceGradient]] = field(default_factory=dict)
    calls: int = 0


def topological_order(root: Variable) -> list[Variable]:
    """micrograd's ``build_topo`` (predecessors first, in argument order), without recursion."""
    order: list[Variable] = []
    visited: set[int] = set()
    stack: list[tuple[Variable, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for p in reversed(node.predecessors):
            stack.append((p, False))
    return order


def _argument_position(consumer: Variable, target: Variable) -> int:
    for i, p in enumerate(consumer.predecessors):
        if p is target:
            return i
    raise AssertionError(f"a plan targets {target!r}, which is not an input of {consumer!r}")


async def reference_backward(root: Variable, engine: ChatEngine) -> ReferenceResult:
    """Feedback for everything ``root`` depends on, one node and one call at a time."""
    order = topological_order(root)
    position = {id(v): i for i, v in enumerate(order)}
    received: dict[int, list[tuple[tuple[int, int, int], ReferenceGradient]]] = {id(root): []}
    result = ReferenceResult()
    for node in reversed(order):  # every consumer is done before its inputs
        if id(node) not in received:
            continue  # no feedback reaches this node
        incoming = sorted(received[id(node)], key=lambda item: item[0])
        gradients = [g for _, g in incoming]
        result.gradients[node] = gradients
        if not node.requires_grad or node.grad_fn is None:
            continue
        feedback = "\n".join(g.value for g in gradients)
        seen: dict[int, int] = {}
        for plan in node.grad_fn.plans(node, feedback, engine):
            if plan.request is None:
                text = plan.value
            else:
                text = (await engine.send(plan.request)).text
                result.calls += 1
            k = seen.get(id(plan.target), 0)
            seen[id(plan.target)] = k + 1
            key = (position[id(node)], _argument_position(node, plan.target), k)
            received.setdefault(id(plan.target), []).append(
                (key, ReferenceGradient(text, plan.context))
            )
    return result
