"""The rounds of test-time refinement (``asynctg.runs.rounds.refine``): the skeleton the
solution, code and design loops share, against a scripted provider."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from support import engine_with, ok, request_kind

from asynctg.graph.variable import Variable
from asynctg.loss import TextLoss
from asynctg.runs.rounds import refine
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport


def _provider() -> tuple[MockTransport, list[str]]:
    """Answers the optimizer with v1, v2, ... in turn and everything else with a critique;
    returns the transport and the kinds of the requests, in order."""
    kinds: list[str] = []

    def handler(request: HTTPRequest) -> HTTPResponse:
        kind = request_kind(msgspec.json.decode(request.body))
        kinds.append(kind)
        if kind == "optimizer":
            n = kinds.count("optimizer")
            return ok(f"<IMPROVED_VARIABLE>v{n}</IMPROVED_VARIABLE>")
        return ok("be shorter")

    return MockTransport(handler), kinds


async def _run(
    rounds: int, until: Callable[[int, str], bool] | None = None
) -> tuple[list[str], list[str], list[str]]:
    transport, kinds = _provider()
    log: list[str] = []
    async with engine_with(transport) as engine:
        loss_fn = TextLoss("Critique the value.", engine=engine)

        async def evaluate(value: str) -> str:
            log.append(f"evaluate {value}")
            return value

        async def loss(variable: Variable, last: str) -> Variable:
            log.append(f"loss after {last}")
            return await loss_fn(variable)

        evaluations = await refine(
            engine,
            "v0",
            role="a value",
            constraints=[],
            rounds=rounds,
            evaluate=evaluate,
            loss=loss,
            until=until,
        )
    return evaluations, log, kinds


async def test_refine_evaluates_the_start_then_after_every_round() -> None:
    """The start is evaluated, then each round is loss -> backward -> step -> evaluate."""
    evaluations, log, kinds = await _run(2)
    assert evaluations == ["v0", "v1", "v2"]
    assert log == ["evaluate v0", "loss after v0", "evaluate v1", "loss after v1", "evaluate v2"]
    assert kinds == ["forward", "backward", "optimizer"] * 2


async def test_refine_stops_before_a_round_when_until_says_so() -> None:
    """``until(rounds done, last evaluation)`` is checked before every round and ends it early."""
    evaluations, log, kinds = await _run(5, lambda done, last: done > 0 and last == "v1")
    assert evaluations == ["v0", "v1"]
    assert log == ["evaluate v0", "loss after v0", "evaluate v1"]
    assert kinds == ["forward", "backward", "optimizer"]


async def test_refine_with_no_rounds_only_evaluates_the_start() -> None:
    """Zero rounds: the start is evaluated once and no call is made."""
    evaluations, log, kinds = await _run(0)
    assert (evaluations, log, kinds) == (["v0"], ["evaluate v0"], [])
