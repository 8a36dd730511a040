"""The paper's loops on the command line: ``asynctg optimize``, ``solve``, ``code``, ``tasks``.

Each command's options, the checks and settings of its run (``plan_loop``), the loop it runs
(``run_loop``) and its lines in the summary (``print_result``); ``asynctg.cli.execute`` does
the rest (endpoint, checkpoint, estimate, report).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from asynctg.cli.common import (
    PlannedLoop,
    count,
    endpoint_options,
    int_at_least,
    one_line,
    positive_float,
    positive_int,
    run_options,
    tier_options,
)
from asynctg.errors import ConfigError

if TYPE_CHECKING:
    from asynctg.cli.execute import Plan
    from asynctg.runs.loop import Budget

__all__ = ["add_parsers", "check_task", "list_tasks", "plan_loop", "print_result", "run_loop"]

COMMANDS = ("optimize", "solve", "code")


def add_parsers(sub: Any) -> None:
    """Add ``optimize``, ``solve`` and ``code`` to the subcommands ``sub``."""
    opt = sub.add_parser(
        "optimize",
        help="prompt optimization (BBH object counting / word sorting, GSM8K)",
        description=(
            "Optimize a task's system prompt with textual gradient descent, as in the TextGrad "
            "paper: minibatches answered concurrently, the sum of their losses back-propagated, "
            "one optimizer step per minibatch, test accuracy after every step."
        ),
    )
    task_options(opt, "object_counting")
    g = opt.add_argument_group("prompt optimization")
    g.add_argument("--batch-size", type=positive_int, default=3, help="minibatch size (3)")
    g.add_argument("--steps", type=positive_int, default=4, help="steps per epoch (4)")
    g.add_argument("--epochs", type=positive_int, default=3, help="passes over the data (3)")
    g.add_argument(
        "--validate",
        action="store_true",
        help="keep a new prompt only if validation accuracy does not drop",
    )
    g.add_argument(
        "--no-test", action="store_true", help="do not evaluate the test set after each step"
    )
    g.add_argument(
        "--aggregation",
        choices=("auto", "concat", "tree"),
        default="auto",
        help="how a minibatch's feedback reaches the optimizer: every feedback in its own block "
        "(concat, the paper), reduced by a tree of concurrent LLM calls (tree), or concat "
        "while it fits the context window (auto, the default)",
    )
    g.add_argument("--train-size", type=count, help="training examples (generated, or a cap)")
    g.add_argument("--val-size", type=count, help="validation examples (generated, or a cap)")
    g.add_argument("--test-size", type=count, help="test examples (generated, or a cap)")
    g.add_argument(
        "--eval",
        choices=("exact_int", "exact_words", "judge"),
        help="how answers are scored (default: the task's, as in the paper)",
    )
    g.add_argument(
        "--optimizer-model",
        help="model writing feedback, new prompts and verdicts (default: --model)",
    )
    g.add_argument(
        "--optimizer",
        choices=("tgd", "gepa"),
        default="tgd",
        help="tgd: textual gradient descent, the paper's loop (default); gepa: GEPA's "
        "reflective Pareto search (asynctg.gepa) over the training and validation splits",
    )
    g.add_argument(
        "--max-metric-calls",
        type=positive_int,
        default=200,
        help="gepa: examples scored before the search stops (200)",
    )
    g.add_argument(
        "--parallel-proposals",
        type=positive_int,
        default=1,
        help="gepa: proposals per iteration, from parents drawn from the front (1)",
    )
    endpoint_options(opt)
    run_options(opt)
    tier_options(opt)

    solve = sub.add_parser(
        "solve",
        help="solution optimization at test time (MMLU, GPQA)",
        description=(
            "Refine the answer to every question at test time with a textual loss, then take "
            "a majority vote over the answers of every round, as in the TextGrad paper."
        ),
    )
    task_options(solve, "arithmetic_choice")
    g = solve.add_argument_group("solution optimization")
    g.add_argument("--iterations", type=count, default=3, help="refinement rounds per question (3)")
    g.add_argument("--limit", type=count, help="use only the first N questions")
    endpoint_options(solve)
    run_options(solve)
    tier_options(solve)

    code = sub.add_parser(
        "code",
        help="code optimization from test feedback (LeetCode-Hard)",
        description=(
            "Refine a program for every problem from the results of running its tests, as in "
            "the TextGrad paper. Model-written code runs in a bubblewrap sandbox (no network, "
            "files, keys or other processes; time, memory and process limits); without "
            "bubblewrap the command stops before running anything."
        ),
    )
    task_options(code, "python_basics")
    g = code.add_argument_group("code optimization")
    g.add_argument(
        "--iterations",
        type=count,
        default=4,
        help="refinement rounds after the first (default 4: up to 5 rounds per problem, as "
        "in the paper; the report shows the first program and each round)",
    )
    g.add_argument("--limit", type=count, help="use only the first N problems")
    g.add_argument("--test-timeout", type=positive_float, default=5.0, help="seconds per test (5)")
    g.add_argument(
        "--memory-mb", type=int_at_least(64), default=1024, help="memory per test run (1024)"
    )
    g.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run model-written code WITHOUT isolation (it can read your files and keys and "
        "reach the network); only for code you would run yourself",
    )
    endpoint_options(code)
    run_options(code)
    tier_options(code)


def task_options(p: argparse.ArgumentParser, default: str) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default=default, help=f"task name, see `asynctg tasks` ({default})")
    g.add_argument(
        "--data",
        help="the task's data file (JSON, JSONL or CSV), or 'hf[:NAME[:CONFIG]]' for the "
        "Hugging Face cache",
    )


def list_tasks() -> int:
    from asynctg.tasks import TASKS

    print("task                 loop       data")
    for name, info in TASKS.items():
        loop = {"prompt": "optimize", "solution": "solve", "code": "code"}[info.kind]
        print(f"{name:<20} {loop:<10} {info.summary}")
    print(
        "\ncolumns: BBH input,target | GSM8K question,answer | MMLU question,choices,answer "
        "(or question,A,B,C,D,answer)\n         GPQA Question,Correct Answer,Incorrect Answer "
        "1..3 | LeetCode-Hard task_id,prompt,test[,entry_point]"
    )
    return 0


def check_task(args: argparse.Namespace) -> None:
    """ConfigError (exit 2) when ``--task`` names a task of another command."""
    from asynctg.tasks import TASKS

    command = args.command
    info = TASKS.get(args.task)
    wanted = {"optimize": "prompt", "solve": "solution", "code": "code"}.get(command)
    if info is not None and info.kind != wanted:
        right = {"prompt": "optimize", "solution": "solve", "code": "code"}[info.kind]
        raise ConfigError(f"{args.task!r} is a task for `asynctg {right}`, not `asynctg {command}`")


def plan_loop(args: argparse.Namespace, budget: Budget) -> PlannedLoop:
    """The task and the loop's settings of the command ``args`` asks for (checked now)."""
    from asynctg.apps import CodeConfig, PromptConfig, SolutionConfig
    from asynctg.tasks import get_task

    command = args.command
    meta: dict[str, Any] = {}
    task: Any
    if command == "optimize":
        task = get_task(
            args.task,
            data=args.data,
            data_seed=args.data_seed,
            train_size=args.train_size,
            val_size=args.val_size,
            test_size=args.test_size,
            evaluation=args.eval,
        )
        loop_config: Any = PromptConfig(
            batch_size=args.batch_size,
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            validate=args.validate,
            evaluate_test=not args.no_test,
            seed=args.seed,
            budget=budget,
            aggregation=args.aggregation,
            eval_tier=args.eval_tier,
        )
        if args.validate and not getattr(task, "val", None):
            raise ConfigError("--validate needs validation examples; raise --val-size")
    elif command == "solve":
        task = get_task(args.task, data=args.data, data_seed=args.data_seed, limit=args.limit)
        loop_config = SolutionConfig(
            iterations=args.iterations, budget=budget, eval_tier=args.eval_tier
        )
    else:
        from asynctg.runs.sandbox import probe_isolation

        task = get_task(args.task, data=args.data, limit=args.limit)
        loop_config = CodeConfig(
            iterations=args.iterations,
            per_test_seconds=args.test_timeout,
            memory_mb=args.memory_mb,
            budget=budget,
            isolation="unsafe-no-sandbox" if args.unsafe_no_sandbox else "bubblewrap",
            eval_tier=args.eval_tier,
        )
        # before any call: without a working sandbox the run stops here (exit 2)
        meta["isolation"] = probe_isolation(loop_config.isolation)
        if args.unsafe_no_sandbox:
            print(
                "asynctg: WARNING: --unsafe-no-sandbox: model-written code runs without "
                "isolation; it can read your files and keys and reach the network",
                file=sys.stderr,
            )
    return PlannedLoop(task=task, config=loop_config, meta=meta)


