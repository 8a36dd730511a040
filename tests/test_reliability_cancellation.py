"""Cancellation of a backward pass, a step and an evaluation fan-out at seeded random points:
nothing half-written, no task or connection left, the engine still works.

(Split from the former ``tests/test_reliability.py``; shared helpers in
``tests/reliability_support.py``.)
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import pytest
from reliability_support import (
    FAST_RETRY,
    Trainer,
    _batch,
    _client_tasks,
    _no_backward_engine,  # noqa: F401  (autouse fixture)
    _sim_responder,
)

import asynctg as tg
from asynctg.engine.client import ChatEngine
from asynctg.sim import SimConfig, SimServer

# --- 3. cancellation at random points, over loopback HTTP -------------------------------------

_MECHANISMS = ("task.cancel", "asyncio.timeout", "anyio.move_on_after", "anyio.sibling")


async def _cancel_after(operation: Callable[[], Awaitable[None]], how: str, delay: float) -> bool:
    """Run ``operation`` and cancel it ``delay`` seconds in, by ``how``; True if it finished."""
    finished = False

    async def op() -> None:
        nonlocal finished
        await operation()
        finished = True

    if how == "task.cancel":
        task = asyncio.create_task(op())
        await asyncio.sleep(delay)
        requested = task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # cancellation is never swallowed: a task asked to stop in time ends cancelled
        assert task.cancelled() == requested
    elif how == "asyncio.timeout":
        try:
            async with asyncio.timeout(delay):
                await op()
        except TimeoutError:
            assert not finished
    elif how == "anyio.move_on_after":
        with anyio.move_on_after(delay) as scope:
            await op()
        assert scope.cancelled_caught != finished
    else:  # a sibling in the same task group cancels the group, structured-concurrency style

        async def stopper(group: anyio.abc.TaskGroup) -> None:
            await anyio.sleep(delay)
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(stopper, group)
            await op()
            group.cancel_scope.cancel()
    return finished


@dataclass
class _Outcomes:
    trials: int = 0
    cancelled: int = 0
    mid_flight: int = 0  # cancelled after some of the operation's requests reached the server


def _assert_engine_idle(engine: ChatEngine) -> None:
    assert engine.scheduler.in_flight == 0
    assert engine.scheduler.queued == 0
    assert engine._in_flight == {}
    session = engine.transport._session  # type: ignore[attr-defined]
    if session is not None:
        assert not session.connector._acquired  # every connection back in the pool or closed


async def _cancellation_trials(target: str, seed: int) -> _Outcomes:
    outcomes = _Outcomes()
    config = SimConfig(latency="uniform:20ms,50ms", seed=seed, responder=_sim_responder)
    sim = SimServer(config)
    async with sim:
        engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="sk", retry=FAST_RETRY)
        trainer = Trainer(engine)
        batch = _batch(0, 4)
        total = await trainer.losses(batch)
        if target == "step":
            await total.backward(engine)
        rng = random.Random(f"{target}:{seed}")
        span = {"backward": 0.12, "step": 0.06, "evaluation": 0.06}[target]
        for how in _MECHANISMS:
            for delay in (0.0, *(rng.uniform(0.0, span) for _ in range(3))):
                values = trainer.values()
                steps = trainer.optimizer.steps
                if target == "backward":
                    trainer.optimizer.zero_grad()

                    async def operation() -> None:
                        await total.backward(engine)

                elif target == "step":

                    async def operation() -> None:
                        await trainer.optimizer.step()

                else:

                    async def operation() -> None:
                        xs = [
                            tg.Variable(q, requires_grad=False, role_description="question")
                            for q, _ in batch
                        ]
                        await asyncio.gather(*(trainer.model(x) for x in xs))

                requests_before = sim.stats()["requests"]
                finished = await _cancel_after(operation, how, delay)
                reached = sim.stats()["requests"] - requests_before
                outcomes.trials += 1
                outcomes.cancelled += not finished
                outcomes.mid_flight += (not finished) and reached > 0

                # nothing half-written: all of the operation's effect, or none of it
                assert not _client_tasks()
                _assert_engine_idle(engine)
                if target == "backward":
                    expected = (4, 4) if finished else (0, 0)
                    assert trainer.gradient_counts() == expected
                    assert trainer.values() == values
                elif target == "step":
                    assert trainer.gradient_counts() == (4, 4)
                    assert trainer.optimizer.steps == steps + finished
                    changed = [
                        new != old for old, new in zip(values, trainer.values(), strict=True)
                    ]
                    assert changed == [finished, finished]
                else:
                    assert trainer.values() == values

        # the engine is still fine: a whole step goes through
        before = trainer.values()
        await trainer.step(_batch(1, 4))
        assert trainer.gradient_counts() == (4, 4)
        assert all(new != old for old, new in zip(before, trainer.values(), strict=True))
        session = engine.transport._session  # type: ignore[attr-defined]
        await engine.aclose()
        assert session is not None and session.closed
    gc.collect()
    assert {t for t in asyncio.all_tasks() if not t.done()} == {asyncio.current_task()}
    return outcomes


@pytest.mark.parametrize("target", ["backward", "step", "evaluation"])
async def test_cancellation_at_random_points_leaves_nothing_half_done(target: str) -> None:
    """Cancel a backward, a step or an evaluation fan-out at 16 seeded points (4 mechanisms):
    gradients all or none, parameters all or none, no task, slot or connection left, and the
    engine runs a full step afterwards."""
    outcomes = await _cancellation_trials(target, seed=3)
    assert outcomes.trials == 16
    assert outcomes.mid_flight >= 4  # most points really land while requests are in flight
    print(
        f"\nRELIABILITY cancel[{target}]: {outcomes.trials} trials, {outcomes.cancelled} "
        f"cancelled ({outcomes.mid_flight} with requests in flight)"
    )
