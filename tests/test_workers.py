"""Worker pools for CPU-heavy objective functions: initialisation once per worker, caching and
coalescing, timeouts that stop the worker, lost workers retried, errors typed, and the event
loop kept free while evaluations run."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pool_functions as fns
import pytest

from asynctg.errors import (
    ConfigError,
    WorkerFunctionError,
    WorkerLostError,
    WorkerTimeoutError,
)
from asynctg.workers import EvaluationCache, ProcessPool


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_workers_are_initialised_once_and_single_threaded() -> None:
    async with ProcessPool(2, initializer=fns.init, initargs=("maps",)) as pool:
        async with anyio.create_task_group() as tg:
            answers: list[dict[str, object]] = []

            async def one(i: int) -> None:
                answers.append(await pool.run(fns.whoami, i, cache=False))

            for i in range(8):
                tg.start_soon(one, i)
        stats = pool.statistics()
    assert sorted(a["x"] for a in answers) == list(range(8))  # type: ignore[type-var]
    assert {a["tag"] for a in answers} == {"maps"}
    assert {a["inits"] for a in answers} == {1}  # the initializer ran once per process
    assert {a["omp"] for a in answers} == {"1"}
    assert len({a["pid"] for a in answers}) <= 2
    assert stats["evaluations"] == 8 and stats["started"] <= 2


async def test_results_are_cached_by_input_and_identical_calls_coalesce(tmp_path: Path) -> None:
    path = tmp_path / "evaluations.jsonl"
    async with ProcessPool(1, cache=path) as pool:
        results: list[int] = []

        async def one() -> None:
            results.append(await pool.run(fns.square, 7, offset=1))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        assert await pool.run(fns.square, 7, offset=1) == 50
        assert await pool.run(fns.square, 7, offset=2) == 51  # another input: evaluated
        stats = pool.statistics()
    assert results == [50] * 5
    assert stats["evaluations"] == 2
    assert stats["coalesced"] == 4 and stats["cache_hits"] == 1
    # a later run (a resume) finds the finished evaluations on disk and runs nothing
    async with ProcessPool(1, cache=path) as again:
        assert await again.run(fns.square, 7, offset=2) == 51
        assert again.statistics()["evaluations"] == 0
        assert again.statistics()["started"] == 0


def test_a_torn_cache_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "evaluations.jsonl"
    cache = EvaluationCache(path)
    cache.put("a", {"vina": -7.1})
    cache.close()
    with path.open("a") as handle:
        handle.write('{"key": "b", "resu')  # killed mid-write
    again = EvaluationCache(path)
    assert again.get("a") == {"vina": -7.1} and "b" not in again


async def test_a_timeout_stops_the_worker_and_the_pool_goes_on(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    async with ProcessPool(1, timeout=1.0) as pool:
        with pytest.raises(WorkerTimeoutError, match="timeout"):
            await pool.run(fns.marked_sleep, str(marker), 60.0, cache=False)
        pid = int(marker.read_text())
        assert not _alive(pid)  # stopped, not left running
        assert await pool.run(fns.square, 3) == 9  # a fresh worker took its place
        assert pool.statistics()["timeouts"] == 1


async def test_cancelling_an_evaluation_stops_its_worker(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    async with ProcessPool(1) as pool:
        with anyio.move_on_after(30) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.run, fns.marked_sleep, str(marker), 60.0)
                while not marker.exists():  # noqa: ASYNC110 - the worker's file says it started
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught
        pid = int(marker.read_text())
        assert not _alive(pid)
        assert await pool.run(fns.square, 4) == 16


async def test_a_killed_worker_loses_nothing(tmp_path: Path) -> None:
    """The evaluation whose worker died is run again on a fresh one; with no retries left the
    error is typed."""
    async with ProcessPool(2, retries=1) as pool:
        assert await pool.run(fns.die_once, str(tmp_path / "m")) == "survived"
        assert pool.statistics()["lost"] == 1
        with pytest.raises(WorkerLostError, match="died"):
            await pool.run(fns.always_die)
        assert await pool.run(fns.square, 5) == 25


async def test_errors_are_typed_and_not_cached(tmp_path: Path) -> None:
    async with ProcessPool(1, cache=tmp_path / "c.jsonl") as pool:
        with pytest.raises(WorkerFunctionError, match="ValueError: bad SMILES") as info:
            await pool.run(fns.fail, "bad SMILES")
        assert info.value.kind == "ValueError" and "Traceback" in info.value.remote_traceback
        assert len(pool.cache) == 0
    with pytest.raises(WorkerFunctionError, match=r"initializer .*receptor file missing"):
        async with ProcessPool(1, initializer=fns.bad_init) as pool:
            await pool.run(fns.square, 1)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="cores"):
        ProcessPool((os.cpu_count() or 1) + 1)
    with pytest.raises(ConfigError, match="positive"):
        ProcessPool(0)
    with pytest.raises(ConfigError, match="timeout"):
        ProcessPool(1, timeout=-1)


async def test_the_event_loop_stays_free_while_workers_compute() -> None:
    """While both workers burn CPU, the loop keeps running other tasks (ticks counted, not
    timed: a blocked loop would tick zero times before the evaluations end)."""
    ticks = 0
    async with ProcessPool(2) as pool:
        done = anyio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await anyio.sleep(0.005)

        async def work() -> None:
            await pool.run(fns.spin, 0.5, cache=False)

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            async with anyio.create_task_group() as inner:
                inner.start_soon(work)
                inner.start_soon(work)
            ticks_at_end = ticks
            done.set()
        stats = pool.statistics()
    assert ticks_at_end > 5
    assert stats["cpu_seconds"] >= 1.0


# --- the Dask backend, against a LocalCluster of 2 worker processes on loopback ---------------


@pytest.mark.slow
async def test_dask_pool_gives_the_local_pools_results(dask_address: str, tmp_path: Path) -> None:
    from asynctg.workers import DaskPool

    async with DaskPool(dask_address, initializer=fns.init, initargs=("maps",)) as pool:
        answers = [await pool.run(fns.whoami, i, cache=False) for i in range(4)]
        squares = [await pool.run(fns.square, i, offset=1) for i in range(6)]
        assert await pool.run(fns.square, 3, offset=1) == 10  # cached
        stats = pool.statistics()
    async with ProcessPool(2) as local:
        expected = [await local.run(fns.square, i, offset=1) for i in range(6)]
    assert squares == expected
    assert {a["tag"] for a in answers} == {"maps"}  # the plugin initialised the workers
    assert stats["evaluations"] == 10 and stats["cache_hits"] == 1 and stats["workers"] == 2


@pytest.mark.slow
async def test_dask_worker_killed_mid_evaluation_loses_nothing(
    dask_address: str, tmp_path: Path
) -> None:
    from asynctg.workers import DaskPool

    async with DaskPool(dask_address, timeout=1.0) as pool:
        # the worker process dies; the scheduler reruns the task on a worker that lives
        assert await pool.run(fns.die_once, str(tmp_path / "m")) == "survived"
        with pytest.raises(WorkerFunctionError, match="ValueError: nope"):
            await pool.run(fns.fail, "nope")
        with pytest.raises(WorkerTimeoutError):
            await pool.run(fns.marked_sleep, str(tmp_path / "pid"), 3.0)
        assert pool.statistics()["timeouts"] == 1


async def test_string_based_function_runs_in_the_pool() -> None:
    """StringBasedFunction(pool=) gets the inputs' values in a worker; the output is a graph
    node whose predecessor is the input, as without a pool."""
    import asynctg as tg

    x = tg.Variable("molecule", requires_grad=True, role_description="a design")
    async with ProcessPool(1) as pool:
        fn = tg.autograd.StringBasedFunction(fns.shout, "shouts the design", pool=pool)
        out = await fn(inputs={"text": x})
        again = await fn(inputs={"text": x})
        stats = pool.statistics()
    assert out.value.startswith("MOLECULE from pid ")
    assert int(out.value.split()[-1]) != os.getpid()  # it ran in the worker
    assert x in out.predecessors and again.value == out.value
    assert stats["evaluations"] == 1 and stats["cache_hits"] == 1
    with pytest.raises(ConfigError, match="pool"):
        tg.autograd.StringBasedFunction(fns.shout, "x", pool=object())


@pytest.mark.slow
async def test_dask_docks_exactly_like_the_local_pool(dask_address: str) -> None:
    """Same molecules, same seeds: the cluster's Vina scores equal the local processes'."""
    if not os.environ.get("CI"):
        pytest.importorskip("vina")
    from asynctg.science import docking
    from asynctg.workers import DaskPool

    setup = docking.DockingSetup.default(exhaustiveness=1)
    molecules = ["CCO", "CC(=O)Oc1ccccc1C(=O)O", "C1CC("]
    options: dict[str, object] = {"initializer": docking.init_worker, "initargs": (setup,)}
    async with DaskPool(dask_address, **options) as remote:  # type: ignore[arg-type]
        on_cluster = [await remote.run(docking.evaluate, m, setup) for m in molecules]
    async with ProcessPool(2, **options) as local:  # type: ignore[arg-type]
        here = [await local.run(docking.evaluate, m, setup) for m in molecules]
    assert on_cluster == here
    assert isinstance(here[1]["vina"], float) and here[2]["valid"] is False
