"""What a run will spend, before it spends: calls, tokens and dollars, as a range.

The estimate is a dry run: the same loop, with the same task, prompts, models' names and
settings, against an in-process simulator at zero latency, so the calls are the run's own
calls and every prompt is measured, not guessed. What a real model changes is the length of
its replies (and the later prompts that quote them), so the range brackets those: the low end
counts replies at half the simulator's length; the high end counts prompts a quarter longer
and every reply at its cap (the request's ``max_tokens``, else the model's reply cap or the
engine's ``cost_reserve_tokens``: what a dollar cap reserves), so no reply length can pass it.
Prompt caching is priced as the simulator's provider cache reports it (cached reads at the
price's ``cached_input``, writes at its ``cache_write``) in the low and middle figures; the high
end prices every prompt token at the most one can cost (``Price.prompt_ceiling``: no cache hit,
or a cache write on every token), so a cold or evicted cache cannot pass it either.
After a first step, a run's journal holds real replies: their mean length rescales the middle
estimate and narrows the range (``calibrate``). A resumed run's dry run resumes too, from a
copy of its checkpoint: the calls its journal answers are counted (``journal_hits``) and cost
nothing. Nothing reaches the provider.

``finish_usd`` is the smallest ``--max-cost`` that lets the run finish: a dollar cap sends a
call only once the spending so far plus the call's worst case (``ChatEngine.worst_case_usd``)
fits, so a cap of the high end plus the largest single worst case admits every call, whatever
the replies' lengths. (Calls in flight at once each hold their worst case too; an engine that
refuses instead of waiting for them to settle needs that much more room.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

from asynctg.engine.client import ChatEngine
from asynctg.engine.types import ChatRequest
from asynctg.engine.usage import Price, check_price, nano_dollars, price_for
from asynctg.transport import HTTPRequest, HTTPResponse, Transport

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
    journal_hits: int = 0  # calls a resumed run's journal answers: free, not in the dollars
    finish_usd: float | None = None  # the smallest --max-cost that lets the run finish
    cached_tokens: int = 0  # prompt tokens the simulated provider's prompt cache answered
    cache_write_tokens: int = 0  # prompt tokens written to it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        cached = f" ({self.cached_tokens:,} cached)" if self.cached_tokens else ""
        tokens = (
            f"{self.prompt_tokens:,} prompt{cached} + {self.completion_tokens:,} completion tokens"
        )
        if self.expected_usd is None:
            cost = "cost n/a (no price: pass --price)"
        else:
            cost = f"${self.low_usd:.4f} - ${self.high_usd:.4f} (expected ${self.expected_usd:.4f})"
        hits = f" ({self.journal_hits:,} from the journal, free)" if self.journal_hits else ""
        note = " (calibrated on the journal's real replies)" if self.calibrated else ""
        text = f"estimate: {self.calls:,} calls{hits}, {tokens}, {cost}{note}"
        if self.finish_usd is not None:
            text += f"; --max-cost ${self.finish_usd:.4f} or more lets it finish"
        return text


class _WorstCases:
    """The dry run's transport: passes each request on, and adds up what a dollar cap reserves
    for it (its reply cap in tokens; the largest single worst-case price)."""

    def __init__(self, inner: Transport, engine: ChatEngine) -> None:
        self.inner = inner
        self.engine = engine
        self.reply_tokens = 0
        self.largest_usd = 0.0

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        chat = msgspec.json.decode(request.body, type=ChatRequest)
        self.reply_tokens += (chat.max_tokens or self.engine.cost_reserve_tokens) * (chat.n or 1)
        self.largest_usd = max(self.largest_usd, self.engine.worst_case_usd(chat) or 0.0)
        return await self.inner.send(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def dry_run(
    make_engine: Callable[[str, str], ChatEngine],
    models: Sequence[str],
    run: Callable[[dict[str, ChatEngine]], Awaitable[Any]],
    *,
    prices: dict[str, Price | tuple[float, float] | None] | None = None,
    max_tokens: int | None = None,
    reply_scale: float | None = None,
) -> Estimate:
    """Run ``run(engines)`` against an in-process simulator and price what it used.

    ``make_engine(model, base_url)`` builds an engine like the real run's; ``models`` are the
    run's model names (each engine is priced at its own model's price). ``max_tokens`` is
    accepted for older callers and not needed: each request's own reply cap is read as it is
    sent.
    """
    from asynctg.sim import SimConfig, SimServer

    engines: dict[str, ChatEngine] = {}
    watches: dict[str, _WorstCases] = {}
    async with SimServer(SimConfig(latency="0")) as sim:
        for model in dict.fromkeys(models):
            engine = engines[model] = make_engine(model, sim.base_url)
            watches[model] = _WorstCases(engine.transport, engine)
            engine.transport = watches[model]
        try:
            await run(engines)
        finally:
            for engine in engines.values():
                await engine.aclose()
    calls = prompt = completion = hits = cached = written = 0
    low = expected = high = largest = 0.0
    priced = True
    scale = reply_scale or 1.0
    for model, engine in engines.items():
        u = engine.usage
        calls += u.calls
        hits += u.cache_hits  # answered by a resumed run's journal: never sent, never paid
        prompt += u.prompt_tokens
        completion += u.completion_tokens
        cached += u.cached_tokens
        written += u.cache_write_tokens
        given = (prices or {}).get(model)
        price = check_price(given) if given is not None else price_for(model)
        if price is None:
            priced = False
            continue
        p_out = price.output / 1e6
        # the prompts as the simulated provider billed them: cached reads and writes priced
        prompts = (
            nano_dollars(price, u.prompt_tokens, 0, u.cached_tokens, u.cache_write_tokens) / 1e9
        )
        replies = u.completion_tokens * scale
        spread = (0.8, 1.25) if reply_scale else (0.5, 2.0)
        low += prompts * (0.95 if reply_scale else 0.9) + replies * spread[0] * p_out
        expected += prompts + replies * p_out
        # every reply at its cap: no reply can be longer (the provider stops it there); every
        # prompt token at the most it can cost (no cache hit, or a cache write)
        capped = max(watches[model].reply_tokens, replies)
        high += u.prompt_tokens * 1.25 * price.prompt_ceiling / 1e6 + capped * p_out
        largest = max(largest, watches[model].largest_usd)
    return Estimate(
        calls=calls,
        prompt_tokens=prompt,
        completion_tokens=int(completion * scale),
        low_usd=round(low, 6) if priced else None,
        expected_usd=round(expected, 6) if priced else None,
        high_usd=round(high, 6) if priced else None,
        reply_scale=round(scale, 3),
        calibrated=reply_scale is not None,
        journal_hits=hits,
        finish_usd=round(high + largest, 6) if priced else None,
        cached_tokens=cached,
        cache_write_tokens=written,
    )
