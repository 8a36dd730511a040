"""Feedback aggregation: many gradients -> what the optimizer sees, within the context budget.

This module is the one place that decides how a variable's feedback reaches the LLM that
rewrites it (and how ``tg.aggregate`` merges the feedback of a batch). Strategies:

``"concat"``
    The paper's method: every gradient in its own ``<FEEDBACK>`` block, with the conversation
    it came from, exactly as TextGrad builds the optimizer prompt. A prompt that cannot fit the
    model's known context window raises ``ContextBudgetError`` before anything is sent.
``"tree"``
    Concurrent hierarchical reduction (after ComBEE, arXiv 2604.04247): identical feedback is
    merged first (and counted; the same feedback on different inputs counts as identical),
    feedback from failing samples goes first, then about sqrt(n) groups, each feedback in two
    of them, sized to the budget, are reduced at once (one LLM call each); the group summaries
    are merged by one more call, recursing only while they do not fit one. The optimizer then
    sees one ``<FEEDBACK>`` block: the merged criticism, with evidence and how many samples
    raised each point. Depth grows with log(n), so the step's critical path grows by two or
    three calls, not by n. Reduce requests carry ``max_tokens`` and longer replies are cut, so
    the tree always ends (at most 2n - 1 calls for n distinct feedbacks: ``reduce_feedback``);
    text too large for a request is cut with a notice the reader sees (``prompts.cut_to_fit``).
``"auto"`` (the default)
    ``"concat"`` while its prompt fits the budget, ``"tree"`` past it; when the window is not
    known yet and the provider answers with a context-length error that names it, the step
    is redone with ``"tree"``.

The budget of a request is ``CONTEXT_FRACTION`` of the model's context window (token estimates
are approximate) minus the tokens its reply may use. Each step's ``AggregationReport`` (one per
parameter) says what ran: feedbacks in, distinct, levels, calls, groups per level, pieces and
replies cut, and the optimizer prompt's estimated size.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from asynctg import prompts, telemetry
from asynctg.engine.protocol import Engine
from asynctg.engine.types import CONTEXT_FRACTION, estimate_tokens
from asynctg.errors import ConfigError, ContextBudgetError
from asynctg.fanout import gather
from asynctg.graph.ops import Sum
from asynctg.graph.variable import GradientContext, Variable

__all__ = [
    "CONTEXT_FRACTION",
    "STRATEGIES",
    "Aggregate",
    "AggregationReport",
    "Piece",
    "aggregate",
    "gradient_parts",
    "reduce_feedback",
]

Strategy = Literal["concat", "tree", "auto"]
STRATEGIES: tuple[str, ...] = ("concat", "tree", "auto")
#: Tokens reserved for a reply when the request sets no max_tokens (at most a quarter window).
DEFAULT_REPLY_RESERVE = 4096
#: Groups of the first level hold about 2 * sqrt(n) feedbacks; never more than this many.
MAX_GROUP = 128


def check_strategy(strategy: object) -> Strategy:
    if strategy not in STRATEGIES:
        raise ConfigError(f"aggregation must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return strategy  # type: ignore[return-value]


@dataclass
class AggregationReport:
    """What one variable's aggregation did in one step (``TGD.last_step``, step()'s result)."""

    variable: str
    strategy: str  # what ran: "concat" or "tree"
    feedbacks_in: int = 0
    distinct: int = 0
    levels: int = 0
    calls: int = 0
    groups: list[int] = field(default_factory=list)  # reduce calls per level
    prompt_tokens: int = 0  # the optimizer request's estimated size (prompt + reply reserve)
    budget_tokens: int | None = None
    cut: int = 0  # pieces and replies cut (with a notice in the text) to fit a reduce request

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Piece:
    """One feedback to merge: its text (with its evidence), the samples it stands for."""

    text: str
    count: int = 1
    failing: bool = True
    key: str | None = None  # what duplicates are recognised by (None: the text)


# --- what the optimizer sees: the paper's blocks ----------------------------------------------


def gradient_parts(variable: Variable) -> list[str | bytes]:
    """Every gradient of ``variable`` as the optimizer sees it: context, then <FEEDBACK>."""
    parts: list[str | bytes] = []
    for g in variable.gradients:
        ctx = variable.gradients_context.get(g)
        feedback = str(g.value)
        if ctx is None:
            parts.append(prompts.gradient_block(feedback))
        elif isinstance(ctx["context"], str):
            parts.append(
                prompts.gradient_block(
                    feedback,
                    context=ctx["context"],
                    response_role=ctx["response_desc"],
                    variable_role=ctx["variable_desc"],
                )
            )
        else:
            parts.extend(ctx["context"])
            parts.append(
                prompts.gradient_block(
                    feedback,
                    response_role=ctx["response_desc"],
                    variable_role=ctx["variable_desc"],
                    after_parts=True,
                )
            )
    return parts


def _evidence(feedback: str, ctx: GradientContext | None) -> str:
    """A gradient as reduce input: its conversation as text (images named, not sent)."""
    if ctx is None:
        return feedback
    context = ctx["context"]
    if not isinstance(context, str):
        context = "".join(p if isinstance(p, str) else "[image]" for p in context)
    return prompts.gradient_block(
        feedback,
        context=context,
        response_role=ctx["response_desc"],
        variable_role=ctx["variable_desc"],
    ).strip()


# Feedback that says nothing needs changing; such samples go after the failing ones.
_SATISFIED = re.compile(
    r"\b(no (further )?(changes?|improvements?|issues?) (are |is )?(needed|necessary|required)"
    r"|(is|was) (already )?correct\b|nothing to improve)",
    re.IGNORECASE,
)


def pieces_of(variable: Variable) -> list[Piece]:
    """The variable's gradients as pieces to reduce, in gradient order."""
    out = []
    for g in variable.gradients:
        text = str(g.value)
        out.append(
            Piece(
                _evidence(text, variable.gradients_context.get(g)),
                failing=not (not text.strip() or _SATISFIED.search(text)),
                key=text,
            )
        )
    return out


