"""Prompt optimization, the paper's BBH / GSM8K setting.

The loop follows TextGrad's ``evaluation/prompt_optimization.py`` call for call: the starting
system prompt is the task description; before training, the test set (and the validation set,
with ``validate``) is evaluated; then for each minibatch the model answers every question, the
evaluation function turns each answer into a loss, ``tg.sum`` of the losses is
back-propagated, the optimizer rewrites the system prompt, and (with ``validate``) the new
prompt is kept only if validation accuracy did not drop; then the test set is evaluated again.
What asynctg changes is only how the calls run: a minibatch's answers, losses and feedback are
all in flight at once, evaluating a split is one concurrent fan-out through the engine's
budget, and the steps run as a pipeline (``_PromptRun._pipelined``): test scores never steer
training and validation scores steer it only through the accept-or-revert decision, so a
step's test scoring, and the validation answers its decision did not need (once the answers
still missing cannot change it), run beside the next step's training, as does the scoring
before training beside the first step, with the same requests, rows and checkpoints as one
after another. The run is a job of the engine it is given
(``asynctg.engine.jobs``): on an engine shared with other work, ``result.usage``, the ``Budget``
and the progress lines count this run's calls only.

Differences from the script, on purpose: the validation set is evaluated before training only
when ``validate`` is on (the script evaluates it always and never uses it otherwise); an
unreadable judge verdict scores 0 instead of crashing the run.

>>> # async with tg.get_engine("gpt-4o-mini") as engine:
>>> #     task = asynctg.tasks.get_task("object_counting")
>>> #     result = await optimize_prompt(task, engine, config=PromptConfig(batch_size=3))
>>> #     print(result.final_prompt, result.history[-1]["test_accuracy"])
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from asynctg import fanout, prompts, telemetry
from asynctg.apps.prompt_pipeline import (
    BACKGROUND_PRIORITY,
    PENDING_ROWS,
    Pending,
    Scoring,
    Tally,
    below,
)
from asynctg.engine.prompt_cache import run_scope
from asynctg.engine.protocol import Engine
from asynctg.engine.tiers import check_tier, use_tier
from asynctg.errors import (
    ConfigError,
    OptimizerParseError,
    require_int,
)
from asynctg.graph.ops import BlackboxLLM
from asynctg.graph.ops import sum as tg_sum
from asynctg.graph.variable import Variable
from asynctg.optim.aggregation import Strategy, check_strategy
from asynctg.optim.tgd import TextualGradientDescent
from asynctg.runs.checkpoint import Checkpoint, journal_step
from asynctg.runs.loop import (
    EVALUATION_WINDOW,
    STOPS,
    Budget,
    EventSink,
    Metered,
    Run,
    count_bounded,
    engine_of,
    gather,
    merge_usage,
    run_host,
    subtract_usage,
)
from asynctg.tasks.evaluation import make_evaluator
from asynctg.tasks.loader import DataLoader
from asynctg.tasks.types import QA, PromptTask

__all__ = ["PromptConfig", "PromptResult", "optimize_prompt"]

QUERY_ROLE = "query to the language model"
ANSWER_ROLE = "correct answer for the query"


@dataclass(frozen=True)
class PromptConfig:
    """Settings of a prompt-optimization run (defaults: the paper's, 3 epochs of 4 steps of 3).

    ``steps_per_epoch`` caps the minibatches of one pass over the training set (None: all of
    them); ``validate`` keeps a new prompt only if validation accuracy does not drop;
    ``evaluate_test`` evaluates the test set before training and after every step;
    ``aggregation`` is how a minibatch's feedback reaches the optimizer ("auto", "concat",
    "tree": see ``asynctg.optim.aggregation``); ``eval_tier`` is the service tier of every
    evaluation call (validation and test scoring, the judge's verdicts on them: "standard",
    "flex" or "batch", ``asynctg.engine.tiers``), while training calls (the minibatch's
    answers and losses, backward, the optimizer) stay standard. The tier changes prices and
    latency, not answers, so it is not part of the fingerprint: a run may resume at another.
    """

    batch_size: int = 3
    epochs: int = 3
    steps_per_epoch: int | None = 4
    validate: bool = False
    evaluate_test: bool = True
    seed: int = 42
    budget: Budget = field(default_factory=Budget)
    aggregation: Strategy = "auto"
    eval_tier: str = "standard"

    def __post_init__(self) -> None:
        check_strategy(self.aggregation)
        check_tier(self.eval_tier)
        require_int("batch_size", self.batch_size, 1)
        require_int("epochs", self.epochs, 1)
        require_int("steps_per_epoch", self.steps_per_epoch, 1, optional=True)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that change the result (epochs only extend a run, budgets only stop it)."""
        return {
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "validate": self.validate,
            "evaluate_test": self.evaluate_test,
            "seed": self.seed,
            "aggregation": self.aggregation,
        }


