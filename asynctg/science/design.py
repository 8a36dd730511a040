"""Design optimization with a CPU-heavy objective: the loop behind ``molecule`` and
``radiotherapy`` (the TextGrad paper's §3.4 and §3.5).

For every starting design (a SMILES string, a plan's objective set), concurrently::

    design (variable) --evaluate in a worker--> measured numbers, as text (StringBasedFunction)
                      --TextLoss: critique of the numbers against the goals--> loss
    loss.backward()   feedback on the numbers, then on the design itself
    TGD step          the optimizer rewrites the design under the domain's format constraint

Iteration 0 evaluates the starting design; each of ``iterations`` rounds then costs four LLM
calls (loss, two backward, optimizer) and one evaluation. The evaluation runs in a worker pool
(``asynctg.workers``: local processes or a Dask cluster), so while one design docks or plans,
the LLM calls of the others go on: the run's wall time approaches the evaluations' CPU divided
by the workers, with the LLM calls hidden underneath. A design the evaluator cannot use (an
invalid SMILES, a rejected objective set) is evaluated as such: the loss reads why, and its
feedback steers the next proposal; nothing crashes.

A ``Designer`` says what is designed: the variable's role, the optimizer's constraint, the
loss's instruction, the worker function and how to render its result for the LLM and record it
in the trajectory. Evaluations are cached by design (``cache_key``) in the pool; with a
checkpoint the cache lives in its folder, so a resumed run re-evaluates nothing it finished
and replays its LLM calls from the journal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from asynctg.engine.jobs import Job
from asynctg.engine.protocol import Engine
from asynctg.errors import ConfigError, WorkerError
from asynctg.graph.ops import StringBasedFunction
from asynctg.graph.variable import Variable
from asynctg.loss import TextLoss
from asynctg.runs.checkpoint import Checkpoint
from asynctg.runs.loop import EventSink, ItemRun, RoundsConfig, run_host
from asynctg.runs.rounds import refine

__all__ = ["DesignConfig", "DesignResult", "Designer", "make_pool", "optimize_designs"]


@dataclass(frozen=True)
class Designer:
    """One kind of design: what the loop needs to know about it (see the module docstring)."""

    kind: str  # "molecule", "radiotherapy"
    role: str  # the variable's role description
    constraint: str  # the optimizer's constraint on the new value's format
    purpose: str  # what the evaluation function does (its backward prompt says so)
    loss_instruction: str  # the TextLoss's system prompt: critique against the goals
    evaluate: Callable[..., Any]  # top-level worker function: (design, *args) -> JSON-able
    args: tuple[Any, ...]  # the evaluation's extra arguments (e.g. the docking setup)
    cache_key: Callable[[str], str]  # the evaluation cache's key of a design
    render: Callable[[str, Any], str]  # (design, result) -> the text the loss reads
    record: Callable[[str, Any], dict[str, Any]]  # (design, result) -> one trajectory row
    input_name: str = "design"


@dataclass(frozen=True)
class DesignConfig(RoundsConfig):
    """``iterations`` optimizer rounds per starting design (0: only evaluate the starts)."""


@dataclass
class DesignResult:
    """Per starting design (``candidates``): its ``trajectory`` (one row per iteration, the
    starting design first), or ``error`` when its LLM calls failed for good."""

    kind: str
    candidates: list[dict[str, Any]]
    status: str
    stop_reason: str | None
    failed: int
    usage: dict[str, Any]
    evaluations: dict[str, Any]
    config: dict[str, Any]
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Measured:
    """The evaluation's text as a graph function's result: the numbers were computed in a
    worker (cached there); this hands them to the graph so backward can explain them."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, **inputs: Variable) -> str:
        return self.text


async def _evaluate(designer: Designer, pool: Any, design: str) -> Any:
    return await pool.run(
        designer.evaluate, design, *designer.args, cache_key=designer.cache_key(design)
    )


async def _optimize_one(
    index: int,
    start: str,
    designer: Designer,
    engine: Engine,
    pool: Any,
    iterations: int,
    on_iteration: Callable[[int, int, dict[str, Any]], None],
) -> dict[str, Any]:
    loss_fn = TextLoss(designer.loss_instruction, engine=engine)
    trajectory: list[dict[str, Any]] = []

    async def measure(value: str) -> tuple[str, Any]:
        result = await _evaluate(designer, pool, value)
        row = {"iteration": len(trajectory), **designer.record(value, result)}
        trajectory.append(row)
        on_iteration(index, row["iteration"], row)
        return value, result

    async def critique(design: Variable, measured: tuple[str, Any]) -> Variable:
        text = designer.render(*measured)
        evaluation = await StringBasedFunction(_Measured(text), designer.purpose)(
            inputs={designer.input_name: design}
        )
        return await loss_fn(evaluation)

    await refine(
        engine,
        start,
        role=designer.role,
        constraints=[designer.constraint],
        rounds=iterations,
        evaluate=measure,
        loss=critique,
    )
    return {"index": index, "start": start, "trajectory": trajectory}


