"""Where the compat task loaders look for data, and the error when it is not there.

asynctg downloads nothing: each loader reads the files TextGrad would have downloaded, from the
folder TextGrad downloads into (``platformdirs.user_cache_dir("textgrad")``: ``~/.cache/textgrad``
on Linux, or ``$XDG_CACHE_HOME/textgrad``), from ``$TEXTGRAD_DATA_DIR``, or from ``root=``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asynctg.errors import ConfigError

__all__ = ["data_root", "find"]

SOURCES = {
    "object_counting": "https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/main/bbh/"
    "object_counting.json",
    "word_sorting": "https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/main/bbh/"
    "word_sorting.json",
    "gsm8k": "https://raw.githubusercontent.com/openai/grade-school-math/master/"
    "grade_school_math/data/test.jsonl (and train.jsonl)",
    "mmlu": "the MMLU subset's records (question, choices, answer), e.g. from the cais/mmlu "
    "data set",
    "gpqa": "gpqa_diamond.csv from the GPQA data set",
    "leetcode_hard": "leetcode_with_tests.jsonl (TextGrad's LeetCode-Hard file)",
}


def data_root(root: Any = None) -> Path:
    """``root``, else ``$TEXTGRAD_DATA_DIR``, else TextGrad's own download folder."""
    if root is not None:
        return Path(root)
    explicit = os.environ.get("TEXTGRAD_DATA_DIR")
    if explicit:
        return Path(explicit)
    try:
        import platformdirs
    except ImportError:  # the XDG layout platformdirs uses on Linux
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "textgrad"
    return Path(platformdirs.user_cache_dir("textgrad"))


def find(root: Path, name: str, candidates: Sequence[str]) -> Path:
    """The first of ``candidates`` under ``root``; a ConfigError naming what to fetch if none."""
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    raise ConfigError(
        f"{name}: no data under {root} (looked for {', '.join(candidates)}). asynctg downloads "
        f"nothing; fetch {SOURCES.get(name, 'the data set')} into {root} (or pass root=DIR, or "
        "set TEXTGRAD_DATA_DIR)."
    )