@dataclass
class PromptResult:
    """A run's outcome: one history row per step (row 0: before training) and the final prompt.

    A step's row has ``accepted`` (False when validation rejected the new prompt; the row's
    ``prompt`` is then the one kept, and ``rejected`` holds the candidate's ``prompt`` and
    ``validation_accuracy``, with ``accepted: false``).

    ``status`` is "completed", or "stopped" with ``stop_reason`` "max_cost" / "max_calls".
    ``unreadable_verdicts`` counts judge replies without a 0/1 verdict (scored 0) in this
    session.
    """

    task: str
    initial_prompt: str
    final_prompt: str
    history: list[dict[str, Any]]
    status: str
    stop_reason: str | None
    usage: dict[str, Any]
    config: dict[str, Any]
    unreadable_verdicts: int = 0
    #: GEPA runs only (asynctg.apps.prompt_gepa): the candidate tree and the front per iteration
    gepa: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _accuracy(scores: Sequence[int]) -> float | None:
    return round(sum(scores) / len(scores), 6) if scores else None


class _PromptRun(Run):
    #: Steps run as a pipeline, scoring beside the next step's training (``_pipelined``;
    #: False: one after another, the loop the pipelined one must equal; the tests compare the two).
    pipelined = True

    def __init__(
        self,
        task: PromptTask,
        engine: Metered,
        backward_engine: Metered,
        config: PromptConfig,
        checkpoint: Checkpoint | None,
        on_event: EventSink | None,
    ) -> None:
        self.task = task
        self.engine = engine
        self.backward = backward_engine
        self.config = config
        # The judge runs on the evaluation engine, as in the paper (the stronger model).
        self.evaluator = make_evaluator(task.evaluation, backward_engine)
        self.system_prompt = Variable(
            task.system_prompt,
            requires_grad=True,
            role_description=prompts.PROMPT_OPTIMIZATION_ROLE,
        )
        self.model = BlackboxLLM(engine, self.system_prompt)
        self.optimizer = TextualGradientDescent(
            engine=backward_engine,
            parameters=[self.system_prompt],
            aggregation=config.aggregation,
        )
        self.loader = DataLoader(task.train, batch_size=config.batch_size, seed=config.seed)
        self.history: list[dict[str, Any]] = []
        # the pipelined loop's scoring (``_score_split``): the judge verdicts it could not read,
        # its jobs, and the usage of those whose steps' rows are recorded
        self.scoring_unreadable = 0
        self.scoring_jobs: list[Metered] = []
        self.scored: dict[str, Any] = merge_usage([])
        # while steps overlap: the last completed step's usage and number (what saves record)
        self.completed: tuple[dict[str, Any], int] | None = None
        self.aggregation: dict[str, Any] | None = None  # the last step's, for its history row
        self.epoch = 0  # passes completed
        self.step_in_epoch = 0
        self.total_steps = config.epochs * min(
            len(self.loader), config.steps_per_epoch or len(self.loader)
        )
        # last, as the meter was: its budget's pricing check may refuse the run
        super().__init__(
            [engine, backward_engine],
            budget=config.budget,
            checkpoint=checkpoint,
            on_event=on_event,
        )

    # --- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a resumed run (or a step that a cap interrupted) restores."""
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "loader": self.loader.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
        }

    def accounted(self) -> tuple[dict[str, Any], int | None]:
        if self.completed is None:
            return super().accounted()
        return self.completed

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.loader.load_state_dict(state["loader"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])

    # --- evaluation -----------------------------------------------------------------------

    async def _score(self, example: QA, model: BlackboxLLM, evaluator: Any) -> int:
        x = Variable(example.question, requires_grad=False, role_description=QUERY_ROLE)
        y = Variable(example.answer, requires_grad=False, role_description=ANSWER_ROLE)
        response = await model(x)
        return int(evaluator.score(await evaluator.loss(x, y, response)))

    async def evaluate(
        self,
        split: str,
        examples: Sequence[QA],
        *,
        model: BlackboxLLM | None = None,
        evaluator: Any = None,
        tally: Tally | None = None,
    ) -> float | None:
        """Accuracy of the current prompt (or ``model``'s) on ``examples``: a concurrent fan-out
        that keeps at most ``EVALUATION_WINDOW`` examples in flight, so memory stays flat in the
        split's size; each score is counted in ``tally`` as it comes in."""
        if not examples:
            return None
        model = self.model if model is None else model
        evaluator = self.evaluator if evaluator is None else evaluator
        with (
            telemetry.span(f"evaluate {split}", asynctg__evaluate__examples=len(examples)),
            use_tier(self.config.eval_tier),  # every call of the fan-out: answers and verdicts
        ):
            scores = (self._score(e, model, evaluator) for e in examples)
            if tally is not None:
                scores = (tally.counted(score) for score in scores)
            try:
                correct = await count_bounded(scores, EVALUATION_WINDOW)
            finally:
                if tally is not None:
                    tally.close()
        accuracy = round(correct / len(examples), 6)
        self.emit(
            "evaluated",
            f"{split} accuracy {accuracy:.3f} on {len(examples)} examples",
            split=split,
            accuracy=accuracy,
            n=len(examples),
        )
        return accuracy

    # --- the loop -------------------------------------------------------------------------

    async def train_step(self, batch: Sequence[QA]) -> tuple[float | None, bool]:
        """One minibatch: (its training accuracy, whether the optimizer's reply was usable)."""
        self.optimizer.zero_grad()

        async def loss_for(example: QA) -> Variable:
            x = Variable(example.question, requires_grad=False, role_description=QUERY_ROLE)
            y = Variable(example.answer, requires_grad=False, role_description=ANSWER_ROLE)
            response = await self.model(x)
            return await self.evaluator.loss(x, y, response)

        losses = await gather(loss_for(e) for e in batch)
        train_accuracy = _accuracy([self.evaluator.score(loss) for loss in losses])
        total = tg_sum(losses)
        await total.backward(self.backward)
        self.aggregation = None
        try:
            reports = await self.optimizer.step()
            self.aggregation = reports[0].to_json() if reports else None
        except OptimizerParseError as exc:
            # A model that will not answer inside the tags (small local models often do not)
            # costs this step its update, not the run: the prompt is unchanged (steps are
            # atomic), the event says so, and training goes on with the next minibatch.
            self.emit(
                "optimizer_reply_unusable",
                f"optimizer reply unusable ({exc}); the prompt is unchanged this step",
                reply=exc.reply[:500],
            )
            return train_accuracy, False
        return train_accuracy, True

    async def initial(self) -> None:
        started = time.monotonic()
        test_eval = self.evaluate("test", self.task.test) if self.config.evaluate_test else None
        val_eval = self.evaluate("validation", self.task.val) if self.config.validate else None
        results = await gather(e for e in (test_eval, val_eval) if e is not None)
        test_acc = results.pop(0) if test_eval is not None else None
        val_acc = results.pop(0) if val_eval is not None else None
        self.record(0, None, test_acc, val_acc, reverted=False, started=started)

    def record(
        self,
        step: int,
        train_acc: float | None,
        test_acc: float | None,
        val_acc: float | None,
        *,
        reverted: bool,
        started: float,
        unusable: bool = False,
        rejected: dict[str, Any] | None = None,
        done: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        ended: float | None = None,
    ) -> None:
        """Append and emit a step's row; ``done`` (a ``_train_validate`` result) and ``usage``
        are given when the next step is already under way (the row is as of this step's end,
        ``ended``: when its last scoring ended; None: now)."""
        usage = self.meter.total() if usage is None else usage
        row = {
            "step": step,
            "epoch": self.epoch if done is None else done["state"]["epoch"],
            "prompt": str(self.system_prompt.value) if done is None else done["prompt"],
            "train_accuracy": train_acc,
            "validation_accuracy": val_acc,
            "test_accuracy": test_acc,
            "reverted": reverted,
            "optimizer_reply_unusable": unusable,
            "seconds": round((time.monotonic() if ended is None else ended) - started, 3),
            "provider_calls": usage["provider_calls"],
            "total_tokens": usage["total_tokens"],
            "cached_tokens": usage.get("cached_tokens", 0),
            "cost_usd": usage["cost_usd"],
        }
        if step > 0:
            row["aggregation"] = self.aggregation if done is None else done["aggregation"]
            row["accepted"] = rejected is None
            if rejected is not None:
                row["rejected"] = rejected
        self.history.append(row)
        shown = test_acc if test_acc is not None else val_acc if val_acc is not None else train_acc
        if step == 0:
            message = "before training: " + _accuracies(row)
        else:
            where = f"step {step}/{self.total_steps} (epoch {row['epoch'] + 1})"
            message = f"{where}: {_accuracies(row)}"
            if rejected is not None:
                message += (
                    " (new prompt rejected by validation: "
                    f"{rejected['validation_accuracy']:.3f} < {val_acc:.3f})"
                )
        self.emit(
            "step",
            message,
            progress=f"step {step}/{self.total_steps} done",
            accuracy=shown,
            **row,
        )

    async def _train(self, steps_per_epoch: int, step: int) -> dict[str, Any] | None:
        """A step's training, the optimizer's new prompt in place (None at the move to the next
        epoch); what the step's row needs so far."""
        if self.step_in_epoch == 0 and self.loader.epoch == self.epoch:
            self.loader.start_epoch()  # the shuffle of this pass, once
        batch = self.loader.next_batch() if self.step_in_epoch < steps_per_epoch else None
        if batch is None:
            self.epoch += 1
            self.step_in_epoch = 0
            return None
        started = time.monotonic()
        self.emit("progress", "", progress=f"step {step}/{self.total_steps} running")
        previous = str(self.system_prompt.value)
        train_acc, usable = await self.train_step(batch)
        return {
            "step": step,
            "started": started,
            "train_acc": train_acc,
            "unusable": not usable,
            "previous": previous,
            "candidate": str(self.system_prompt.value),
            "aggregation": self.aggregation,
        }

    def _decide(self, done: dict[str, Any], accepted: bool) -> None:
        """Keep the step's new prompt or (rejected by validation) go back to the one before;
        the state at the step's end goes into ``done``."""
        done["rejected"] = None
        if not accepted:
            # kept in the history (not only the prompt validation chose): what was tried; its
            # accuracy is filled in by ``_settle``
            done["rejected"] = {
                "prompt": done["candidate"],
                "validation_accuracy": None,
                "accepted": False,
            }
            self.system_prompt.set_value(done["previous"])
        self.step_in_epoch += 1
        state = self.state()
        del state["history"]  # the rows up to this step's are added when its row is
        done["prompt"] = str(self.system_prompt.value)
        done["state"] = copy.deepcopy(state)  # the next step mutates the loader and optimizer

    @staticmethod
    def _settle(done: dict[str, Any], val_acc: float | None, best: float | None) -> None:
        """The step's validation accuracy in its row: its own, or (rejected) the one to beat."""
        if done["rejected"] is not None:
            done["rejected"]["validation_accuracy"] = val_acc
            done["val_acc"] = best
        else:
            done["val_acc"] = val_acc

    async def _train_validate(
        self, steps_per_epoch: int, step: int, best: float | None
    ) -> dict[str, Any] | None:
        """A step's training and validation (``best``: the validation accuracy to beat), one
        after the other, or None at the move to the next epoch; what its row needs and the state
        at its end."""
        done = await self._train(steps_per_epoch, step)
        if done is None:
            return None
        val_acc = None
        if self.config.validate:
            val_acc = await self.evaluate("validation", self.task.val)
        self._decide(done, not below(val_acc, best))
        self._settle(done, val_acc, best)
        return done

    def _record_step(
        self,
        done: dict[str, Any],
        test_acc: float | None,
        *,
        usage: dict[str, Any] | None = None,
        ended: float | None = None,
    ) -> None:
        self.record(
            done["step"],
            done["train_acc"],
            test_acc,
            done["val_acc"],
            reverted=done["rejected"] is not None,
            started=done["started"],
            unusable=done["unusable"],
            rejected=done["rejected"],
            done=done if usage is not None else None,
            usage=usage,
            ended=ended,
        )

    async def one_step(self, steps_per_epoch: int) -> str | None:
        """The next minibatch's step (or the move to the next epoch), saved; then why the
        budget stops the run, or None."""
        best = self.history[-1]["validation_accuracy"]
        done = await self._train_validate(steps_per_epoch, len(self.history), best)
        if done is None:
            return None
        test_acc = None
        if self.config.evaluate_test:
            test_acc = await self.evaluate("test", self.task.test)
        self._record_step(done, test_acc)
        await self.save("running")
        return self.exceeded()

    # --- the pipelined loop ---------------------------------------------------------------

    def _scoring(self, group: asyncio.TaskGroup, step: int, split: str, prompt: str) -> Scoring:
        """Start scoring ``prompt`` on ``split`` as a task of ``group``, its calls journaled as
        ``step``'s and counted in jobs of their own."""
        examples = self.task.val if split == "validation" else self.task.test
        tally = Tally(len(examples)) if examples else None
        with journal_step(step):
            task = group.create_task(self._score_split(split, examples, prompt, tally))
        return Scoring(task, tally)

    async def _score_split(
        self, split: str, examples: Sequence[QA], prompt: str, tally: Tally | None
    ) -> tuple[float | None, dict[str, Any]]:
        """Accuracy of ``prompt`` on ``examples`` and the usage of its calls alone: they run in
        jobs nested in the run's (counted there too), so the work under way beside them is not
        counted."""
        name = f"{split} scoring"
        # the test's answers wait for everything else of the run: the validation answers the
        # next decision needs and the training's come first
        priority = BACKGROUND_PRIORITY if split == "test" else 0
        async with contextlib.AsyncExitStack() as jobs:
            forward = await jobs.enter_async_context(self.engine.job(name, priority=priority))
            backward = forward
            if self.backward is not self.engine:
                backward = await jobs.enter_async_context(
                    self.backward.job(name, priority=priority)
                )
            own = (forward,) if backward is forward else (forward, backward)
            self.scoring_jobs.extend(own)
            # a variable of its own: the run's changes while this runs; same value and role
            # (so the same requests and prompt-cache scope) as the run's when the step ran
            frozen = Variable(
                prompt, requires_grad=True, role_description=prompts.PROMPT_OPTIMIZATION_ROLE
            )
            evaluator = make_evaluator(self.task.evaluation, backward)
            accuracy = await self.evaluate(
                split,
                examples,
                model=BlackboxLLM(forward, frozen),
                evaluator=evaluator,
                tally=tally,
            )
            self.scoring_unreadable += getattr(evaluator, "unreadable", 0)
            usage = merge_usage(j.stats() for j in own)
        return accuracy, usage

    def _training_usage(self) -> dict[str, Any]:
        """The run's usage less its scoring jobs': its training calls so far (only training
        runs in the run's own job)."""
        return subtract_usage(self.meter.total(), (j.stats() for j in self.scoring_jobs))

    async def _verdict(self, validation: Scoring | None, best: float | None) -> bool:
        """Whether the step's new prompt is kept, as soon as the validation answers still
        missing cannot change it (they are scored on, beside the next step, for its row)."""
        if validation is None or validation.tally is None or best is None:
            return True
        outcome = await validation.tally.decided(best)
        if outcome is None:  # scoring ended undecided: it failed; its error, or its accuracy
            accuracy, _ = await validation.task
            return not below(accuracy, best)
        return outcome

    async def _pipelined(self, steps_per_epoch: int) -> None:
        """The steps as a pipeline (test and validation scores never steer training, only the
        accept-or-revert decision does): a step's training starts once the step before it is
        decided, while that step's test scoring, and the validation answers its decision did not
        need, run beside it; the scoring before training runs beside the first step. At most
        ``PENDING_ROWS`` steps' rows wait for their scores; each is recorded and saved, in
        order, once they are in, with the state and usage as of its step's end (its training,
        validation and test calls, nothing of a later step's), so rows and checkpoints equal
        the one-after-another loop's. A stop (a cap's error from any call, or the budget
        reached by a completed step) ends the run from the last completed step, as there."""
        config = self.config
        complete = self.state()
        # what saves record until a step completes: the state now, nothing under way yet
        self.completed = (self.meter.total(), len(self.history) - 1)
        pending: collections.deque[Pending] = collections.deque()
        reached: str | None = None
        try:
            async with fanout.task_group() as group:
                if not self.history:  # step 0: the scores before training, nothing to decide
                    pending.append(self._step_zero(group))
                while self.epoch < config.epochs and reached is None:
                    step = pending[-1].done["step"] + 1 if pending else len(self.history)
                    with journal_step(step):
                        done = await self._train(steps_per_epoch, step)
                    if done is None:
                        continue  # the next epoch; pending rows stay pending
                    done["own"] = self._training_usage()
                    validation = None
                    if config.validate:
                        validation = self._scoring(group, step, "validation", done["candidate"])
                    if pending:
                        best = await self._validated(pending[-1])
                    else:
                        best = self.history[-1]["validation_accuracy"]
                    self._decide(done, await self._verdict(validation, best))
                    pending.append(Pending(done, best, validation, None))
                    # the rows whose scores are in, and the oldest while too many wait
                    while reached is None and len(pending) > 1:
                        if len(pending) <= PENDING_ROWS and not pending[0].scored():
                            break
                        complete, reached = await self._complete(pending.popleft())
                    if reached is None:
                        self._score_test(group, pending[-1])
                while pending and reached is None:
                    complete, reached = await self._complete(pending.popleft())
                for later in pending:  # steps that would not have started: their calls go
                    later.cancel()
        except STOPS as exc:
            reached = exc.limit
        if reached is None:
            self.completed = None  # nothing under way: saves count every call again
            return
        # the state and usage as of the last completed step; later calls stay uncounted
        self.restore(complete)
        self.stop(reached)

    def _step_zero(self, group: asyncio.TaskGroup) -> Pending:
        """Step 0, the scores before training, with nothing trained or decided: its scorings
        start now (nothing decides on its validation until step 1)."""
        state = self.state()
        del state["history"]
        prompt = str(self.system_prompt.value)
        done = {
            "step": 0,
            "started": time.monotonic(),
            "train_acc": None,
            "unusable": False,
            "rejected": None,
            "aggregation": None,
            "prompt": prompt,
            "state": state,
            "own": self._training_usage(),
        }
        validation = None
        if self.config.validate:
            validation = self._scoring(group, 0, "validation", prompt)
        pending = Pending(done, None, validation, None)
        self._score_test(group, pending)
        return pending

    def _score_test(self, group: asyncio.TaskGroup, pending: Pending) -> None:
        """Start a decided step's test scoring (if the run scores the test set)."""
        if self.config.evaluate_test:
            done = pending.done
            pending.test = self._scoring(group, done["step"], "test", done["prompt"])

    async def _validated(self, pending: Pending) -> float | None:
        """The pending step's row's validation accuracy (the next step's to beat), once its
        validation answers are all in."""
        if not pending.settled():
            val_acc: float | None = None
            if pending.validation is not None:
                val_acc, pending.validation_usage = await pending.validation.task
            self._settle(pending.done, val_acc, pending.best)
        best: float | None = pending.done["val_acc"]
        return best

    async def _complete(self, pending: Pending) -> tuple[dict[str, Any], str | None]:
        """Wait for a step's scores, then record and save the step; its state and whether the
        budget stops the run after it."""
        done = pending.done
        await self._validated(pending)
        test_acc = None
        parts = [self.scored]
        if pending.validation_usage is not None:
            parts.append(pending.validation_usage)
        if pending.test is not None:
            test_acc, test_usage = await pending.test.task
            parts.append(test_usage)
        self.scored = merge_usage(parts)
        # its training through this step, and the scoring of every step up to it
        usage = merge_usage([done["own"], self.scored])
        # its time: from its start to its last score (not to the next step's decision)
        self._record_step(done, test_acc, usage=usage, ended=pending.ended())
        state = {**done["state"], "history": list(self.history)}
        now = self.meter.total()  # the run's time so far; nothing of this step is under way
        self.completed = (
            {**usage, "seconds": now["seconds"], "in_flight": 0, "queued": 0},
            done["step"],
        )
        await self.save("running", state=state)
        return state, self.budget.exceeded(usage)

    async def run(self) -> PromptResult:
        config = self.config
        resumed = self.checkpoint is not None and self.checkpoint.state is not None
        if resumed:
            assert self.checkpoint is not None and self.checkpoint.state is not None
            self.restore(self.checkpoint.state)
            self.emit(
                "start",
                f"resuming {self.task.name} after step {len(self.history) - 1}",
                progress=f"step {len(self.history) - 1}/{self.total_steps}",
            )
        else:
            self.emit(
                "start",
                f"optimizing the system prompt of {self.task.name}: {self.total_steps} "
                f"step{'s' if self.total_steps != 1 else ''} of {config.batch_size}",
                progress=f"step 0/{self.total_steps}",
            )
        steps_per_epoch = config.steps_per_epoch or len(self.loader)
        # A resumed session runs its steps one after another: the calls it replays from the
        # journal count as paid in one engine-wide tally (``Meter.recovered``), which cannot say
        # which of two overlapping steps replayed them.
        scored = config.evaluate_test or config.validate
        if self.pipelined and scored and not resumed:
            await self._pipelined(steps_per_epoch)
        elif not self.history:
            try:
                await self.initial()
            except STOPS as exc:
                self.stop(exc.limit)  # not even the first evaluation fit: nothing to keep
            else:
                await self.save("running")
        if self.stop_reason is None:
            self.stop_reason = self.exceeded()
        while self.stop_reason is None and self.epoch < config.epochs:
            # The engine's dollar cap may refuse a call mid-step; the run then ends as it does
            # between steps, from the state before the step (steps are atomic; the step's paid
            # calls stay in the journal, so a resumed run replays them for free).
            before = self.state()
            try:
                self.stop_reason = await self.one_step(steps_per_epoch)
            except STOPS as exc:
                self.restore(before)
                self.stop(exc.limit)
        status = await self.finish()
        result = PromptResult(
            task=self.task.name,
            initial_prompt=self.task.system_prompt,
            final_prompt=str(self.system_prompt.value),
            history=self.history,
            status=status,
            stop_reason=self.stop_reason,
            usage=self.meter.total(),
            config={
                **config.fingerprint_fields(),
                "epochs": config.epochs,
                "eval_tier": config.eval_tier,
            },
            unreadable_verdicts=getattr(self.evaluator, "unreadable", 0) + self.scoring_unreadable,
        )
        last = _accuracies(self.history[-1]) if self.history else "nothing evaluated"
        self.emit("done", f"{status}: {last}", status=status)
        return result


