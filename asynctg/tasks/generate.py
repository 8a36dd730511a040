"""Tasks generated from a seed, in the formats of the paper's data sets, so nothing is downloaded.

The same seed always gives the same examples (``random.Random(seed)``, no global state).

>>> object_counting(1, seed=0)[0].question.startswith("I have ")
True
>>> word_sorting(1, seed=0)[0].question.startswith("Sort the following words alphabetically")
True
"""

from __future__ import annotations

import random

from asynctg.prompts import multiple_choice_query
from asynctg.tasks.types import QA, CodeProblem, MultipleChoice

__all__ = ["arithmetic_choice", "object_counting", "python_basics", "word_sorting"]

# BIG-Bench Hard object counting: the categories its questions ask about, and their items.
_CATEGORY_ITEMS: dict[str, tuple[str, ...]] = {
    "musical instruments": (
        "piano",
        "flute",
        "trombone",
        "violin",
        "accordion",
        "clarinet",
        "drum",
        "trumpet",
    ),
    "fruits": ("apple", "banana", "grape", "nectarine", "orange", "peach", "plum", "strawberry"),
    "vegetables": ("cabbage", "carrot", "garlic", "lettuce", "onion", "potato", "yam"),
    "animals": ("bear", "cat", "chicken", "cow", "donkey", "duck", "frog", "goat", "pig", "rabbit"),
    "objects": ("bed", "car", "chair", "couch", "fridge", "lamp", "microwave", "oven", "table"),
}
_IRREGULAR = {"mouse": "mice", "fish": "fish", "peach": "peaches", "strawberry": "strawberries"}
_QUANTITY_WORDS = ("two", "three", "four", "five")


def _plural(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("ch", "sh", "x", "ss")) or noun == "potato":
        return noun + "es"
    return noun + "s"


def _phrase(noun: str, count: int) -> str:
    if count == 1:
        return ("an " if noun[0] in "aeiou" else "a ") + noun
    return f"{_QUANTITY_WORDS[count - 2]} {_plural(noun)}"


def object_counting(n: int, seed: int | str = 0) -> list[QA]:
    """``n`` object-counting questions in BBH's format, with the count as the answer.

    A question lists items with quantities (a/an, two to five) and asks how many of one
    category there are; items of other categories are listed as distractors, except for
    "objects" questions, which list only objects.

    >>> object_counting(2, seed=1) == object_counting(2, seed=1)
    True
    """
    rng = random.Random(f"asynctg-object-counting:{seed}")
    out = []
    categories = list(_CATEGORY_ITEMS)
    for _ in range(n):
        asked = rng.choice(categories)
        items = rng.sample(_CATEGORY_ITEMS[asked], rng.randint(2, 5))
        listed = [(item, rng.choice((1, 1, 2, 3, 4, 5))) for item in items]
        answer = sum(count for _, count in listed)
        if asked != "objects":
            others = [c for c in categories if c not in (asked, "objects")]
            for _ in range(rng.randint(0, 3)):
                listed.append((rng.choice(_CATEGORY_ITEMS[rng.choice(others)]), 1))
        rng.shuffle(listed)
        seen: set[str] = set()
        phrases = []
        for item, count in listed:
            if item in seen:  # a distractor drawn twice: list it once
                continue
            seen.add(item)
            phrases.append(_phrase(item, count))
        listing = ", ".join(phrases[:-1]) + f", and {phrases[-1]}"
        out.append(QA(f"I have {listing}. How many {asked} do I have?", str(answer)))
    return out


_WORDS = (
    "abbey acorn admiral almanac amber anchor anthem apricot arcade atlas autumn avalanche "
    "badger ballad bamboo banner barley basin beacon billow biscuit blizzard bonfire bramble "
    "breeze bronze bucket buffalo cabin cactus canyon caravan carpet castle cedar chalk "
    "chimney cinder citadel clover cobalt comet compass copper coral cottage crater crimson "
    "crystal cypress dagger dahlia delta desert dolphin domino dragon drizzle dune eagle "
    "ember emerald engine falcon feather fern fiddle flint forest fossil fountain galaxy "
    "garnet geyser glacier granite gravel harbor harvest hazel heron hollow horizon indigo "
    "island ivory jasmine jungle kettle kingdom lagoon lantern lava ledger lemon lichen "
    "lighthouse linen lotus magnet mango maple marble meadow mercury meteor mirror mosaic "
    "nectar nickel nutmeg oasis obsidian ocean olive onyx orchard otter paddle palace "
    "parchment pebble pepper pigeon pillar pine planet plaza prairie prism quartz quiver "
    "raven reef ribbon ripple river rocket saddle saffron sapphire satchel scarlet shadow "
    "silver spruce summit tangle thistle thunder timber topaz tunnel tundra valley velvet "
    "violet walnut willow winter zephyr"
).split()


