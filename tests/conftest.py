"""Fixtures and settings every test gets."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Compat engines cache replies on disk by default (as TextGrad's do): never in the user's cache
# folder. Set at import, so engines made by module- and session-scoped fixtures see it too.
_SESSION_CACHE = tempfile.mkdtemp(prefix="asynctg-test-cache-")
os.environ["ASYNCTG_CACHE_DIR"] = _SESSION_CACHE
# Importing TextGrad (the fidelity oracle) writes a log file into ./logs at import: keep it, and
# the compat records its handler then receives, out of the checkout. Subprocesses inherit it.
_TEXTGRAD_LOGS = tempfile.mkdtemp(prefix="asynctg-test-textgrad-logs-")
os.environ["TEXTGRAD_LOG_DIR"] = _TEXTGRAD_LOGS


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
    shutil.rmtree(_TEXTGRAD_LOGS, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Each test's engines cache in a folder of its own: no test sees another's replies."""
    folder = tmp_path_factory.mktemp("asynctg-cache")
    monkeypatch.setenv("ASYNCTG_CACHE_DIR", str(folder))
    yield folder


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A Dask LocalCluster of 2 worker processes on loopback, shared by the session's tests."""
    if not os.environ.get("CI"):
        pytest.importorskip("distributed", reason="the Dask extra is not installed")
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=50,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start simulators (``asynctg.sim.SimServer``) on free ports with the given settings;
    close them all at the end of the test."""
    from asynctg.sim import SimConfig, SimServer

    started: list[SimServer] = []

    async def make(**settings: Any) -> SimServer:
        sim = SimServer(SimConfig(**settings))
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.aclose()


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    """One aiohttp client session per test."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session
