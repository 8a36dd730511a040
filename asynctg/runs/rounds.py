"""The rounds of test-time refinement: one variable, evaluated, then improved round after round.

The loop the solution, code and design loops each run for one item (a question, a problem, a
starting design)::

    evaluate the start
    up to `rounds` times:  loss -> backward -> optimizer step -> evaluate the new value

What differs between the loops is passed in, not hidden: how a value is evaluated (free for
an answer, a sandboxed test run for a program, a worker's measurement for a design), the loss
built from the last evaluation, and when to stop early (only the code loop does: from the
second round on, a program that passes every test ends the refinement).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from asynctg.engine.protocol import Engine
from asynctg.graph.variable import Variable
from asynctg.optim.tgd import TextualGradientDescent

__all__ = ["refine"]

R = TypeVar("R")


async def refine(
    engine: Engine,
    start: str,
    *,
    role: str,
    constraints: Sequence[str],
    rounds: int,
    evaluate: Callable[[str], Awaitable[R]],
    loss: Callable[[Variable, R], Awaitable[Variable]],
    until: Callable[[int, R], bool] | None = None,
) -> list[R]:
    """Refine ``start`` for up to ``rounds`` rounds; the evaluation of every value, the start's
    first.

    ``start`` becomes a variable to optimise (``role``), rewritten by TGD on ``engine`` under
    ``constraints``. ``evaluate(value)`` is called on the start and after every step;
    ``loss(variable, last evaluation)`` is the round's loss, back-propagated on ``engine``.
    ``until(rounds done, last evaluation)``, checked before every round, ends the refinement
    when true. The rounds are sequential: each needs the last one's value.
    """
    variable = Variable(start, requires_grad=True, role_description=role)
    optimizer = TextualGradientDescent(
        engine=engine, parameters=[variable], constraints=list(constraints)
    )
    evaluations = [await evaluate(str(variable.value))]
    for done in range(rounds):
        if until is not None and until(done, evaluations[-1]):
            break
        optimizer.zero_grad()
        value = await loss(variable, evaluations[-1])
        await value.backward(engine)
        await optimizer.step()
        evaluations.append(await evaluate(str(variable.value)))
    return evaluations
