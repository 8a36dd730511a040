"""The GEPA loop: ``aoptimize`` (native, async) and ``optimize`` (blocking).

One iteration, as in gepa 0.1.4: if a merge is due (see ``asynctg.gepa.merge``) try it and
end the iteration; otherwise draw ``num_parallel_proposals`` (parent, minibatch) pairs, score
each parent on its minibatch (with traces), ask for new texts for the components the module
selector names, score each child on the same minibatch, and accept every child whose minibatch
sum beats its parent's (identical children once); accepted children are scored on the whole
validation set and join the pool in order. One metric call is one example scored.

Where the order of decisions allows, the calls run together: a batch's examples, the parents
of one iteration, each proposal's reflection and child evaluation (as soon as its parent's
scores are in), and the accepted children's validation runs. Decisions that read or change
shared state (the random draws, the round-robin component choice, acceptance and insertion)
are taken in proposal order between those waves, so ``num_parallel_proposals=1`` makes the
decisions sequential gepa makes for the same seed and the same answers, and ``P > 1`` those
of gepa's ``IndependentSampling(P)``.

Deviations: validation evaluations of new candidates pass ``capture_traces=False`` (gepa
passes True; nothing reads those traces); a resumed run neither re-evaluates the seed nor
re-seeds the generator, so it continues exactly as if never stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asynctg import fanout
from asynctg.engine import Engine
from asynctg.errors import APIError, BudgetExceededError, ConfigError
from asynctg.gepa.adapter import DefaultAdapter, EvaluationBatch, call, evaluate
from asynctg.gepa.merge import Merges
from asynctg.gepa.models import FANOUT, resolve_model
from asynctg.gepa.proposer import Proposer, Reflection
from asynctg.gepa.result import GEPAResult
from asynctg.gepa.selection import (
    CandidateSelector,
    ComponentSelector,
    EpochMinibatches,
    make_candidate_selector,
    make_component_selector,
)
from asynctg.gepa.state import SearchState, ValEvaluation

__all__ = ["Progress", "aoptimize", "optimize"]

#: The file whose presence in ``run_dir`` stops the run after the current iteration.
STOP_FILE = "gepa.stop"
#: gepa 0.1.4 arguments about its own logging and trackers: accepted and ignored here.
_IGNORED = frozenset(
    {
        "logger",
        "callbacks",
        "use_wandb",
        "wandb_api_key",
        "wandb_init_kwargs",
        "wandb_attach_existing",
        "use_mlflow",
        "mlflow_tracking_uri",
        "mlflow_experiment_name",
        "mlflow_attach_existing",
        "tracking_key_prefix",
        "display_progress_bar",
        "use_cloudpickle",
        "reflection_lm_kwargs",
    }
)


@dataclass(frozen=True)
class Progress:
    """What a progress callback gets after every iteration."""

    iteration: int
    metric_calls: int
    max_metric_calls: int | None
    frontier_size: int
    best_score: float
    num_candidates: int
    accepted: int


def _key(candidate: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(candidate.items())).encode()).hexdigest()


def _metric_calls(ev: EvaluationBatch, n: int) -> int:
    return ev.num_metric_calls if ev.num_metric_calls is not None else n


@dataclass
class _Task:
    parent: int
    ids: list[Any]
    batch: list[Any]
    before: EvaluationBatch | None = None
    components: list[str] | None = None
    dataset: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
    child: dict[str, str] | None = None
    after: EvaluationBatch | None = None
    note: str = ""


@dataclass
class _Run:
    """One optimization run's wiring (see ``aoptimize`` for the arguments)."""

    seed_candidate: dict[str, str]
    trainset: list[Any]
    valset: list[Any]
    train_ids: list[int]
    val_ids: list[int]
    adapter: Any
    proposer: Proposer
    rng: random.Random
    select: CandidateSelector
    sampler: EpochMinibatches
    components: ComponentSelector
    merges: Merges | None
    skip_perfect_score: bool
    perfect_score: float
    max_metric_calls: int | None
    run_dir: str | None
    track: bool
    seed: int
    pool: concurrent.futures.ThreadPoolExecutor
    num_parallel_proposals: int
    progress: Callable[[Progress], None] | None
    stoppers: list[Callable[[SearchState], bool]]

    # --- evaluation helpers ---------------------------------------------------------------

    async def _eval(self, batch: list[Any], cand: dict[str, str], traces: bool) -> EvaluationBatch:
        ev: EvaluationBatch = await evaluate(self.adapter, batch, cand, traces, self.pool)
        return ev

    async def _val(self, cand: dict[str, str], ids: list[Any]) -> ValEvaluation:
        ev = await self._eval([self.valset[i] for i in ids], cand, False)
        return ValEvaluation(
            dict(zip(ids, ev.scores, strict=True)), dict(zip(ids, ev.outputs, strict=True))
        )

    def _add(
        self, state: SearchState, cand: dict[str, str], parents: list[int], ev: ValEvaluation
    ) -> int:
        idx = state.add_candidate(cand, parents, ev)  # records the count before this evaluation
        state.total_num_evals += len(ev.scores)
        state.num_full_val_evals += 1
        return idx

    # --- one iteration --------------------------------------------------------------------

    async def _merge(self, state: SearchState, record: dict[str, Any]) -> bool:
        """A due merge, tried; True when it took this iteration."""
        merges = self.merges
        assert merges is not None
        if not (merges.due > 0 and merges.last_found):
            merges.last_found = False
            return False
        record["invoked_merge"] = True
        plan = merges.plan(self.rng, state)
        merges.last_found = False
        if plan is None:
            return False
        ev = await self._eval([self.valset[i] for i in plan.ids], plan.candidate, False)
        state.total_num_evals += len(plan.ids)
        new_sum = sum(ev.scores)
        record.update(
            merged=list(plan.parents),
            ancestor=plan.ancestor,
            subsample_ids=plan.ids,
            parent_sums=list(plan.parent_sums),
            new_sum=new_sum,
        )
        if new_sum >= max(plan.parent_sums):
            val = await self._val(plan.candidate, self.val_ids)
            idx = self._add(state, plan.candidate, list(plan.parents), val)
            merges.due -= 1
            merges.tested += 1
            record["accepted"] = [idx]
        return True

    async def _reflect(self, state: SearchState, task: _Task) -> None:
        """Texts proposed for one prepared task, then its child scored on the minibatch."""
        assert task.components is not None and task.dataset is not None
        parent = state.candidates[task.parent]
        try:
            texts = await self.proposer.propose(dict(parent), task.dataset, task.components)
        except (BudgetExceededError, APIError):
            raise
        except Exception as exc:
            task.note = f"reflection failed: {type(exc).__name__}: {exc}"
            return
        if not texts:
            task.note = "no new text proposed"
            return
        unknown = [n for n in texts if n not in parent]
        if unknown:
            raise ConfigError(f"proposed texts for unknown components {unknown}")
        task.child = {**parent, **texts}
        task.after = await self._eval(task.batch, task.child, True)

    async def _propose(self, state: SearchState, record: dict[str, Any]) -> list[int]:
        tasks: list[_Task] = []
        for _ in range(self.num_parallel_proposals):
            parent = self.select(state)
            ids = self.sampler.next_ids(self.train_ids, state.i)
            tasks.append(_Task(parent, ids, [self.trainset[i] for i in ids]))
        # parents scored together, each distinct (parent, minibatch) once
        unique: dict[tuple[str, tuple[Any, ...]], _Task] = {}
        for t in tasks:
            unique.setdefault((_key(state.candidates[t.parent]), tuple(t.ids)), t)
        evals = await fanout.gather(
            self._eval(t.batch, dict(state.candidates[t.parent]), True) for t in unique.values()
        )
        by_key = dict(zip(unique, evals, strict=True))
        state.total_num_evals += sum(
            _metric_calls(ev, len(t.batch)) for t, ev in zip(unique.values(), evals, strict=True)
        )
        record["tasks"] = [{"parent": t.parent, "ids": list(t.ids)} for t in tasks]
        # in proposal order: skips, component choice (it advances shared state), datasets
        for t in tasks:
            t.before = by_key[(_key(state.candidates[t.parent]), tuple(t.ids))]
            if not t.before.trajectories:
                t.note = "no trajectories"
                continue
            if self.skip_perfect_score and all(s >= self.perfect_score for s in t.before.scores):
                t.note = "all scores perfect"
                continue
            t.components = self.components(state, t.parent, state.candidates[t.parent])
        ready = [t for t in tasks if t.components is not None]
        datasets = await fanout.gather(self._dataset(state, t) for t in ready)
        for t, ds in zip(ready, datasets, strict=True):
            t.dataset = ds
        await fanout.gather(self._reflect(state, t) for t in ready if t.dataset is not None)
        done = [t for t in tasks if t.after is not None]
        state.total_num_evals += sum(_metric_calls(t.after, len(t.batch)) for t in done if t.after)
        # acceptance, in proposal order; a child identical to an earlier accepted one is dropped
        chosen: list[_Task] = []
        seen: set[str] = set()
        for n, t in enumerate(tasks):
            info = record["tasks"][n]
            info["note"] = t.note
            if t.after is None or t.before is None or t.child is None:
                continue
            before, after = sum(t.before.scores), sum(t.after.scores)
            info.update(before=before, after=after, components=t.components)
            if after > before and _key(t.child) not in seen:
                seen.add(_key(t.child))
                chosen.append(t)
                info["accepted"] = True
        vals = await fanout.gather(self._val(dict(t.child or {}), self.val_ids) for t in chosen)
        added = []
        for t, val in zip(chosen, vals, strict=True):
            added.append(self._add(state, t.child or {}, [t.parent], val))
            if self.merges is not None:
                self.merges.on_accept()
        return added

    async def _dataset(
        self, state: SearchState, t: _Task
    ) -> Mapping[str, Sequence[Mapping[str, Any]]] | None:
        parent = dict(state.candidates[t.parent])
        try:
            ds = await call(
                self.adapter.make_reflective_dataset,
                self.pool,
                parent,
                t.before,
                list(t.components or []),
            )
        except Exception as exc:
            t.note = f"reflective dataset failed: {type(exc).__name__}: {exc}"
            return None
        return {str(k): [dict(r) for r in v] for k, v in dict(ds).items()}

    # --- the loop -------------------------------------------------------------------------

    def _stop(self, state: SearchState) -> bool:
        if self.max_metric_calls is not None and state.total_num_evals >= self.max_metric_calls:
            return True
        if any(stop(state) for stop in self.stoppers):
            return True
        return self.run_dir is not None and os.path.exists(os.path.join(self.run_dir, STOP_FILE))

    def _save(self, state: SearchState) -> None:
        state.sampler = self.sampler.state()
        if self.merges is not None:
            state.merge = self.merges.state()
        state.save(self.run_dir, self.rng)

    async def run(self) -> GEPAResult:
        state = SearchState.load(self.run_dir, self.rng) if self.run_dir else None
        if state is None:
            seed_val = await self._val(dict(self.seed_candidate), self.val_ids)
            state = SearchState.start(self.seed_candidate, seed_val, track_outputs=self.track)
        else:
            self.sampler.restore(state.sampler)
            if self.merges is not None:
                self.merges.restore(state.merge)
        while not self._stop(state):
            self._save(state)
            state.i += 1
            record: dict[str, Any] = {"i": state.i}
            state.trace.append(record)
            accepted: list[int] = []
            if self.merges is not None and await self._merge(state, record):
                accepted = list(record.get("accepted", []))
            else:
                accepted = await self._propose(state, record)
            record.update(
                accepted=accepted,
                metric_calls=state.total_num_evals,
                front=state.front_members(),
                best_score=max(state.aggregate_scores),
            )
            if self.progress is not None:
                self.progress(
                    Progress(
                        iteration=state.i,
                        metric_calls=state.total_num_evals,
                        max_metric_calls=self.max_metric_calls,
                        frontier_size=len(state.front_members()),
                        best_score=max(state.aggregate_scores),
                        num_candidates=len(state.candidates),
                        accepted=len(accepted),
                    )
                )
        self._save(state)
        return GEPAResult.from_state(state, self.run_dir, self.seed)


