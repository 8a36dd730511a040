"""Checkpoints: a run's folder, from which a crashed or stopped run resumes.

::

    DIR/config.json    what the run is (task, data digest, models, seed, ...) and its fingerprint
    DIR/state.json     the loop's state after the last completed step, replaced atomically
    DIR/journal.bin    every completed LLM call: request hash -> response, append-only
    DIR/batches.jsonl  the run's provider batches (batch tier): each recorded before it is
                       submitted, so a resumed run re-attaches instead of paying twice
                       (``asynctg.engine.batch``)

Every file here is created private to its owner (0600: the journal and the state hold the
run's prompts and answers), and never through a link someone planted in the folder.
``state.json`` is written to a temporary file, flushed to disk, and renamed over the old one,
so a crash (even ``kill -9``, even a power cut) leaves either the old state or the new one,
never a mix. ``asave`` does that write and its ``fsync`` in a worker thread, so the event loop
never waits for the disk; saves are applied in the order they were asked for, a newer state is
never overwritten by an older one, and a save whose caller is cancelled still completes. The
journal is the engine's response cache (``asynctg.engine.cache``) pointed at the run's folder:
each answer is appended with one ``write`` before the call returns, so a killed process loses
only the calls that were still in flight. On resume the loop restarts from the last saved step
and every call it had completed since is answered from the journal, not sent again; requests
are deterministic (temperature 0 by default, seeded shuffles, ordered gradients), so the
resumed run ends in the same state as one never interrupted.

Usage on resume. Each journal record holds the whole answer, its usage (prompt and completion
tokens) included, and each save records next to the state a *journal mark*: the journal's
``position`` (the byte offset past its last record) and the keys of the calls still
*uncounted*. A call is uncounted when an earlier session paid for it and journaled it but no
saved state includes its usage: on resume, every record at or after the saved offset (the
calls made after the last save, such as those of the step a ``kill -9`` interrupted), plus the
uncounted keys the save carried over; with no saved state at all, every record. The first
replay of an uncounted call counts as paid (``Meter.total()`` adds its journaled tokens, priced
at the replaying engine's price, as one provider call and one request rather than a cache
hit); later replays of it, and replays of every other record, are free cache hits, as in the
run that paid for them. So a resumed run's calls, tokens and cost equal an uninterrupted
run's; only the retries and 429s of the lost work are not recovered, since the journal does
not hold them. A loop that runs a step beside the next one (prompt optimization scores step k's
test while step k+1 trains) tags each call with its step (``journal_step``) and saves step k's
state with ``counted_through=k``: the calls of later steps journaled before the mark are saved
as uncounted keys, so the usage and the mark still agree. A state saved without a journal
mark (by an older version) resumes with every replay free, as it used to.

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

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import msgspec

from asynctg.engine.batch import LEDGER_FILE, BatchLedger
from asynctg.engine.cache import ResponseCache
from asynctg.engine.client import ChatEngine
from asynctg.engine.types import ChatResult
from asynctg.errors import ConfigError
from asynctg.output.files import atomic_write_text, probe_writable

__all__ = [
    "Checkpoint",
    "JournalView",
    "atomic_write_text",
    "fingerprint",
    "journal_step",
    "probe_writable",
]

FORMAT = "asynctg-checkpoint-1"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.bin"


#: The step of a loop the calls made here belong to, when a loop runs two steps' calls at once.
_STEP: ContextVar[int | None] = ContextVar("asynctg_journal_step", default=None)


@contextlib.contextmanager
def journal_step(step: int) -> Iterator[None]:
    """Note the calls journaled inside as ``step``'s: a save whose state is as of an earlier
    step (``Checkpoint.asave``'s ``counted_through``) leaves them uncounted, so a resumed run
    counts them as paid when it replays them."""
    token = _STEP.set(step)
    try:
        yield
    finally:
        _STEP.reset(token)


def fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of the configuration's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_json(path: Path, advice: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); {advice}") from exc


# --- the files' layouts, checked on load -----------------------------------------------------


class _ConfigFile(msgspec.Struct):
    format: str
    fingerprint: str
    config: dict[str, Any] = {}


class _JournalMark(msgspec.Struct):
    """Where the journal stood when a state was saved (see "Usage on resume" above)."""

    offset: Annotated[int, msgspec.Meta(ge=0)]
    uncounted: list[str] = []


class _StateFile(msgspec.Struct):
    format: str
    fingerprint: str
    state: dict[str, Any]
    journal: _JournalMark | None = None


class JournalView:
    """One engine's way into a checkpoint's journal: what ``Checkpoint.attach`` makes its cache.

    It answers from the journal like the journal itself, and counts the first replay of each
    call an earlier session paid for but no saved state counts (see the module docstring):
    ``recovered_calls`` and their tokens, which ``Meter.total()`` adds as paid calls.
    """

    __slots__ = (
        "_steps",
        "_uncounted",
        "journal",
        "recovered_cache_write_tokens",
        "recovered_cached_tokens",
        "recovered_calls",
        "recovered_completion_tokens",
        "recovered_prompt_tokens",
    )

    def __init__(
        self, journal: ResponseCache, uncounted: set[str], steps: dict[str, int] | None = None
    ) -> None:
        self.journal = journal
        self._uncounted = uncounted  # shared by every view of the checkpoint: counted once
        self._steps = {} if steps is None else steps  # key -> step (``journal_step``), shared
        self.recovered_calls = 0
        self.recovered_prompt_tokens = 0
        self.recovered_completion_tokens = 0
        self.recovered_cached_tokens = 0  # (priced as the provider billed them)
        self.recovered_cache_write_tokens = 0

    def get(self, key: str) -> ChatResult | None:
        """The journaled answer for ``key``, noting it if it is an uncounted call's first replay."""
        result = self.journal.get(key)
        if result is not None and key in self._uncounted:
            self._uncounted.discard(key)
            self.recovered_calls += 1
            # a journal of an older version may hold a provider's negative numbers
            self.recovered_prompt_tokens += max(0, result.usage.prompt_tokens)
            self.recovered_completion_tokens += max(0, result.usage.completion_tokens)
            self.recovered_cached_tokens += max(0, result.usage.cached_tokens)
            self.recovered_cache_write_tokens += max(0, result.usage.cache_write_tokens)
        return result

    def put(self, key: str, result: ChatResult) -> None:
        self.journal.put(key, result)
        step = _STEP.get()
        if step is not None:
            self._steps[key] = step

    def close(self) -> None:
        self.journal.close()


class Checkpoint:
    """A run's checkpoint folder; see the module docstring.

    The constructor only reads and checks (``ConfigError`` for a folder of another
    configuration, an existing run without ``resume``, ``resume`` of a folder that holds no
    checkpoint, damaged files, or an unusable path); ``open()`` creates the folder, records
    the configuration and opens the journal. ``state`` is the saved state (None for a new run).
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
        self._ledger: BatchLedger | None = None
        # the journal mark of the saved state: records at or after _mark_from, and the keys in
        # _carried, are calls whose usage no saved state counts (None: not known)
        self._mark_from: int | None = None
        self._carried: set[str] = set()
        self._uncounted: set[str] = set()
        self._uncounted_known = False
        # calls journaled under ``journal_step`` this session and the step of each, until a
        # save has counted them (pruned there)
        self._steps: dict[str, int] = {}
        self._write_lock = threading.Lock()  # one state write at a time (asave runs in threads)
        self._asked = 0  # saves asked for, numbered in order ...
        self._written = 0  # ... and the number of the one on disk
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"the checkpoint {self.path} is a file; pass a folder")
        config_file = self.path / CONFIG_FILE
        if config_file.exists():
            saved = self._read_config(config_file)
            if saved.fingerprint != self.fingerprint:
                raise ConfigError(
                    f"the checkpoint in {self.path} is for another configuration "
                    f"({_difference(saved.config, self.config)}); resume it with "
                    "the settings it was made with, or pass another --checkpoint folder"
                )
            if not resume:
                raise ConfigError(
                    f"{self.path} already holds a run; pass --resume to continue it, or another "
                    "--checkpoint folder to start afresh"
                )
            state_file = self.path / STATE_FILE
            if state_file.exists():
                self._read_state(state_file, config_file)
            else:
                self._mark_from = 0  # killed before its first save: nothing it paid is counted
        elif self.path.exists() and any(
            p.name in (STATE_FILE, JOURNAL_FILE) for p in self.path.iterdir()
        ):
            raise ConfigError(f"{self.path} holds checkpoint files but no {CONFIG_FILE}")
        elif resume:
            # A mistyped folder must not quietly become a fresh run that pays for everything.
            raise ConfigError(
                f"{self.path} holds no checkpoint: check the path, or drop --resume to start a "
                "new run"
            )
        if not config_file.exists():
            probe_writable(self.path, "checkpoint folder")
        elif not os.access(self.path, os.W_OK):
            raise ConfigError(f"cannot write to the checkpoint folder {self.path}")

    def _read_config(self, config_file: Path) -> _ConfigFile:
        advice = "it is not an asynctg checkpoint, or it is damaged; pass another --checkpoint"
        raw = _read_json(config_file, advice)
        try:
            saved = msgspec.convert(raw, _ConfigFile)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{config_file} is not an asynctg checkpoint ({exc})") from exc
        if saved.format != FORMAT:
            raise ConfigError(f"{config_file} is not an asynctg checkpoint")
        return saved

    def _read_state(self, state_file: Path, config_file: Path) -> None:
        advice = (
            f"the run cannot be resumed from it: delete the folder {self.path} and start "
            "without --resume (or pass another --checkpoint folder)"
        )
        raw = _read_json(state_file, f"it is damaged, and {advice}")
        try:
            saved = msgspec.convert(raw, _StateFile)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{state_file} is damaged ({exc}); {advice}") from exc
        if saved.format != FORMAT or saved.fingerprint != self.fingerprint:
            raise ConfigError(f"{state_file} does not belong to {config_file}; {advice}")
        self.state = saved.state
        if saved.journal is not None:
            self._mark_from = saved.journal.offset
            self._carried = set(saved.journal.uncounted)

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a checkpoint, for "resume if there is one" scripts:
        ``Checkpoint(folder, config, resume=Checkpoint.exists(folder))``."""
        return (Path(path) / CONFIG_FILE).is_file()

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
            journal = ResponseCache(self.journal_path, mark_from=self._mark_from)
            self._journal = journal
            if not self._uncounted_known:  # reopened: the set already tracks this session
                self._uncounted.update(journal.marked)
                self._uncounted.update(k for k in self._carried if k in journal)
                self._uncounted_known = True

    @property
    def journal(self) -> ResponseCache:
        if self._journal is None:
            raise ConfigError("call Checkpoint.open() before using its journal")
        return self._journal

    def attach(self, *engines: ChatEngine) -> None:
        """Route every call of ``engines`` through the journal (sampled calls included)."""
        journal = self.journal
        if self._ledger is None:
            self._ledger = BatchLedger(self.path / LEDGER_FILE)
        for engine in engines:
            engine.batches.ledger = self._ledger
            store = engine.cache
            if isinstance(store, JournalView) and store.journal is journal:
                continue  # attached already; keep its counts
            if store is not None and store is not journal:
                raise ConfigError(
                    "an engine used with a checkpoint must not have its own cache: the "
                    "checkpoint's journal is its cache (create it without cache=...)"
                )
            engine.cache = JournalView(journal, self._uncounted, self._steps)
            # a journal is keyed by the request alone: a resumed run may reach the same server
            # at another address (a simulator on a fresh port) and must still find its calls
            engine.cache_endpoint = None
            # at temperature > 0 too, so a resumed run replays what it had, not new samples
            engine.cache_sampled = True

    def save(self, state: Mapping[str, Any]) -> None:
        """Atomically replace the saved state (blocks on the disk: in a loop, ``asave``)."""
        self._write(*self._prepare(state))

    async def asave(self, state: Mapping[str, Any], *, counted_through: int | None = None) -> None:
        """``save`` with the write and ``fsync`` in a worker thread, off the event loop.

        Build ``state`` right before the call, with no ``await`` in between: the journal mark
        saved with it is taken when ``asave`` is called, and must match the usage it holds.
        With ``counted_through``, the usage counts the calls of steps up to it only: the calls
        journaled under a later ``journal_step`` are saved as uncounted.
        """
        prepared = self._prepare(state, counted_through)
        await asyncio.to_thread(self._write, *prepared)

    def _prepare(
        self, state: Mapping[str, Any], counted_through: int | None = None
    ) -> tuple[int, str, dict[str, Any]]:
        """Number the save and encode it, in the caller's thread (the loop, for ``asave``)."""
        journal = self._journal
        mark: dict[str, Any] | None
        if journal is not None:
            later: set[str] = set()
            if counted_through is not None:
                for key, step in list(self._steps.items()):
                    if step > counted_through:
                        later.add(key)
                    else:  # counted by this save and every later one
                        del self._steps[key]
            mark = {"offset": journal.position, "uncounted": sorted(self._uncounted | later)}
        elif self._mark_from is not None:  # not open: no call since the mark was taken
            mark = {"offset": self._mark_from, "uncounted": sorted(self._carried)}
        else:
            mark = None
        saved = dict(state)
        payload = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "state": saved,
            "journal": mark,
        }
        self._asked += 1
        return self._asked, json.dumps(payload) + "\n", saved

    def _write(self, number: int, text: str, state: dict[str, Any]) -> None:
        with self._write_lock:
            if number < self._written:
                return  # a newer state is on disk already
            atomic_write_text(self.path / STATE_FILE, text)
            self._written = number
            self.state = state

    def close(self) -> None:
        if self._journal is not None:
            # a save after closing still records where the journal stood
            self._mark_from = self._journal.position
            self._carried = set(self._uncounted)
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