async def optimize_designs(
    designer: Designer,
    starts: Sequence[str],
    engine: Engine,
    *,
    pool: Any,
    config: DesignConfig | None = None,
    checkpoint: Checkpoint | None = None,
    on_event: EventSink | None = None,
) -> DesignResult:
    """Optimise every starting design concurrently; see the module docstring.

    ``pool`` is an ``asynctg.workers`` pool the caller owns (its initializer prepares the
    evaluator: receptor maps, dose matrix). With ``checkpoint`` (already ``open()``) every
    finished design is saved and a resumed run skips it.
    """
    async with run_host(engine).job(f"optimize_designs {designer.kind}") as job:
        return await _optimize_designs(designer, starts, job, pool, config, checkpoint, on_event)


async def _optimize_designs(
    designer: Designer,
    starts: Sequence[str],
    engine: Job,
    pool: Any,
    config: DesignConfig | None,
    checkpoint: Checkpoint | None,
    on_event: EventSink | None,
) -> DesignResult:
    """The run, inside its job."""
    if not starts:
        raise ConfigError(f"{designer.kind}: no starting designs given")
    config = config or DesignConfig()
    clock = time.monotonic()
    run = ItemRun(
        engine,
        noun="designs",
        total=len(starts),
        budget=config.budget,
        checkpoint=checkpoint,
        on_event=on_event,
    )
    run.start(f"optimizing {run.total} {designer.kind} designs, {config.iterations} rounds each")

    def on_iteration(index: int, iteration: int, row: dict[str, Any]) -> None:
        run.emit(
            "step",
            f"design {index + 1}, iteration {iteration}: {_brief(row)}",
            progress=run.progress(),
            index=index,
            iteration=iteration,
        )

    async def solve(i: int) -> dict[str, Any]:
        return await _optimize_one(
            i, starts[i], designer, engine, pool, config.iterations, on_iteration
        )

    def failed(i: int, exc: Exception) -> dict[str, Any]:
        kind = "evaluation" if isinstance(exc, WorkerError) else "LLM"
        return {"index": i, "start": starts[i], "error": f"{kind}: {exc}", "trajectory": []}

    def describe(i: int, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if "error" in record:
            return f"design {i + 1}: error", {}
        return f"design {i + 1}: {_brief(record['trajectory'][-1])}", {}

    status = await run.run(solve, failed, describe)
    ordered = run.ordered()
    run.emit("done", f"{status}: {len(ordered)} designs", status=status)
    return DesignResult(
        kind=designer.kind,
        candidates=ordered,
        status=status,
        stop_reason=run.stop_reason,
        failed=run.failed(),
        usage=run.meter.total(),
        evaluations=pool.statistics(),
        config=config.fingerprint_fields(),
        seconds=round(time.monotonic() - clock, 3),
    )


def make_pool(
    initializer: Callable[..., Any],
    initargs: tuple[Any, ...],
    *,
    workers: int | None = None,
    cluster: Any = None,
    timeout: float | None = None,
    cache: Any = None,
) -> Any:
    """The evaluation pool of a run: local processes, or a Dask cluster when ``cluster`` is an
    address (``tcp://host:port``) or an asynchronous ``distributed.Client``."""
    if cluster is not None:
        from asynctg.workers.dask import DaskPool

        if isinstance(cluster, str):
            return DaskPool(
                cluster, initializer=initializer, initargs=initargs, timeout=timeout, cache=cache
            )
        return DaskPool(
            client=cluster, initializer=initializer, initargs=initargs, timeout=timeout, cache=cache
        )
    from asynctg.workers import ProcessPool

    return ProcessPool(
        workers, initializer=initializer, initargs=initargs, timeout=timeout, cache=cache
    )


def _brief(row: dict[str, Any]) -> str:
    shown = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "iteration"}
    metrics = row.get("metrics")
    if isinstance(metrics, dict):
        shown.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    if not shown:
        return str(row.get("error") or "evaluated")
    return ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
    )
