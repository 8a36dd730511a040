"""What the MathVista and ScienceQA modules share: image shrinking, answer matching, and the
data set stand-in (asynctg reads these image data sets from nowhere yet)."""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Sequence
from typing import Any

from asynctg.compat.tasks.base import Dataset
from asynctg.errors import ConfigError

#: How many times an image is shrunk at most before giving up on the byte limit.
_MAX_SHRINKS = 20


def compress_image(decoded_image: Any, max_size_bytes: float = 3.6 * 1024 * 1024) -> bytes:
    """PNG bytes of a PIL image, halved in size until they fit ``max_size_bytes``."""
    image = decoded_image
    for _ in range(_MAX_SHRINKS):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        if len(data) <= max_size_bytes:
            return data
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)))
    raise ConfigError(f"the image does not fit in {max_size_bytes:.0f} bytes")


def most_similar(text: str, choices: Sequence[str]) -> str:
    """The choice closest to ``text`` (difflib's ratio)."""
    if not choices:
        return text
    return max(choices, key=lambda c: difflib.SequenceMatcher(None, text, str(c)).ratio())


def last_answer(text: str) -> str:
    """What follows the last ``Answer:`` in ``text`` (stripped), else the text itself."""
    found = re.findall(r"answer\s*:\s*(.+)", text, flags=re.IGNORECASE)
    return found[-1].strip() if found else text.strip()


def safe_equal(prediction: Any, answer: Any) -> bool:
    """``prediction == answer``, False where comparing raises."""
    try:
        return bool(prediction == answer)
    except Exception:
        return False


class UnavailableImageDataset(Dataset):
    """An image data set asynctg does not load (it reads local files only)."""

    name = "this data set"

    def __init__(self, evaluation_api: Any = None, *args: Any, **kwargs: Any) -> None:
        raise ConfigError(
            f"asynctg.compat does not load {self.name}: it downloads nothing and reads no "
            "Hugging Face image data sets. Load the items yourself and use "
            "tg.loss.ImageQALoss as the test-time objective."
        )

    def __getitem__(self, index: int) -> Any:
        raise IndexError(index)

    def __len__(self) -> int:
        return 0
