"""The compat layer's private event loop: one daemon thread that runs every coroutine.

A blocking compat call (``model(x)``, ``loss.backward()``, ``optimizer.step()``,
``engine.generate(...)``) builds the native coroutine in the caller's thread, hands it to this
loop with ``asyncio.run_coroutine_threadsafe`` and waits for the result. One loop for the whole
process means one scheduler, one HTTP connection pool and one budget per engine however many
threads call in: a thread pool's forward calls and a backward pass's fan-out share the
provider's limits instead of each thread running a loop (and a session) of its own.

The loop starts on first use (uvloop when installed), is restarted in a forked child, and at
interpreter exit first lets the calls still in flight finish (a script's last ``answer =
model(question)`` is sent and answered, as TextGrad's blocking call would have been), for at
most ``$ASYNCTG_COMPAT_EXIT_TIMEOUT`` seconds (default 120; a warning names what was cut), then
closes the engines that ran on it and stops (``atexit``). The blocking API
works from a thread that runs an event loop of its own (a Jupyter cell, an async function):
that loop waits, as it would for TextGrad's blocking calls, while the private loop does the
work. Only the private loop's own thread is refused (``ConfigError``): it would wait for
itself forever.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from asynctg.engine.client import ChatEngine
from asynctg.errors import ConfigError

__all__ = ["loop", "on_loop_thread", "run", "shutdown", "submit", "track_engine", "wait"]

T = TypeVar("T")

_log = logging.getLogger("asynctg.compat")

#: How often a waiting caller checks that the loop thread is still alive. Results arrive at once
#: whatever this is; it only bounds how long a caller could wait on a loop that was torn down
#: under it (interpreter exit while a daemon thread still calls in).
_LIVENESS_POLL_SECONDS = 0.5
#: How long shutdown waits for engines to close and the loop thread to finish.
_SHUTDOWN_TIMEOUT_SECONDS = 5.0
#: How long shutdown lets calls still in flight finish, unless $ASYNCTG_COMPAT_EXIT_TIMEOUT says.
_DRAIN_TIMEOUT_SECONDS = 120.0


def _drain_timeout() -> float:
    raw = os.environ.get("ASYNCTG_COMPAT_EXIT_TIMEOUT")
    try:
        value = float(raw) if raw else _DRAIN_TIMEOUT_SECONDS
    except ValueError:
        _log.warning("ignoring ASYNCTG_COMPAT_EXIT_TIMEOUT=%r (not a number of seconds)", raw)
        return _DRAIN_TIMEOUT_SECONDS
    return max(0.0, value)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # not on Linux, or not installed: the default loop is fine
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class _LoopThread:
    """The private loop and its thread, started lazily and safely from any number of threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Engines whose HTTP sessions live on this loop: closed on it before it stops, since an
        # aiohttp session can only be closed from the loop it was opened in.
        self._engines: weakref.WeakSet[ChatEngine] = weakref.WeakSet()
        # Work submitted and not finished yet: what shutdown lets finish first.
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._atexit_registered = False

    # --- lifetime -----------------------------------------------------------------------------

    def get(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        """The running loop and its thread, starting them if needed."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            return loop, thread  # the fast path takes no lock
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None or not thread.is_alive():
                loop, thread = self._start()
            return loop, thread

    def _start(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        ready = threading.Event()
        box: list[asyncio.AbstractEventLoop] = []
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve,
            args=(box, failure, ready),
            name="asynctg-compat-loop",
            daemon=True,  # never keeps the interpreter alive; atexit stops it cleanly first
        )
        thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        self._loop, self._thread = box[0], thread
        if not self._atexit_registered:
            atexit.register(self.shutdown)
            self._atexit_registered = True
        return box[0], thread

    @staticmethod
    def _serve(
        box: list[asyncio.AbstractEventLoop],
        failure: list[BaseException],
        ready: threading.Event,
    ) -> None:
        try:
            loop = _new_event_loop()
            asyncio.set_event_loop(loop)
        except BaseException as exc:  # reported to the starting thread, not lost in this one
            failure.append(exc)
            ready.set()
            return
        box.append(loop)
        ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                _cancel_remaining(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def shutdown(self, timeout: float = _SHUTDOWN_TIMEOUT_SECONDS) -> None:
        """Close the engines used on the loop, then stop the loop and join its thread.

        Safe to call more than once; the next blocking call starts a new loop.
        """
        if self._thread is threading.current_thread():
            raise ConfigError("shutdown() cannot be called from the compat loop itself")
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            # Engines stay tracked: used again, they open a session on the next loop, which
            # the next shutdown closes.
            engines = list(self._engines)
        if loop is None or thread is None:
            return
        if thread.is_alive():
            self._drain(_drain_timeout())
            if engines:
                closing = asyncio.run_coroutine_threadsafe(_close_engines(engines), loop)
                try:
                    closing.result(timeout)
                except Exception as exc:  # at exit there is no one left to raise to
                    _log.warning("closing asynctg engines at shutdown failed: %r", exc)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)

    def _drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for submitted work to finish (work it starts too)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [f for f in self._in_flight if not f.done()]
            if not pending:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                _log.warning(
                    "asynctg.compat: %d call(s) still running after %.0f s at exit were "
                    "cancelled (set ASYNCTG_COMPAT_EXIT_TIMEOUT to wait longer)",
                    len(pending),
                    timeout,
                )
                return
            concurrent.futures.wait(pending, timeout=left)

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork, and the lock may have been held by a thread that
        # no longer exists: start over, so the child's first call starts a loop of its own
        # instead of waiting forever on the parent's.
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._engines = weakref.WeakSet()
        self._in_flight = set()

    # --- running ------------------------------------------------------------------------------

    def track(self, engine: ChatEngine) -> None:
        with self._lock:  # WeakSet is not safe to grow while shutdown copies it
            self._engines.add(engine)

    def _refuse_on_own_loop(self, coro: Coroutine[Any, Any, Any]) -> None:
        # Blocking from another thread's running loop (a Jupyter cell, an async function) is
        # what TextGrad's blocking calls do too: that loop waits, the private loop does the
        # work, nothing deadlocks. Only this loop's own thread may never wait for itself.
        if threading.current_thread() is not self._thread:
            return
        what = getattr(coro, "__qualname__", "this call")
        coro.close()  # never started, so no "was never awaited" warning
        raise ConfigError(
            f"{what} was called on the asynctg.compat loop's own thread (from a coroutine the "
            "compat layer runs): it would wait for itself forever. Await the native API there."
        )

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the private loop and return at once with its future."""
        self._refuse_on_own_loop(coro)
        try:
            loop, _ = self.get()
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            coro.close()
            raise
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def wait(self, future: concurrent.futures.Future[T], *, cancel_on_exit: bool = True) -> T:
        """Block until ``future`` (work on the private loop) is done; its result or exception.

        If the wait itself is interrupted (KeyboardInterrupt), the work is cancelled when
        ``cancel_on_exit``, so it does not go on changing variables after the caller gave up.
        """
        thread = self._thread
        try:
            while not future.done():
                concurrent.futures.wait((future,), timeout=_LIVENESS_POLL_SECONDS)
                if not future.done() and (thread is None or not thread.is_alive()):
                    future.cancel()
                    raise RuntimeError(
                        "the asynctg.compat event loop stopped before the call finished "
                        "(interpreter shutdown?)"
                    )
        except BaseException:
            if cancel_on_exit:
                future.cancel()
            raise
        return future.result()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and block the calling thread until it is done."""
        return self.wait(self.submit(coro))


async def _close_engines(engines: list[ChatEngine]) -> None:
    results = await asyncio.gather(*(e.aclose() for e in engines), return_exceptions=True)
    for engine, result in zip(engines, results, strict=True):
        if isinstance(result, BaseException):
            _log.warning("closing %r failed: %r", engine, result)


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


_runner = _LoopThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_runner._after_fork_in_child)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the compat loop; block until done; its exception propagates unchanged.

    Raises ``ConfigError`` (and closes ``coro`` unstarted) on the compat loop's own thread.
    """
    return _runner.run(coro)


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on the compat loop without waiting; ``ConfigError`` on its own thread."""
    return _runner.submit(coro)


def wait(future: concurrent.futures.Future[T], *, cancel_on_exit: bool = True) -> T:
    """Block until work submitted to the compat loop is done; its result or its exception."""
    return _runner.wait(future, cancel_on_exit=cancel_on_exit)


def on_loop_thread() -> bool:
    """True in the compat loop's own thread (where nothing may block on the loop)."""
    return threading.current_thread() is _runner._thread


def close_soon(engine: ChatEngine) -> None:
    """Close ``engine``'s HTTP session on the compat loop, if it is running; do not wait."""
    loop = _runner._loop
    if loop is not None and loop.is_running():
        with contextlib.suppress(RuntimeError):  # the loop stopped in between
            asyncio.run_coroutine_threadsafe(engine.aclose(), loop)


def loop() -> asyncio.AbstractEventLoop:
    """The compat layer's event loop (started if needed); for submitting work of your own."""
    return _runner.get()[0]


def track_engine(engine: ChatEngine) -> ChatEngine:
    """Remember ``engine`` so its HTTP session is closed on the loop at shutdown."""
    _runner.track(engine)
    return engine


def shutdown(timeout: float = _SHUTDOWN_TIMEOUT_SECONDS) -> None:
    """Close the engines used through the compat layer and stop its loop (also run at exit).

    Blocking calls made afterwards start a new loop.
    """
    _runner.shutdown(timeout)