def _accuracies(row: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("train_accuracy", "train"),
        ("validation_accuracy", "val"),
        ("test_accuracy", "test"),
    ):
        value = row.get(key)
        if value is not None:
            parts.append(f"{label} {value:.3f}")
    return ", ".join(parts) or "no evaluation"


async def optimize_prompt(
    task: PromptTask,
    engine: Engine,
    *,
    backward_engine: Engine | None = None,
    config: PromptConfig | None = None,
    checkpoint: Checkpoint | None = None,
    on_event: EventSink | None = None,
) -> PromptResult:
    """Optimize ``task``'s system prompt; see the module docstring for the loop.

    ``engine`` answers the questions (the paper's "test engine"); ``backward_engine`` (default:
    ``engine``) writes the feedback, the new prompts and, for judged tasks, the verdicts (the
    paper's "evaluation engine"). The run goes through a job of each (one when they are the
    same; a ``Job`` given gets the run's job nested inside it). With ``checkpoint`` (already
    ``open()``), every call goes through its journal and the state is saved after every step;
    a checkpoint holding a state is resumed from it. ``on_event`` receives progress events.
    """
    config = config or PromptConfig()
    forward = run_host(engine)
    backward = run_host(backward_engine) if backward_engine is not None else forward
    if config.validate and not task.val:
        raise ConfigError("validation needs a validation split; raise the validation size")
    if checkpoint is not None:
        checkpoint.attach(engine_of(forward), engine_of(backward))
    name = f"optimize_prompt {task.name}"
    with (
        telemetry.span(f"optimize {task.name}", asynctg__batch_size=config.batch_size),
        run_scope(name),  # one prompt_cache_key per run and variable (engine.prompt_cache)
    ):
        async with contextlib.AsyncExitStack() as jobs:
            job = await jobs.enter_async_context(forward.job(name))
            backward_job = job
            if backward is not forward:
                backward_job = await jobs.enter_async_context(backward.job(name))
            return await _PromptRun(task, job, backward_job, config, checkpoint, on_event).run()