def word_sorting(n: int, seed: int | str = 0) -> list[QA]:
    """``n`` word-sorting questions in BBH's format; the answer is the sorted words.

    >>> words = word_sorting(1, seed=3)[0].answer.split()
    >>> words == sorted(words)
    True
    """
    rng = random.Random(f"asynctg-word-sorting:{seed}")
    out = []
    for _ in range(n):
        words = rng.sample(_WORDS, rng.randint(3, 12))
        question = "Sort the following words alphabetically: List: " + " ".join(words)
        out.append(QA(question, " ".join(sorted(words))))
    return out


def arithmetic_choice(n: int, seed: int | str = 0) -> list[MultipleChoice]:
    """``n`` four-option arithmetic questions, for trying solution optimization offline.

    >>> q = arithmetic_choice(1, seed=0)[0]
    >>> q.answer in "ABCD" and len(q.choices) == 4
    True
    """
    rng = random.Random(f"asynctg-arithmetic-choice:{seed}")
    out = []
    for _ in range(n):
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        op = rng.choice("+-*")
        value = a + b if op == "+" else a - b if op == "-" else a * b
        wrong: set[int] = set()
        while len(wrong) < 3:
            candidate = value + rng.choice((-1, 1)) * rng.randint(1, 12)
            if candidate != value:
                wrong.add(candidate)
        choices = [str(value), *(str(w) for w in sorted(wrong))]
        rng.shuffle(choices)
        letter = chr(65 + choices.index(str(value)))
        question = f"What is {a} {op} {b}?"
        out.append(MultipleChoice(multiple_choice_query(question, choices), letter, tuple(choices)))
    return out


_PYTHON_BASICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "second_largest",
        'def second_largest(nums: List[int]) -> int:\n    """Return the second largest '
        "distinct value in nums (it has at least two distinct values).\n\n    Example: "
        'second_largest([3, 1, 3, 2]) == 2\n    """\n',
        (
            "assert second_largest([3, 1, 3, 2]) == 2",
            "assert second_largest([10, 20]) == 10",
            "assert second_largest([-5, -1, -1, -3]) == -3",
        ),
    ),
    (
        "run_length",
        'def run_length(s: str) -> str:\n    """Encode s as runs: each maximal run of one '
        "character becomes the character followed by the run's length.\n\n    Example: "
        "run_length('aaabcc') == 'a3b1c2'\n    \"\"\"\n",
        (
            "assert run_length('aaabcc') == 'a3b1c2'",
            "assert run_length('') == ''",
            "assert run_length('zzzzzzzzzzzz') == 'z12'",
        ),
    ),
    (
        "is_balanced",
        'def is_balanced(s: str) -> bool:\n    """Return True if every bracket in s, among '
        "()[]{}, is closed in the right order; other characters are ignored.\n\n    Example: "
        'is_balanced(\'a(b[c]d)\') == True\n    """\n',
        (
            "assert is_balanced('a(b[c]d)') == True",
            "assert is_balanced('(]') == False",
            "assert is_balanced('((') == False",
            "assert is_balanced('') == True",
        ),
    ),
    (
        "merge_intervals",
        'def merge_intervals(intervals: List[List[int]]) -> List[List[int]]:\n    """Merge '
        "overlapping closed intervals and return them sorted by start.\n\n    Example: "
        'merge_intervals([[1, 3], [2, 6], [8, 10]]) == [[1, 6], [8, 10]]\n    """\n',
        (
            "assert merge_intervals([[1, 3], [2, 6], [8, 10]]) == [[1, 6], [8, 10]]",
            "assert merge_intervals([[1, 4], [4, 5]]) == [[1, 5]]",
            "assert merge_intervals([]) == []",
        ),
    ),
    (
        "count_primes",
        'def count_primes(n: int) -> int:\n    """Return how many prime numbers are strictly '
        'less than n.\n\n    Example: count_primes(10) == 4\n    """\n',
        (
            "assert count_primes(10) == 4",
            "assert count_primes(0) == 0",
            "assert count_primes(2) == 0",
            "assert count_primes(100000) == 9592",
        ),
    ),
)


def python_basics() -> list[CodeProblem]:
    """Five small built-in coding problems with tests, for trying code optimization offline."""
    return [
        CodeProblem(task_id, prompt, tests, entry_point=task_id)
        for task_id, prompt, tests in _PYTHON_BASICS
    ]
