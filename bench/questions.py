"""Object-counting questions in the BBH format, generated from a seed (no data download)."""

from __future__ import annotations

import random

_ITEMS = ["flute", "piano", "trombone", "violin", "accordion", "clarinet", "drum", "trumpet"]
_NUMBERS = ["a", "two", "three", "four", "five"]

SYSTEM_PROMPT = (
    "You will answer a reasoning question. Think step by step. The last line of your response "
    "should be of the following format: 'Answer: $VALUE' where VALUE is a numerical value."
)


def questions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (question, answer) pairs like BBH object counting's."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        picks = rng.sample(_ITEMS, rng.randint(2, 5))
        counts = [rng.randint(1, 5) for _ in picks]
        parts = [
            f"{_NUMBERS[c - 1]} {item}{'s' if c > 1 else ''}"
            for item, c in zip(picks, counts, strict=True)
        ]
        listing = ", ".join(parts[:-1]) + f", and {parts[-1]}"
        out.append((f"I have {listing}. How many musical instruments do I have?", str(sum(counts))))
    return out


def parse_integer_answer(answer: str) -> int:
    """The last number in a reply (TextGrad's lenient parse for object counting)."""
    tokens = [t for t in answer.strip().split() if any(c.isdigit() for c in t)]
    if not tokens:
        return 0
    digits = "".join(c for c in tokens[-1].split(".")[0] if c.isdigit())
    return int(digits) if digits else 0
