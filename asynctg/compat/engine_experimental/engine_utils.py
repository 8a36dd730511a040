"""``textgrad.engine_experimental.engine_utils``: image checks, and text/image lists as chat
content parts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asynctg.compat.engine.engine_utils import get_image_type_from_bytes, is_jpeg, is_png
from asynctg.engine.types import image_part

__all__ = ["get_image_type_from_bytes", "is_jpeg", "is_png", "open_ai_like_formatting"]


def open_ai_like_formatting(content: Sequence[str | bytes]) -> list[dict[str, Any]]:
    """Chat content parts: text parts for strings, base64 image parts for image bytes."""
    parts: list[dict[str, Any]] = []
    for item in content:
        if isinstance(item, bytes | bytearray):
            parts.append(image_part(bytes(item)))
        elif isinstance(item, str):
            parts.append({"type": "text", "text": item})
        else:
            raise ValueError(f"content items must be str or bytes, got {type(item).__name__}")
    return parts
