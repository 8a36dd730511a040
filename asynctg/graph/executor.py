"""The backward executor: every feedback call starts the moment what it needs is ready.

``await loss.backward()`` runs in three steps:

1. An iterative depth-first walk orders the graph (post-order: predecessors first), so a chain
   10,000 deep needs no recursion; a cycle is a ``GraphError``.
2. Walking consumers before producers, it finds the nodes feedback will reach (through
   predecessors that require gradients) and counts, for each, the consumers that will deliver
   to it. Nothing else is visited, so frozen branches cost no call.
3. Inside one task group, a node runs when its last consumer has delivered: it hands gradients
   that descend from a merge point (``tg.aggregate``) to that point's ``GradientMerge`` hook,
   asks its backward rule for plans, and sends each plan's request through the engine, which
   schedules it with every other call in flight. Each delivery counts down the target's
   counter; the target starts when it reaches zero. How feedback is merged is not decided here:
   the hooks live in ``asynctg.optim.aggregation``.

Gradients are ordered by (the consumer's post-order position, the argument position), not by
completion time, so the same graph yields byte-identical prompts on every run. They are
gathered off to the side and written to the variables only when the whole pass succeeded: a
failed or cancelled backward leaves every variable as it was.

An optional ``BackwardObserver`` (``backward(root, engine, observer=...)``) is told, once per
plan, which node's rule made it, the feedback that node had, and the feedback text the plan
yielded (the engine's reply, or the rule's own text). ``asynctg.compat`` uses it to write
TextGrad's log records; the executor itself neither logs nor knows who listens.

Calls are prioritised by the length of the feedback chain still below them, so when the budget
binds, the calls on the longest remaining path go first.

A feedback request the engine refuses as too large for the window (``ContextBudgetError``)
is re-raised naming the variable it was for and the sample it came from (the rules in
``asynctg.graph.ops`` cut an oversize sample's conversation first, so the error is rare).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from asynctg import telemetry
from asynctg.engine.protocol import Engine
from asynctg.errors import ContextBudgetError, GraphError
from asynctg.fanout import gather, task_group
from asynctg.graph.function import GradientMerge, GradientPlan
from asynctg.graph.variable import GradientContext, GradientList, Variable, describe_sample
from asynctg.runtime import get_backward_engine

__all__ = [
    "BackwardObserver",
    "BackwardPlan",
    "GradientEntry",
    "backward",
    "compute_gradients",
    "post_order",
]


class BackwardObserver(Protocol):
    """Told about each piece of feedback a backward pass produced, as it is produced."""

    def __call__(self, output: Variable, feedback: str, plan: GradientPlan, text: str) -> None:
        """``output``'s rule (holding ``feedback``) made ``plan``, which yielded ``text``.

        Called on the event loop once the plan's reply is in (for a plan with no request,
        ``text`` is ``plan.value``); it must not block. An exception it raises fails the pass.
        """
        ...


@dataclass(eq=False)
class GradientEntry:
    """One piece of feedback for a variable, with where it came from (for ordering)."""

    key: tuple[int, int, int]
    gradient: Variable
    context: GradientContext | None
    merges: tuple[GradientMerge, ...] = ()  # merge points this gradient descends from


@dataclass(eq=False)
class BackwardPlan:
    """The shape of a backward pass, worked out before any call is made."""

    order: list[Variable]  # post-order: predecessors before consumers
    position: dict[int, int]  # id(variable) -> index in order
    reached: list[Variable]  # nodes feedback reaches, consumers first
    pending: dict[int, int]  # id(variable) -> consumers that will deliver to it
    height: dict[int, int]  # id(variable) -> feedback steps still below it
    targets: dict[int, list[tuple[int, Variable]]] = field(default_factory=dict)


def post_order(root: Variable) -> list[Variable]:
    """Every variable ``root`` depends on, predecessors first; iterative; detects cycles."""
    visiting, done = 1, 2
    state: dict[int, int] = {id(root): visiting}
    order: list[Variable] = []
    stack: list[tuple[Variable, Any]] = [(root, iter(root.predecessors))]
    while stack:
        node, preds = stack[-1]
        for p in preds:
            s = state.get(id(p))
            if s is None:
                state[id(p)] = visiting
                stack.append((p, iter(p.predecessors)))
                break
            if s == visiting:
                path = " -> ".join(repr(v.role_description) for v, _ in stack)
                raise GraphError(
                    f"the graph has a cycle: {path} -> {p.role_description!r}; a variable "
                    "cannot depend on itself"
                )
        else:
            stack.pop()
            state[id(node)] = done
            order.append(node)
    return order


def _targets(node: Variable) -> list[tuple[int, Variable]]:
    """(argument position, predecessor) for each distinct predecessor needing feedback."""
    if not node.requires_grad or node.grad_fn is None:
        return []
    seen: set[int] = set()
    out = []
    for pos, p in enumerate(node.predecessors):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((pos, p))
    return out


def plan_backward(root: Variable) -> BackwardPlan:
    """Order the graph, find what feedback reaches, and count deliveries (no calls made)."""
    order = post_order(root)
    position = {id(v): i for i, v in enumerate(order)}
    targets = {id(v): _targets(v) for v in order}
    reached_ids = {id(root)}
    reached: list[Variable] = []
    pending: dict[int, int] = {id(root): 0}
    for node in reversed(order):  # consumers before their predecessors
        if id(node) not in reached_ids:
            continue
        reached.append(node)
        for _, p in targets[id(node)]:
            reached_ids.add(id(p))
            pending[id(p)] = pending.get(id(p), 0) + 1
    height: dict[int, int] = {}
    for node in order:  # predecessors first
        height[id(node)] = max((height[id(p)] + 1 for _, p in targets[id(node)]), default=0)
    return BackwardPlan(order, position, reached, pending, height, targets)


def _feedback_text(entries: Iterable[GradientEntry]) -> str:
    return "\n".join(str(e.gradient.value) for e in entries)


def _named(exc: ContextBudgetError, target: Variable, output: Variable) -> ContextBudgetError:
    sample = describe_sample(output)
    return ContextBudgetError(
        f"the feedback request for {target.role_description!r} from the sample [{sample}] is "
        f"about {exc.tokens} tokens, past the {exc.window}-token context window; it was not "
        "sent. Shorten that sample's inputs or use a longer-context model.",
        tokens=exc.tokens,
        window=exc.window,
        variable=target.role_description,
        sample=sample,
    )


def _new_gradient(target: Variable, text: str, merges: tuple[GradientMerge, ...]) -> Variable:
    g = Variable(
        text, requires_grad=False, role_description=f"feedback to {target.role_description}"
    )
    g._merges = merges
    return g


class _Pass:
    """One backward pass in progress."""

    def __init__(
        self, plan: BackwardPlan, engine: Engine, observer: BackwardObserver | None = None
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.observer = observer
        self.pending = dict(plan.pending)
        self.entries: dict[int, list[GradientEntry]] = {}
        self.final: dict[int, list[GradientEntry]] = {}
        self.snapshot: dict[int, set[int]] = {}  # id(v) -> ids of the gradients v had at start
        self.group: asyncio.TaskGroup | None = None
        self.requests = 0  # feedback requests made (for the backward span)

    def existing(self, v: Variable) -> list[GradientEntry]:
        self.snapshot[id(v)] = {id(g) for g in v.gradients}
        return [
            GradientEntry((-1, i, 0), g, v.gradients_context.get(g), tuple(g._merges))
            for i, g in enumerate(v.gradients)
        ]

    def start(self, v: Variable) -> None:
        assert self.group is not None
        self.group.create_task(self.run(v))

    async def run(self, v: Variable) -> None:
        entries = self.existing(v) + sorted(self.entries.get(id(v), []), key=lambda e: e.key)
        entries = await self.merge(v, entries)
        self.final[id(v)] = entries
        targets = self.plan.targets[id(v)]
        if not targets:
            return
        assert v.grad_fn is not None
        merges = tuple(dict.fromkeys(m for e in entries for m in e.merges))
        feedback = _feedback_text(entries)
        plans = v.grad_fn.plans(v, feedback, self.engine)
        if inspect.isawaitable(plans):  # a rule that must wait (asynctg.compat's TextGrad-style)
            plans = await plans
        by_target: dict[int, list[GradientPlan]] = {}
        for p in plans:
            by_target.setdefault(id(p.target), []).append(p)
        wanted = {id(t) for _, t in targets}
        stray = [p.target.role_description for p in plans if id(p.target) not in wanted]
        if stray:
            raise GraphError(
                f"the backward rule of {v.grad_fn.name} planned feedback for {stray}, which are "
                "not inputs of its output that require gradients"
            )
        me = self.plan.position[id(v)]
        assert self.group is not None
        for pos, target in targets:
            self.group.create_task(
                self.deliver(me, pos, target, by_target.get(id(target), []), merges, feedback)
            )

    async def deliver(
        self,
        consumer: int,
        pos: int,
        target: Variable,
        plans: list[GradientPlan],
        merges: tuple[GradientMerge, ...],
        feedback: str,
    ) -> None:
        priority = self.plan.height[id(target)] + 1
        output = self.plan.order[consumer]
        texts = await gather(self.resolve(p, priority, output) for p in plans)
        if self.observer is not None:
            for p, text in zip(plans, texts, strict=True):
                self.observer(output, feedback, p, text)
        bucket = self.entries.setdefault(id(target), [])
        for i, (p, text) in enumerate(zip(plans, texts, strict=True)):
            marks = tuple(dict.fromkeys((p.merge, *merges) if p.merge else merges))
            bucket.append(
                GradientEntry(
                    (consumer, pos, i), _new_gradient(target, text, marks), p.context, marks
                )
            )
        self.pending[id(target)] -= 1
        if self.pending[id(target)] == 0:
            self.start(target)

    async def resolve(self, plan: GradientPlan, priority: int, output: Variable) -> str:
        if plan.request is None:
            return plan.value
        self.requests += 1
        try:
            result = await self.engine.send(plan.request, priority=priority)
        except ContextBudgetError as exc:
            # The engine knows the request, not the graph: say whose feedback it was.
            if exc.variable is not None and exc.sample is not None:
                raise
            raise _named(exc, plan.target, output) from exc
        return result.text

    async def merge(self, v: Variable, entries: list[GradientEntry]) -> list[GradientEntry]:
        """Hand each merge point's two or more gradients of ``v`` to its hook, concurrently."""
        if len(entries) < 2:
            return entries
        members: dict[GradientMerge, list[GradientEntry]] = {}
        for e in entries:
            for m in e.merges:
                members.setdefault(m, []).append(e)
        todo = [(m, es) for m, es in members.items() if len(es) > 1]
        if not todo:
            return entries
        priority = self.plan.height[id(v)] + 1
        merged = await gather(
            m.merge(v, [(e.gradient, e.context) for e in es], self.engine, priority)
            for m, es in todo
        )
        out = list(entries)
        for (_, es), gradient in zip(todo, merged, strict=True):
            if gradient is None:
                continue
            gone = {id(e) for e in es}
            out = [e for e in out if id(e) not in gone]
            out.append(GradientEntry(min(e.key for e in es), gradient, None, ()))
        out.sort(key=lambda e: e.key)
        return out


