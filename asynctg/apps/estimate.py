"""What a run will spend, before it spends: calls, tokens and dollars, as a range.

The estimate is a dry run: the same loop, with the same task, prompts, models' names and
settings, against an in-process simulator at zero latency, so the calls are the run's own
calls and every prompt is measured, not guessed. What a real model changes is the length of
its replies (and the later prompts that quote them), so the range brackets those: the low end
counts replies at half the simulator's length, the high end counts prompts a quarter longer
and replies twice as long (capped at ``max_tokens`` when set). After a first step, a run's
journal holds real replies: their mean length rescales the middle estimate and narrows the
range (``calibrate``). Nothing reaches the provider.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from asynctg.engine.client import ChatEngine
from asynctg.engine.usage import price_for

__all__ = ["Estimate", "dry_run"]


@dataclass
class Estimate:
    """Calls and tokens of a dry run, and the dollar range (None without a price)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    low_usd: float | None
    expected_usd: float | None
    high_usd: float | None
    reply_scale: float = 1.0  # measured real / simulated reply length, after calibration
    calibrated: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        tokens = f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens"
        if self.expected_usd is None:
            cost = "cost n/a (no price: pass --price)"
        else:
            cost = f"${self.low_usd:.4f} - ${self.high_usd:.4f} (expected ${self.expected_usd:.4f})"
        note = " (calibrated on the journal's real replies)" if self.calibrated else ""
        return f"estimate: {self.calls:,} calls, {tokens}, {cost}{note}"


async def dry_run(
    make_engine: Callable[[str, str], ChatEngine],
    models: Sequence[str],
    run: Callable[[dict[str, ChatEngine]], Awaitable[Any]],
    *,
    prices: dict[str, tuple[float, float] | None] | None = None,
    max_tokens: int | None = None,
    reply_scale: float | None = None,
) -> Estimate:
    """Run ``run(engines)`` against an in-process simulator and price what it used.

    ``make_engine(model, base_url)`` builds an engine like the real run's; ``models`` are the
    run's model names (each engine is priced at its own model's price).
    """
    from asynctg.sim import SimConfig, SimServer

    engines: dict[str, ChatEngine] = {}
    async with SimServer(SimConfig(latency="0")) as sim:
        for model in dict.fromkeys(models):
            engines[model] = make_engine(model, sim.base_url)
        try:
            await run(engines)
        finally:
            for engine in engines.values():
                await engine.aclose()
    calls = prompt = completion = 0
    low = expected = high = 0.0
    priced = True
    scale = reply_scale or 1.0
    for model, engine in engines.items():
        u = engine.usage
        calls += u.calls
        prompt += u.prompt_tokens
        completion += u.completion_tokens
        price = (prices or {}).get(model) or price_for(model)
        if price is None:
            priced = False
            continue
        p_in, p_out = price[0] / 1e6, price[1] / 1e6
        replies = u.completion_tokens * scale
        cap = max_tokens * u.calls if max_tokens else None
        spread = (0.8, 1.25) if reply_scale else (0.5, 2.0)
        low += u.prompt_tokens * (0.95 if reply_scale else 0.9) * p_in + replies * spread[0] * p_out
        expected += u.prompt_tokens * p_in + replies * p_out
        top = replies * spread[1] if cap is None else min(replies * spread[1], cap)
        high += u.prompt_tokens * 1.25 * p_in + max(top, replies) * p_out
    return Estimate(
        calls=calls,
        prompt_tokens=prompt,
        completion_tokens=int(completion * scale),
        low_usd=round(low, 6) if priced else None,
        expected_usd=round(expected, 6) if priced else None,
        high_usd=round(high, 6) if priced else None,
        reply_scale=round(scale, 3),
        calibrated=reply_scale is not None,
    )