async def run_loop(plan: Plan, engine: Any, backward: Any, checkpoint: Any, progress: Any) -> Any:
    """Run the planned loop to its result."""
    from asynctg.apps import optimize_code, optimize_prompt, optimize_solutions

    if plan.command == "optimize" and plan.fingerprint.get("optimizer") == "gepa":
        from asynctg.apps.prompt_gepa import optimize_prompt_gepa

        return await optimize_prompt_gepa(
            plan.task,
            engine,
            backward_engine=backward,
            config=plan.loop_config,
            checkpoint=checkpoint,
            on_event=progress,
            max_metric_calls=plan.meta["max_metric_calls"],
            parallel_proposals=plan.fingerprint["parallel_proposals"],
        )
    if plan.command == "optimize":
        return await optimize_prompt(
            plan.task,
            engine,
            backward_engine=backward,
            config=plan.loop_config,
            checkpoint=checkpoint,
            on_event=progress,
        )
    if plan.command == "solve":
        return await optimize_solutions(
            plan.task, engine, config=plan.loop_config, checkpoint=checkpoint, on_event=progress
        )
    return await optimize_code(
        plan.task, engine, config=plan.loop_config, checkpoint=checkpoint, on_event=progress
    )


def print_result(command: str, data: dict[str, Any], lines: list[str]) -> None:
    """Add the command's own lines to the summary ``lines``."""
    if command == "optimize" and not data["history"]:
        lines.append("  nothing evaluated before the stop")
    elif command == "optimize":
        first, last = data["history"][0], data["history"][-1]
        for key, label in (("test_accuracy", "test"), ("validation_accuracy", "validation")):
            if first.get(key) is not None:
                name = f"{label} accuracy"
                lines.append(f"  {name:<16} {first[key]:.3f} -> {last[key]:.3f}")
        steps = len(data["history"]) - 1
        unusable = sum(1 for row in data["history"] if row.get("optimizer_reply_unusable"))
        note = f" ({unusable} without a usable optimizer reply)" if unusable else ""
        lines.append(f"  steps            {steps}{note}")
        lines.append("  final prompt     " + one_line(data["final_prompt"], 300))
    elif command == "solve":
        for label, value in zip(data["labels"], data["accuracy"], strict=True):
            if value is not None:
                lines.append(f"  {label:<16} {value:.3f}")
        if data["failed"]:
            lines.append(f"  failed           {data['failed']} questions")
    else:
        for label, key in (
            ("first programs", "first_pass_rate"),
            ("final programs", "final_pass_rate"),
        ):
            if data[key] is not None:
                lines.append(f"  {label:<16} {data[key]:.3f} pass every test")
        if data["failed"]:
            lines.append(f"  failed           {data['failed']} problems")
