"""A persistent response cache: an append-only log of (request hash -> result) records.

::

    file   := b"asynctg-cache-v2\\n" record*
    record := MAGIC (4 bytes) | length (u32 LE) | crc (u32 LE) | payload (length bytes, msgpack)

``crc`` is the CRC-32 of the length field and the payload, so a flipped byte anywhere in a
record, its length included, is caught. A damaged record is skipped, logged on the
``asynctg.cache`` logger and counted in ``skipped``; the reader then scans forward for the next
``MAGIC`` whose record checks out, so damage costs the records it hit and never the ones after
it. Nothing is deleted but a record cut off at the very end of the file (a crash mid-write:
``MAGIC`` and a length that runs past the end), which is truncated away on open so the next
append starts on a clean boundary. A damaged last record whose length field was hit looks
exactly like that and goes the same way.

Several processes may share one file. Each append is one whole record, written with
``O_APPEND`` under an exclusive ``flock`` (a short write is continued before the lock is
released), and opening reads the file and decides what to truncate under the same lock, so
appends never interleave and an open never mistakes another process's record in progress for
a torn one. Records another process appends after this one opened the file are not seen by it.
Where ``fcntl`` does not exist (Windows) there is no lock: use one process per file there.

A version-1 file (``asynctg-cache-v1``: length-prefixed records without checksum) is read
and rewritten as version 2 on open, under the lock; its records are kept, and if any of it
could not be read the old file is kept next to the new one as ``<name>.v1``.

A new file is created 0600 (owner only); an existing one keeps its mode. Nothing is ever
rewritten in place. The whole index lives in memory; a cache of a million
answers of a few KiB is a few GiB, so use one file per project or run, not one for everything.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import shutil
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import msgspec

from asynctg.engine.types import ChatResult
from asynctg.errors import ConfigError

__all__ = ["ResponseCache", "ResponseStore"]

_log = logging.getLogger("asynctg.cache")


class ResponseStore(Protocol):
    """What an engine needs of a cache: ``ResponseCache``, or e.g. a ``diskcache`` adapter."""

    def get(self, key: str) -> ChatResult | None: ...

    def put(self, key: str, result: ChatResult) -> None: ...

    def close(self) -> None: ...


_FILE_MAGIC = b"asynctg-cache-v2\n"
_FILE_MAGIC_V1 = b"asynctg-cache-v1\n"
_V1_HEADER = struct.Struct("<I")
#: Starts every record, so a reader can find the next record after a damaged one. Not valid
#: UTF-8 (0xA7 is a continuation byte), so it is rare inside the text a payload mostly holds,
#: and a chance match inside a payload is rejected by the checksum anyway.
_RECORD_MAGIC = b"\xa7TGr"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32(length field + payload)
#: Opens (and version-1 upgrades) raced by other processes before giving up; one is the norm.
_OPEN_ATTEMPTS = 8


class _Record(msgspec.Struct, array_like=True):
    key: str
    result: ChatResult


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Record).decode


def _checksum(header: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(header[4:8]))


def _frame(payload: bytes) -> bytes:
    length = len(payload)
    header = _HEADER.pack(_RECORD_MAGIC, length, 0)
    return _HEADER.pack(_RECORD_MAGIC, length, _checksum(header, payload)) + payload


if sys.platform == "win32":

    @contextlib.contextmanager
    def _locked(fd: int) -> Iterator[None]:
        yield  # no fcntl: one process per file (see the module docstring)

else:
    import fcntl

    @contextlib.contextmanager
    def _locked(fd: int) -> Iterator[None]:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # never for a regular file; a loop that cannot end is worse than this
            raise OSError(errno.EIO, "write() wrote nothing")
        view = view[written:]


def _read_all(fd: int) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        return f.read()


class ResponseCache:
    """Maps request keys (``request_key``) to ``ChatResult``s, persisted in one file.

    ``skipped`` counts the damaged stretches skipped on open (each usually one record),
    ``position`` is the byte offset just past the last record this object read or wrote. With
    ``mark_from`` (an earlier ``position``), the keys of the records read on open that start at
    or after that offset are collected in ``marked``: a checkpoint uses it to find the calls
    its saved state has not counted.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cache.bin"
    >>> cache = ResponseCache(path)
    >>> len(cache), cache.skipped
    (0, 0)
    >>> cache.close()
    """

    def __init__(self, path: str | os.PathLike[str], *, mark_from: int | None = None) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the cache folder {self.path.parent}: {exc}") from exc
        self._entries: dict[str, ChatResult] = {}
        self._lock = threading.Lock()  # the compat layer may write from several threads
        self._fd: int | None = None
        self.skipped = 0
        self.position = 0
        self.mark_from = mark_from
        self.marked: set[str] = set()
        self._open()

    # --- opening -------------------------------------------------------------------------

    def _open(self) -> None:
        for _ in range(_OPEN_ATTEMPTS):
            try:
                # 0600: the answers (and a journal's prompts) are the owner's alone
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                raise ConfigError(f"cannot open the response cache {self.path}: {exc}") from exc
            try:
                with _locked(fd):
                    if self._replaced(fd):
                        continue  # upgraded by another process while we waited for the lock
                    if self._load_file(fd):
                        self._fd, fd = fd, -1
                        return
            except OSError as exc:
                raise ConfigError(f"cannot use the response cache {self.path}: {exc}") from exc
            finally:
                if fd >= 0:
                    os.close(fd)
        raise ConfigError(
            f"cannot open the response cache {self.path}: it kept being replaced while opening"
        )

    def _replaced(self, fd: int) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def _load_file(self, fd: int) -> bool:
        """Load the file (the lock held); False if it was upgraded and must be opened again."""
        data = _read_all(fd)
        if len(data) < len(_FILE_MAGIC) and _FILE_MAGIC.startswith(data):
            # empty, or a crash cut the very first write short: nothing to lose
            os.ftruncate(fd, 0)
            _write_all(fd, _FILE_MAGIC)
            self.position = len(_FILE_MAGIC)
            return True
        if data.startswith(_FILE_MAGIC_V1):
            self._upgrade_v1(data)
            return False
        if not data.startswith(_FILE_MAGIC):
            raise ConfigError(
                f"{self.path} is not an asynctg response cache; pass another cache path"
            )
        end = self._load(data)
        if end < len(data):
            # A crash cut the last record short: drop its bytes so appends line up.
            _log.info(
                "%s: dropped %d bytes of a record cut off at the end", self.path, len(data) - end
            )
            os.ftruncate(fd, end)
        self.position = end
        return True

    def _load(self, data: bytes) -> int:
        """Read every sound record of ``data``; the length to keep (all but a torn tail)."""
        size = len(data)
        pos = len(_FILE_MAGIC)
        damaged: int | None = None  # where the unreadable stretch being crossed began
        while pos < size:
            end = self._record_at(data, pos)
            if end is not None:
                if damaged is not None:
                    self._skip(damaged, pos)
                    damaged = None
                pos = end
                continue
            if damaged is None:
                damaged = pos
            following = data.find(_RECORD_MAGIC, pos + 1)
            if following < 0:
                break
            pos = following
        if damaged is None:
            return size
        if _torn(data, pos):
            if damaged < pos:
                self._skip(damaged, pos)
            return pos
        self._skip(damaged, size)
        return size

    def _record_at(self, data: bytes, pos: int) -> int | None:
        """The end of the sound record at ``pos`` (loaded, or skipped if undecodable), or None."""
        if pos + _HEADER.size > len(data):
            return None
        magic: bytes
        length: int
        crc: int
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        end = start + length
        if magic != _RECORD_MAGIC or end > len(data):
            return None
        payload = data[start:end]
        if _checksum(data[pos:start], payload) != crc:
            return None
        try:
            record = _decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # whole and checked, but not what this version reads (a newer writer's record)
            self.skipped += 1
            _log.warning("%s: skipped an unreadable record at offset %d: %s", self.path, pos, exc)
            return end
        self._entries[record.key] = record.result
        if self.mark_from is not None and pos >= self.mark_from:
            self.marked.add(record.key)
        return end

    def _skip(self, start: int, end: int) -> None:
        self.skipped += 1
        _log.warning(
            "%s: skipped %d damaged bytes at offset %d (a record failed its checksum); the "
            "records after them are kept",
            self.path,
            end - start,
            start,
        )

    def _upgrade_v1(self, data: bytes) -> None:
        """Rewrite a version-1 file as version 2 (the lock held on the old file)."""
        frames = [_FILE_MAGIC]
        pos = len(_FILE_MAGIC_V1)
        while pos + _V1_HEADER.size <= len(data):
            (length,) = _V1_HEADER.unpack_from(data, pos)
            end = pos + _V1_HEADER.size + length
            if end > len(data):
                break
            payload = data[pos + _V1_HEADER.size : end]
            try:
                _decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                break  # version 1 has no way to find the next record
            frames.append(_frame(payload))
            pos = end
        # a fresh random name (O_EXCL, 0600): never through a link planted under a known name
        fd, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".v2.tmp", dir=self.path.parent
        )
        tmp = Path(name)
        try:
            with open(fd, "wb") as f:
                f.write(b"".join(frames))
                f.flush()
                os.fsync(f.fileno())
            if pos < len(data):
                backup = _unused(self.path.with_name(self.path.name + ".v1"))
                shutil.copy2(self.path, backup)
                _log.warning(
                    "%s: %d bytes at offset %d of this version-1 cache cannot be read; the old "
                    "file is kept as %s",
                    self.path,
                    len(data) - pos,
                    pos,
                    backup,
                )
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    # --- use -----------------------------------------------------------------------------

    def get(self, key: str) -> ChatResult | None:
        return self._entries.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The request keys held, in the order they were first recorded."""
        return list(self._entries)

    def put(self, key: str, result: ChatResult) -> None:
        """Record ``result``; written to the file before this returns."""
        record = _frame(_encode(_Record(key, msgspec.structs.replace(result, cached=False))))
        with self._lock:
            if self._fd is None:  # closed with its engine, and the engine is in use again
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            fd = self._fd
            with _locked(fd):
                start = os.fstat(fd).st_size
                try:
                    _write_all(fd, record)
                except BaseException:
                    # No one else writes while we hold the lock: take our partial record back.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                    raise
            self.position = start + len(record)
            self._entries[key] = result

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<ResponseCache {self.path} entries={len(self._entries)}>"


def _unused(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first name no file has."""
    for n in itertools.count():
        candidate = path if n == 0 else path.with_name(f"{path.name}.{n}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def _torn(data: bytes, pos: int) -> bool:
    """Whether ``data[pos:]`` is the start of a record a crash cut off."""
    tail = data[pos:]
    if len(tail) < len(_RECORD_MAGIC):
        return _RECORD_MAGIC.startswith(tail)
    if not tail.startswith(_RECORD_MAGIC):
        return False
    if len(tail) < _HEADER.size:
        return True
    length: int = _HEADER.unpack_from(tail, 0)[1]
    return _HEADER.size + length > len(tail)
