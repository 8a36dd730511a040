"""TSGD-M: TGD with sampled past values and feedback, weighted by recency."""

from __future__ import annotations

import re
from typing import Any

import pytest

import asynctg as tg
from asynctg.errors import ConfigError
from asynctg.optim.momentum import SampledMomentum


class Recorder:
    """An engine that answers optimizer requests with a numbered value and keeps the prompts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def generate(self, content: Any, system_prompt: str | None = None, **kw: Any) -> str:
        self.prompts.append(str(content))
        return f"<IMPROVED_VARIABLE>value {len(self.prompts)}</IMPROVED_VARIABLE>"


async def _run(samples: int, decay: float, seed: int, steps: int = 5) -> list[str]:
    recorder = Recorder()
    engine = tg.engine.as_engine(recorder)
    v = tg.Variable("value 0", requires_grad=True, role_description="a prompt")
    opt = tg.TGD(
        engine=engine,
        parameters=[v],
        momentum_samples=samples,
        momentum_decay=decay,
        momentum_seed=seed,
    )
    for n in range(steps):
        v.gradients.append(
            tg.Variable(f"feedback {n}", requires_grad=False, role_description="feedback")
        )
        await opt.step()
        opt.zero_grad()
    await engine.aclose()
    return recorder.prompts


async def test_past_values_and_their_feedback_reach_the_prompt() -> None:
    """From the second step, the prompt holds sampled past values with the feedback each got."""
    prompts = await _run(samples=2, decay=0.5, seed=1)
    assert "<PAST_ITERATIONS>" not in prompts[0]
    for text in prompts[1:]:
        block = re.search(r"<PAST_ITERATIONS>(.*)</PAST_ITERATIONS>", text, re.S)
        assert block is not None
        pairs = re.findall(r"value (\d+)\nFeedback it received: feedback (\d+)", block.group(1))
        assert 1 <= len(pairs) <= 2
        assert all(v == f for v, f in pairs)  # each value with the feedback it received
        assert [int(v) for v, _ in pairs] == sorted(int(v) for v, _ in pairs)  # oldest first


async def test_same_seed_same_prompts_and_steep_decay_takes_the_latest() -> None:
    """Draws are reproducible for a seed; a tiny decay always picks the most recent steps."""
    assert await _run(2, 0.5, seed=3) == await _run(2, 0.5, seed=3)
    prompts = await _run(samples=1, decay=1e-9, seed=0)
    for n, text in enumerate(prompts[1:], start=1):
        assert f"value {n - 1}\nFeedback it received: feedback {n - 1}" in text


def test_a_step_draws_once_and_bad_settings_are_config_errors() -> None:
    """Rendering a step's prompt twice shows the same sample; invalid settings are refused."""
    m = SampledMomentum(2, 0.9, seed=0)
    for n in range(6):
        m.record("p", f"v{n}", f"f{n}")
    assert m.draw("p", 4) == m.draw("p", 4)
    with pytest.raises(ConfigError):
        SampledMomentum(0)
    with pytest.raises(ConfigError):
        SampledMomentum(1, decay=0.0)
