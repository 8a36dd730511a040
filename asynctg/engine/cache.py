"""A persistent response cache: an append-only log of (request hash -> result) records.

Appending is cheap and crash-safe enough for its job: a record is written with one ``write``
call, so a killed process (even ``kill -9``) leaves every finished record in the file, and a
record cut off by a crash mid-write is dropped (and truncated away) on the next open. Nothing is
ever rewritten in place. The whole index lives in memory; a cache of a million answers of a few
KiB is a few GiB, so use one file per project or run, not one for everything.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Protocol

import msgspec

from asynctg.engine.types import ChatResult
from asynctg.errors import ConfigError

__all__ = ["ResponseCache", "ResponseStore"]


class ResponseStore(Protocol):
    """What an engine needs of a cache: ``ResponseCache``, or e.g. a ``diskcache`` adapter."""

    def get(self, key: str) -> ChatResult | None: ...

    def put(self, key: str, result: ChatResult) -> None: ...

    def close(self) -> None: ...


_HEADER = struct.Struct("<I")
_MAGIC = b"asynctg-cache-v1\n"


class _Record(msgspec.Struct, array_like=True):
    key: str
    result: ChatResult


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Record).decode


class ResponseCache:
    """Maps request keys (``request_key``) to ``ChatResult``s, persisted in one file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cache.bin"
    >>> cache = ResponseCache(path)
    >>> len(cache)
    0
    >>> cache.close()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the cache folder {self.path.parent}: {exc}") from exc
        self._entries: dict[str, ChatResult] = {}
        self._lock = threading.Lock()  # the compat layer may write from several threads
        self._fd: int | None = None
        self._open()

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open the response cache {self.path}: {exc}") from exc
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        if not data:
            os.write(fd, _MAGIC)
        elif not data.startswith(_MAGIC):
            os.close(fd)
            raise ConfigError(
                f"{self.path} is not an asynctg response cache; pass another cache path"
            )
        else:
            good = self._load(data)
            if good < len(data):
                # A crash cut the last record short: drop the partial bytes so appends line up.
                os.ftruncate(fd, good)
        self._fd = fd

    def _load(self, data: bytes) -> int:
        pos = len(_MAGIC)
        size = len(data)
        while pos + _HEADER.size <= size:
            (length,) = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if end > size:
                break
            try:
                record = _decode(data[pos + _HEADER.size : end])
            except (msgspec.DecodeError, msgspec.ValidationError):
                break
            self._entries[record.key] = record.result
            pos = end
        return pos

    def get(self, key: str) -> ChatResult | None:
        return self._entries.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, result: ChatResult) -> None:
        """Record ``result``; written to the file before this returns."""
        payload = _encode(_Record(key, msgspec.structs.replace(result, cached=False)))
        with self._lock:
            if self._fd is None:  # closed with its engine, and the engine is in use again
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            os.write(self._fd, _HEADER.pack(len(payload)) + payload)
            self._entries[key] = result

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<ResponseCache {self.path} entries={len(self._entries)}>"