# --- budgets -----------------------------------------------------------------------------------


def reply_reserve(engine: Engine) -> int:
    cap = engine.defaults.get("max_tokens")
    if isinstance(cap, int) and cap > 0:
        return cap
    window = engine.context_window or 4 * DEFAULT_REPLY_RESERVE
    return min(DEFAULT_REPLY_RESERVE, window // 4)


def prompt_budget(engine: Engine) -> int | None:
    """Prompt tokens a request may be planned with (None: the window is unknown)."""
    window = engine.context_window
    if window is None:
        return None
    return max(1, int(window * CONTEXT_FRACTION) - reply_reserve(engine))


def _tokens(text: str) -> int:
    return estimate_tokens([{"role": "user", "content": text}])


# --- the reduction -----------------------------------------------------------------------------


def _merge_duplicates(pieces: Sequence[Piece]) -> list[Piece]:
    """One piece per distinct feedback (whitespace and case folded), counts added, order kept.

    Pieces compare by ``key`` (the feedback alone) when they have one, so the same criticism of
    different samples is merged even though its evidence (each sample's input) differs; the
    first sample's evidence stands for all of them.
    """
    seen: dict[str, int] = {}
    out: list[Piece] = []
    for p in pieces:
        key = " ".join((p.text if p.key is None else p.key).split()).casefold()
        if key in seen:
            i = seen[key]
            q = out[i]
            out[i] = Piece(q.text, q.count + p.count, q.failing or p.failing, q.key)
        else:
            seen[key] = len(out)
            out.append(p)
    return out


def _spread(pieces: Sequence[Piece], groups: int) -> list[list[Piece]]:
    """Deal the pieces into ``groups`` groups, each piece into two different ones."""
    out: list[list[Piece]] = [[] for _ in range(groups)]
    for i, p in enumerate(pieces):
        first = i % groups
        out[first].append(p)
        if groups > 1:
            # a second group that differs from the first and rotates with each round of dealing
            second = (first + 1 + (i // groups) % (groups - 1)) % groups
            out[second].append(p)
    return [g for g in out if g]


def _size(piece: Piece) -> int:
    """Tokens a piece takes in a reduce request: its text, its block's tags and sample count."""
    return _tokens(piece.text) + 8


def _pack(pieces: Sequence[Piece], room: int) -> list[list[Piece]]:
    """Consecutive pieces into as few groups as fit ``room`` tokens each (greedy: a group is
    closed only when the next piece does not fit, so when any two pieces fit together every
    group but the last holds two or more)."""
    out: list[list[Piece]] = [[]]
    used = 0
    for p in pieces:
        size = _size(p)
        if out[-1] and used + size > room:
            out.append([])
            used = 0
        out[-1].append(p)
        used += size
    return out


def _fits(group: Sequence[Piece], room: int) -> bool:
    return sum(_size(p) for p in group) <= room


#: The smallest reply cap a reduce request may have: below it the window is too small to
#: merge anything (the request's own instructions fill it).
MIN_REDUCE_REPLY = 64
#: Characters per token when a token budget becomes a length to cut text to (the estimate's).
_CHARS_PER_TOKEN = 4


class _Reducer:
    """One reduction's calls, and the budget arithmetic that bounds them.

    A request's total (prompt plus reply cap) is planned within ``CONTEXT_FRACTION`` of the
    window. The reply cap ``reply_cap`` is at most a quarter of what the instructions leave,
    so ``room`` (tokens for the pieces of one request) holds three replies: whatever a model
    writes, the replies of one level can be merged two or more at a time by the next.
    """

    def __init__(
        self,
        engine: Engine,
        role: str,
        samples: int,
        priority: int,
        report: AggregationReport,
    ) -> None:
        self.engine = engine
        self.role = role
        self.samples = samples
        self.priority = priority
        self.report = report
        self.overhead = estimate_tokens(self.messages([], twice=True))
        window = engine.context_window
        reserve = reply_reserve(engine)
        if window is None:
            self.reply_cap = reserve
            self.room = 10**12
            return
        total = int(window * CONTEXT_FRACTION)
        self.reply_cap = min(reserve, (total - self.overhead) // 4)
        self.room = total - self.overhead - self.reply_cap
        if self.reply_cap < MIN_REDUCE_REPLY:
            raise ContextBudgetError(
                f"a reduce request for {role!r} needs about {self.overhead} tokens of "
                f"instructions and at least {MIN_REDUCE_REPLY} for its reply; the "
                f"{window}-token context window leaves too little. Use a longer-context model.",
                tokens=self.overhead + MIN_REDUCE_REPLY,
                window=window,
                variable=role,
            )

    def messages(self, group: Sequence[Piece], twice: bool) -> list[dict[str, Any]]:
        return [
            {"role": "system", "content": prompts.REDUCE_SYSTEM_PROMPT},
            {
                "role": "user",
                "content": prompts.reduce_prompt(
                    [(p.text, p.count) for p in group],
                    role=self.role,
                    samples=self.samples,
                    twice=twice,
                ),
            },
        ]

    def clip(self, piece: Piece, tokens: int) -> Piece:
        """``piece`` cut (with a notice in the text) to about ``tokens`` tokens in a request."""
        if _size(piece) <= tokens:
            return piece
        self.report.cut += 1
        limit = max(0, (tokens - _size(Piece(""))) * _CHARS_PER_TOKEN)
        return Piece(prompts.cut_to_fit(piece.text, limit), piece.count, piece.failing, piece.key)

    def passes(self, group: Sequence[Piece], level: int) -> bool:
        """Whether ``group`` goes on to the next level as it is, without a call: a lone summary
        (level two on) already as small as a reply has nothing to be merged with here."""
        return level > 1 and len(group) == 1 and _size(group[0]) <= self.reply_cap

    async def call(self, group: Sequence[Piece], level: int, twice: bool) -> Piece:
        if self.passes(group, level):
            return group[0]
        request = self.engine.request(self.messages(group, twice), max_tokens=self.reply_cap)
        self.engine.check_fits(request, variable=self.role)
        result = await self.engine.send(request, priority=self.priority)
        # The cap is the provider's to enforce, but a reply is untrusted and token counts differ
        # from the estimate: past the cap it is cut, so every level's pieces stay small.
        merged = Piece(
            result.text.strip(), sum(p.count for p in group), any(p.failing for p in group)
        )
        return self.clip(merged, self.reply_cap)

    async def level(
        self, groups: list[list[Piece]], level: int, twice: bool = False
    ) -> list[Piece]:
        calls = sum(1 for g in groups if not self.passes(g, level))
        self.report.levels = level
        self.report.groups.append(calls)
        self.report.calls += calls
        with telemetry.span(f"aggregate level {level}", asynctg__aggregate__groups=calls):
            return await gather(self.call(g, level, twice) for g in groups)


def _first_level(items: Sequence[Piece], room: int) -> tuple[list[list[Piece]], bool]:
    """Level one's groups, and whether each piece is in two of them.

    About sqrt(n) groups, each piece in two, grown until every group fits ``room``; at most n
    groups are tried (past that, each group would hold the same pairs). Pieces too large to
    share a request twice over are packed once each instead.
    """
    n = len(items)
    groups = max(2, math.ceil(math.sqrt(n)), math.ceil(2 * n / MAX_GROUP))
    while groups <= n:  # grows by a quarter each turn: O(log n) turns of O(n) each
        spread = _spread(items, groups)
        if all(_fits(g, room) for g in spread):
            return spread, True
        groups += max(1, groups // 4)
    return _pack(items, room), False


async def reduce_feedback(
    engine: Engine,
    pieces: Sequence[Piece],
    *,
    role: str,
    priority: int = 0,
    report: AggregationReport | None = None,
) -> str:
    """Merge ``pieces`` into one feedback text by a tree of concurrent reduce calls.

    Duplicates are merged (and counted) and failing pieces put first. A piece too large for a
    reduce request on its own is cut in the middle of its longest parts, with a notice saying
    how much was cut. Up to three pieces that fit one request go to one call. More are dealt
    into about sqrt(n) groups, each piece in two, sized to the budget (or, when the pieces are
    too large for that, packed once each), and reduced at once; then the summaries, each capped
    at ``max_tokens`` (and cut past it), are packed and merged level after level until one is
    left.

    Why it ends: every reply is at most the reply cap, and a request has room for three of
    them, so from level two on every request merges two or more pieces and each level at least
    halves the count. With n distinct pieces there are at most ``2n - 1`` calls and
    ``1 + ceil(log2(n))`` levels. A level that would not shrink the count raises
    ``ContextBudgetError`` naming the variable (a guard; the arithmetic above rules it out).
    """
    report = report if report is not None else AggregationReport(role, "tree")
    report.feedbacks_in = sum(p.count for p in pieces)
    items = _merge_duplicates(pieces)
    items.sort(key=lambda p: not p.failing)  # stable: failing first, in gradient order
    report.distinct = len(items)
    if not items:
        return ""
    reducer = _Reducer(engine, role, report.feedbacks_in, priority, report)
    items = [reducer.clip(p, reducer.room) for p in items]
    if len(items) <= 3 and _fits(items, reducer.room):
        (merged,) = await reducer.level([items], 1)
        return merged.text
    groups, twice = _first_level(items, reducer.room)
    items = await reducer.level(groups, 1, twice)
    level = 1
    while len(items) > 1:
        level += 1
        groups = _pack(items, reducer.room)
        if len(groups) >= len(items):
            raise ContextBudgetError(
                f"merging the feedback for {role!r} made no progress at level {level}: "
                f"{len(items)} summaries need {len(groups)} reduce requests; nothing more "
                "was sent. Use a longer-context model.",
                tokens=sum(_size(p) for p in items) + reducer.overhead,
                window=engine.context_window,
                variable=role,
            )
        items = await reducer.level(groups, level)
    return items[0].text


# --- the optimizer's side ----------------------------------------------------------------------


async def optimizer_content(
    engine: Engine,
    variable: Variable,
    render: Callable[[Sequence[str | bytes]], str | list[str | bytes]],
    system_prompt: str,
    *,
    strategy: Strategy,
    priority: int,
) -> tuple[str | list[str | bytes], AggregationReport]:
    """The optimizer's user prompt for ``variable`` under ``strategy``, and what it took.

    ``render(gradient_parts)`` builds the prompt from gradient blocks (the optimizer owns the
    rest of the prompt: role, value, constraints, examples, memory).
    """
    role = variable.role_description
    budget = prompt_budget(engine)
    report = AggregationReport(role, "concat", budget_tokens=budget)

    def size(content: str | list[str | bytes]) -> int:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": content},
        ]
        return estimate_tokens(messages) + reply_reserve(engine)

    if strategy != "tree":
        content = render(gradient_parts(variable))
        report.feedbacks_in = report.distinct = len(variable.gradients)
        report.prompt_tokens = size(content)
        window = engine.context_window
        if strategy == "auto" and budget is not None and report.prompt_tokens > budget:
            pass  # past the budget: reduce below
        elif strategy == "concat" and window is not None and report.prompt_tokens > window:
            raise ContextBudgetError(
                f"the optimizer prompt for {role!r} is about {report.prompt_tokens} tokens with "
                f"{len(variable.gradients)} feedback blocks, past the {window}-token context "
                "window; nothing was sent. Use aggregation='auto' or 'tree', or a smaller batch.",
                tokens=report.prompt_tokens,
                window=window,
                variable=role,
            )
        else:
            return content, report
    report.strategy = "tree"
    text = await reduce_feedback(
        engine, pieces_of(variable), role=role, priority=priority, report=report
    )
    content = render([prompts.gradient_block(text)])
    report.prompt_tokens = size(content)
    if engine.context_window is not None and report.prompt_tokens > engine.context_window:
        raise ContextBudgetError(
            f"even with its feedback reduced, the optimizer prompt for {role!r} is about "
            f"{report.prompt_tokens} tokens, past the {engine.context_window}-token window (the "
            "variable, constraints and examples are too long); nothing more was sent.",
            tokens=report.prompt_tokens,
            window=engine.context_window,
            variable=role,
        )
    return content, report


# --- tg.aggregate ------------------------------------------------------------------------------

_ids = itertools.count()


class _BatchMerge:
    """The merge hook of one ``tg.aggregate`` node: its descendants' feedback becomes one."""

    def __init__(self) -> None:
        self.name = f"aggregate-{next(_ids)}"
        self.reports: list[AggregationReport] = []

    async def merge(
        self,
        target: Variable,
        gradients: Sequence[tuple[Variable, GradientContext | None]],
        engine: Engine,
        priority: int,
    ) -> Variable | None:
        # All-blank feedback has nothing to merge: a model asked to summarise nothing would
        # invent criticism and send the next backward down the wrong branch.
        if not any(str(g.value).strip() for g, _ in gradients):
            return None
        report = AggregationReport(target.role_description, "tree")
        pieces = [Piece(str(g.value)) for g, _ in gradients]
        text = await reduce_feedback(
            engine, pieces, role=target.role_description, priority=priority, report=report
        )
        self.reports.append(report)
        roles = ", ".join(dict.fromkeys(g.role_description for g, _ in gradients))
        return Variable(text, requires_grad=False, role_description=roles)

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Aggregate(Sum):
    """``tg.aggregate``: like ``sum``, and the feedback that flows back through it is merged.

    Every summand receives the feedback (TextGrad 0.1.8 gives it to one summand only). Further
    down, a variable that receives several gradients descending from the same aggregation has
    them merged into one (``reduce_feedback``: one call for a few, a tree of concurrent calls
    within the context budget for many) before its own backward runs and before the optimizer
    sees them: the mean of a minibatch's feedback.
    """

    name = "aggregate"
    role = "a combination of the following variables: {roles}."

    def saved(self) -> dict[str, Any]:
        return {"merge": _BatchMerge()}

    def backward(  # type: ignore[override]
        self, output: Variable, feedback: str, engine: Engine, *, merge: _BatchMerge
    ) -> list[Any]:
        plans = super().backward(output, feedback, engine)
        for plan in plans:
            plan.merge = merge
        return plans


def aggregate(variables: Sequence[Variable]) -> Variable:
    """Like ``sum``, but feedback flowing back through it is merged into one by LLM calls."""
    return Aggregate()(variables)
