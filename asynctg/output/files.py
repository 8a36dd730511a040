"""Files written so that a crash never leaves half of one: atomic replacement, writability probes.

Checkpoints, run reports and load-test reports all write through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from asynctg.errors import ConfigError

__all__ = ["atomic_write_text", "probe_writable"]


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so that readers see the old file or the new, whole.

    The new file is made under a fresh random name (``mkstemp``: ``O_EXCL``, never through a
    link planted in the folder) and renamed over ``path`` (a rename replaces a link at
    ``path`` itself, never its target). It gets ``mode``: private by default (a checkpoint's
    state holds prompts), 0o644 for reports meant to be shared.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            if mode != 0o600:  # mkstemp's own
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # the rename itself must reach the disk too, or a power cut could undo it
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def probe_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and check a file can be written in it (ConfigError if not).

    The probe file has a fresh random name (``mkstemp``), so a link planted in the folder under
    a name we would pick is never followed.
    """
    try:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"the {what} {folder} is a file, not a folder; pass a folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".asynctg-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"cannot write to the {what} {folder}: {exc.strerror or exc}; pass a folder you "
            "can write to"
        ) from exc
