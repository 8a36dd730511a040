"""``textgrad.tasks.multimodal.scienceqa``: ScienceQA's answer helpers; the data set itself is
not loaded by asynctg (``ScienceQADataset`` raises ``ConfigError`` saying so)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from asynctg.compat.loss import ImageQALoss
from asynctg.compat.tasks.base import Dataset
from asynctg.compat.tasks.multimodal._common import (
    UnavailableImageDataset,
    compress_image,
    last_answer,
    most_similar,
    safe_equal,
)
from asynctg.compat.variable import Variable

__all__ = [
    "Dataset",
    "ImageQALoss",
    "ScienceQADataset",
    "Variable",
    "compress_image",
    "extract_answer",
    "find_most_similar_choice",
    "normalize_extracted_answer",
    "preprocess_text",
    "safe_equal",
]


def preprocess_text(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def find_most_similar_choice(text: str, choices: Sequence[str]) -> int:
    """Index of the choice most similar to ``text``."""
    cleaned = [preprocess_text(c) for c in choices]
    best = most_similar(preprocess_text(text), cleaned)
    return cleaned.index(best) if cleaned else -1


def extract_answer(response_text: str) -> str:
    """The final answer a response states (what follows its last ``Answer:``)."""
    return last_answer(response_text)


def normalize_extracted_answer(
    extracted_answer: str, question_data: Any, options: Sequence[str]
) -> str:
    """An extraction as an option letter: a bare letter stays, text maps to its closest option."""
    text = extracted_answer.strip().strip("()").strip()
    letters = [chr(65 + i) for i in range(len(options))]
    if text.upper() in letters:
        return text.upper()
    index = find_most_similar_choice(text, options)
    return letters[index] if index >= 0 else text


class ScienceQADataset(UnavailableImageDataset):
    """ScienceQA (not loaded by asynctg; see the module)."""

    name = "ScienceQA"
