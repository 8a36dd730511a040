"""``textgrad.tasks.multimodal.mathvista``: MathVista's answer helpers; the data set itself is
not loaded by asynctg (``MathVistaDataset`` raises ``ConfigError`` saying so)."""

from __future__ import annotations

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
    "MathVistaDataset",
    "Variable",
    "compress_image",
    "create_test_prompt",
    "demo_prompt",
    "extract_answer",
    "get_most_similar",
    "normalize_extracted_answer",
    "safe_equal",
    "verify_extraction",
]

#: Instruction heading the answer-extraction prompt (``create_test_prompt``).
demo_prompt = (
    "Read the model response to the question below and write out its final answer only, in the "
    "form the question asks for (a letter, a number, or a short phrase)."
)


def verify_extraction(extraction: Any) -> bool:
    """True when an extracted answer is a non-empty string."""
    return isinstance(extraction, str) and extraction.strip() != ""


def create_test_prompt(demo_prompt: str, query: str, response: str) -> str:
    """The answer-extraction prompt: instruction, question, response, and an open answer."""
    return f"{demo_prompt.strip()}\n\n{query}\n\nModel response: {response}\n\nExtracted answer: "


def extract_answer(response: str, problem: Any = None, quick_extract: bool = False) -> str:
    """The final answer a response states (what follows its last ``Answer:``)."""
    return last_answer(response) if response else ""


def get_most_similar(prediction: str, choices: Sequence[str]) -> str:
    """The choice most similar to ``prediction``."""
    return most_similar(prediction, choices)


def normalize_extracted_answer(extraction: str, question_data: dict[str, Any]) -> Any:
    """An extraction as a choice (multiple choice), an int, a rounded float, or text."""
    if question_data.get("question_type") == "multi_choice":
        return get_most_similar(extraction, question_data.get("choices") or [])
    kind, precision = question_data.get("answer_type"), question_data.get("precision")
    try:
        if kind == "integer":
            return str(int(float(extraction)))
        if kind == "float":
            return str(round(float(extraction), int(precision or 0)))
    except ValueError:
        return None
    return extraction


class MathVistaDataset(UnavailableImageDataset):
    """MathVista (not loaded by asynctg; see the module)."""

    name = "MathVista"
