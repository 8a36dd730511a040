"""Sampling-based momentum for TGD (TSGD-M): past values and their feedback, drawn by recency.

Plain momentum (``TextualGradientDescentwithMomentum``) shows the optimizer the last few values.
TSGD-M instead keeps every past (value, feedback) pair of a parameter and, at each step, draws
``samples`` of them without replacement with weight ``decay ** age`` (age 0: the previous
step), so recent iterations dominate while older ones still appear now and then; the draws go
into the optimizer's ``<PAST_ITERATIONS>`` block, oldest first, each with the feedback it got.
Draws come from a generator seeded once, and are made once per parameter and step, so the
prompt (and a cache key) stays the same however often a step renders it.
"""

from __future__ import annotations

import random
from typing import Any

from asynctg.errors import ConfigError

__all__ = ["SampledMomentum"]

#: Past iterations kept per parameter (older ones are dropped; their weight is negligible).
MAX_HISTORY = 64


class SampledMomentum:
    """The per-parameter history and the recency-weighted draw (see the module)."""

    def __init__(self, samples: int, decay: float = 0.5, seed: int = 0) -> None:
        if not isinstance(samples, int) or samples < 1:
            raise ConfigError("momentum_samples must be an integer >= 1")
        if not 0.0 < decay <= 1.0:
            raise ConfigError("momentum_decay must be in (0, 1]")
        self.samples = samples
        self.decay = decay
        self.rng = random.Random(seed)
        self.history: dict[Any, list[tuple[str, str]]] = {}
        self._drawn: dict[Any, tuple[int, list[tuple[str, str]]]] = {}

    def record(self, key: Any, value: str, feedback: str) -> None:
        """Remember the value a parameter had at a step and the feedback it received."""
        past = self.history.setdefault(key, [])
        past.append((value, feedback))
        del past[:-MAX_HISTORY]

    def draw(self, key: Any, step: int) -> list[tuple[str, str]]:
        """This step's sample for ``key``, oldest first (the same on every call in a step)."""
        cached = self._drawn.get(key)
        if cached is not None and cached[0] == step:
            return cached[1]
        past = self.history.get(key, [])
        pool = list(range(len(past)))
        chosen: list[int] = []
        while pool and len(chosen) < self.samples:
            weights = [self.decay ** (len(past) - 1 - i) for i in pool]
            pick = self.rng.choices(pool, weights=weights, k=1)[0]
            pool.remove(pick)
            chosen.append(pick)
        sample = [past[i] for i in sorted(chosen)]
        self._drawn[key] = (step, sample)
        return sample