def _listed(data: Any, name: str) -> list[Any]:
    """A data set as a list: a sequence, or a gepa ``DataLoader`` (all its ids, fetched)."""
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return list(data)
    all_ids = getattr(data, "all_ids", None)
    fetch = getattr(data, "fetch", None)
    if callable(all_ids) and callable(fetch):
        return list(fetch(list(all_ids())))
    raise ConfigError(f"{name} must be a list of examples, got {type(data).__name__}")
    return list(data)


async def aoptimize(
    seed_candidate: dict[str, str],
    trainset: Sequence[Any],
    valset: Sequence[Any] | None = None,
    adapter: Any = None,
    task_lm: Any = None,
    evaluator: Callable[[Mapping[str, Any], str], Sequence[Any]] | None = None,
    reflection_lm: Any = None,
    *,
    candidate_selection_strategy: str | Any = "pareto",
    frontier_type: str = "instance",
    skip_perfect_score: bool = True,
    batch_sampler: str = "epoch_shuffled",
    reflection_minibatch_size: int | None = None,
    perfect_score: float = 1.0,
    reflection_prompt_template: str | dict[str, str] | None = None,
    custom_candidate_proposer: Any = None,
    module_selector: str | Any = "round_robin",
    use_merge: bool = False,
    max_merge_invocations: int = 5,
    merge_val_overlap_floor: int = 5,
    max_metric_calls: int | None = None,
    stop_callbacks: Any = None,
    run_dir: str | None = None,
    track_best_outputs: bool = True,
    seed: int = 0,
    raise_on_exception: bool = True,
    num_parallel_proposals: int = 1,
    proposer: str | Proposer = "reflection",
    optimizer_engine: Any = None,
    progress: Callable[[Progress], None] | None = None,
    **gepa_only: Any,
) -> GEPAResult:
    """GEPA's reflective Pareto search (gepa 0.1.4's ``optimize``, same core arguments).

    ``seed_candidate`` maps component names to their starting texts; ``trainset`` feeds the
    reflective minibatches, ``valset`` (default: the trainset) the Pareto front. Give an
    ``adapter`` (gepa's protocol; sync or async methods) or a ``task_lm`` (model name, asynctg
    engine or ``messages -> text`` callable) for the default single-prompt adapter.
    ``reflection_lm`` is a model name, an engine or a ``prompt -> text`` callable. The run
    stops once ``max_metric_calls`` examples have been scored (or a ``gepa.stop`` file appears
    in ``run_dir``, or a ``stop_callbacks`` callable returns True for the state); with
    ``run_dir`` it checkpoints every iteration and resumes from it. Arguments after
    ``reflection_lm`` are keyword-only.

    asynctg additions: ``num_parallel_proposals`` (P parents from the front per iteration,
    proposed and evaluated concurrently), ``proposer="textgrad"`` (the reflective step as
    asynctg's backward pass plus TGD; ``optimizer_engine`` defaults to ``reflection_lm``) and
    ``progress`` (called after every iteration with a ``Progress``).

    >>> # result = await asynctg.gepa.aoptimize(seed_candidate={"system_prompt": "..."},
    >>> #     trainset=train, valset=val, task_lm="gpt-4o-mini", reflection_lm="gpt-4o",
    >>> #     max_metric_calls=500)
    """
    unknown = set(gepa_only) - _IGNORED
    if unknown:
        raise ConfigError(f"unsupported argument(s): {', '.join(sorted(unknown))}")
    if not seed_candidate:
        raise ConfigError("seed_candidate must hold at least one component text")
    if frontier_type != "instance":
        raise ConfigError(f"frontier_type {frontier_type!r} is not supported; use 'instance'")
    if batch_sampler != "epoch_shuffled":
        raise ConfigError(f"batch_sampler {batch_sampler!r} is not supported")
    if stop_callbacks is None:
        stoppers = []
    elif callable(stop_callbacks):
        stoppers = [stop_callbacks]
    else:
        stoppers = list(stop_callbacks)
    if max_metric_calls is None and run_dir is None and not stoppers:
        raise ConfigError("give max_metric_calls, stop_callbacks or a run_dir (gepa.stop)")
    if num_parallel_proposals < 1:
        raise ConfigError(
            f"num_parallel_proposals must be at least 1, got {num_parallel_proposals}"
        )
    if not raise_on_exception:
        raise ConfigError("raise_on_exception=False is not supported: failures are raised")
    if (adapter is None) == (task_lm is None):
        raise ConfigError("give exactly one of adapter and task_lm")
    train = _listed(trainset, "trainset")
    val = _listed(valset, "valset") if valset is not None else train
    if not val:
        raise ConfigError("the validation set is empty")
    owned: list[Engine] = []
    pool = concurrent.futures.ThreadPoolExecutor(FANOUT, thread_name_prefix="asynctg-gepa")
    try:
        if adapter is None:
            adapter = DefaultAdapter(resolve_model(task_lm, "messages", pool, owned), evaluator)
        elif evaluator is not None:
            raise ConfigError("evaluator applies to the default adapter only (give task_lm)")
        reflect_engine = (
            resolve_model(reflection_lm, "prompt", pool, owned)
            if reflection_lm is not None
            else None
        )
        chosen: Proposer
        if proposer == "reflection":
            chosen = Reflection(
                adapter, reflect_engine, reflection_prompt_template, custom_candidate_proposer, pool
            )
        elif proposer == "textgrad":
            from asynctg.gepa.textgrad import TextGradProposer

            opt = (
                resolve_model(optimizer_engine, "prompt", pool, owned)
                if optimizer_engine is not None
                else reflect_engine
            )
            if opt is None:
                raise ConfigError("proposer='textgrad' needs reflection_lm or optimizer_engine")
            chosen = TextGradProposer(opt)
        elif hasattr(proposer, "propose"):
            chosen = proposer
        else:
            raise ConfigError(f"proposer must be 'reflection' or 'textgrad', got {proposer!r}")
        rng = random.Random(seed)
        run = _Run(
            seed_candidate=dict(seed_candidate),
            trainset=train,
            valset=val,
            train_ids=list(range(len(train))),
            val_ids=list(range(len(val))),
            adapter=adapter,
            proposer=chosen,
            rng=rng,
            select=make_candidate_selector(candidate_selection_strategy, rng),
            sampler=EpochMinibatches(reflection_minibatch_size or 3, rng),
            components=make_component_selector(module_selector),
            merges=Merges(max_merge_invocations, merge_val_overlap_floor) if use_merge else None,
            skip_perfect_score=skip_perfect_score,
            perfect_score=perfect_score,
            max_metric_calls=max_metric_calls,
            run_dir=run_dir,
            track=track_best_outputs,
            seed=seed,
            pool=pool,
            num_parallel_proposals=num_parallel_proposals,
            progress=progress,
            stoppers=stoppers,
        )
        return await run.run()
    finally:
        for engine in owned:
            await engine.aclose()
        pool.shutdown(wait=False, cancel_futures=True)


def optimize(*args: Any, **kwargs: Any) -> GEPAResult:
    """``aoptimize`` for blocking code: same arguments, same result.

    Called from a thread that runs an event loop (a Jupyter cell, an async function), it runs
    the search on a loop of its own in a worker thread and waits for it, so the caller's loop
    is never re-entered.
    """
    from asynctg.runtime import run

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run(aoptimize(*args, **kwargs))
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = run(aoptimize(*args, **kwargs))
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=work, name="asynctg-gepa", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    result: GEPAResult = box["result"]
    return result
