"""``DaskPool``: evaluations on the workers of a Dask distributed cluster (extra ``dask``).

A docking campaign (hundreds of molecules x iterations x minutes of CPU) outgrows one machine
long before the LLM budget binds. This backend sends each evaluation to a Dask cluster while
the LLM calls stay in this process, with the same front half as ``ProcessPool`` (caching,
coalescing, timeouts, retries)::

    # on one host:      dask scheduler --host 10.0.0.1 --port 8786
    # on every worker:  OMP_NUM_THREADS=1 dask worker tcp://10.0.0.1:8786 --nthreads 1 --nworkers 4
    asynctg molecule --cluster tcp://10.0.0.1:8786 ...

Every worker runs ``initializer(*initargs)`` once, when the pool registers a worker plugin
(workers that join later run it as they join). Workers need asynctg and the evaluation's
packages installed, the same versions as here. ``--nthreads 1``: the evaluators are CPU-bound
and keep per-process state; run several worker processes per host instead of threads.

Differences from ``ProcessPool``, by Dask's design: a timed-out or cancelled evaluation is
released (its result is never used) but Dask cannot stop a task already running on a worker
thread, so that worker stays busy until it ends; a worker that dies mid-task has the task
rerun elsewhere by the scheduler (up to its ``allowed-failures``), then ``WorkerLostError``.
"""

from __future__ import annotations

import hashlib
import os
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from asynctg.errors import ConfigError, WorkerLostError
from asynctg.workers import EvaluationCache, WorkerPool, _call, function_error, function_name

try:
    from distributed import Client, KilledWorker
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as exc:  # pragma: no cover - exercised where the extra is absent
    raise ConfigError(
        "the Dask backend needs the distributed package: pip install 'asynctg[dask]'"
    ) from exc

__all__ = ["DaskPool"]


class _Initialize(WorkerPlugin):  # type: ignore[misc]
    """Runs the pool's initializer once in every worker process (and in workers that join)."""

    def __init__(self, initializer: Callable[..., Any], initargs: tuple[Any, ...]) -> None:
        self.initializer = initializer
        self.initargs = initargs

    def setup(self, worker: Any) -> None:
        self.initializer(*self.initargs)


class DaskPool(WorkerPool):
    """Run functions on a Dask cluster: ``address`` (``tcp://host:port``) or a ``client``
    (an asynchronous ``distributed.Client`` the caller owns and closes)."""

    backend = "dask"

    def __init__(
        self,
        address: str | None = None,
        *,
        client: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        timeout: float | None = None,
        retries: int = 1,
        cache: EvaluationCache | str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(timeout=timeout, retries=retries, cache=cache)
        if (address is None) == (client is None):
            raise ConfigError("DaskPool needs a scheduler address or a Client, not both")
        if client is not None and not getattr(client, "asynchronous", False):
            raise ConfigError("DaskPool needs an asynchronous Client(..., asynchronous=True)")
        self.address = address
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self._client = client
        self._owns_client = client is None
        self._ready = False
        self.worker_count = 0  # workers the scheduler had when the pool connected
        self._lock: anyio.Lock | None = None

    async def _connect(self) -> Any:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await Client(  # type: ignore[no-untyped-call]
                        self.address, asynchronous=True, timeout="20s"
                    )
                except OSError as exc:
                    raise ConfigError(
                        f"cannot reach the Dask scheduler at {self.address}: {exc}; start one "
                        "with `dask scheduler` and its workers with `dask worker ADDRESS`"
                    ) from exc
            if not self._ready:
                if self.initializer is not None:
                    digest = hashlib.sha256(
                        repr((function_name(self.initializer), self.initargs)).encode()
                    ).hexdigest()[:12]
                    await self._client.register_plugin(
                        _Initialize(self.initializer, self.initargs), name=f"asynctg-{digest}"
                    )
                self.worker_count = len(await self._client.nthreads())
                self._ready = True
        return self._client

    async def _execute(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[Any, float]:
        client = await self._connect()
        name = function_name(fn)
        future = client.submit(_call, fn, args, dict(kwargs), pure=False)
        done = False
        try:
            with anyio.fail_after(self.timeout):
                result, cpu = await future
            done = True
        except TimeoutError:
            raise self._timed_out(
                name, "its result is abandoned (Dask cannot stop a running task)"
            ) from None
        except KilledWorker as exc:
            raise WorkerLostError(f"{name}: {exc}", function=name) from exc
        except Exception as exc:
            remote = "".join(traceback.format_exception(exc))
            raise function_error(name, type(exc).__name__, str(exc), remote) from exc
        finally:
            if not done:
                with anyio.CancelScope(shield=True):
                    await future.cancel()
        return result, cpu

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "workers": self.worker_count}

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            with anyio.CancelScope(shield=True):
                await self._client.close()
            self._client = None
        await super().aclose()
