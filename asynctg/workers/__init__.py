"""Worker pools for CPU-heavy objective functions: docking, dose optimisation, simulations.

An objective function that spends seconds of CPU (a Vina docking, a fluence optimisation) must
not run on the event loop: every LLM call of the run would stall behind it. A pool runs it in
other processes while the loop keeps scheduling LLM calls, so the two overlap::

    async with ProcessPool(workers=2, initializer=docking.init_worker, initargs=(setup,),
                           timeout=300, cache=run_dir / "evaluations.jsonl") as pool:
        key = f"{setup.key()}:{smiles}"
        result = await pool.run(docking.evaluate, smiles, setup, cache_key=key)

Two backends share this module's front half (``WorkerPool.run``): result caching keyed by the
function and its input (docking the same SMILES twice is wasted minutes), coalescing of
identical evaluations in flight, a per-evaluation timeout, retries when a worker dies, and
``statistics()``:

- ``ProcessPool`` (``asynctg.workers.local``): spawned processes on this machine, at most one
  per core, each initialised once (``initializer(*initargs)``: load a receptor's maps, a dose
  matrix); a timed-out or cancelled evaluation stops its worker, which is replaced.
- ``DaskPool`` (``asynctg.workers.dask``, extra ``asynctg[dask]``): the workers of a Dask
  distributed cluster, for campaigns that outgrow one machine; same initialisation (a worker
  plugin), timeouts, retries and caching; the LLM calls stay in this process.

Functions and their arguments cross a process boundary: they must be importable top-level
functions and picklable values, and results must be JSON-able when a cache file is used.
Errors: ``WorkerFunctionError`` (the function raised), ``WorkerTimeoutError``,
``WorkerLostError`` (``asynctg.errors``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec

from asynctg.errors import (
    ConfigError,
    WorkerFunctionError,
    WorkerLostError,
    WorkerTimeoutError,
)

__all__ = ["EvaluationCache", "WorkerPool", "function_name"]


def function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a function: what cache keys and errors call it."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class EvaluationCache:
    """Results by key, in memory and (with a path) in a JSON-lines file that survives the run.

    Each result is appended as one line and flushed before ``run`` returns it, so a resumed
    run finds every evaluation the interrupted one finished; a torn last line (a kill during
    the write) is ignored on load.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._results: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._file: Any = None
        if self.path is not None:
            self._load(self.path)

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        if not path.is_file():
            raise ConfigError(f"evaluation cache {path} is not a regular file")
        with path.open("rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    self._results[record["key"]] = record["result"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or foreign line: that evaluation is simply redone

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, key: str) -> bool:
        return key in self._results

    def get(self, key: str) -> Any:
        return self._results.get(key)

    def put(self, key: str, result: Any) -> None:
        self._results[key] = result
        if self.path is None:
            return
        line = json.dumps({"key": key, "result": result}, allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _cache_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    try:
        encoded = msgspec.json.encode([function_name(fn), args, sorted(kwargs.items())])
    except (TypeError, msgspec.EncodeError) as exc:
        raise ConfigError(
            f"{function_name(fn)}: cannot derive a cache key from its arguments ({exc}); "
            "pass cache_key=..."
        ) from exc
    return hashlib.sha256(encoded).hexdigest()


class _Pending:
    """An evaluation in flight that identical calls wait for (cancelled: they run it)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: Exception | None = None


class WorkerPool:
    """What both backends share: caching, coalescing, retries on lost workers, statistics.

    Subclasses implement ``_execute(fn, args, kwargs) -> (result, cpu_seconds)``, raising
    ``WorkerLostError`` when the worker died (retried here up to ``retries`` times),
    ``WorkerTimeoutError`` or ``WorkerFunctionError`` (not retried: they would happen again).
    """

    backend = "abstract"

    def __init__(
        self,
        *,
        timeout: float | None = None,
        retries: int = 1,
        cache: EvaluationCache | str | os.PathLike[str] | None = None,
    ) -> None:
        if timeout is not None and not (isinstance(timeout, int | float) and 0 < timeout):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if timeout is not None and math.isinf(timeout):
            timeout = None
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, got {retries!r}")
        self.timeout = timeout
        self.retries = retries
        self.cache = cache if isinstance(cache, EvaluationCache) else EvaluationCache(cache)
        self._inflight: dict[str, _Pending] = {}
        self.evaluations = 0  # functions run to completion in a worker
        self.cache_hits = 0
        self.coalesced = 0
        self.lost = 0  # worker deaths seen (each retried or reported)
        self.timeouts = 0
        self.failures = 0
        self.cpu_seconds = 0.0  # CPU the workers spent in the functions

    async def run(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        cache_key: str | None = None,
        cache: bool = True,
        **kwargs: Any,
    ) -> Any:
        """``fn(*args, **kwargs)`` in a worker; the cached result if this input was seen.

        ``cache_key`` names the input (default: a hash of the function's name and arguments);
        ``cache=False`` always runs it. Identical calls in flight at once run once.
        """
        if not cache:
            return await self._run_with_retries(fn, args, kwargs)
        key = cache_key if cache_key is not None else _cache_key(fn, args, kwargs)
        waited = False
        while True:
            if key in self.cache:
                if not waited:
                    self.cache_hits += 1
                return self.cache.get(key)
            pending = self._inflight.get(key)
            if pending is None:
                break
            self.coalesced += 1
            waited = True
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
        pending = self._inflight[key] = _Pending()
        try:
            result = await self._run_with_retries(fn, args, kwargs)
            self.cache.put(key, result)
            return result
        except Exception as exc:
            pending.error = exc  # the coalesced callers get the same error
            raise
        finally:
            del self._inflight[key]
            pending.done.set()

    async def _run_with_retries(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Any:
        tries = 0
        while True:
            try:
                result, cpu = await self._execute(fn, args, kwargs)
            except WorkerLostError as exc:
                self.lost += 1
                tries += 1
                if tries > self.retries:
                    self.failures += 1
                    raise WorkerLostError(
                        f"{function_name(fn)}: its worker died {tries} time(s) ({exc}); "
                        f"retries={self.retries}",
                        function=function_name(fn),
                    ) from exc
                continue
            except Exception:
                self.failures += 1
                raise
            self.evaluations += 1
            self.cpu_seconds += cpu
            return result

    async def _execute(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[Any, float]:
        raise NotImplementedError

    def _timed_out(self, name: str, consequence: str) -> WorkerTimeoutError:
        """The error of an evaluation past the timeout (counted); ``consequence``: what
        became of its worker."""
        self.timeouts += 1
        return WorkerTimeoutError(
            f"{name} ran longer than the pool's timeout ({self.timeout:g} s); {consequence}",
            function=name,
        )

    def statistics(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "evaluations": self.evaluations,
            "cache_hits": self.cache_hits,
            "coalesced": self.coalesced,
            "in_flight": len(self._inflight),
            "lost": self.lost,
            "timeouts": self.timeouts,
            "failures": self.failures,
            "cpu_seconds": round(self.cpu_seconds, 3),
        }

    async def aclose(self) -> None:
        self.cache.close()

    async def __aenter__(self) -> WorkerPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def function_error(name: str, kind: str, message: str, remote: str) -> WorkerFunctionError:
    """The error of a function that raised ``kind: message`` in its worker."""
    return WorkerFunctionError(
        f"{name} raised {kind}: {message}", function=name, kind=kind, remote_traceback=remote
    )


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """Run in a worker: the function's result and the CPU seconds it took."""
    started = time.process_time()
    result = fn(*args, **kwargs)
    return result, time.process_time() - started


from asynctg.workers.local import ProcessPool  # noqa: E402

__all__ += ["DaskPool", "ProcessPool"]


def __getattr__(name: str) -> Any:
    if name == "DaskPool":  # distributed is an optional extra and slow to import
        from asynctg.workers.dask import DaskPool

        return DaskPool
    raise AttributeError(name)
