"""Fault mixes over loopback HTTP: a prompt-optimization run survives 5xx, dropped
connections, slow, truncated and malformed answers at 30%; retries equal the injected faults.

(Split from the former ``tests/test_reliability.py``; shared helpers in
``tests/reliability_support.py``.)
"""

from __future__ import annotations

import msgspec
import pytest
from reliability_support import (
    FAST_RETRY,
    Trainer,
    _batch,
    _is_optimizer_call,
    _no_backward_engine,  # noqa: F401  (autouse fixture)
    _sim_responder,
    _user_text,
)

import asynctg as tg
from asynctg.sim import FAULT_KINDS, SimConfig, SimServer

# --- 1. fault mixes over loopback HTTP -------------------------------------------------------


@pytest.mark.parametrize(("loss", "seed"), [("string", 11), ("judge", 12)])
async def test_fault_mix_at_30_percent_every_step_completes_and_retries_equal_faults(
    loss: str, seed: int
) -> None:
    """B=8, 3 steps, 30% of every fault kind: steps complete, each gradient arrives once.

    Counting, precisely: each injected fault costs the client exactly one retry. A 5xx, a
    dropped connection and the four unusable 200s are failures the client sees; a "slow" fault
    sleeps ``slow_seconds`` (30 s) before answering, far past the engine's 1 s timeout, so the
    client gives up and retries: one timeout, one retry. The simulator counts a slow answer in
    ``faults`` *and* in ``ok`` (it would have answered), so server-side ``ok`` exceeds the
    client's successful calls by exactly the slow faults.
    """
    batch_size, steps = 8, 3
    config = SimConfig(
        latency="uniform:1ms,5ms",
        fault_rate=0.3,
        faults=FAULT_KINDS,
        slow_seconds=30.0,
        seed=seed,
        record=True,
        responder=_sim_responder,
    )
    async with (
        SimServer(config) as sim,
        tg.get_engine(
            "sim-1", base_url=sim.base_url, api_key="sk-test", timeout=1.0, retry=FAST_RETRY
        ) as engine,
    ):
        trainer = Trainer(engine, loss=loss)
        distinct = 0  # different request bodies, step by step (retries resend the same body)
        for step in range(steps):
            before = trainer.values()
            seen = len(sim.requests)
            batch = _batch(step, batch_size)
            await trainer.step(batch)

            # every sample's feedback arrived exactly once, on both parameters
            assert trainer.gradient_counts() == (batch_size, batch_size)
            contexts = [
                trainer.system_prompt.gradients_context[g] for g in trainer.system_prompt.gradients
            ]
            for question, _ in batch:
                assert sum(question in str(c and c["context"]) for c in contexts) == 1
            assert len({str(g.value) for g in trainer.instruction.gradients}) == batch_size

            # the optimizer saw one <FEEDBACK> block per sample, in every request it was sent
            # (retries included), and exactly one distinct request per parameter
            sent = sim.requests[seen:]
            distinct += len({msgspec.json.encode(b, order="sorted") for b in sent})
            optimizer_bodies = {
                msgspec.json.encode(b, order="sorted") for b in sent if _is_optimizer_call(b)
            }
            assert len(optimizer_bodies) == 2
            for raw in optimizer_bodies:
                assert _user_text(msgspec.json.decode(raw)).count("</FEEDBACK>") == batch_size

            # the step was applied whole: both parameters rewritten from their old value
            after = trainer.values()
            for old, new in zip(before, after, strict=True):
                assert new != old and new.startswith(old)
            assert trainer.optimizer.steps == step + 1

        server = sim.stats()
        client = engine.stats()

    calls = steps * trainer.calls_per_step(batch_size)
    faults = server["faults_total"]
    slow = server["faults"].get("slow", 0)
    assert faults >= 0.2 * server["requests"]  # the mix really was about 30%
    assert len(server["faults"]) >= 8  # and really mixed
    assert client["calls"] == calls == distinct  # no call lost, none sent twice over
    assert client["retries"] == faults
    assert client["faults"] == faults
    assert client["rate_limited"] == client["coalesced"] == 0
    assert client["failures"] == 0
    assert client["requests"] == server["requests"] == calls + faults
    assert server["ok"] == calls + slow
    print(
        f"\nRELIABILITY fault-mix[{loss}]: {faults} faults of {len(server['faults'])} kinds "
        f"({dict(sorted(server['faults'].items()))}) over {server['requests']} requests "
        f"for {calls} calls; retries {client['retries']}"
    )
