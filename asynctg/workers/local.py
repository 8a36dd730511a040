"""``ProcessPool``: spawned worker processes on this machine, one evaluation each at a time.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one running call (a timeout
or a cancelled run would leave the CPU busy until the call ends), and one worker that dies
breaks the whole executor. Here each worker is a spawned process with a pipe; the event loop
never touches the pipe itself (sends and receives run in threads), a timed-out or cancelled
evaluation kills its worker and a fresh one takes its place, and a worker that dies costs only
the evaluation it held, which is retried on another.

Workers start lazily, at most ``workers`` of them (default and maximum: the machine's cores);
each runs ``initializer(*initargs)`` once before its first evaluation, with
``OMP_NUM_THREADS=1`` (and the other BLAS thread counts) set so that numerical libraries do not
oversubscribe the cores the pool already fills, and SIGINT ignored (Ctrl-C is the parent's to
handle; it stops the workers).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

import anyio

from asynctg.errors import (
    ConfigError,
    WorkerError,
    WorkerFunctionError,
    WorkerLostError,
)
from asynctg.workers import EvaluationCache, WorkerPool, _call, function_error, function_name

__all__ = ["ProcessPool", "local_workers"]

#: set in every worker before anything runs: one thread per process, the pool is the parallelism
SINGLE_THREADED = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


def _serve(
    conn: Connection,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    env: Mapping[str, str],
) -> None:  # pragma: no cover - runs in the worker process
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:
        conn.send(("init-error", type(exc).__name__, str(exc), traceback.format_exc()))
        return
    conn.send(("ready",))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, args, kwargs = job
        try:
            result, cpu = _call(fn, args, kwargs)
        except BaseException as exc:
            reply: tuple[Any, ...] = ("error", type(exc).__name__, str(exc), traceback.format_exc())
        else:
            reply = ("ok", result, cpu)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result
            conn.send(("error", type(exc).__name__, f"cannot send the result back: {exc}", ""))


def local_workers(workers: int | None) -> int:
    """How many worker processes ``workers`` asks for (None: one per core); ``ConfigError``
    past the cores or below one."""
    cores = os.cpu_count() or 1
    if workers is None:
        return cores
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if workers > cores:
        raise ConfigError(
            f"workers={workers} but this machine has {cores} cores: CPU-bound evaluations "
            "gain nothing past one per core; for more, use a cluster (DaskPool / --cluster)"
        )
    return workers


class _Worker:
    __slots__ = ("conn", "process")

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    def kill(self) -> None:
        """Stop the process now and reap it (blocking: call in a thread)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


class ProcessPool(WorkerPool):
    """Run functions in up to ``workers`` spawned processes (see the module docstring)."""

    backend = "processes"

    def __init__(
        self,
        workers: int | None = None,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        timeout: float | None = None,
        retries: int = 1,
        cache: EvaluationCache | str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(timeout=timeout, retries=retries, cache=cache)
        self.workers = local_workers(workers)
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.env = {**SINGLE_THREADED, **(env or {})}
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._slots: anyio.Semaphore | None = None
        self._threads: anyio.CapacityLimiter | None = None
        self._closed = False
        self.started = 0  # processes started (replacements included)

    def _limits(self) -> tuple[anyio.Semaphore, anyio.CapacityLimiter]:
        if self._slots is None or self._threads is None:  # made inside the running loop
            self._slots = anyio.Semaphore(self.workers)
            # a thread per busy worker waiting on its pipe, plus room to start and reap
            self._threads = anyio.CapacityLimiter(2 * self.workers + 2)
        return self._slots, self._threads

    async def _start(self) -> _Worker:
        _, threads = self._limits()
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(child, self.initializer, self.initargs, self.env),
            daemon=True,
            name="asynctg-worker",
        )
        await anyio.to_thread.run_sync(process.start, limiter=threads)
        child.close()
        worker = _Worker(process, parent)
        self._all.add(worker)
        self.started += 1
        try:
            hello = await anyio.to_thread.run_sync(parent.recv, abandon_on_cancel=True)
        except (EOFError, OSError) as exc:
            await self._discard(worker)
            raise WorkerLostError(
                f"a worker process exited while starting (exit code "
                f"{process.exitcode}): {exc or 'no reply'}",
                function=function_name(self.initializer) if self.initializer else "",
            ) from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._discard(worker)
            raise
        if hello[0] != "ready":
            await self._discard(worker)
            _, kind, message, tb = hello
            name = function_name(self.initializer) if self.initializer else ""
            raise WorkerFunctionError(
                f"the pool's initializer {name} failed in the worker: {kind}: {message}",
                function=name,
                kind=kind,
                remote_traceback=tb,
            )
        return worker

    async def _discard(self, worker: _Worker) -> None:
        self._all.discard(worker)
        _, threads = self._limits()
        await anyio.to_thread.run_sync(worker.kill, limiter=threads)

    async def _execute(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[Any, float]:
        if self._closed:
            raise WorkerError("the pool is closed", function=function_name(fn))
        slots, threads = self._limits()
        async with slots:
            worker = self._idle.pop() if self._idle else await self._start()
            healthy = False
            try:
                reply = await self._exchange(worker, (fn, args, kwargs), threads)
                healthy = True
            finally:
                if healthy:
                    self._idle.append(worker)
                else:  # timed out, cancelled, dead or in an unknown state: never reuse it
                    with anyio.CancelScope(shield=True):
                        await self._discard(worker)
        if reply[0] == "ok":
            return reply[1], reply[2]
        _, kind, message, tb = reply
        raise function_error(function_name(fn), kind, message, tb)

    async def _exchange(
        self, worker: _Worker, job: tuple[Any, ...], threads: anyio.CapacityLimiter
    ) -> tuple[Any, ...]:
        name = function_name(job[0])
        try:
            with anyio.fail_after(self.timeout):
                await anyio.to_thread.run_sync(worker.conn.send, job, limiter=threads)
                reply: tuple[Any, ...] = await anyio.to_thread.run_sync(
                    worker.conn.recv, abandon_on_cancel=True, limiter=threads
                )
        except TimeoutError:
            raise self._timed_out(name, "its worker was stopped") from None
        except (EOFError, OSError) as exc:  # a dead worker's pipe
            raise WorkerLostError(
                f"worker pid {worker.process.pid} died (exit code {worker.process.exitcode})",
                function=name,
            ) from exc
        return reply

    def statistics(self) -> dict[str, Any]:
        return {
            **super().statistics(),
            "workers": self.workers,
            "processes": len(self._all),
            "started": self.started,
        }

    async def aclose(self) -> None:
        """Stop every worker (evaluations still running are abandoned) and close the cache."""
        self._closed = True
        workers, self._all, self._idle = list(self._all), set(), []
        with anyio.CancelScope(shield=True):
            for worker in workers:
                try:
                    worker.conn.send(None)
                except (OSError, ValueError):
                    pass
            if workers:
                await anyio.to_thread.run_sync(_reap, workers)
        await super().aclose()


def _reap(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.process.join(timeout=2)
        worker.kill()
