"""The ``asynctg`` command line.

::

    asynctg demo                       a short prompt-optimization run on the built-in simulator
    asynctg optimize --task T ...      prompt optimization (BBH, GSM8K); --optimizer gepa: GEPA
    asynctg solve --task T ...         solution optimization at test time (MMLU, GPQA)
    asynctg code --task T ...          code optimization from test feedback (LeetCode-Hard)
    asynctg tasks                      the tasks and the data files they read
    asynctg sim ...                    serve the OpenAI-compatible simulator

Exit codes: 0 success (a run stopped by ``--max-cost``/``--max-calls`` included), 1 a run that
failed, 2 bad arguments, settings or input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asynctg._version import __version__
from asynctg.errors import AsyncTGError, BudgetExceededError, ConfigError

__all__ = ["main"]

# --- argument types ---------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"expected a temperature within [0, 2], got {value}")
    return value


def _price(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected PROMPT,COMPLETION dollars per million tokens, e.g. 0.15,0.6; got {text!r}"
        ) from None
    from asynctg.engine.usage import check_price

    try:
        return check_price((a, b))  # the engine's own rule: finite and >= 0
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- the parser -------------------------------------------------------------------------------


def _endpoint_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    g = p.add_argument_group("endpoint")
    g.add_argument(
        "--base-url",
        help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL; the OpenAI API if only "
        "$OPENAI_API_KEY is set)"
        + ("; without it the demo runs on the built-in simulator" if demo else ""),
    )
    g.add_argument("--model", help="model answering the task (default: $ASYNCTG_MODEL)")
    g.add_argument(
        "--api-key-env",
        metavar="NAME",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (default: OPENAI_API_KEY); the key "
        "itself is never taken on the command line, where other users could read it",
    )
    if not demo:
        g.add_argument(
            "--sim",
            action="store_true",
            help="run against the built-in simulator, started in this process",
        )
        g.add_argument(
            "--sim-latency", default="20ms", help="the simulator's latency with --sim (20ms)"
        )
    g.add_argument("--rpm", type=_positive_float, help="requests per minute allowed, per model")
    g.add_argument("--tpm", type=_positive_float, help="tokens per minute allowed, per model")
    g.add_argument(
        "--max-concurrency", type=_positive_int, default=64, help="requests in flight (64)"
    )
    g.add_argument("--temperature", type=_temperature, default=0.0, help="sampling temperature (0)")
    g.add_argument(
        "--max-tokens",
        type=_positive_int,
        help="cap on each reply's length in tokens (default: the provider's)",
    )
    g.add_argument(
        "--price",
        type=_price,
        help="PROMPT,COMPLETION dollars per million tokens, for models not in the price table",
    )
    g.add_argument(
        "--redis-url",
        help="share rpm/tpm, 429 cool-downs and --max-cost with every process using this "
        "Redis (redis://host:port/db; needs the redis extra)",
    )
    g.add_argument(
        "--context-window",
        type=_int_at_least(16),
        help="the model's context window in tokens (default: the model table, else learned "
        "from the provider's first context-length error)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=42, help="seed of shuffles (42)")
    g.add_argument(
        "--data-seed", type=int, default=0, help="seed of generated data and option order (0)"
    )
    g.add_argument("--checkpoint", metavar="DIR", help="save the run after every step in DIR")
    g.add_argument(
        "--resume", action="store_true", help="continue the run saved in --checkpoint DIR"
    )
    g.add_argument(
        "--replay",
        metavar="DIR",
        help="run again from the journal of a finished run's --checkpoint DIR, sending nothing "
        "(same arguments as that run; a request it does not hold is an error)",
    )
    g.add_argument("--report", metavar="DIR", help="write report.json and report.html in DIR")
    g.add_argument(
        "--max-cost", type=_positive_float, help="stop cleanly once this many dollars are spent"
    )
    g.add_argument(
        "--max-calls", type=_positive_int, help="stop cleanly after this many provider calls"
    )
    g.add_argument(
        "--estimate",
        action="store_true",
        help="print the calls, tokens and dollars the run will spend (a dry run on a local "
        "simulator; nothing is sent) and exit",
    )
    g.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces and metrics over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT; "
        "needs opentelemetry-sdk and opentelemetry-exporter-otlp)",
    )
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress display")


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for mistyped options (as Python 3.14's suggest_on_error)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        import difflib
        import re

        wrong = re.findall(r"unrecognized arguments: (.*)", message)
        if wrong:
            parsers: dict[str, argparse.ArgumentParser] = {"": self}
            for action in self._actions:  # the subcommands' options too
                if isinstance(action, argparse._SubParsersAction):
                    parsers.update(action.choices)
            owners: dict[str, list[str]] = {}
            for name, p in parsers.items():
                for a in p._actions:
                    for o in a.option_strings:
                        owners.setdefault(o, []).append(name)
            for word in wrong[0].split():
                if not word.startswith("--"):
                    continue
                option = word.split("=")[0]
                if option in owners:
                    # a real option of other commands: "did you mean" itself would be absurd
                    names = ", ".join(f"asynctg {n}" for n in owners[option] if n)
                    message += f" (this command has no {option}; {names} take it)"
                    continue
                close = difflib.get_close_matches(option, sorted(owners), n=1)
                if close:
                    message += f" (did you mean {close[0]}?)"
        return super().error(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="asynctg",
        description="TextGrad as an async, high-throughput runtime.",
    )
    parser.add_argument("--version", action="version", version=f"asynctg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="a short prompt-optimization run on the built-in simulator (no API key needed)",
        description=(
            "Optimize the system prompt of generated object-counting questions for a few steps "
            "(batch 16), then print a summary with throughput, latency and 429s. With no "
            "--base-url, the simulator runs in this process; with --base-url and --model the "
            "same job runs against a real endpoint."
        ),
    )
    _endpoint_options(demo, demo=True)
    demo.add_argument("--steps", type=_positive_int, default=3, help="optimizer steps (3)")
    demo.add_argument("--batch-size", type=_positive_int, default=16, help="minibatch size (16)")
    demo.add_argument(
        "--test-size", type=_positive_int, default=48, help="test questions per evaluation (48)"
    )
    demo.add_argument(
        "--latency", default="lognormal:80ms,0.4", help="simulated latency (lognormal:80ms,0.4)"
    )
    demo.add_argument(
        "--sim-rpm", type=_positive_int, default=3000, help="simulated budget, requests/min"
    )
    demo.add_argument("--fault-rate", type=float, default=0.02, help="simulated faults (0.02)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--estimate",
        action="store_true",
        help="print the calls, tokens and dollars the demo will spend, and exit",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display")

    opt = sub.add_parser(
        "optimize",
        help="prompt optimization (BBH object counting / word sorting, GSM8K)",
        description=(
            "Optimize a task's system prompt with textual gradient descent, as in the TextGrad "
            "paper: minibatches answered concurrently, the sum of their losses back-propagated, "
            "one optimizer step per minibatch, test accuracy after every step."
        ),
    )
    _task_options(opt, "object_counting")
    g = opt.add_argument_group("prompt optimization")
    g.add_argument("--batch-size", type=_positive_int, default=3, help="minibatch size (3)")
    g.add_argument("--steps", type=_positive_int, default=4, help="steps per epoch (4)")
    g.add_argument("--epochs", type=_positive_int, default=3, help="passes over the data (3)")
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
    g.add_argument("--train-size", type=_count, help="training examples (generated, or a cap)")
    g.add_argument("--val-size", type=_count, help="validation examples (generated, or a cap)")
    g.add_argument("--test-size", type=_count, help="test examples (generated, or a cap)")
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
        type=_positive_int,
        default=200,
        help="gepa: examples scored before the search stops (200)",
    )
    g.add_argument(
        "--parallel-proposals",
        type=_positive_int,
        default=1,
        help="gepa: proposals per iteration, from parents drawn from the front (1)",
    )
    _endpoint_options(opt)
    _run_options(opt)

    solve = sub.add_parser(
        "solve",
        help="solution optimization at test time (MMLU, GPQA)",
        description=(
            "Refine the answer to every question at test time with a textual loss, then take "
            "a majority vote over the answers of every round, as in the TextGrad paper."
        ),
    )
    _task_options(solve, "arithmetic_choice")
    g = solve.add_argument_group("solution optimization")
    g.add_argument(
        "--iterations", type=_count, default=3, help="refinement rounds per question (3)"
    )
    g.add_argument("--limit", type=_count, help="use only the first N questions")
    _endpoint_options(solve)
    _run_options(solve)

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
    _task_options(code, "python_basics")
    g = code.add_argument_group("code optimization")
    g.add_argument(
        "--iterations",
        type=_count,
        default=4,
        help="refinement rounds after the first (default 4: up to 5 rounds per problem, as "
        "in the paper; the report shows the first program and each round)",
    )
    g.add_argument("--limit", type=_count, help="use only the first N problems")
    g.add_argument("--test-timeout", type=_positive_float, default=5.0, help="seconds per test (5)")
    g.add_argument(
        "--memory-mb", type=_int_at_least(64), default=1024, help="memory per test run (1024)"
    )
    g.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run model-written code WITHOUT isolation (it can read your files and keys and "
        "reach the network); only for code you would run yourself",
    )
    _endpoint_options(code)
    _run_options(code)

    from asynctg import cli_science

    cli_science.add_parsers(
        sub,
        endpoint_options=_endpoint_options,
        run_options=_run_options,
        positive_int=_positive_int,
        count=_count,
        positive_float=_positive_float,
    )

    from asynctg.loadtest import cli as bench_cli

    bench_cli.add_parser(sub, endpoint_options=_endpoint_options, positive_int=_positive_int)

    sub.add_parser("tasks", help="list the tasks and the data they read")
    sub.add_parser("textgrad", help="run a TextGrad script unchanged: textgrad SCRIPT [ARGS...]")

    sim = sub.add_parser(
        "sim",
        help="serve the OpenAI-compatible simulator in the foreground",
        description="Serve the OpenAI-compatible simulated provider until interrupted.",
    )
    from asynctg import sim as sim_module

    sim_module.add_arguments(sim)
    return parser


def _task_options(p: argparse.ArgumentParser, default: str) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default=default, help=f"task name, see `asynctg tasks` ({default})")
    g.add_argument(
        "--data",
        help="the task's data file (JSON, JSONL or CSV), or 'hf[:NAME[:CONFIG]]' for the "
        "Hugging Face cache",
    )


# --- entry point ------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    # SIGTERM (a CI runner's cancel, `kill`) ends a run the way Ctrl-C does: cleanly, with the
    # checkpoint kept and the same message.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asynctg`` console script."""
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["textgrad"]:  # everything after SCRIPT is the script's, not ours
        from asynctg.compat.__main__ import run_script

        return run_script(argv[1:])
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command in ("optimize", "solve", "code", "demo", "molecule", "radiotherapy"):
        with contextlib.suppress(ValueError):  # not in the main thread: leave it alone
            signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "sim":
            from asynctg import sim as sim_module

            return sim_module.run_from_args(args)
        if args.command == "tasks":
            return _list_tasks()
        if args.command == "bench":
            from asynctg.loadtest import cli as bench_cli

            return bench_cli.run(args)
        from asynctg.runtime import run

        if args.command == "demo":
            return run(_demo(args))
        return _run_command(args)
    except ConfigError as exc:
        print(f"asynctg: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. the simulator's own settings
        print(f"asynctg: error: {exc}", file=sys.stderr)
        return 2
    except BudgetExceededError as exc:
        # Not a failure: the cap did its job mid-step (between steps the run stops by itself).
        folder = getattr(args, "checkpoint", None)
        kept = f"; {folder} holds the last completed step" if folder else ""
        print(f"asynctg: stopped: --max-cost reached ({exc}){kept}", file=sys.stderr)
        return 0
    except AsyncTGError as exc:
        print(f"asynctg: {type(exc).__name__}: {_cli_message(exc, args)}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"asynctg: {note}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130


def _interrupted(args: argparse.Namespace) -> str:
    if not hasattr(args, "checkpoint"):
        return "asynctg: interrupted"  # bench, sim, demo: nothing to resume, say nothing of it
    folder = args.checkpoint
    if folder:
        return (
            f"asynctg: interrupted; {folder} holds the last completed step: rerun the same "
            "command with --resume to continue"
        )
    return "asynctg: interrupted (run with --checkpoint DIR to be able to --resume)"


def _cli_message(exc: AsyncTGError, args: argparse.Namespace) -> str:
    """The error's text, with what to do on the command line instead of in Python."""
    from asynctg.errors import AuthenticationError

    text = str(exc)
    if isinstance(exc, AuthenticationError):
        key_env = getattr(args, "api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY"
        text = text.split("; pass api_key")[0].split("; check the key")[0]
        text += (
            f"; set the key in ${key_env} (or name another variable with --api-key-env), "
            "and check --base-url"
        )
    from asynctg.apps.progress import printable

    return printable(text)


def _list_tasks() -> int:
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


# --- the long-running commands ----------------------------------------------------------------


@dataclass
class _Plan:
    """Everything a long-running command needs, checked before anything is written."""

    command: str
    task: Any
    loop_config: Any
    model: str
    optimizer_model: str
    base_url: str | None
    use_sim: bool
    sim_latency: str
    fingerprint: dict[str, Any]
    checkpoint: Any = None
    report: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


#: Where a replayed run's engines "send": never contacted (every answer is in the journal).
_REPLAY_URL = "http://replay.invalid/v1"


def resolve_endpoint(args: argparse.Namespace, *, use_sim: bool) -> tuple[str | None, str]:
    """(base URL, model) from the endpoint flags and the environment; ConfigError (exit 2)
    saying what to pass when there is none."""
    if use_sim:
        return None, args.model or "sim-1"
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or None
    key_env = getattr(args, "api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY"
    if base_url is None and not os.environ.get(key_env):
        raise ConfigError(
            "no endpoint: pass --base-url URL (any OpenAI-compatible server) or set "
            "OPENAI_BASE_URL or OPENAI_API_KEY; or add --sim to try it on the built-in simulator"
        )
    model = args.model or os.environ.get("ASYNCTG_MODEL")
    if not model:
        raise ConfigError("pass --model NAME (or set ASYNCTG_MODEL)")
    return base_url, model


def _plan(args: argparse.Namespace) -> _Plan:
    from asynctg.apps import Budget, CodeConfig, PromptConfig, SolutionConfig
    from asynctg.apps.checkpoint import Checkpoint
    from asynctg.apps.report import prepare_report_dir
    from asynctg.apps.run import unpriced_error
    from asynctg.tasks import TASKS, get_task

    command = args.command
    science = command in ("molecule", "radiotherapy")
    wanted = {"optimize": "prompt", "solve": "solution", "code": "code"}.get(command)
    info = None if science else TASKS.get(args.task)
    if info is not None and info.kind != wanted:
        right = {"prompt": "optimize", "solution": "solve", "code": "code"}[info.kind]
        raise ConfigError(f"{args.task!r} is a task for `asynctg {right}`, not `asynctg {command}`")
    if args.resume and not args.checkpoint:
        raise ConfigError("--resume needs --checkpoint DIR (the folder of the run to continue)")
    if args.replay and args.checkpoint:
        raise ConfigError("--replay DIR reads another run's journal: drop --checkpoint")
    budget = Budget(max_cost=args.max_cost, max_calls=args.max_calls)
    science_fields: dict[str, Any] = {}
    task: Any
    if science:
        from asynctg.apps.design import DesignConfig
        from asynctg.cli_science import plan_task

        task, science_fields = plan_task(args)
        loop_config: Any = DesignConfig(iterations=args.iterations, budget=budget)
    elif command == "optimize":
        task = get_task(
            args.task,
            data=args.data,
            data_seed=args.data_seed,
            train_size=args.train_size,
            val_size=args.val_size,
            test_size=args.test_size,
            evaluation=args.eval,
        )
        loop_config = PromptConfig(
            batch_size=args.batch_size,
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            validate=args.validate,
            evaluate_test=not args.no_test,
            seed=args.seed,
            budget=budget,
            aggregation=args.aggregation,
        )
        if args.validate and not getattr(task, "val", None):
            raise ConfigError("--validate needs validation examples; raise --val-size")
    elif command == "solve":
        task = get_task(args.task, data=args.data, data_seed=args.data_seed, limit=args.limit)
        loop_config = SolutionConfig(iterations=args.iterations, budget=budget)
    else:
        from asynctg.apps.sandbox import probe_isolation

        task = get_task(args.task, data=args.data, limit=args.limit)
        loop_config = CodeConfig(
            iterations=args.iterations,
            per_test_seconds=args.test_timeout,
            memory_mb=args.memory_mb,
            budget=budget,
            isolation="unsafe-no-sandbox" if args.unsafe_no_sandbox else "bubblewrap",
        )
        # before any call: without a working sandbox the run stops here (exit 2)
        isolation = probe_isolation(loop_config.isolation)
        if args.unsafe_no_sandbox:
            print(
                "asynctg: WARNING: --unsafe-no-sandbox: model-written code runs without "
                "isolation; it can read your files and keys and reach the network",
                file=sys.stderr,
            )
    use_sim = bool(getattr(args, "sim", False)) and not args.replay
    base_url: str | None
    if args.replay:  # nothing is sent: no endpoint needed
        base_url = _REPLAY_URL
        model = args.model or os.environ.get("ASYNCTG_MODEL") or "sim-1"
    else:
        base_url, model = resolve_endpoint(args, use_sim=use_sim)
    optimizer_model = getattr(args, "optimizer_model", None) or model
    if args.max_cost is not None and args.price is None:
        from asynctg.engine.usage import price_for

        unpriced = [m for m in dict.fromkeys((model, optimizer_model)) if price_for(m) is None]
        if unpriced:
            raise unpriced_error(unpriced)
    fingerprint = {
        "command": command,
        "task": task.name,
        "data": task.source,
        "sizes": task.sizes(),
        "evaluation": getattr(task, "evaluation", None),
        "model": model,
        "optimizer_model": optimizer_model,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        **loop_config.fingerprint_fields(),
        **science_fields,
    }
    if getattr(args, "optimizer", "tgd") == "gepa":  # a TGD run's fingerprint stays as it was
        fingerprint.update(optimizer="gepa", parallel_proposals=args.parallel_proposals)
    plan = _Plan(
        command=command,
        task=task,
        loop_config=loop_config,
        model=model,
        optimizer_model=optimizer_model,
        base_url=base_url,
        use_sim=use_sim,
        sim_latency=getattr(args, "sim_latency", "20ms"),
        fingerprint=fingerprint,
    )
    # Checked now, before any call and before anything is written: a bad folder exits 2 with
    # every file as it was.
    if args.report:
        plan.report = prepare_report_dir(args.report)
    if args.checkpoint:
        plan.checkpoint = Checkpoint(args.checkpoint, fingerprint, resume=args.resume)
    if args.replay:
        # Reading it checks it is a run of this very configuration (ConfigError otherwise).
        Checkpoint(args.replay, fingerprint, resume=True)
        if not (Path(args.replay) / "journal.bin").exists():
            raise ConfigError(f"--replay {args.replay}: no journal.bin there to replay")
    plan.meta = {
        "task": task.name,
        "data": task.source,
        "model": model,
        "optimizer_model": optimizer_model,
        "endpoint": "built-in simulator" if use_sim else (base_url or "OpenAI"),
        **{k: v for k, v in fingerprint.items() if k not in ("command", "task", "data")},
    }
    if command == "code":
        plan.meta["isolation"] = isolation
    if fingerprint.get("optimizer") == "gepa":  # only extends a run, like --epochs
        plan.meta["max_metric_calls"] = args.max_metric_calls
    return plan


def _run_command(args: argparse.Namespace) -> int:
    from asynctg.runtime import run

    plan = _plan(args)
    science = args.command in ("molecule", "radiotherapy")  # no dry run: it would dock/plan
    if not science and (args.estimate or (args.max_cost is not None and not args.replay)):
        estimate = run(_estimate(args, plan))
        if args.estimate:
            print(json.dumps(estimate.to_json()) if args.json else estimate.line())
            return 0
        if estimate.low_usd is not None and args.max_cost < estimate.low_usd:
            # A warning, not a refusal: a run stopped by its cap ends like a finished one
            # (checkpoint, report, --json) and --resume with a larger cap continues it.
            print(
                f"asynctg: warning: --max-cost ${args.max_cost:g} is below the low end of this "
                f"run's estimate ({estimate.line()}): the run will stop at the cap before it "
                "finishes; --resume with a larger --max-cost continues it",
                file=sys.stderr,
            )
    if getattr(args, "otel", False):
        from asynctg import telemetry

        telemetry.configure_otlp(f"asynctg-{args.command}")
    return run(_execute(args, plan))


@contextlib.asynccontextmanager
async def _endpoint_url(plan_sim: bool, latency: str, seed: int) -> AsyncIterator[str | None]:
    if not plan_sim:
        yield None
        return
    from asynctg.sim import SimConfig, SimServer

    async with SimServer(SimConfig(latency=latency, seed=seed)) as server:
        yield server.base_url


def engine_options(args: argparse.Namespace, base_url: str | None) -> dict[str, Any]:
    """``get_engine`` options from the endpoint flags (``_endpoint_options``); the API key is
    read from the environment variable ``--api-key-env`` names."""
    options: dict[str, Any] = {
        "base_url": base_url,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "max_concurrency": args.max_concurrency,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
    }
    if args.price is not None:
        options["price"] = args.price
    key_env = getattr(args, "api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY"
    if os.environ.get(key_env):
        options["api_key"] = os.environ[key_env]
    if getattr(args, "context_window", None) is not None:
        options["context_window"] = args.context_window
    if getattr(args, "redis_url", None):
        options["redis_url"] = args.redis_url  # share rpm/tpm with every process on it
    return options


def _engines(
    args: argparse.Namespace, base_url: str | None, model: str, optimizer_model: str
) -> tuple[Any, Any, list[Any]]:
    from asynctg.engine import get_engine
    from asynctg.loadtest.recorder import RecordingTransport

    transports = [RecordingTransport()]
    options = engine_options(args, base_url)
    if getattr(args, "replay", None):
        options["cache"] = str(Path(args.replay) / "journal.bin")
        options["cache_mode"] = "replay"
        options["cache_sampled"] = True
    if getattr(args, "max_cost", None) is not None:
        from asynctg.engine.shared import CostCap

        # A hard cap on the engines too (the run's Budget stops between steps; this one never
        # lets a call past the cap): one cap for both engines, or Redis's for every process.
        options["max_cost"] = args.max_cost if args.redis_url else CostCap(args.max_cost)
    engine = get_engine(model, transport=transports[0], **options)
    if optimizer_model == model:
        return engine, engine, transports
    transports.append(RecordingTransport())
    backward = get_engine(optimizer_model, transport=transports[1], **options)
    return engine, backward, transports


@contextlib.asynccontextmanager
async def _live(progress: Any) -> AsyncIterator[None]:
    """Redraw the progress display while the body runs (a task alongside it)."""
    from asynctg import fanout

    async with fanout.alongside(progress.ticker()):
        try:
            yield
        finally:
            progress.close()


async def _loop(
    plan: _Plan,
    engine: Any,
    backward: Any,
    checkpoint: Any,
    progress: Any,
    args: argparse.Namespace | None = None,
) -> Any:
    from asynctg.apps import optimize_code, optimize_prompt, optimize_solutions

    if plan.command in ("molecule", "radiotherapy"):
        from asynctg.cli_science import run_loop

        assert args is not None
        return await run_loop(args, plan.task, plan.loop_config, engine, checkpoint, progress)
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


async def _estimate(args: argparse.Namespace, plan: _Plan) -> Any:
    """The run's dry run on a local simulator (asynctg.apps.estimate), calibrated on the
    checkpoint's journal when one holds real replies."""
    import dataclasses
    import shutil
    import tempfile

    from asynctg.apps import Budget, Progress
    from asynctg.apps.checkpoint import Checkpoint
    from asynctg.apps.estimate import dry_run
    from asynctg.engine import get_engine

    def make(model: str, base_url: str) -> Any:
        extra = {"price": args.price} if args.price is not None else {}
        return get_engine(
            model,
            base_url=base_url,
            api_key="estimate",
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            max_concurrency=256,
            **extra,
        )

    # The whole run is estimated: its caps would stop the dry run where they stop the real one.
    unbounded = dataclasses.replace(
        plan, loop_config=dataclasses.replace(plan.loop_config, budget=Budget())
    )

    async def run_loop(engines: dict[str, Any]) -> Any:
        engine = engines[plan.model]
        backward = engines[plan.optimizer_model]
        quiet = Progress(lambda: {}, quiet=True)
        saved = plan.checkpoint
        if saved is None or not saved.journal_path.exists():
            return await _loop(unbounded, engine, backward, None, quiet)
        # A resumed run resumes here too, on a copy of its checkpoint (the real one is not
        # touched): finished steps are skipped and the journal's calls are free hits.
        with tempfile.TemporaryDirectory(prefix="asynctg-estimate-") as tmp:
            copy = Path(tmp) / "run"
            await asyncio.to_thread(shutil.copytree, saved.path, copy)
            checkpoint = Checkpoint(copy, saved.config, resume=True)
            checkpoint.open()
            try:
                return await _loop(unbounded, engine, backward, checkpoint, quiet)
            finally:
                checkpoint.close()

    prices = {m: args.price for m in (plan.model, plan.optimizer_model)} if args.price else None
    first = await dry_run(make, [plan.model, plan.optimizer_model], run_loop, prices=prices)
    scale = _journal_reply_scale(plan, first)
    if scale is None:
        return first
    return await dry_run(
        make, [plan.model, plan.optimizer_model], run_loop, prices=prices, reply_scale=scale
    )


def _journal_reply_scale(plan: _Plan, first: Any) -> float | None:
    """Mean real reply length in the checkpoint's journal / the dry run's, if known."""
    checkpoint = plan.checkpoint
    sent = first.calls - first.journal_hits
    if checkpoint is None or checkpoint.state is None or not sent:
        return None
    from asynctg.engine.cache import ResponseCache

    journal = ResponseCache(checkpoint.path / "journal.bin")
    try:
        lengths = [r.usage.completion_tokens for k in journal.keys() if (r := journal.get(k))]
    finally:
        journal.close()
    if not lengths or not first.completion_tokens:
        return None
    return float((sum(lengths) / len(lengths)) / (first.completion_tokens / sent))


async def _execute(args: argparse.Namespace, plan: _Plan) -> int:
    from asynctg.apps import Meter, Progress
    from asynctg.apps.report import write_report

    checkpoint = plan.checkpoint
    async with contextlib.AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(_endpoint_url(plan.use_sim, plan.sim_latency, 0))
        base_url = sim_url or plan.base_url
        engine, backward, _ = _engines(args, base_url, plan.model, plan.optimizer_model)
        stack.push_async_callback(engine.aclose)
        if backward is not engine:
            stack.push_async_callback(backward.aclose)
        if checkpoint is not None:
            checkpoint.open()
            stack.callback(checkpoint.close)
        progress = Progress(Meter([engine, backward]).session, quiet=args.quiet)
        try:
            async with _live(progress):
                result = await _loop(plan, engine, backward, checkpoint, progress, args)
        except AsyncTGError:
            if checkpoint is not None:
                print(
                    f"asynctg: the run failed; {checkpoint.path} holds its last completed step: "
                    "rerun with --resume to continue",
                    file=sys.stderr,
                )
            raise
    data = result.to_json()
    if plan.report is not None:
        _, html_path = write_report(plan.report, plan.command, data, plan.meta)
        if not args.json:
            print(f"report: {html_path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"command": plan.command, "meta": plan.meta, **data}, default=str))
    else:
        _print_result(plan, data)
    return 1 if data.get("failed") else 0


def _print_result(plan: _Plan, data: dict[str, Any]) -> None:
    usage = data["usage"]
    lines = [f"asynctg {plan.command}: {plan.task.name} — {data['status']}"]
    if data.get("stop_reason"):
        lines[0] += f" (--{data['stop_reason'].replace('_', '-')} reached; --resume continues)"
    if plan.command == "optimize" and not data["history"]:
        lines.append("  nothing evaluated before the stop")
    elif plan.command == "optimize":
        first, last = data["history"][0], data["history"][-1]
        for key, label in (("test_accuracy", "test"), ("validation_accuracy", "validation")):
            if first.get(key) is not None:
                name = f"{label} accuracy"
                lines.append(f"  {name:<16} {first[key]:.3f} -> {last[key]:.3f}")
        steps = len(data["history"]) - 1
        unusable = sum(1 for row in data["history"] if row.get("optimizer_reply_unusable"))
        note = f" ({unusable} without a usable optimizer reply)" if unusable else ""
        lines.append(f"  steps            {steps}{note}")
        lines.append("  final prompt     " + _one_line(data["final_prompt"], 300))
    elif plan.command in ("molecule", "radiotherapy"):
        from asynctg.cli_science import print_result

        print_result(data, lines)
    elif plan.command == "solve":
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
    cost = usage.get("cost_usd")
    lines.append(
        f"  usage            {usage['provider_calls']} calls, {usage['total_tokens']} tokens, "
        + (f"${cost:.4f}" if cost is not None else "cost n/a")
        + f", {usage['rate_limited']} x 429, {usage['seconds']:.1f} s"
    )
    print("\n".join(lines))


def _one_line(text: str, n: int) -> str:
    from asynctg.apps.progress import printable

    flat = " ".join(printable(text).split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


# --- the demo ---------------------------------------------------------------------------------


async def _demo(args: argparse.Namespace) -> int:
    from asynctg.apps import Meter, Progress, PromptConfig, optimize_prompt
    from asynctg.sim import SimConfig, SimServer
    from asynctg.tasks import PromptTask, get_task

    if not 0 <= args.fault_rate <= 1:
        raise ConfigError(f"--fault-rate must be within [0, 1], got {args.fault_rate}")
    on_sim = args.base_url is None
    if not on_sim and not (args.model or os.environ.get("ASYNCTG_MODEL")):
        raise ConfigError("--model is required with --base-url")
    task = get_task(
        "object_counting",
        data_seed=args.seed,
        train_size=args.steps * args.batch_size,
        val_size=0,
        test_size=args.test_size,
    )
    assert isinstance(task, PromptTask)
    config = PromptConfig(
        batch_size=args.batch_size, epochs=1, steps_per_epoch=args.steps, seed=args.seed
    )
    if args.estimate:
        from asynctg.apps.estimate import dry_run
        from asynctg.engine import get_engine

        name = args.model or ("sim-1" if on_sim else os.environ.get("ASYNCTG_MODEL") or "")

        async def run_demo(engines: dict[str, Any]) -> Any:
            return await optimize_prompt(task, engines[name], config=config)

        estimate = await dry_run(
            lambda model, url: get_engine(model, base_url=url, api_key="estimate"),
            [name],
            run_demo,
            prices={name: args.price} if args.price else None,
            max_tokens=args.max_tokens,
        )
        print(json.dumps(estimate.to_json()) if args.json else estimate.line())
        return 0
    async with contextlib.AsyncExitStack() as stack:
        server = None
        if on_sim:
            sim_config = SimConfig(
                latency=args.latency,
                rpm=args.sim_rpm,
                fault_rate=args.fault_rate,
                # quick faults show the retries; a 30 s "slow" one would only stall the demo
                faults=("500", "503", "drop", "malformed", "truncated"),
                seed=args.seed,
            )
            server = await stack.enter_async_context(SimServer(sim_config))
            base_url: str | None = server.base_url
            model = args.model or "sim-1"
            args.rpm = args.rpm or args.sim_rpm
        else:
            base_url = args.base_url
            model = args.model or os.environ.get("ASYNCTG_MODEL") or ""
        engine, _, transports = _engines(args, base_url, model, model)
        stack.push_async_callback(engine.aclose)
        # the bench is a job of its engine: its counts are its own run's, whatever else runs
        job = await stack.enter_async_context(engine.job("bench"))
        progress = Progress(Meter([job]).session, quiet=args.quiet)
        started = time.perf_counter()
        async with _live(progress):
            result = await optimize_prompt(task, job, config=config, on_event=progress)
        wall = time.perf_counter() - started
        stats = job.stats()
        engine_stats = engine.stats()
        sim_stats = {k: v for k, v in server.stats().items() if k != "timeline"} if server else None
    from asynctg.loadtest.stats import percentile

    latencies = [x for t in transports for x in t.latencies]

    def pct(p: float) -> float:
        return percentile(latencies, p) or 0.0

    history = result.history
    summary = {
        "task": "object_counting (generated)",
        "endpoint": "built-in simulator" if on_sim else base_url,
        "model": model,
        "steps": len(history) - 1,
        "batch_size": args.batch_size,
        "test_size": args.test_size,
        "test_accuracy": [row["test_accuracy"] for row in history],
        "initial_prompt": result.initial_prompt,
        "final_prompt": result.final_prompt,
        "calls": stats["calls"],
        "requests": stats["requests"],
        "wall_seconds": round(wall, 3),
        "calls_per_second": round(stats["calls"] / wall, 2) if wall else 0.0,
        "latency_p50_ms": round(pct(0.50) * 1000, 1),
        "latency_p99_ms": round(pct(0.99) * 1000, 1),
        "rate_limited": stats["rate_limited"],
        "retries": stats["retries"],
        "faults": stats["faults"],
        "prompt_tokens": stats["prompt_tokens"],
        "completion_tokens": stats["completion_tokens"],
        "cost_usd": stats["cost_usd"],
        "engine": engine_stats,
        "simulator": sim_stats,
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_demo(summary)
    return 0


def _print_demo(s: dict[str, Any]) -> None:
    acc = s["test_accuracy"]
    steps = " -> ".join(f"{a:.2f}" for a in acc if a is not None)
    cost = s["cost_usd"]
    lines = [
        f"asynctg demo: prompt optimization on {s['task']} against {s['endpoint']}",
        f"  steps            {s['steps']} of {s['batch_size']} questions "
        f"(each: {s['batch_size']} answers, {2 * s['batch_size']} feedback calls, 1 rewrite), "
        f"test set {s['test_size']}",
        f"  test accuracy    {steps}",
        f"  final prompt     {_one_line(s['final_prompt'], 240)}",
        f"  wall time        {s['wall_seconds']:.2f} s for {s['calls']} calls",
        f"  throughput       {s['calls_per_second']:.1f} calls/s",
        f"  request latency  p50 {s['latency_p50_ms']:.0f} ms   p99 {s['latency_p99_ms']:.0f} ms",
        f"  429s answered    {s['rate_limited']}   other faults retried {s['faults']}   "
        f"retries {s['retries']}",
        f"  tokens           {s['prompt_tokens']} prompt + {s['completion_tokens']} completion"
        + (f"   ${cost:.4f}" if cost is not None else ""),
    ]
    print("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
