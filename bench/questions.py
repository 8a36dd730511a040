"""Object-counting questions in the BBH format, generated from a seed (no data download)."""

from __future__ import annotations

import json
import random
from pathlib import Path

_ITEMS = ["flute", "piano", "trombone", "violin", "accordion", "clarinet", "drum", "trumpet"]
_NUMBERS = ["a", "two", "three", "four", "five"]


def questions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (question, answer) pairs like BBH object counting's.

    Distinct, because asynctg sends identical requests in flight once: repeated questions
    would make its step cheaper than 3B+1 calls and the comparison unfair to TextGrad.
    """
    rng = random.Random(seed)
    out: dict[str, str] = {}
    while len(out) < n:
        picks = rng.sample(_ITEMS, rng.randint(2, 5))
        counts = [rng.randint(1, 5) for _ in picks]
        parts = [
            f"{_NUMBERS[c - 1]} {item}{'s' if c > 1 else ''}"
            for item, c in zip(picks, counts, strict=True)
        ]
        listing = ", ".join(parts[:-1]) + f", and {parts[-1]}"
        out.setdefault(
            f"I have {listing}. How many musical instruments do I have?", str(sum(counts))
        )
    return list(out.items())


def write_bbh_file(path: Path, n: int, seed: int = 0) -> Path:
    """Write ``questions(n)`` as a BBH task file (``{"examples": [{"input", "target"}]}``).

    The step benchmark feeds it to ``compat_script.py --data``, so the native step, the
    unchanged script under ``asynctg.compat`` and TextGrad all see the same questions.
    """
    examples = [{"input": q, "target": a} for q, a in questions(n, seed)]
    path.write_text(json.dumps({"examples": examples}))
    return path