async def compute_gradients(
    root: Variable, engine: Engine | None = None, *, observer: BackwardObserver | None = None
) -> dict[Variable, list[Variable]]:
    """Run a backward pass and return each reached variable's full gradient list, unapplied.

    Nothing is written to the variables; ``backward`` does that. Useful for inspecting feedback
    before deciding to keep it.
    """
    state = await _run(root, engine, observer)
    return {
        v: [e.gradient for e in state.final[id(v)]]
        for v in state.plan.reached
        if id(v) in state.final
    }


async def _run(root: Variable, engine: Engine | None, observer: BackwardObserver | None) -> _Pass:
    if not isinstance(root, Variable):
        raise GraphError(f"backward needs a Variable, got {type(root).__name__}")
    chosen = get_backward_engine(engine)
    state = _Pass(plan_backward(root), chosen, observer)
    depth = state.plan.height.get(id(root), 0)
    with telemetry.span("backward", asynctg__backward__depth=depth) as span:
        try:
            async with task_group() as group:
                state.group = group
                state.start(root)
        finally:
            state.group = None
            if span is not None:
                span.set_attribute("asynctg.backward.requests", state.requests)
    return state


async def backward(
    root: Variable, engine: Engine | None = None, *, observer: BackwardObserver | None = None
) -> None:
    """``await root.backward(engine)``: compute feedback, then add it to the variables."""
    state = await _run(root, engine, observer)
    for v in state.plan.reached:
        entries = state.final.get(id(v))
        if entries is None:
            continue
        # Another pass may have added gradients since this one read them: keep those, and
        # replace only what this pass started from (which a merge hook may have combined).
        seen = state.snapshot.get(id(v), set())
        others = [g for g in v.gradients if id(g) not in seen]
        contexts = {g: v.gradients_context.get(g) for g in others}
        v.gradients = GradientList([e.gradient for e in entries] + others)
        v.gradients_context = {e.gradient: e.context for e in entries} | contexts
