"""Rows of a Hugging Face data set through the optional ``datasets`` package.

``datasets`` is not a dependency of asynctg: install it (``pip install datasets``) to use
``--data hf``. It reads the local Hugging Face cache first; set ``HF_HUB_OFFLINE=1`` to make
sure nothing is downloaded (a data set that is not cached is then a clear error).
"""

from __future__ import annotations

from typing import Any

from asynctg.errors import ConfigError

__all__ = ["DEFAULT_DATASETS", "load_rows", "parse_spec"]

#: The data set (name, configuration) ``--data hf`` means for each task.
DEFAULT_DATASETS: dict[str, tuple[str, str | None]] = {
    "object_counting": ("lukaemon/bbh", "object_counting"),
    "word_sorting": ("lukaemon/bbh", "word_sorting"),
    "gsm8k": ("openai/gsm8k", "main"),
    "mmlu": ("cais/mmlu", "machine_learning"),
    "gpqa": ("Idavidrein/gpqa", "gpqa_diamond"),
}


def parse_spec(spec: str, task: str) -> tuple[str, str | None]:
    """``"hf"`` or ``"hf:NAME[:CONFIG]"`` -> (name, config), defaulting per task.

    >>> parse_spec("hf:cais/mmlu:college_physics", "mmlu")
    ('cais/mmlu', 'college_physics')
    """
    rest = spec[2:].lstrip(":")
    if not rest:
        if task not in DEFAULT_DATASETS:
            raise ConfigError(
                f"task {task!r} has no Hugging Face data set; pass a local file with --data"
            )
        return DEFAULT_DATASETS[task]
    name, _, config = rest.partition(":")
    return name, config or None


def load_rows(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """The rows of one split, as dicts; ``ConfigError`` when it cannot be had."""
    try:
        import datasets  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise ConfigError(
            "--data hf needs the optional 'datasets' package: pip install datasets "
            "(or pass a local file with --data PATH)"
        ) from exc
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many kinds; all mean "not available here"
        raise ConfigError(
            f"cannot load {name}{f' ({config})' if config else ''} split {split!r} through "
            f"Hugging Face datasets: {exc}. Download it once with network access, or pass a "
            "local file with --data PATH."
        ) from exc
    return [dict(row) for row in data]
