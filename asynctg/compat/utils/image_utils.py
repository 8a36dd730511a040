"""``textgrad.utils.image_utils``: URL checks and fetching an image into a local cache file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["download_and_cache_image", "is_valid_url"]


def is_valid_url(url: str) -> bool:
    """True for an absolute URL (a scheme and a host)."""
    try:
        parts = urlparse(url)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc)


def download_and_cache_image(image_url: str) -> str:
    """The path of a local copy of ``image_url``, fetched (with httpx) the first time only,
    under ``asynctg.compat.engine.cache_dir()/images``."""
    from asynctg.compat.engine import cache_dir
    from asynctg.compat.variable import _fetch

    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = Path(urlparse(image_url).path).suffix[:8]
    path = folder / (hashlib.sha256(image_url.encode()).hexdigest() + suffix)
    if not path.exists():
        data = _fetch(image_url)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path)
