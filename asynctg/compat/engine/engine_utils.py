"""``textgrad.engine.engine_utils``: image-type checks on raw bytes (``asynctg.engine.types``)."""

from __future__ import annotations

from asynctg.engine.types import sniff_image
from asynctg.errors import ConfigError

__all__ = ["get_image_type_from_bytes", "is_jpeg", "is_png"]


def is_jpeg(data: bytes) -> bool:
    """True for JPEG bytes."""
    return sniff_image(data) == "image/jpeg"


def is_png(data: bytes) -> bool:
    """True for PNG bytes."""
    return sniff_image(data) == "image/png"


def get_image_type_from_bytes(data: bytes) -> str:
    """``"jpeg"``, ``"png"``, ``"gif"`` or ``"webp"``; ``ConfigError`` for anything else."""
    mime = sniff_image(data)
    if mime is None:
        raise ConfigError("the bytes are not a PNG, JPEG, GIF or WebP image")
    return mime.split("/", 1)[1]
