"""The ``asynctg`` entry point: the parser of every command, and the exit codes.

Each command family adds its own subcommands (``add_parsers``) and runs them; this module
only wires them together and turns errors into messages and exit codes (see ``asynctg.cli``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from asynctg._version import __version__
from asynctg.cli import bench, demo, execute, prompt, science
from asynctg.cli.common import (
    Parser,
    count,
    endpoint_options,
    positive_float,
    positive_int,
    run_options,
)
from asynctg.errors import AsyncTGError, BudgetExceededError, ConfigError
from asynctg.output.text import printable

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="asynctg",
        description="TextGrad as an async, high-throughput runtime.",
    )
    parser.add_argument("--version", action="version", version=f"asynctg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    demo.add_parser(sub)
    prompt.add_parsers(sub)

    science.add_parsers(
        sub,
        endpoint_options=endpoint_options,
        run_options=run_options,
        positive_int=positive_int,
        count=count,
        positive_float=positive_float,
    )

    bench.add_parser(sub, endpoint_options=endpoint_options, positive_int=positive_int)

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
            return prompt.list_tasks()
        if args.command == "bench":
            return bench.run(args)
        from asynctg.runtime import run

        if args.command == "demo":
            return run(demo.run_demo(args))
        return execute.run_command(args)
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
    return printable(text)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
