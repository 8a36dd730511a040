"""Checkpoints: a run's folder, from which a crashed or stopped run resumes.

::

    DIR/config.json    what the run is (task, data digest, models, seed, ...) and its fingerprint
    DIR/state.json     the loop's state after the last completed step, replaced atomically
    DIR/journal.bin    every completed LLM call: request hash -> response, append-only

``state.json`` is written to a temporary file, flushed to disk, and renamed over the old one,
so a crash (even ``kill -9``, even a power cut) leaves either the old state or the new one,
never a mix. The journal is the engine's response cache (``asynctg.engine.cache``) pointed at
the run's folder: each answer is appended with one ``write`` before the call returns, so a
killed process loses only the calls that were still in flight. On resume the loop restarts
from the last saved step and every call it had completed since is answered from the journal,
not sent again; requests are deterministic (temperature 0 by default, seeded shuffles,
ordered gradients), so the resumed run ends in the same state as one never interrupted.

A checkpoint folder belongs to one configuration: resuming with another (other task, data,
model, batch size, seed, ...) is refused with ``ConfigError`` and nothing in the folder is
touched. Settings that do not change the result (rate limits, concurrency, display, reports,
budget caps, the number of epochs) are not part of the fingerprint, so a run stopped by a
budget cap or cut short by ``--epochs`` can be resumed with a larger one.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "run"
>>> ckpt = Checkpoint(folder, {"task": "object_counting", "seed": 0}, resume=False)
>>> ckpt.open(); ckpt.save({"step": 1}); ckpt.close()
>>> Checkpoint(folder, {"task": "object_counting", "seed": 0}, resume=True).state
{'step': 1}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asynctg.engine.cache import ResponseCache
from asynctg.engine.client import ChatEngine
from asynctg.errors import ConfigError

__all__ = ["Checkpoint", "atomic_write_text", "fingerprint", "probe_writable"]

FORMAT = "asynctg-checkpoint-1"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.bin"


def fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of the configuration's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old file or the new, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
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
    """Create ``folder`` if needed and check a file can be written in it (ConfigError if not)."""
    try:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"the {what} {folder} is a file, not a folder; pass a folder")
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".asynctg-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"cannot write to the {what} {folder}: {exc.strerror or exc}; pass a folder you "
            "can write to"
        ) from exc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} cannot be read ({exc}); it is not an asynctg checkpoint, or it is damaged"
        ) from exc


class Checkpoint:
    """A run's checkpoint folder; see the module docstring.

    The constructor only reads and checks (``ConfigError`` for a folder of another
    configuration, an existing run without ``resume``, or an unusable path); ``open()`` creates
    the folder, records the configuration and opens the journal. ``state`` is the saved state
    (None for a new run).
    """

    def __init__(
        self, path: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool
    ) -> None:
        self.path = Path(path)
        self.config = dict(config)
        self.fingerprint = fingerprint(self.config)
        self.resume = resume
        self.state: dict[str, Any] | None = None
        self._journal: ResponseCache | None = None
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"the checkpoint {self.path} is a file; pass a folder")
        config_file = self.path / CONFIG_FILE
        if config_file.exists():
            saved = _read_json(config_file)
            if not isinstance(saved, dict) or saved.get("format") != FORMAT:
                raise ConfigError(f"{config_file} is not an asynctg checkpoint")
            if saved.get("fingerprint") != self.fingerprint:
                raise ConfigError(
                    f"the checkpoint in {self.path} is for another configuration "
                    f"({_difference(saved.get('config') or {}, self.config)}); resume it with "
                    "the settings it was made with, or pass another --checkpoint folder"
                )
            if not resume:
                raise ConfigError(
                    f"{self.path} already holds a run; pass --resume to continue it, or another "
                    "--checkpoint folder to start afresh"
                )
            state_file = self.path / STATE_FILE
            if state_file.exists():
                state = _read_json(state_file)
                if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
                    raise ConfigError(f"{state_file} does not belong to {config_file}")
                self.state = state["state"]
        elif self.path.exists() and any(
            p.name in (STATE_FILE, JOURNAL_FILE) for p in self.path.iterdir()
        ):
            raise ConfigError(f"{self.path} holds checkpoint files but no {CONFIG_FILE}")
        if not config_file.exists():
            probe_writable(self.path, "checkpoint folder")
        elif not os.access(self.path, os.W_OK):
            raise ConfigError(f"cannot write to the checkpoint folder {self.path}")

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL_FILE

    def open(self) -> None:
        """Create the folder, record the configuration (new runs) and open the journal."""
        self.path.mkdir(parents=True, exist_ok=True)
        config_file = self.path / CONFIG_FILE
        if not config_file.exists():
            payload = {"format": FORMAT, "fingerprint": self.fingerprint, "config": self.config}
            atomic_write_text(config_file, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        if self._journal is None:
            self._journal = ResponseCache(self.journal_path)

    @property
    def journal(self) -> ResponseCache:
        if self._journal is None:
            raise ConfigError("call Checkpoint.open() before using its journal")
        return self._journal

    def attach(self, *engines: ChatEngine) -> None:
        """Route every call of ``engines`` through the journal (sampled calls included)."""
        journal = self.journal
        for engine in engines:
            if engine.cache is not None and engine.cache is not journal:
                raise ConfigError(
                    "an engine used with a checkpoint must not have its own cache: the "
                    "checkpoint's journal is its cache (create it without cache=...)"
                )
            engine.cache = journal
            # at temperature > 0 too, so a resumed run replays what it had, not new samples
            engine.cache_sampled = True

    def save(self, state: Mapping[str, Any]) -> None:
        """Atomically replace the saved state."""
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "state": dict(state)}
        atomic_write_text(self.path / STATE_FILE, json.dumps(payload) + "\n")
        self.state = dict(state)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def _difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = sorted(set(saved) | set(current))
    diffs = [
        f"{k}: {_short(saved.get(k))} there, {_short(current.get(k))} here"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
    return "; ".join(diffs[:4]) or "same settings, other format"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
